//! Directory writes of one app, committed in groups, in the order of its log.
//!
//! A write is a request's `build`: it validates the request against the directory and answers
//! the ops to log. Writes queue; one thread at a time, the group writer, takes every write that
//! queued while it was busy and commits them as a group:
//!
//! 1. each is validated in arrival order against the directory *as the group's earlier writes
//!    will leave it* ([`Ahead`]), so a group changes nothing the same writes made one by one
//!    would not. One that fails is answered at once and changes nothing; the others go on;
//! 2. the ops of all of them are logged in one compare-and-append (one transaction, one
//!    commit), after the last write applied here;
//! 3. only then are they applied, in log order, consecutive tag writes of several requests
//!    together (their bitmap inserts sorted as one), in slices, handing the directory to any
//!    waiting reader between two, so a push waits for at most one slice;
//! 4. every write of the group is answered: its ops are durable and visible to every reader.
//!
//! On a node alone, step 2 of a group runs beside step 3 of the group before (on a thread of
//! its own), step 1 having validated it after that group's writes as well.
//!
//! A group costs one commit and one hand-over whatever its size, where writes one at a time
//! under a mutex paid a commit each and sat idle between holders. Writes logged by another
//! node are applied when its announcement of the new head arrives ([`Tenant::catch_up_to`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLockWriteGuard};
use tokio::sync::oneshot;
use tracing::warn;

use super::snapshots::log_weight;
use super::Tenant;
use crate::bus::Event;
use crate::directory::{Ahead, DirOp, Directory, KnownAccounts, Pending};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::StoreError;

/// Conflicts in a row after which a write gives up (each one means another node logged in
/// between; a handful in a row means something is wrong).
const MAX_APPEND_CONFLICTS: u32 = 16;

/// Writes taken into one group at most: bounds a group's transaction and the wait of its
/// first write.
const MAX_GROUP_WRITES: usize = 64;

/// (account, tag or value) items applied under one hold of the directory's write lock: about a
/// millisecond of bitmap inserts at ten million accounts, what a push may wait behind.
const APPLY_SLICE_ITEMS: usize = 1_000;

/// What the group writer keeps between groups; only the writer (and catching up) holds it.
pub(super) struct WriterState {
    /// The last write applied here.
    pub(super) last_seq: u64,
    /// The weight of the log since the last snapshot ([`super::snapshots::log_weight`]).
    pub(super) log_since_snapshot: u64,
    /// The thread writing a snapshot in the background, if one was started.
    pub(super) background_snapshot: Option<std::thread::JoinHandle<()>>,
}

impl WriterState {
    pub(super) fn new(last_seq: u64, log_since_snapshot: u64) -> WriterState {
        WriterState {
            last_seq,
            log_since_snapshot,
            background_snapshot: None,
        }
    }
}

/// A write's validation: answers the ops to log, or why the request changes nothing.
type AheadBuild = Box<dyn FnOnce(&Ahead) -> Result<Vec<DirOp>, Error> + Send>;
type SettledBuild = Box<dyn FnOnce(&Directory) -> Result<Vec<DirOp>, Error> + Send>;

enum Build {
    /// Validated against the directory as the group's earlier writes will leave it.
    Ahead(AheadBuild),
    /// Validated against the directory itself (for validations that read more of it than
    /// [`Ahead`] answers): the first write of its group, with nothing pending.
    Settled(SettledBuild),
}

/// A write's answer: its ops once durable and visible, handed back so that the caller frees
/// them on its own thread (the one that allocated them), not on the group writer's, which
/// every write of the app waits for. Freeing a bulk write's names and tags was about 1.4k of
/// its 17.5k instructions per user.
type Answer = Result<Vec<DirOp>, Error>;

struct Queued {
    build: Build,
    /// The numbers of the accounts of the write's last op, looked up by the request.
    known: Option<KnownAccounts>,
    done: oneshot::Sender<Answer>,
}

/// A group's writes that passed validation: the ops to log, and each write's answer with how
/// many of the ops are its (writes that log nothing have none).
struct Validated {
    ops: Vec<DirOp>,
    /// Per op, the numbers of its accounts where the request looked them up.
    known: Vec<Option<KnownAccounts>>,
    accepted: Vec<(oneshot::Sender<Answer>, usize)>,
}

/// A validated group once logged, to apply and answer.
struct Logged {
    /// The log's head after it; `None` if it logged nothing (its writes are answered once the
    /// groups before are visible).
    seq: Option<u64>,
    group: Validated,
}

/// The writes waiting for the next group, and whether a group writer is running.
pub(super) struct WriteQueue {
    state: Mutex<QueueState>,
    /// Writes taken into one group at most.
    max_group: usize,
}

impl Default for WriteQueue {
    fn default() -> WriteQueue {
        WriteQueue {
            state: Mutex::default(),
            max_group: MAX_GROUP_WRITES,
        }
    }
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<Queued>,
    writing: bool,
}

impl WriteQueue {
    /// Queues a write; answers whether the caller must run the group writer (none runs).
    fn push(&self, write: Queued) -> bool {
        let mut state = self.state.lock();
        state.waiting.push(write);
        !std::mem::replace(&mut state.writing, true)
    }

    /// The next group, or `None` when nothing waits; then the writer stops if `stop` (it
    /// has nothing in flight), and the next write starts one.
    fn next_group(&self, stop: bool) -> Option<Vec<Queued>> {
        let mut state = self.state.lock();
        if state.waiting.is_empty() {
            if stop {
                state.writing = false;
            }
            return None;
        }
        // A write validated against the directory itself starts a group of its own.
        let take = 1 + state.waiting[1..]
            .iter()
            .take(self.max_group - 1)
            .take_while(|write| matches!(write.build, Build::Ahead(_)))
            .count();
        Some(state.waiting.drain(..take).collect())
    }
}

/// Stops the group writer if it panics: the writes waiting are answered with an error (their
/// senders dropped) instead of waiting for a writer that is gone.
struct WriterRunning<'a>(&'a WriteQueue);

impl Drop for WriterRunning<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = self.0.state.lock();
            state.writing = false;
            state.waiting.clear();
        }
    }
}

/// The group writer's nice value: below every answer the server gives, above nothing else.
/// Nice 10 (a tenth of a handler's share when both want a core) starved the writer while the
/// handlers and the load generator kept both cores busy; nice 0 let it delay the push. At 10M
/// accounts, alternated (nice 10 / 0 / 5, three runs each): `im_add_tag` 99-170k / 193-204k /
/// 160-239k users/s, `im_set_attr` 129-166k / 167-207k / 217-250k, `im_push` during the sync
/// p50 2.7-4.0 / 3.4-3.9 / 2.4-3.2 ms.
const WRITER_NICE: i32 = 5;

/// Lowers the calling thread's priority to [`WRITER_NICE`]; for a thread that ends with the
/// writer, as an unprivileged process cannot raise it back. Where the system refuses, the
/// writer runs at the usual priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), WRITER_NICE)
    {
        tracing::debug!(%error, "the directory writer runs at the usual priority");
    }
}

fn writer_gone() -> Error {
    Error::Internal("the directory writer stopped before answering this write".into())
}

impl Tenant {
    /// Validates and builds writes against the current state with `build`, logs them durably,
    /// then applies them; answers once they are visible. Blocking. Nothing changes if `build`
    /// fails.
    pub fn write_directory(
        &self,
        build: impl FnOnce(&Ahead) -> Result<Vec<DirOp>, Error> + Send + 'static,
    ) -> Result<(), Error> {
        let (done, answer) = oneshot::channel();
        let build = Build::Ahead(Box::new(build));
        let known = None;
        if self.queue.push(Queued { build, known, done }) {
            self.write_groups();
        }
        answer
            .blocking_recv()
            .unwrap_or_else(|_| Err(writer_gone()))
            .map(drop)
    }

    /// Async form of [`Self::write_directory`]: the group writer runs on a thread of its own
    /// ([`Self::start_writer`]) while the caller waits without holding one.
    pub async fn write(
        self: &Arc<Self>,
        build: impl FnOnce(&Ahead) -> Result<Vec<DirOp>, Error> + Send + 'static,
    ) -> Result<(), Error> {
        self.queue_write(Build::Ahead(Box::new(build)), None).await
    }

    /// As [`Self::write`], for a write whose last op names the accounts `known` numbers
    /// ([`Self::known_accounts`]): the writer need not look them up.
    pub async fn write_known(
        self: &Arc<Self>,
        known: KnownAccounts,
        build: impl FnOnce(&Ahead) -> Result<Vec<DirOp>, Error> + Send + 'static,
    ) -> Result<(), Error> {
        self.queue_write(Build::Ahead(Box::new(build)), Some(known))
            .await
    }

    /// Looks up the numbers of `names`, the accounts of a write's last op in their order, on
    /// the caller's thread ([`crate::directory::known`]).
    pub fn known_accounts<'a>(&self, names: impl Iterator<Item = &'a str>) -> KnownAccounts {
        self.directory.read().known_accounts(names)
    }

    /// As [`Self::write`], for a validation that reads the directory beyond what [`Ahead`]
    /// answers: it is validated first of its group, against the directory itself.
    pub async fn write_settled(
        self: &Arc<Self>,
        build: impl FnOnce(&Directory) -> Result<Vec<DirOp>, Error> + Send + 'static,
    ) -> Result<(), Error> {
        self.queue_write(Build::Settled(Box::new(build)), None)
            .await
    }

    async fn queue_write(
        self: &Arc<Self>,
        build: Build,
        known: Option<KnownAccounts>,
    ) -> Result<(), Error> {
        let (done, answer) = oneshot::channel();
        if self.queue.push(Queued { build, known, done }) {
            self.start_writer();
        }
        answer
            .await
            .unwrap_or_else(|_| Err(writer_gone()))
            .map(drop)
    }

    /// Runs the group writer on a thread of its own, at a lower priority than the server's
    /// other threads (nice [`WRITER_NICE`]; the log and snapshot threads it starts inherit it).
    /// A bulk sync keeps the writer busy nearly all the time on a 2-core machine, and a push
    /// accepted meanwhile waited for a core behind it: at 10M accounts the thread that stores
    /// the push started 2.1 ms late at p90, 0.4 ms once the writer yields to it. How far it
    /// yields is a trade: since the handlers look the accounts up for it, they keep the cores
    /// busy too, and too low a priority starves the writes ([`WRITER_NICE`]). A thread is
    /// started per burst of writes (the writer stops when nothing waits), since its priority
    /// cannot be raised again to hand it back to a pool.
    fn start_writer(self: &Arc<Self>) {
        let tenant = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("crier-dir-writer".into())
            .spawn(move || {
                lower_priority();
                tenant.write_groups();
            });
        if spawned.is_err() {
            // No thread to be had: the blocking pool's, at the usual priority.
            let tenant = Arc::clone(self);
            tokio::task::spawn_blocking(move || tenant.write_groups());
        }
    }

    /// Commits groups until nothing waits.
    ///
    /// On a node alone, nothing but this writer applies writes, so a group is logged while the
    /// group before it is applied: the log record and its commit no longer add to the wall
    /// time of the writer, which every write of the app waits for. The writer state stays
    /// locked while a group is logged and not applied (nothing may apply writes between).
    /// Where several nodes share the log, catching up with the others takes the writer state
    /// between two groups, so each group is applied before the next is taken.
    fn write_groups(&self) {
        let _running = WriterRunning(&self.queue);
        let overlap = !self.bus.spans_nodes();
        let mut writer: Option<MutexGuard<'_, WriterState>> = None;
        let mut logged: Option<Logged> = None;
        loop {
            let started = std::time::Instant::now();
            match self.queue.next_group(logged.is_none()) {
                Some(group) => {
                    let state = writer.get_or_insert_with(|| self.writer.lock());
                    if matches!(group[0].build, Build::Settled(_)) {
                        // Validated against the directory itself: the group before is applied
                        // first.
                        if let Some(before) = logged.take() {
                            self.apply_logged(state, before);
                        }
                    }
                    let earlier = logged.as_ref().map_or(&[][..], |before| &before.group.ops);
                    let validated = self.validate(group, earlier);
                    logged = match logged.take() {
                        None => self.log(state, validated),
                        Some(before) => self.log_while_applying(state, before, validated),
                    };
                    if !overlap {
                        if let Some(group) = logged.take() {
                            self.apply_logged(state, group);
                        }
                        writer = None;
                    }
                }
                None => match logged.take() {
                    Some(last) => {
                        let state = writer.as_mut().expect("a logged group holds the writer");
                        self.apply_logged(state, last);
                        writer = None;
                    }
                    None => return,
                },
            }
            Metrics::add(
                &self.metrics.directory_writer_busy_us,
                started.elapsed().as_micros() as u64,
            );
        }
    }

    /// Validates each write of `group` in arrival order, after `earlier` (logged, not applied)
    /// and the group's writes before it. One that fails is answered at once.
    fn validate(&self, group: Vec<Queued>, earlier: &[DirOp]) -> Validated {
        let directory = self.directory.read();
        let mut pending = Pending::after(&directory, earlier);
        let mut accepted = Vec::with_capacity(group.len());
        let mut known_accounts = Vec::new();
        for Queued { build, known, done } in group {
            let ahead = Ahead::new(&directory, &pending);
            let validated = catch_unwind(AssertUnwindSafe(|| match build {
                Build::Ahead(build) => build(&ahead),
                Build::Settled(build) => {
                    debug_assert!(pending.is_empty(), "a settled write is first of its group");
                    build(&directory)
                }
            }));
            match validated {
                Ok(Ok(ops)) => {
                    accepted.push((done, ops.len()));
                    if !ops.is_empty() {
                        known_accounts.resize_with(known_accounts.len() + ops.len() - 1, || None);
                        known_accounts.push(known);
                    }
                    pending.push(&directory, ops);
                }
                Ok(Err(error)) => {
                    let _ = done.send(Err(error));
                }
                Err(_) => {
                    warn!(
                        app = self.sdkappid(),
                        "a directory write panicked while validated"
                    );
                    let _ = done.send(Err(Error::Internal(
                        "the write's validation failed inside the server".into(),
                    )));
                }
            }
        }
        Validated {
            ops: pending.into_ops(),
            known: known_accounts,
            accepted,
        }
    }

    /// Logs a validated group after everything applied here. Answers it logged (to apply and
    /// answer), or `None` once its writes are answered with the store's refusal.
    fn log(&self, writer: &mut WriterState, group: Validated) -> Option<Logged> {
        if group.ops.is_empty() {
            return Some(Logged { seq: None, group });
        }
        let appended = self.append(writer, &group.ops);
        self.logged(group, appended)
    }

    /// Applies `before` while logging `group` after it, on a second thread.
    fn log_while_applying(
        &self,
        writer: &mut WriterState,
        before: Logged,
        group: Validated,
    ) -> Option<Logged> {
        if group.ops.is_empty() {
            self.apply_logged(writer, before);
            return Some(Logged { seq: None, group });
        }
        let head = before.seq.unwrap_or(writer.last_seq);
        let (app, ops) = (self.sdkappid(), &group.ops);
        let appended = std::thread::scope(|scope| {
            let appending = std::thread::Builder::new()
                .name("crier-dir-log".into())
                .spawn_scoped(scope, || self.store.append_dir_ops(app, head, ops))
                .ok();
            self.apply_logged(writer, before);
            appending.map(|appending| {
                appending
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        });
        let appended = match appended {
            // Another node logged first, or no thread was to be had: the group before is
            // applied now, so this one is logged as a group alone is (catching up first).
            Some(Err(StoreError::Conflict(_))) | None => self.append(writer, &group.ops),
            Some(appended) => appended,
        };
        self.logged(group, appended)
    }

    fn logged(&self, group: Validated, appended: Result<u64, StoreError>) -> Option<Logged> {
        match appended {
            Ok(seq) => {
                // Everything up to `seq` is applied here or is in flight, answered only once
                // applied: a push need not wait for these groups to read what was
                // acknowledged.
                self.covered_seq.store(seq, Ordering::Release);
                Some(Logged {
                    seq: Some(seq),
                    group,
                })
            }
            Err(error) => {
                for (done, _) in group.accepted {
                    let _ = done.send(Err(Error::Store(error.clone())));
                }
                None
            }
        }
    }

    /// Applies a logged group and answers its writes: their ops are durable and visible.
    fn apply_logged(&self, writer: &mut WriterState, group: Logged) {
        let Logged {
            seq,
            group:
                Validated {
                    ops,
                    known,
                    accepted,
                },
        } = group;
        if let Some(seq) = seq {
            let live = self.apply_in_slices(&ops, &known);
            writer.last_seq = seq;
            writer.log_since_snapshot += ops.iter().map(log_weight).sum::<u64>();
            if self.snapshot_policy.due(writer.log_since_snapshot, live) {
                self.snapshot_in_background(writer);
            }
            self.announce(Event::DirectoryHead { seq });
            Metrics::add(&self.metrics.directory_write_groups, 1);
            Metrics::add(&self.metrics.directory_writes, accepted.len() as u64);
        }
        let mut ops = ops.into_iter();
        for (done, count) in accepted {
            let _ = done.send(Ok(ops.by_ref().take(count).collect()));
        }
    }

    /// Applies `ops` in log order, a slice of about [`APPLY_SLICE_ITEMS`] at a time, letting
    /// any reader waiting for the directory (a push evaluating its audience) in between.
    /// Answers the live accounts after them.
    fn apply_in_slices(&self, ops: &[DirOp], known: &[Option<KnownAccounts>]) -> u64 {
        let mut directory = self.directory.write();
        let mut start = 0;
        let mut items = 0;
        for (n, op) in ops.iter().enumerate() {
            items += op_items(op);
            if items >= APPLY_SLICE_ITEMS || n + 1 == ops.len() {
                directory.apply_all_known(&ops[start..=n], &known[start..=n]);
                start = n + 1;
                items = 0;
                if start < ops.len() {
                    RwLockWriteGuard::bump(&mut directory);
                }
            }
        }
        directory.live().len()
    }

    /// Logs `ops` after the last write applied here and answers their head. When another
    /// node logged first, its writes are applied and these go after them: directory writes are
    /// intents (import, delete, add, remove, set), valid in any order, and every node applies
    /// the one log in its one order, so numbers and bitmaps come out the same everywhere.
    fn append(&self, writer: &mut WriterState, ops: &[DirOp]) -> Result<u64, StoreError> {
        let app = self.sdkappid();
        let mut conflicts = 0;
        loop {
            match self.store.append_dir_ops(app, writer.last_seq, ops) {
                Err(StoreError::Conflict(why)) if conflicts < MAX_APPEND_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(app, %why, "another node wrote first; catching up");
                    self.catch_up(writer)?;
                }
                appended => return appended,
            }
        }
    }

    /// Applies the writes others logged up to `seq` (at least), if this node is behind.
    /// Blocking; waits for at most the group being committed.
    pub(super) fn catch_up_to(&self, seq: u64) {
        if self.covered_seq.load(Ordering::Acquire) >= seq {
            return;
        }
        let mut writer = self.writer.lock();
        if writer.last_seq >= seq {
            return;
        }
        if let Err(error) = self.catch_up(&mut writer) {
            warn!(app = self.sdkappid(), %error, "cannot read the directory writes of other nodes; will retry at the next announcement");
        }
    }

    /// Applies every write logged after the last one applied here; if the log no longer
    /// reaches back that far, starts again from the stored snapshot.
    pub(super) fn catch_up(&self, writer: &mut WriterState) -> Result<(), StoreError> {
        let app = self.sdkappid();
        let read = {
            let mut directory = self.directory.write();
            self.store
                .read_dir_ops(app, writer.last_seq, &mut |seq, op| {
                    directory.apply(&op);
                    writer.last_seq = seq;
                    writer.log_since_snapshot += log_weight(&op);
                })
        };
        let read = match read {
            Err(StoreError::Conflict(why)) => {
                warn!(app, %why, "this node fell behind the log's horizon; loading the directory snapshot again");
                let loaded = super::snapshots::load_directory(app, &*self.store)?;
                *self.directory.write() = loaded.directory;
                writer.last_seq = loaded.last_seq;
                writer.log_since_snapshot = loaded.replayed_log;
                Ok(())
            }
            read => read,
        };
        self.covered_seq
            .fetch_max(writer.last_seq, Ordering::AcqRel);
        read
    }
}

/// The (account, tag or value) items of a write: what applying it costs, roughly.
fn op_items(op: &DirOp) -> usize {
    match op {
        DirOp::Import { accounts } | DirOp::Delete { accounts } => accounts.len(),
        DirOp::RemoveAllTags { accounts } => accounts.len(),
        DirOp::AddTags { users } | DirOp::RemoveTags { users } => {
            users.iter().map(|user| user.tags.len().max(1)).sum()
        }
        DirOp::SetAttrs { users } => users.iter().map(|user| user.values.len().max(1)).sum(),
        DirOp::RemoveAttrs { users } => users.iter().map(|user| user.slots.len().max(1)).sum(),
        DirOp::SetAttrNames { names } => names.len(),
        DirOp::SetAttrKinds { kinds } => kinds.len(),
    }
}
#[cfg(test)]
mod shared_store_tests {
    use super::super::snapshots::SnapshotPolicy;
    use super::*;
    use crate::config::AppConfig;
    use crate::directory::UserTags;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// Two apps' façades on two handles of one store: two nodes, without a bus between them.
    fn node(dir: &std::path::Path, snapshot_every_write: bool) -> Tenant {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        let mut tenant = Tenant::load(AppConfig::new(1, "key"), store, Default::default()).unwrap();
        if snapshot_every_write {
            tenant.snapshot_policy = SnapshotPolicy {
                min_log_bytes: 1,
                log_bytes_per_account: 0,
            };
        }
        tenant
    }

    fn import_and_tag(tenant: &Tenant, name: &str, tag: &str) {
        let (name, tag) = (name.to_owned(), tag.to_owned());
        tenant
            .write_directory(|_| {
                Ok(vec![
                    DirOp::Import {
                        accounts: vec![name.clone()],
                    },
                    DirOp::AddTags {
                        users: vec![UserTags {
                            account: name,
                            tags: vec![tag],
                        }],
                    },
                ])
            })
            .unwrap();
    }

    #[test]
    fn writes_of_two_nodes_interleave_in_one_log_and_both_end_with_the_same_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (node(dir.path(), false), node(dir.path(), false));
        for n in 0..10 {
            // Each node writes with a stale head half of the time: the store refuses, the node
            // catches up with the other's writes and logs its own after them.
            import_and_tag(&a, &format!("a{n}"), "from-a");
            import_and_tag(&b, &format!("b{n}"), "from-b");
        }
        a.catch_up_to(u64::MAX);
        let numbers = |tenant: &Tenant| {
            (0..10)
                .flat_map(|n| [format!("a{n}"), format!("b{n}")])
                .map(|name| tenant.read(|d| d.account_number(&name)).unwrap())
                .collect::<Vec<u32>>()
        };
        assert_eq!(numbers(&a), numbers(&b));
        for tenant in [&a, &b] {
            assert_eq!(tenant.read(|d| d.tags_of("b9")), ["from-b"]);
            assert_eq!(tenant.read(|d| d.tags_of("a0")), ["from-a"]);
        }
        assert_eq!(a.writer.lock().last_seq, b.writer.lock().last_seq);
        // A third node started now loads the same.
        let c = node(dir.path(), false);
        assert_eq!(numbers(&c), numbers(&a));
    }

    #[test]
    fn a_node_behind_the_logs_horizon_loads_the_snapshot_again() {
        let dir = tempfile::tempdir().unwrap();
        let (busy, idle) = (node(dir.path(), true), node(dir.path(), false));
        import_and_tag(&idle, "first", "t");
        // Two snapshots by the busy node cut the log past where the idle node stands.
        for n in 0..20 {
            import_and_tag(&busy, &format!("u{n}"), "t");
            if let Some(thread) = busy.writer.lock().background_snapshot.take() {
                thread.join().unwrap();
            }
        }
        idle.catch_up_to(u64::MAX);
        assert_eq!(idle.read(|d| d.tags_of("u19")), ["t"]);
        assert_eq!(
            idle.read(|d| d.account_number("u19")),
            busy.read(|d| d.account_number("u19"))
        );
        assert_eq!(idle.writer.lock().last_seq, busy.writer.lock().last_seq);
    }
}

#[cfg(test)]
mod group_tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config::AppConfig;
    use crate::directory::{Condition, UserAttrSlots, UserAttrValues, UserTags};
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// Tags an account may hold in these tests: low, so that groups meet the cap.
    const CAP: usize = 4;

    /// A request as the REST handlers make them: validated against the directory (as the
    /// writes ahead of it leave it), all or nothing.
    #[derive(Debug, Clone)]
    enum Request {
        Import(Vec<String>),
        Delete(Vec<String>),
        AddTags(Vec<(String, Vec<String>)>),
        RemoveTags(Vec<(String, Vec<String>)>),
        RemoveAllTags(Vec<String>),
        SetAttrNames(Vec<(u8, String)>),
        SetAttrs(Vec<(String, Vec<(String, String)>)>),
        RemoveAttrs(Vec<(String, Vec<String>)>),
    }

    fn rejected(info: String) -> Error {
        Error::rejected(1, info)
    }

    fn user_tags(users: Vec<(String, Vec<String>)>) -> Vec<UserTags> {
        users
            .into_iter()
            .map(|(account, tags)| UserTags { account, tags })
            .collect()
    }

    fn slot(d: &Ahead, name: &str) -> Result<u8, Error> {
        d.attr_slot(name)
            .ok_or_else(|| rejected(format!("no attribute {name}")))
    }

    /// The checks of `api::{accounts, tags, attrs}`, on the [`Ahead`] view.
    fn build(request: Request) -> AheadBuild {
        Box::new(move |d: &Ahead| match request {
            Request::Import(mut accounts) => {
                accounts.retain(|a| !d.is_live(a));
                accounts.dedup();
                Ok(if accounts.is_empty() {
                    vec![]
                } else {
                    vec![DirOp::Import { accounts }]
                })
            }
            Request::Delete(accounts) => {
                let live: Vec<String> = accounts.into_iter().filter(|a| d.is_live(a)).collect();
                Ok(if live.is_empty() {
                    vec![]
                } else {
                    vec![DirOp::Delete { accounts: live }]
                })
            }
            Request::AddTags(users) => {
                let most = d.most_tags_held();
                for (account, _) in &users {
                    let tags: std::collections::BTreeSet<&String> = users
                        .iter()
                        .filter(|(a, _)| a == account)
                        .flat_map(|(_, tags)| tags)
                        .collect();
                    if most + tags.len() <= CAP {
                        continue;
                    }
                    let total = d.tag_count(account)
                        + tags.iter().filter(|t| !d.holds_tag(account, t)).count();
                    if total > CAP {
                        return Err(rejected(format!("{account} would hold {total} tags")));
                    }
                }
                Ok(vec![DirOp::AddTags {
                    users: user_tags(users),
                }])
            }
            Request::RemoveTags(users) => Ok(vec![DirOp::RemoveTags {
                users: user_tags(users),
            }]),
            Request::RemoveAllTags(accounts) => Ok(vec![DirOp::RemoveAllTags { accounts }]),
            Request::SetAttrNames(names) => {
                let mut after = d.attr_names();
                after.extend(names.iter().cloned());
                let mut seen = BTreeMap::new();
                for (slot, name) in &after {
                    if let Some(other) = seen.insert(name, slot) {
                        return Err(rejected(format!("{name} names {other} and {slot}")));
                    }
                }
                Ok(vec![DirOp::SetAttrNames { names }])
            }
            Request::SetAttrs(users) => {
                let users = users
                    .into_iter()
                    .map(|(account, values)| {
                        let values = values
                            .into_iter()
                            .map(|(name, value)| Ok((slot(d, &name)?, value)))
                            .collect::<Result<_, Error>>()?;
                        Ok(UserAttrValues { account, values })
                    })
                    .collect::<Result<_, Error>>()?;
                Ok(vec![DirOp::SetAttrs { users }])
            }
            Request::RemoveAttrs(users) => {
                let users = users
                    .into_iter()
                    .map(|(account, names)| {
                        let slots = names
                            .iter()
                            .map(|name| slot(d, name))
                            .collect::<Result<_, Error>>()?;
                        Ok(UserAttrSlots { account, slots })
                    })
                    .collect::<Result<_, Error>>()?;
                Ok(vec![DirOp::RemoveAttrs { users }])
            }
        })
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let account = "[a-e]";
        let tags = prop::collection::vec("t[0-5]", 1..4);
        let users = prop::collection::vec((account, tags), 1..4);
        let attr = "n[0-3]";
        prop_oneof![
            2 => prop::collection::vec(account, 1..3).prop_map(Request::Import),
            1 => prop::collection::vec(account, 1..3).prop_map(Request::Delete),
            4 => users.clone().prop_map(Request::AddTags),
            2 => users.prop_map(Request::RemoveTags),
            1 => prop::collection::vec(account, 1..3).prop_map(Request::RemoveAllTags),
            1 => prop::collection::vec((0u8..3, attr), 1..3).prop_map(Request::SetAttrNames),
            2 => prop::collection::vec((account, prop::collection::vec((attr, "v[0-2]"), 1..3)), 1..3)
                .prop_map(Request::SetAttrs),
            1 => prop::collection::vec((account, prop::collection::vec(attr, 1..3)), 1..3)
                .prop_map(Request::RemoveAttrs),
        ]
    }

    fn open(dir: &std::path::Path) -> Tenant {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        Tenant::load(AppConfig::new(1, "key"), store, Default::default()).unwrap()
    }

    impl Tenant {
        /// Commits `builds` as one group, as if they all arrived while another was committed.
        fn write_together(&self, builds: Vec<AheadBuild>) -> Vec<Result<(), Error>> {
            let answers: Vec<_> = builds
                .into_iter()
                .map(|build| {
                    let build = Build::Ahead(build);
                    let (done, answer) = oneshot::channel();
                    self.queue.state.lock().waiting.push(Queued {
                        build,
                        known: None,
                        done,
                    });
                    answer
                })
                .collect();
            assert!(!std::mem::replace(
                &mut self.queue.state.lock().writing,
                true
            ));
            self.write_groups();
            answers
                .into_iter()
                .map(|answer| answer.blocking_recv().unwrap().map(drop))
                .collect()
        }
    }

    /// What a client could tell of the directory: per name its number, liveness, tags and
    /// values; the attribute names; a few audiences.
    fn state(tenant: &Tenant) -> String {
        tenant.read(|d| {
            let mut out = format!("names {:?}\n", d.attr_names());
            for name in ["a", "b", "c", "d", "e"] {
                let mut tags = d.tags_of(name);
                tags.sort();
                out += &format!(
                    "{name}: {:?} live {} tags {tags:?} attrs {:?}\n",
                    d.account_number(name),
                    d.is_live(name),
                    d.attrs_of(name)
                );
            }
            for condition in [
                Condition::All,
                Condition::Tags {
                    and: vec![],
                    or: vec!["t0".into(), "t1".into()],
                    not: vec!["t2".into()],
                },
                Condition::Attrs {
                    and: vec![],
                    or: vec![(0, "v0".into()), (1, "v1".into())],
                },
            ] {
                out += &format!("{condition:?}: {:?}\n", d.audience(&condition));
            }
            out
        })
    }

    fn outcome(result: &Result<(), Error>) -> String {
        match result {
            Ok(()) => "ok".into(),
            Err(error) => error.to_string(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Requests committed in groups of any make-up answer and end as the same requests
        /// committed one at a time in their order of arrival, in memory and in the log.
        #[test]
        fn grouped_writes_end_as_the_same_writes_one_by_one(
            requests in prop::collection::vec(arb_request(), 1..40),
            cuts in prop::collection::vec(1usize..8, 1..40),
        ) {
            let (one_dir, grouped_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (one, grouped) = (open(one_dir.path()), open(grouped_dir.path()));
            let alone: Vec<String> = requests
                .iter()
                .map(|r| outcome(&one.write_directory(build(r.clone()))))
                .collect();
            let mut together = Vec::new();
            let mut rest = requests.as_slice();
            for &cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (group, after) = rest.split_at(cut.min(rest.len()));
                rest = after;
                let builds = group.iter().cloned().map(build).collect();
                together.extend(grouped.write_together(builds).iter().map(outcome));
            }
            prop_assert_eq!(&together, &alone);
            prop_assert_eq!(state(&grouped), state(&one));
            // What was logged replays to the same directory.
            drop(grouped);
            prop_assert_eq!(state(&open(grouped_dir.path())), state(&one));

            // All queued at once, taken `cuts[0]` at a time: each group is validated and
            // logged while the one before it is applied.
            let overlapped_dir = tempfile::tempdir().unwrap();
            let mut overlapped = open(overlapped_dir.path());
            overlapped.queue.max_group = cuts[0];
            let builds = requests.iter().cloned().map(build).collect();
            let answers: Vec<String> =
                overlapped.write_together(builds).iter().map(outcome).collect();
            prop_assert_eq!(&answers, &alone);
            prop_assert_eq!(state(&overlapped), state(&one));
            drop(overlapped);
            prop_assert_eq!(state(&open(overlapped_dir.path())), state(&one));
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_group_writer_runs_on_a_thread_of_its_own_below_the_others() {
        let nice_here =
            || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tenant = Arc::new(open(dir.path()));
        let before = nice_here();
        let (seen, saw) = std::sync::mpsc::channel();
        tenant
            .write(move |_| {
                let thread = std::thread::current().name().map(str::to_owned);
                seen.send((thread, nice_here())).unwrap();
                Ok(vec![DirOp::Import {
                    accounts: vec!["a".into()],
                }])
            })
            .await
            .unwrap();
        let (thread, nice) = saw.recv().unwrap();
        assert_eq!(thread.as_deref(), Some("crier-dir-writer"));
        assert!(nice >= WRITER_NICE.max(before), "writer at nice {nice}");
        assert_eq!(nice_here(), before, "the caller's priority is its own");
        assert!(tenant.read(|d| d.is_live("a")));
    }

    #[test]
    fn concurrent_writers_are_committed_in_groups_and_all_applied() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = Arc::new(open(dir.path()));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let tenant = Arc::clone(&tenant);
                std::thread::spawn(move || {
                    for n in 0..50 {
                        let account = format!("w{w}-{n}");
                        let request =
                            Request::AddTags(vec![(account.clone(), vec![format!("t{w}")])]);
                        tenant.write_directory(build(request)).unwrap();
                        // Acknowledged means visible.
                        assert_eq!(tenant.read(|d| d.tags_of(&account)), [format!("t{w}")]);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        for w in 0..8 {
            let tag = Condition::Tags {
                and: vec![format!("t{w}")],
                or: vec![],
                not: vec![],
            };
            // Tagged, never imported: counted among the holders of the tag, not the audience.
            assert!(tenant
                .read(|d| (0..50).all(|n| d.holds_tag(&format!("w{w}-{n}"), &format!("t{w}")))));
            assert!(tenant.read(|d| d.audience(&tag)).is_empty());
        }
        assert_eq!(tenant.writer.lock().last_seq, 400);
        let groups = tenant
            .metrics
            .directory_write_groups
            .load(Ordering::Relaxed);
        assert_eq!(tenant.metrics.directory_writes.load(Ordering::Relaxed), 400);
        assert!(
            groups < 400,
            "eight writers waiting on each other share groups: {groups}"
        );
        drop(tenant);
        let reopened = open(dir.path());
        assert_eq!(reopened.read(|d| d.tags_of("w7-49")), ["t7"]);
    }
}
