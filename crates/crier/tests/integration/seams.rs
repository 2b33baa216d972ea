//! What the seams of issue 12 promise, seen from outside: background work that survives a
//! panic, and failures inside the server that reach clients without their detail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier::directory::DirOp;
use crier::store::callbacks::{CallbackClaim, CallbackStore, Claimed};
use crier::store::notify::{
    JobProgress, Lease, NotifyStore, StoredDevice, StoredJob, StoredOverwrite,
};
use crier::store::sched::{
    NewSchedTask, SchedChange, SchedOrder, SchedOutcome, SchedStore, SchedTask,
};
use crier::store::sqlite::SqliteStore;
use crier::store::{
    DeliveryCounts, MarkStage, PushAcceptance, PushCounts, PushId, PushMark, PushRecord, PushRules,
    PushSummary, RevokeOutcome, Store, StoreError, StoredSnapshot,
};
use crier_client::{Connection, Event};
use crier_proto::protocol::ClientFrame;
use roaring::RoaringBitmap;

use crate::harness::*;

async fn next_event(connection: &mut Connection) -> Option<Event> {
    tokio::time::timeout(Duration::from_secs(3), connection.next_event())
        .await
        .ok()
        .map(Result::unwrap)
}

#[tokio::test]
async fn a_panic_in_the_fan_out_is_counted_and_later_pushes_are_still_delivered() {
    let server = TestServer::start().await;
    let mut alice = Connection::connect(&server.login_options("alice"))
        .await
        .unwrap();

    server.state.tenants[&APP].inject_fan_out_panics(1);
    let lost = server
        .admin()
        .push(text_push(1, "the fan-out panics on this one"))
        .await;
    let delivered = server
        .admin()
        .push(text_push(2, "and delivers this one"))
        .await;

    match next_event(&mut alice).await {
        Some(Event::Push(push)) => assert_eq!(push.task_id, delivered),
        other => panic!("expected the second push, got {other:?}"),
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("crier_background_restarts_total{task=\"fan_out\"} 1"),
        "{metrics}"
    );

    // The push whose fan-out panicked is kept: the next login gets it.
    alice.close().await.unwrap();
    let mut again = Connection::connect(&server.login_options("alice"))
        .await
        .unwrap();
    let mut caught_up = Vec::new();
    while let Some(Event::Push(push)) = next_event(&mut again).await {
        caught_up.push(push.task_id);
        if caught_up.len() == 2 {
            break;
        }
    }
    assert!(caught_up.contains(&lost), "{caught_up:?}");
}

#[tokio::test]
async fn a_kick_by_the_legacy_identifier_field_ends_the_session() {
    let server = TestServer::start().await;
    let mut alice = Connection::connect(&server.login_options("alice"))
        .await
        .unwrap();
    server
        .admin()
        .ok(
            "im_open_login_svc/kick",
            serde_json::json!({"Identifier": "alice"}),
        )
        .await;
    match next_event(&mut alice).await {
        Some(Event::Kicked { .. }) => {}
        other => panic!("expected Kicked, got {other:?}"),
    }
}

/// The embedded store, except that device writes fail with a backend's message while
/// `failing` is set: what a client sees of a store failure.
struct FailingDevices {
    inner: SqliteStore,
    failing: AtomicBool,
}

const BACKEND_TEXT: &str = "sqlite: disk I/O error at /var/lib/crier/crier.db";

impl FailingDevices {
    fn fail(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(BACKEND_TEXT.into()));
        }
        Ok(())
    }
}

impl NotifyStore for FailingDevices {
    fn put_device(
        &self,
        app: u64,
        account: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        self.fail()?;
        self.inner.put_device(app, account, platform, token)
    }
    fn delete_device(&self, app: u64, platform: &str, token: &str) -> Result<bool, StoreError> {
        self.fail()?;
        self.inner.delete_device(app, platform, token)
    }
    fn delete_account_devices(&self, app: u64, account: &str) -> Result<(), StoreError> {
        self.inner.delete_account_devices(app, account)
    }
    fn load_devices(&self, app: u64) -> Result<Vec<StoredDevice>, StoreError> {
        self.inner.load_devices(app)
    }
    fn claim_job(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredJob>, StoreError> {
        self.inner.claim_job(app, node, now_ms, lease_ms)
    }
    fn update_job(
        &self,
        app: u64,
        task_id: &str,
        lease: Lease<'_>,
        progress: JobProgress<'_>,
    ) -> Result<(), StoreError> {
        self.inner.update_job(app, task_id, lease, progress)
    }
    fn release_job(&self, app: u64, task_id: &str, node: &str) -> Result<(), StoreError> {
        self.inner.release_job(app, task_id, node)
    }
    fn unfinished_jobs(&self, app: u64) -> Result<Vec<StoredJob>, StoreError> {
        self.inner.unfinished_jobs(app)
    }
    fn job(&self, app: u64, task_id: &str) -> Result<Option<StoredJob>, StoreError> {
        self.inner.job(app, task_id)
    }
    fn claim_overwrite(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredOverwrite>, StoreError> {
        self.inner.claim_overwrite(app, node, now_ms, lease_ms)
    }
    fn update_overwrite(
        &self,
        app: u64,
        task_id: &str,
        lease: Lease<'_>,
        progress: JobProgress<'_>,
    ) -> Result<(), StoreError> {
        self.inner.update_overwrite(app, task_id, lease, progress)
    }
    fn overwrite(&self, app: u64, task_id: &str) -> Result<Option<StoredOverwrite>, StoreError> {
        self.inner.overwrite(app, task_id)
    }
}

impl CallbackStore for FailingDevices {
    fn enqueue_callbacks(
        &self,
        app: u64,
        events: &[String],
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        self.inner
            .enqueue_callbacks(app, events, now_ms, deadline_ms)
    }
    fn claim_callbacks(&self, app: u64, claim: CallbackClaim<'_>) -> Result<Claimed, StoreError> {
        self.inner.claim_callbacks(app, claim)
    }
    fn delete_callbacks(&self, app: u64, ids: &[u64]) -> Result<(), StoreError> {
        self.inner.delete_callbacks(app, ids)
    }
    fn retry_callbacks(
        &self,
        app: u64,
        node: &str,
        ids: &[u64],
        retry_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.inner.retry_callbacks(app, node, ids, retry_at_ms)
    }
    fn release_callbacks(&self, app: u64, node: Option<&str>) -> Result<u64, StoreError> {
        self.inner.release_callbacks(app, node)
    }
    fn callback_queue_depth(&self, app: u64) -> Result<u64, StoreError> {
        self.inner.callback_queue_depth(app)
    }
}

impl SchedStore for FailingDevices {
    fn add_sched_task(&self, task: &NewSchedTask<'_>) -> Result<u64, StoreError> {
        self.inner.add_sched_task(task)
    }
    fn sched_task(&self, app: u64, task_id: u64) -> Result<Option<SchedTask>, StoreError> {
        self.inner.sched_task(app, task_id)
    }
    fn modify_sched_task(
        &self,
        app: u64,
        task_id: u64,
        sched_at_ms: u64,
        content: &str,
    ) -> Result<SchedChange, StoreError> {
        self.inner
            .modify_sched_task(app, task_id, sched_at_ms, content)
    }
    fn delete_sched_task(&self, app: u64, task_id: u64) -> Result<SchedChange, StoreError> {
        self.inner.delete_sched_task(app, task_id)
    }
    fn sched_tasks_between(
        &self,
        app: u64,
        order: SchedOrder,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<SchedTask>, StoreError> {
        self.inner.sched_tasks_between(app, order, from_ms, to_ms)
    }
    fn next_sched_at(&self, app: u64) -> Result<Option<u64>, StoreError> {
        self.inner.next_sched_at(app)
    }
    fn claim_sched_task(
        &self,
        app: u64,
        lease: Lease<'_>,
    ) -> Result<Option<SchedTask>, StoreError> {
        self.inner.claim_sched_task(app, lease)
    }
    fn finish_sched_task(
        &self,
        app: u64,
        task_id: u64,
        node: &str,
        outcome: SchedOutcome<'_>,
    ) -> Result<(), StoreError> {
        self.inner.finish_sched_task(app, task_id, node, outcome)
    }
    fn release_sched_task(&self, app: u64, task_id: u64, node: &str) -> Result<(), StoreError> {
        self.inner.release_sched_task(app, task_id, node)
    }
    fn sched_task_push(&self, app: u64, sched_task_id: u64) -> Result<Option<String>, StoreError> {
        self.inner.sched_task_push(app, sched_task_id)
    }
}

impl Store for FailingDevices {
    fn dir_head(&self, app: u64) -> Result<u64, StoreError> {
        self.inner.dir_head(app)
    }
    fn append_dir_ops(
        &self,
        app: u64,
        expected_head: u64,
        ops: &[DirOp],
    ) -> Result<u64, StoreError> {
        self.inner.append_dir_ops(app, expected_head, ops)
    }
    fn read_dir_ops(
        &self,
        app: u64,
        after_seq: u64,
        each: &mut dyn FnMut(u64, DirOp),
    ) -> Result<(), StoreError> {
        self.inner.read_dir_ops(app, after_seq, each)
    }
    fn save_dir_snapshot(
        &self,
        app: u64,
        seq: u64,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        self.inner.save_dir_snapshot(app, seq, write)
    }
    fn load_dir_snapshot(&self, app: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        self.inner.load_dir_snapshot(app)
    }
    fn try_accept_push(
        &self,
        push: &PushRecord,
        fingerprint: u64,
        rules: &PushRules,
        notify_targets: Option<&RoaringBitmap>,
    ) -> Result<PushAcceptance, StoreError> {
        self.inner
            .try_accept_push(push, fingerprint, rules, notify_targets)
    }
    fn push_summary(&self, app: u64, task_id: &str) -> Result<Option<PushSummary>, StoreError> {
        self.inner.push_summary(app, task_id)
    }
    fn push_record(&self, app: u64, task_id: &str) -> Result<Option<PushRecord>, StoreError> {
        self.inner.push_record(app, task_id)
    }
    fn pushes_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushRecord>, StoreError> {
        self.inner.pushes_since(app, since_ms)
    }
    fn push_ids_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushId>, StoreError> {
        self.inner.push_ids_since(app, since_ms)
    }
    fn revoke_push(
        &self,
        app: u64,
        task_id: &str,
        now_ms: u64,
        overwrite: Option<&str>,
    ) -> Result<RevokeOutcome, StoreError> {
        self.inner.revoke_push(app, task_id, now_ms, overwrite)
    }
    fn revoked_since(&self, app: u64, since_ms: u64) -> Result<Vec<String>, StoreError> {
        self.inner.revoked_since(app, since_ms)
    }
    fn push_counts(&self, app: u64, since_ms: u64) -> Result<PushCounts, StoreError> {
        self.inner.push_counts(app, since_ms)
    }
    fn append_acks(&self, app: u64, acks: &[(String, RoaringBitmap)]) -> Result<(), StoreError> {
        self.inner.append_acks(app, acks)
    }
    fn load_acks(&self, app: u64) -> Result<HashMap<String, RoaringBitmap>, StoreError> {
        self.inner.load_acks(app)
    }
    fn acks_since(
        &self,
        app: u64,
        after: u64,
    ) -> Result<(u64, Vec<(String, RoaringBitmap)>), StoreError> {
        self.inner.acks_since(app, after)
    }
    fn add_delivery_counts(
        &self,
        app: u64,
        counts: &[(String, DeliveryCounts)],
    ) -> Result<(), StoreError> {
        self.inner.add_delivery_counts(app, counts)
    }
    fn load_delivery_counts(
        &self,
        app: u64,
    ) -> Result<HashMap<String, DeliveryCounts>, StoreError> {
        self.inner.load_delivery_counts(app)
    }
    fn append_marks(
        &self,
        app: u64,
        at_ms: u64,
        marks: &[(String, MarkStage, RoaringBitmap)],
    ) -> Result<(), StoreError> {
        self.inner.append_marks(app, at_ms, marks)
    }
    fn push_marks(&self, app: u64, task_id: &str) -> Result<Vec<PushMark>, StoreError> {
        self.inner.push_marks(app, task_id)
    }
    fn purge_pushes(
        &self,
        app: u64,
        expired_before_ms: u64,
        created_before_ms: u64,
    ) -> Result<u64, StoreError> {
        self.inner
            .purge_pushes(app, expired_before_ms, created_before_ms)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

#[tokio::test]
async fn a_store_failure_during_a_websocket_request_is_a_generic_error_frame() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FailingDevices {
        inner: SqliteStore::open(dir.path()).unwrap(),
        failing: AtomicBool::new(false),
    });
    let server = TestServer::start_on_store(Arc::clone(&store) as _, default_apps()).await;
    let mut alice = Connection::connect(&server.login_options("alice"))
        .await
        .unwrap();
    store.failing.store(true, Ordering::Relaxed);
    alice
        .send(&ClientFrame::RegisterDevice {
            platform: "webhook".into(),
            token: "alice-phone".into(),
        })
        .await
        .unwrap();
    match next_event(&mut alice).await {
        Some(Event::Error { code, info }) => {
            assert_eq!(code, 91000);
            assert!(info.starts_with("internal error (error id "), "{info}");
            assert!(
                !info.contains("sqlite") && !info.contains("/var/lib"),
                "{info}"
            );
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    // The session is still open, and the same frame works once the store does.
    store.failing.store(false, Ordering::Relaxed);
    alice
        .send(&ClientFrame::RegisterDevice {
            platform: "webhook".into(),
            token: "alice-phone".into(),
        })
        .await
        .unwrap();
    alice.send(&ClientFrame::Ping).await.unwrap();
    match next_event(&mut alice).await {
        Some(Event::Pong) => {}
        other => panic!("expected Pong (and no error), got {other:?}"),
    }
}
