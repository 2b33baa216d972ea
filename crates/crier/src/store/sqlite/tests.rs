use super::schema::VERSION;
use super::*;
use crate::directory::{snapshot, Directory};
use crate::store::conformance::StoreFactory;
use crate::store::notify::NotifyStore;

/// A data directory of its own per case.
pub struct SqliteFactory(tempfile::TempDir);

impl StoreFactory for SqliteFactory {
    fn create() -> Self {
        SqliteFactory(tempfile::tempdir().unwrap())
    }

    fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(self.0.path()).unwrap())
    }
}

crate::store_conformance_suite!(SqliteFactory);

#[test]
fn commits_reach_the_database_file_by_the_background_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(100);
    let store = SqliteStore::open_checkpointing_every(dir.path(), every).unwrap();
    store
        .append_dir_ops(
            1,
            0,
            &[DirOp::Import {
                accounts: vec!["ann".into()],
            }],
        )
        .unwrap();
    let waited = std::time::Instant::now();
    while log_rows_in_database_file(dir.path()) == 0 {
        assert!(
            waited.elapsed() < every * 50,
            "the commit never left the write-ahead log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rows of the directory log in the database file alone, without the write-ahead log
/// (`immutable` reads only the file): 0 before the first checkpoint, when the file does not
/// even hold the tables.
fn log_rows_in_database_file(dir: &std::path::Path) -> i64 {
    let uri = format!("file:{}?immutable=1", dir.join("crier.db").display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let file = Connection::open_with_flags(&uri, flags).unwrap();
    file.query_row("SELECT count(*) FROM dir_log", [], |row| row.get(0))
        .unwrap_or(0)
}

/// Appends log records `seqs` to app 1, one import of 100 long names (~9 KB) each.
fn append_bulk_records(store: &SqliteStore, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let accounts = (0..100)
            .map(|k| format!("account-{seq}-{k:0>80}"))
            .collect();
        store
            .append_dir_ops(1, seq, &[DirOp::Import { accounts }])
            .unwrap();
    }
}

#[test]
fn megabytes_of_writes_wake_the_checkpointer_before_its_period() {
    let dir = tempfile::tempdir().unwrap();
    // A period no test waits for: only the writes can bring the checkpoint.
    let store =
        SqliteStore::open_checkpointing_every(dir.path(), Duration::from_secs(3600)).unwrap();
    // About 9 KB a record: 1,000 of them pass CHECKPOINT_AFTER_BYTES (8 MiB) once.
    append_bulk_records(&store, 0..1_000);
    let waited = std::time::Instant::now();
    while log_rows_in_database_file(dir.path()) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "9 MB of writes left the write-ahead log unchecked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn under_steady_commits_the_log_restarts_before_it_reaches_the_inline_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // The checkpointer runs all the time; commits follow each other without a pause, so a
    // passive checkpoint alone seldom catches up with the last of them.
    let store =
        SqliteStore::open_checkpointing_every(dir.path(), Duration::from_millis(1)).unwrap();
    let wal = dir.path().join("crier.db-wal");
    let mut largest = 0;
    // About 110 MB of records, past the restart point (64 MiB), short of the inline
    // checkpoint (200 MiB).
    for seq in (0..12_000).step_by(100) {
        append_bulk_records(&store, seq..seq + 100);
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    assert!(
        largest < 96 << 20,
        "the write-ahead log grew to {largest} bytes without restarting"
    );
}

#[test]
fn a_snapshot_cuts_the_log_behind_the_previous_one_whatever_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let log_rows = || {
        store
            .connection
            .lock()
            .query_row(
                "SELECT count(*), min(seq) FROM dir_log WHERE app = 1",
                [],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?)),
            )
            .unwrap()
    };
    let empty = Directory::default();
    let save = |seq: u64| {
        store
            .save_dir_snapshot(1, seq, &mut |out| snapshot::write(&empty, out))
            .unwrap()
    };
    // Many more rows than one cut's transaction takes.
    append_bulk_records(&store, 0..100);
    save(60);
    assert_eq!(
        log_rows(),
        (100, Some(1)),
        "the first snapshot keeps the log"
    );
    append_bulk_records(&store, 100..150);
    save(130);
    assert_eq!(
        log_rows(),
        (90, Some(61)),
        "only what the first snapshot holds goes"
    );
    let mut read = Vec::new();
    store
        .read_dir_ops(1, 60, &mut |seq, _| read.push(seq))
        .unwrap();
    assert_eq!(read, (61..=150).collect::<Vec<u64>>());
    assert!(matches!(
        store.read_dir_ops(1, 59, &mut |_, _| {}),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn a_file_that_is_not_a_database_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("crier.db"), vec![b'x'; 8192]).unwrap();
    let opened = SqliteStore::open(dir.path());
    assert!(
        matches!(opened, Err(StoreError::Corrupt(_))),
        "{:?}",
        opened.err()
    );
}

/// `tests/fixtures/store-v4` was written by the schema-4 code (global directory seqs, the
/// log cut at the snapshot): app 1 logged 1, 2, 4 and 6 with a snapshot at 4, app 2 logged
/// 3 and 5; one push of app 1 with a job at cursor 1, an ack, counts and a device.
#[test]
fn a_schema_4_data_directory_opens_and_continues_its_logs() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v4");
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("snapshots")).unwrap();
    for file in ["crier.db", "snapshots/app-1.snap"] {
        fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let version: usize = store
        .connection
        .lock()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, VERSION);

    let mut stored = store.load_dir_snapshot(1).unwrap().unwrap();
    assert_eq!(stored.seq, 4);
    let mut directory = snapshot::read(&mut stored.reader, |_, _| {}).unwrap();
    let mut replayed = Vec::new();
    store
        .read_dir_ops(1, 4, &mut |seq, op| {
            directory.apply(&op);
            replayed.push(seq);
        })
        .unwrap();
    assert_eq!(replayed, [6]);
    assert_eq!(directory.tags_of("ann"), ["early", "late"]);
    assert_eq!(directory.tags_of("bob"), ["early"]);
    assert!(matches!(
        store.read_dir_ops(1, 0, &mut |_, _| {}),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.dir_head(1).unwrap(), 6);
    let import = DirOp::Import {
        accounts: vec!["cy".into()],
    };
    assert_eq!(
        store
            .append_dir_ops(1, 6, std::slice::from_ref(&import))
            .unwrap(),
        7
    );

    let mut other = Directory::default();
    let mut seqs = Vec::new();
    store
        .read_dir_ops(2, 0, &mut |seq, op| {
            other.apply(&op);
            seqs.push(seq);
        })
        .unwrap();
    assert_eq!(
        (seqs.as_slice(), other.tags_of("zed")),
        ([3, 5].as_slice(), vec!["z".to_owned()])
    );
    assert_eq!(store.dir_head(2).unwrap(), 5);
    assert_eq!(store.append_dir_ops(2, 5, &[import]).unwrap(), 6);

    let pushes = store.pushes_since(1, 0).unwrap();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].audience, [0, 1].into_iter().collect());
    assert_eq!(
        store.load_acks(1).unwrap()["1_1000_7_1"],
        [0].into_iter().collect()
    );
    assert_eq!(
        store.load_delivery_counts(1).unwrap()["1_1000_7_1"],
        DeliveryCounts {
            online: 1,
            offline: 1
        }
    );
    assert_eq!(store.load_devices(1).unwrap().len(), 1);
    let job = store.claim_job(1, "local", 2_000, 30_000).unwrap().unwrap();
    assert_eq!((job.task_id.as_str(), job.cursor), ("1_1000_7_1", 1));
    // Stored without a fingerprint, it is nobody's retry.
    let rules = PushRules {
        day_start_ms: 0,
        daily_quota: 10,
        min_interval_ms: 0,
        retry_window_ms: 1_000,
    };
    let mut retry = pushes[0].clone();
    retry.task_id = "1_1500_7_2".into();
    retry.created_ms = 1_500;
    assert_eq!(
        store.try_accept_push(&retry, 0, &rules, None).unwrap(),
        PushAcceptance::Accepted
    );
}
