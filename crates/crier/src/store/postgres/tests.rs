//! The conformance suite and the PostgreSQL-only behaviour, against the server named by
//! `CRIER_TEST_POSTGRES` (default: the local one). Each case gets a database of its own,
//! dropped after it; where no server answers, each case says so and passes.

use std::io::{Read, Write};
use std::sync::{Barrier, OnceLock};

use super::directory::CHUNK_BYTES;
use super::schema::VERSION;
use super::*;
use crate::store::conformance::StoreFactory;
use postgres::NoTls;

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn server_url() -> String {
    std::env::var("CRIER_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
}

pub(super) fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    config.connect(NoTls)
}

/// Why the tests cannot run here, asked of the server once per test binary.
fn unreachable() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let url = server_url();
            connect(&url).err().map(|error| {
                let error = with_causes(&error);
                format!("PostgreSQL unreachable at {}: {error}", redacted(&url))
            })
        })
        .clone()
}

/// `url` naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |at| authority_start + at);
    let mut named = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        named = format!("{named}?{query}");
    }
    named
}

/// A fresh database on the test server, dropped (with whatever still connects to it) when
/// this is dropped.
pub struct PostgresFactory {
    name: String,
    pub(super) url: String,
}

impl StoreFactory for PostgresFactory {
    fn create() -> Self {
        let name = format!("crier_test_{:016x}", rand::random::<u64>());
        let mut admin = connect(&server_url()).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let url = with_database(&server_url(), &name);
        PostgresFactory { name, url }
    }

    fn open(&self) -> Box<dyn Store> {
        Box::new(PostgresStore::open(&self.url).unwrap())
    }

    fn skip_reason() -> Option<String> {
        unreachable()
    }
}

impl Drop for PostgresFactory {
    fn drop(&mut self) {
        let dropped = connect(&server_url()).and_then(|mut admin| {
            admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        if let Err(error) = dropped {
            eprintln!("cannot drop the test database {}: {error}", self.name);
        }
    }
}

crate::store_conformance_suite!(PostgresFactory);

/// Runs `test` unless the server cannot be reached.
pub(super) fn with_server(test: impl FnOnce()) {
    match unreachable() {
        Some(reason) => eprintln!("skipped: {reason}"),
        None => test(),
    }
}

#[test]
fn passwords_never_show_in_redacted_urls() {
    let cases = [
        (
            "postgres://crier:s3cret@db.example:5432/crier",
            "postgres://crier:***@db.example:5432/crier",
        ),
        (
            "postgres://crier:p@ss:w/rd@db:5432/crier?sslmode=disable",
            "postgres://crier:***@db:5432/crier?sslmode=disable",
        ),
        (
            "postgres://crier@db/crier?password=s3cret&application_name=x",
            "postgres://crier@db/crier?password=***&application_name=x",
        ),
        (
            "postgresql://db/crier?user=u&PASSWORD=s3cret",
            "postgresql://db/crier?user=u&PASSWORD=***",
        ),
        (
            "host=db user=crier password=s3cret dbname=crier",
            "host=db user=crier password=*** dbname=crier",
        ),
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ),
    ];
    for (url, shown) in cases {
        assert_eq!(redacted(url), shown);
        assert!(!redacted(url).contains("s3cret"));
    }
}

#[test]
fn an_unreachable_server_is_unavailable_and_its_password_is_never_told() {
    // Port 9 (discard) on the loopback: nothing listens there, the refusal is immediate.
    let opened = PostgresStore::open("postgres://crier:s3cret@127.0.0.1:9/crier");
    let Err(StoreError::Unavailable(message)) = opened else {
        panic!("{:?}", opened.err());
    };
    assert!(message.contains("127.0.0.1:9"), "{message}");
    assert!(message.contains("refused"), "says why: {message}");
    assert!(!message.contains("s3cret"), "{message}");
    let invalid = PostgresStore::open("postgres://crier:s3cret@127.0.0.1:notaport/crier");
    let Err(StoreError::Unavailable(message)) = invalid else {
        panic!("{:?}", invalid.err());
    };
    assert!(!message.contains("s3cret"), "{message}");
}

#[test]
fn nodes_opening_a_fresh_database_together_apply_the_schema_once() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let start = Barrier::new(3);
        std::thread::scope(|scope| {
            let opened: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        PostgresStore::open(&factory.url).map(|_| ())
                    })
                })
                .collect();
            for open in opened {
                open.join().unwrap().unwrap();
            }
        });
        let mut client = connect(&factory.url).unwrap();
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM crier_schema_migrations ORDER BY version",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(versions, (1..=VERSION as i32).collect::<Vec<_>>());
        // A later start finds nothing to do.
        PostgresStore::open(&factory.url).unwrap();
        let rows = client
            .query_one("SELECT COUNT(*) FROM crier_schema_migrations", &[])
            .unwrap();
        assert_eq!(rows.get::<_, i64>(0), VERSION as i64);
    });
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    with_server(|| {
        let factory = PostgresFactory::create();
        drop(PostgresStore::open(&factory.url).unwrap());
        let mut client = connect(&factory.url).unwrap();
        client
            .execute(
                "INSERT INTO crier_schema_migrations (version) VALUES ($1)",
                &[&(VERSION as i32 + 1)],
            )
            .unwrap();
        let opened = PostgresStore::open(&factory.url);
        assert!(
            matches!(opened, Err(StoreError::Corrupt(_))),
            "{:?}",
            opened.err()
        );
    });
}

fn a_few_calls(store: &PostgresStore) {
    assert_eq!(store.append_dir_ops(1, 0, &[]).unwrap(), 0);
    let import = DirOp::Import {
        accounts: vec!["ann".into()],
    };
    assert_eq!(store.append_dir_ops(1, 0, &[import]).unwrap(), 1);
    assert_eq!(store.dir_head(1).unwrap(), 1);
}

#[tokio::test]
async fn it_works_from_spawn_blocking_and_may_be_dropped_in_an_async_task() {
    if let Some(reason) = unreachable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let factory = tokio::task::spawn_blocking(PostgresFactory::create)
        .await
        .unwrap();
    let url = factory.url.clone();
    let store = tokio::task::spawn_blocking(move || {
        let store = PostgresStore::open(&url).unwrap();
        a_few_calls(&store);
        store
    })
    .await
    .unwrap();
    // Dropped here, on the runtime's thread: the connections close on a thread of their own.
    drop(store);
    tokio::task::spawn_blocking(move || drop(factory))
        .await
        .unwrap();
}

#[test]
fn it_works_from_a_plain_thread() {
    with_server(|| {
        let factory = PostgresFactory::create();
        std::thread::scope(|scope| {
            scope
                .spawn(|| a_few_calls(&PostgresStore::open(&factory.url).unwrap()))
                .join()
                .unwrap();
        });
    });
}

#[test]
fn a_large_snapshot_is_stored_in_chunks_and_streamed_back() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let store = PostgresStore::open(&factory.url).unwrap();
        // Two and a half chunks, written in odd-sized pieces.
        let size = CHUNK_BYTES * 5 / 2;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        store
            .save_dir_snapshot(1, 3, &mut |out: &mut dyn Write| {
                bytes
                    .chunks(1_000_003)
                    .try_for_each(|piece| out.write_all(piece))
            })
            .unwrap();
        let mut client = connect(&factory.url).unwrap();
        let chunks: i64 = client
            .query_one("SELECT COUNT(*) FROM dir_snapshot_chunks", &[])
            .unwrap()
            .get(0);
        assert_eq!(chunks, 3);
        let mut stored = store.load_dir_snapshot(1).unwrap().unwrap();
        assert_eq!(stored.seq, 3);
        let mut read = Vec::new();
        stored.reader.read_to_end(&mut read).unwrap();
        assert!(read == bytes, "the snapshot came back changed");

        // A reader keeps its view while a newer snapshot replaces the one it reads.
        let mut reading = store.load_dir_snapshot(1).unwrap().unwrap();
        let mut first = vec![0; 10];
        reading.reader.read_exact(&mut first).unwrap();
        store
            .save_dir_snapshot(1, 4, &mut |out: &mut dyn Write| out.write_all(b"newer"))
            .unwrap();
        let mut rest = Vec::new();
        reading.reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len() + 10, size);
        let chunks: i64 = client
            .query_one("SELECT COUNT(*) FROM dir_snapshot_chunks", &[])
            .unwrap()
            .get(0);
        assert_eq!(chunks, 1, "the old chunks went with the old snapshot");

        // One abandoned part-way gives its connection back, out of its transaction.
        let mut abandoned = store.load_dir_snapshot(1).unwrap().unwrap();
        abandoned.reader.read_exact(&mut first[..2]).unwrap();
        drop(abandoned);
        for _ in 0..POOL_SIZE + 1 {
            assert_eq!(store.dir_head(1).unwrap(), 4);
        }
    });
}

#[test]
fn a_failing_snapshot_writer_stores_nothing() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let store = PostgresStore::open(&factory.url).unwrap();
        let failed = store.save_dir_snapshot(1, 3, &mut |out: &mut dyn Write| {
            out.write_all(&vec![7; CHUNK_BYTES + 10])?;
            Err(std::io::Error::other("the directory could not be read"))
        });
        assert!(
            matches!(failed, Err(StoreError::Unavailable(_))),
            "{failed:?}"
        );
        assert!(store.load_dir_snapshot(1).unwrap().is_none());
        assert_eq!(store.dir_head(1).unwrap(), 0);
    });
}

#[test]
fn undecodable_rows_are_corrupt() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let store = PostgresStore::open(&factory.url).unwrap();
        let mut client = connect(&factory.url).unwrap();
        client
            .batch_execute(
                "INSERT INTO dir_heads (app, head) VALUES (1, 1);
                 INSERT INTO dir_log (app, seq, op) VALUES (1, 1, 'not json');
                 INSERT INTO acks (app, seq, task_id, accounts) VALUES (1, 1, 't1', '\\x0102');",
            )
            .unwrap();
        let read = store.read_dir_ops(1, 0, &mut |_, _| {});
        assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
        let acks = store.load_acks(1);
        assert!(matches!(acks, Err(StoreError::Corrupt(_))), "{acks:?}");
    });
}

#[test]
fn a_stray_log_row_past_the_head_is_a_conflict() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let store = PostgresStore::open(&factory.url).unwrap();
        let mut client = connect(&factory.url).unwrap();
        client
            .batch_execute(r#"INSERT INTO dir_log (app, seq, op) VALUES (1, 1, '{"op":"Import","accounts":[]}')"#)
            .unwrap();
        let import = DirOp::Import { accounts: vec![] };
        let appended = store.append_dir_ops(1, 0, &[import]);
        assert!(
            matches!(appended, Err(StoreError::Conflict(_))),
            "{appended:?}"
        );
        assert_eq!(store.dir_head(1).unwrap(), 0, "nothing was written");
    });
}

#[test]
fn of_racing_snapshots_the_newest_is_kept_whole() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let nodes: Vec<PostgresStore> = (0..4)
            .map(|_| PostgresStore::open(&factory.url).unwrap())
            .collect();
        let start = Barrier::new(nodes.len());
        std::thread::scope(|scope| {
            for (node, store) in nodes.iter().enumerate() {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let bytes = vec![node as u8; CHUNK_BYTES + node];
                    store
                        .save_dir_snapshot(1, node as u64 + 1, &mut |out: &mut dyn Write| {
                            out.write_all(&bytes)
                        })
                        .unwrap();
                });
            }
        });
        let mut stored = nodes[0].load_dir_snapshot(1).unwrap().unwrap();
        let mut read = Vec::new();
        stored.reader.read_to_end(&mut read).unwrap();
        assert_eq!(stored.seq, 4);
        assert!(read == vec![3; CHUNK_BYTES + 3], "the newest, whole");
        let mut client = connect(&factory.url).unwrap();
        let chunks: i64 = client
            .query_one("SELECT COUNT(*) FROM dir_snapshot_chunks", &[])
            .unwrap()
            .get(0);
        assert_eq!(chunks, 2, "no chunk of another snapshot is left");
    });
}

#[test]
fn connections_the_server_closed_are_replaced_before_a_call_fails() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let store = PostgresStore::open(&factory.url).unwrap();
        let calls_at_once = 4;
        let start = Barrier::new(calls_at_once);
        let open_several = || {
            std::thread::scope(|scope| {
                for _ in 0..calls_at_once {
                    scope.spawn(|| {
                        start.wait();
                        assert_eq!(store.dir_head(1).unwrap(), 0);
                    });
                }
            })
        };
        open_several();
        let mut admin = connect(&server_url()).unwrap();
        let terminated = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&factory.name],
            )
            .unwrap();
        assert!(terminated.len() > 1, "{}", terminated.len());
        open_several();
        let import = DirOp::Import { accounts: vec![] };
        assert_eq!(store.append_dir_ops(1, 0, &[import]).unwrap(), 1);
    });
}
