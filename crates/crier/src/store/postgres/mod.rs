//! One PostgreSQL database shared by the nodes of a cluster, behind the same [`Store`] trait
//! and the same conformance suite as the embedded SQLite store.
//!
//! Why a blocking client over a pool: the trait blocks (callers are on blocking threads), and
//! each call is one transaction. The `postgres` crate runs a small tokio runtime inside every
//! connection, so its calls must not be made on an async worker thread: from `spawn_blocking`
//! or a plain thread they are fine, and dropping the store inside a runtime hands the
//! connections to a thread of their own (closing one blocks).
//!
//! - `schema`: versioned migrations, applied at open under `pg_advisory_lock`, so nodes that
//!   start together apply each migration once.
//! - `directory`: the per-app log with compare-and-append, and snapshots stored in chunks.
//! - `pushes`: push records under the rate limits, acknowledgements, delivery counts.
//! - `notify`: devices and leased notification jobs.
//! - `sched`: scheduled tasks, claimed like notification jobs.
//! - `callbacks`: the delivery callback queue, claimed under a lease.
//! - `tls`: libpq's `sslmode` and `sslrootcert`, read off the URL into the connector every
//!   connection of the pool is opened with.
//!
//! How nodes are kept apart: every rule that needs it holds a row lock of the app, taken in
//! the transaction that checks and writes (the log's head row, the push gate row, the ack head
//! row), or claims a job with `FOR UPDATE SKIP LOCKED`. Transactions are `READ COMMITTED`, so
//! each statement after the lock sees what the previous holder committed.
//!
//! Every operation goes through `PostgresStore::run`, which turns the client's and the
//! pool's errors into [`StoreError`]s: they become backend-neutral here and nowhere else.
//! URLs are only ever shown through [`redacted`].

mod callbacks;
mod directory;
mod marks;
mod notify;
mod pushes;
mod sched;
mod schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tls;
mod tls;
#[cfg(test)]
mod tls_server;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Row};
use r2d2_postgres::PostgresConnectionManager;
use roaring::RoaringBitmap;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    DeliveryCounts, MarkStage, PushAcceptance, PushCounts, PushId, PushMark, PushRules,
    PushSummary, Store, StoreError, StoredSnapshot,
};
use crate::directory::DirOp;
use crate::store::{PushRecord, RevokeOutcome};

/// Connections per node. Each store call holds one for one transaction (a snapshot reader for
/// as long as it reads), so this bounds the calls running at once, not the nodes' load.
const POOL_SIZE: u32 = 16;
/// How long a call waits for a free connection (or for the server) before it answers
/// `Unavailable`.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Every URL gets the TLS connector, whatever its `sslmode`: the manager's type names one.
type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;
type PooledClient = r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>;

/// A failure inside this module, before it becomes a [`StoreError`] in
/// [`PostgresStore::run`]: lets `?` take the client's and the pool's errors without
/// `StoreError` naming either.
enum Failure {
    Postgres(postgres::Error),
    Pool(r2d2::Error),
    Io(std::io::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Self {
        Failure::Postgres(error)
    }
}

impl From<r2d2::Error> for Failure {
    fn from(error: r2d2::Error) -> Self {
        Failure::Pool(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

impl Failure {
    fn into_store_error(self) -> StoreError {
        match self {
            Failure::Postgres(error) => match error.as_db_error() {
                // Two writers took one key (in practice a directory seq): the other got there
                // first.
                Some(db) if *db.code() == SqlState::UNIQUE_VIOLATION => {
                    StoreError::Conflict(format!(
                        "postgres: {} ({})",
                        db.message(),
                        db.constraint().unwrap_or("?")
                    ))
                }
                Some(db) => StoreError::Unavailable(format!(
                    "postgres: {} (sqlstate {})",
                    db.message(),
                    db.code().code()
                )),
                None => StoreError::Unavailable(format!("postgres: {}", with_causes(&error))),
            },
            Failure::Pool(error) => StoreError::Unavailable(format!("postgres pool: {error}")),
            Failure::Io(error) => StoreError::Unavailable(format!("io: {error}")),
            Failure::Store(error) => error,
        }
    }
}

/// `error` and what caused it: the client's errors keep the cause (say, "connection refused")
/// out of their own message.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut told = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let message = error.to_string();
        if !told.contains(&message) {
            told = format!("{told}: {message}");
        }
        cause = error.source();
    }
    told
}

fn corrupt(what: impl std::fmt::Display) -> Failure {
    Failure::Store(StoreError::Corrupt(what.to_string()))
}

/// Column `index` of `row`; a value of another type than expected is a corrupt row.
fn column<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, Failure> {
    row.try_get(index)
        .map_err(|e| corrupt(format!("column {index}: {e}")))
}

/// A `u32` kept in a `BIGINT` column.
fn u32_column(row: &Row, index: usize) -> Result<u32, Failure> {
    let value: i64 = column(row, index)?;
    u32::try_from(value).map_err(|_| corrupt(format!("column {index}: {value} is not a u32")))
}

fn bitmap_bytes(bitmap: &RoaringBitmap) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    bitmap.serialize_into(&mut bytes)?;
    Ok(bytes)
}

fn bitmap_from(bytes: &[u8], what: impl std::fmt::Display) -> Result<RoaringBitmap, Failure> {
    RoaringBitmap::deserialize_from(bytes).map_err(|e| corrupt(format!("{what}: {e}")))
}

/// `url` with its password (in the user info, or as a `password=` parameter) replaced by
/// `***`: the only form in which a store URL may reach a log or an error message. When in
/// doubt it hides more, never less.
pub fn redacted(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme_end) = shown.find("://") {
        let rest = scheme_end + 3;
        if let Some(at) = shown[rest..].rfind('@') {
            if let Some(colon) = shown[rest..rest + at].find(':') {
                shown.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    let mut from = 0;
    while let Some(found) = shown[from..].to_ascii_lowercase().find("password=") {
        let value_start = from + found + "password=".len();
        let value_end = shown[value_start..]
            .find(['&', ' ', '#'])
            .map_or(shown.len(), |end| value_start + end);
        shown.replace_range(value_start..value_end, "***");
        from = value_start + 3;
    }
    shown
}

pub struct PostgresStore {
    /// Taken only by `drop`.
    pool: Option<Pool>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// with libpq's `sslmode` and `sslrootcert` if TLS is wanted: see `tls`), brings its
    /// schema up to date and keeps a pool of connections to it. Blocking: call it from a
    /// blocking thread, never from an async task.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let at = |error: StoreError| match error {
            StoreError::Unavailable(message) => {
                StoreError::Unavailable(format!("{message} (at {})", redacted(url)))
            }
            other => other,
        };
        let invalid = |message: String| {
            StoreError::Unavailable(format!(
                "invalid PostgreSQL URL {}: {message}",
                redacted(url)
            ))
        };
        let (rest, tls) = tls::take_tls_params(url).map_err(invalid)?;
        let mut config: postgres::Config = rest.parse().map_err(|e| invalid(with_causes(&e)))?;
        let connector = tls.apply(&mut config).map_err(invalid)?;
        // The first connection migrates, and tells at once why the server cannot be reached;
        // the pool would only retry until `POOL_WAIT`.
        let mut first = config
            .connect(connector.clone())
            .map_err(|e| at(Failure::from(e).into_store_error()))?;
        schema::migrate(&mut first).map_err(|e| at(e.into_store_error()))?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(POOL_WAIT)
            // One empty round trip per call (tens of microseconds beside a commit's fsync of
            // milliseconds) finds the connections that a restarted server or a proxy closed
            // while idle, and replaces them, instead of failing a call on each.
            .test_on_check_out(true)
            .error_handler(Box::new(LogConnectionErrors))
            .build_unchecked(PostgresConnectionManager::new(config, connector));
        Ok(PostgresStore { pool: Some(pool) })
    }

    fn connection(&self) -> Result<PooledClient, Failure> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| Failure::Store(StoreError::Unavailable("the store is closed".into())))?;
        Ok(pool.get()?)
    }

    /// Runs one store operation on a pooled connection, turning what failed into a
    /// [`StoreError`].
    fn run<T>(
        &self,
        operation: impl FnOnce(&mut Client) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.connection()
            .and_then(|mut client| operation(&mut client))
            .map_err(Failure::into_store_error)
    }
}

/// The pool opens connections in the background; why one could not be opened goes to the log
/// with its cause (the pool's own handler would log only "error connecting to server").
#[derive(Debug)]
struct LogConnectionErrors;

impl r2d2::HandleError<postgres::Error> for LogConnectionErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::warn!(error = %with_causes(&error), "cannot open a PostgreSQL connection");
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing a connection blocks on its runtime, which panics on an async worker thread.
        if let Some(pool) = self.pool.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let closing = std::thread::Builder::new()
                    .name("crier-pg-close".into())
                    .spawn(move || drop(pool));
                if let Err(error) = closing {
                    tracing::warn!(%error, "cannot close the PostgreSQL connections on a thread of their own");
                }
            }
        }
    }
}

impl Store for PostgresStore {
    fn dir_head(&self, app: u64) -> Result<u64, StoreError> {
        self.run(|client| directory::dir_head(client, app))
    }

    fn append_dir_ops(
        &self,
        app: u64,
        expected_head: u64,
        ops: &[DirOp],
    ) -> Result<u64, StoreError> {
        self.run(|client| directory::append_dir_ops(client, app, expected_head, ops))
    }

    fn read_dir_ops(
        &self,
        app: u64,
        after_seq: u64,
        each: &mut dyn FnMut(u64, DirOp),
    ) -> Result<(), StoreError> {
        self.run(|client| directory::read_dir_ops(client, app, after_seq, each))
    }

    fn save_dir_snapshot(
        &self,
        app: u64,
        seq: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        self.run(|client| directory::save_dir_snapshot(client, app, seq, write))
    }

    fn load_dir_snapshot(&self, app: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        self.connection()
            .and_then(|client| directory::load_dir_snapshot(client, app))
            .map_err(Failure::into_store_error)
    }

    fn try_accept_push(
        &self,
        push: &PushRecord,
        fingerprint: u64,
        rules: &PushRules,
        notify_targets: Option<&RoaringBitmap>,
    ) -> Result<PushAcceptance, StoreError> {
        self.run(|client| pushes::try_accept_push(client, push, fingerprint, rules, notify_targets))
    }

    fn push_summary(&self, app: u64, task_id: &str) -> Result<Option<PushSummary>, StoreError> {
        self.run(|client| pushes::push_summary(client, app, task_id))
    }

    fn push_record(&self, app: u64, task_id: &str) -> Result<Option<PushRecord>, StoreError> {
        self.run(|client| pushes::push_record(client, app, task_id))
    }

    fn pushes_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushRecord>, StoreError> {
        self.run(|client| pushes::pushes_since(client, app, since_ms))
    }

    fn push_ids_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushId>, StoreError> {
        self.run(|client| pushes::push_ids_since(client, app, since_ms))
    }

    fn revoke_push(
        &self,
        app: u64,
        task_id: &str,
        now_ms: u64,
        overwrite: Option<&str>,
    ) -> Result<RevokeOutcome, StoreError> {
        self.run(|client| pushes::revoke_push(client, app, task_id, now_ms, overwrite))
    }

    fn revoked_since(&self, app: u64, since_ms: u64) -> Result<Vec<String>, StoreError> {
        self.run(|client| pushes::revoked_since(client, app, since_ms))
    }

    fn push_counts(&self, app: u64, since_ms: u64) -> Result<PushCounts, StoreError> {
        self.run(|client| pushes::push_counts(client, app, since_ms))
    }

    fn append_acks(&self, app: u64, acks: &[(String, RoaringBitmap)]) -> Result<(), StoreError> {
        self.run(|client| pushes::append_acks(client, app, acks))
    }

    fn load_acks(&self, app: u64) -> Result<HashMap<String, RoaringBitmap>, StoreError> {
        self.run(|client| pushes::load_acks(client, app))
    }

    fn acks_since(
        &self,
        app: u64,
        after: u64,
    ) -> Result<(u64, Vec<(String, RoaringBitmap)>), StoreError> {
        self.run(|client| pushes::acks_since(client, app, after))
    }

    fn add_delivery_counts(
        &self,
        app: u64,
        counts: &[(String, DeliveryCounts)],
    ) -> Result<(), StoreError> {
        self.run(|client| pushes::add_delivery_counts(client, app, counts))
    }

    fn load_delivery_counts(
        &self,
        app: u64,
    ) -> Result<HashMap<String, DeliveryCounts>, StoreError> {
        self.run(|client| pushes::load_delivery_counts(client, app))
    }

    fn append_marks(
        &self,
        app: u64,
        at_ms: u64,
        marks: &[(String, MarkStage, RoaringBitmap)],
    ) -> Result<(), StoreError> {
        self.run(|client| marks::append_marks(client, app, at_ms, marks))
    }

    fn push_marks(&self, app: u64, task_id: &str) -> Result<Vec<PushMark>, StoreError> {
        self.run(|client| marks::push_marks(client, app, task_id))
    }

    fn purge_pushes(
        &self,
        app: u64,
        expired_before_ms: u64,
        created_before_ms: u64,
    ) -> Result<u64, StoreError> {
        self.run(|client| pushes::purge_pushes(client, app, expired_before_ms, created_before_ms))
    }

    /// Every call commits durably already: nothing is left to flush.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
