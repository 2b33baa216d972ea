//! Accepting and revoking pushes, the façade's side: the audience and notification targets
//! from this node's state, the announcement once stored. Reading the requests and the limits
//! are [`crate::push`]'s.

use std::borrow::Cow;
use std::sync::Arc;

use crier_proto::codes;
use crier_proto::echo::echo;
use crier_proto::protocol::ServerFrame;
use roaring::RoaringBitmap;
use serde_json::value::RawValue;
use serde_json::Value;
use tracing::info;

use super::Tenant;
use crate::bus::Event;
use crate::clock::now_ms;
use crate::config::AppConfig;
use crate::delivery::conn::text_frame;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::notify::shape::wants_notifications;
use crate::push::accept::{accept, Accepted};
use crate::push::timpush::{self, REVOKE_WINDOW_MS};
use crate::push::validate::parse_push;
use crate::push::PushRequest;
use crate::store::RevokeOutcome;

/// What a `timpush/batch` answers.
pub struct BatchAccepted {
    pub task_id: String,
    /// Named recipients that are no account (each 70107 in `ErrorList`).
    pub unknown: Vec<String>,
}

/// Who a request goes to: a condition evaluated when it is accepted, or named accounts.
enum Audience {
    OfCondition,
    Named(RoaringBitmap),
}

impl Tenant {
    /// Accepts an `im_push` from admin `caller`: validates it, fixes the audience, and has
    /// the store apply the limits and keep the record before answering its TaskId.
    pub async fn push(self: &Arc<Self>, body: &Value, caller: &str) -> Result<String, Error> {
        let request = self.read(|directory| parse_push(body, directory, &self.config))?;
        self.accept_request(request, Audience::OfCondition, caller)
            .await
    }

    /// Accepts a `timpush/push` (either flavour); `sched_task_id` when a scheduled task runs
    /// it. Shares the quota and the interval with `im_push`.
    pub async fn timpush_push(
        self: &Arc<Self>,
        body: &Value,
        caller: &str,
        sched_task_id: Option<u64>,
    ) -> Result<String, Error> {
        let mut request =
            self.read(|directory| timpush::parse_push(body, directory, &self.config))?;
        request.sched_task_id = sched_task_id;
        self.accept_request(request, Audience::OfCondition, caller)
            .await
    }

    /// Checks a `timpush/push` body as it would be accepted now, without accepting it (a
    /// scheduled task's content); whether pushing is enabled is left to the run, like the
    /// quota (`timpush.md` §9.1).
    pub fn check_timpush_push(&self, body: &Value) -> Result<(), Error> {
        let config = self.config_with_push_enabled();
        self.read(|directory| timpush::parse_push(body, directory, &config))
            .map(drop)
    }

    /// Accepts a `timpush/batch`: outside the quota and the interval, at most
    /// `batch_calls_per_second` calls a second on this node.
    pub async fn batch(
        self: &Arc<Self>,
        body: &Value,
        caller: &str,
        sched_task_id: Option<u64>,
    ) -> Result<BatchAccepted, Error> {
        let mut batch = self.parse_batch(body, &self.config)?;
        if !self
            .timpush_rates
            .batch
            .try_take(now_ms(), self.config.batch_calls_per_second)
        {
            return Err(Error::rejected(
                codes::PUSH_TOO_FREQUENT,
                format!(
                    "at most {} batch calls per second (batch_calls_per_second): retry in a second",
                    self.config.batch_calls_per_second
                ),
            ));
        }
        batch.request.sched_task_id = sched_task_id;
        let task_id = self
            .accept_request(batch.request, Audience::Named(batch.recipients), caller)
            .await?;
        Ok(BatchAccepted {
            task_id,
            unknown: batch.unknown,
        })
    }

    /// Checks a `timpush/batch` body as it would be accepted now, without accepting it;
    /// whether pushing is enabled is left to the run, as for [`Tenant::check_timpush_push`].
    pub fn check_batch(&self, body: &Value) -> Result<(), Error> {
        let config = self.config_with_push_enabled();
        self.parse_batch(body, &config).map(drop)
    }

    fn config_with_push_enabled(&self) -> Cow<'_, AppConfig> {
        if self.config.push_enabled {
            Cow::Borrowed(&self.config)
        } else {
            Cow::Owned(AppConfig {
                push_enabled: true,
                ..self.config.clone()
            })
        }
    }

    fn parse_batch(
        &self,
        body: &Value,
        config: &AppConfig,
    ) -> Result<timpush::BatchRequest, Error> {
        self.read_accounts(|directory, accounts| {
            timpush::parse_batch(body, directory, config, |name| accounts.number(name))
        })
    }

    async fn accept_request(
        self: &Arc<Self>,
        request: PushRequest,
        audience: Audience,
        caller: &str,
    ) -> Result<String, Error> {
        // Bitmap algebra over millions of accounts takes milliseconds, and storing the push
        // blocks: both run on one blocking thread, which also hands the push to the fan-out.
        // Every hop between threads is a wake-up that costs 0.1-0.5 ms on an idle 2-core
        // machine, and this is the path from the REST call to the first client.
        let tenant = Arc::clone(self);
        let caller = caller.to_owned();
        tokio::task::spawn_blocking(move || {
            // One acceptance at a time on this node, so pushes are announced (and fanned
            // out) in the order the store accepted them.
            let _accepting = tenant.accepting.lock();
            if tenant.bus.spans_nodes() {
                // Writes acknowledged on other nodes are in the audience.
                let head = tenant.store.dir_head(tenant.sdkappid())?;
                tenant.catch_up_to(head);
            }
            let now = now_ms();
            let audience = match audience {
                Audience::OfCondition => {
                    tenant.read(|directory| directory.audience(&request.condition))
                }
                Audience::Named(accounts) => accounts,
            };
            let accepted = accept(
                &*tenant.store,
                &tenant.config,
                request,
                &caller,
                audience,
                now,
                |record| {
                    // Who gets a notification is fixed now, like the audience: offline
                    // accounts with devices.
                    wants_notifications(record).then(|| {
                        let online = tenant.online();
                        tenant.notify.devices.targets(&record.audience, &online)
                    })
                },
            )?;
            let (record, notifying) = match accepted {
                Accepted::Retry { task_id } => return Ok(task_id),
                Accepted::New { record, notifying } => (record, notifying),
            };
            let task_id = record.task_id.clone();
            info!(app = tenant.sdkappid(), %task_id, kind = record.kind.as_str(), audience = record.audience.len(), lifetime_secs = record.lifetime_secs, "push accepted");
            tenant.announce(Event::PushAccepted(Arc::from(record)));
            Metrics::add(&tenant.metrics.pushes_accepted, 1);
            if notifying {
                tenant.notify.wake();
            }
            Ok(task_id)
        })
        .await?
    }

    /// `timpush/revoke`: stops a push of the `timpush` family started less than 24 h ago.
    /// Answers once this node's sessions of its audience have the `Revoke` queued (after
    /// anything of the push they were sent); other nodes do the same when they hear of it.
    pub async fn revoke(self: &Arc<Self>, body: &Value) -> Result<(), Error> {
        let request = timpush::parse_revoke(body)?;
        if !self.timpush_rates.revoke.try_take(now_ms(), 1) {
            return Err(Error::rejected(
                codes::REVOKE_TOO_FREQUENT,
                "at most one revoke per second: retry in a second",
            ));
        }
        let tenant = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let app = tenant.sdkappid();
            let unknown = || {
                Error::rejected(
                    codes::REVOKE_UNKNOWN_TASK,
                    format!(
                        "this app has no push with TaskId {} that can be revoked (only v4/timpush/push tasks can)",
                        echo(&request.task_id)
                    ),
                )
            };
            let mut record = tenant
                .store
                .push_record(app, &request.task_id)?
                .filter(|record| record.kind.revocable())
                .ok_or_else(unknown)?;
            let already = || {
                Error::rejected(
                    codes::REVOKE_ALREADY_REVOKED,
                    format!("push {} is revoked already", echo(&request.task_id)),
                )
            };
            if record.revoked_ms.is_some() {
                return Err(already());
            }
            let now = now_ms();
            if now.saturating_sub(record.created_ms) > REVOKE_WINDOW_MS {
                return Err(Error::rejected(
                    codes::REVOKE_TOO_LATE,
                    "a push can be revoked for 24 hours after it started; this one is older",
                ));
            }
            // A push that kept its message is withdrawn by dropping the kept copies; one that
            // kept nothing can only be covered up, by the notification that overwrites it.
            if record.lifetime_secs == 0 && request.offline_push_info.is_none() {
                return Err(Error::rejected(
                    codes::REVOKE_NEEDS_OFFLINE_PUSH_INFO,
                    "this push kept nothing to withdraw: give the OfflinePushInfo that overwrites its notification",
                ));
            }
            match tenant.store.revoke_push(
                app,
                &request.task_id,
                now,
                request.offline_push_info.as_deref(),
            )? {
                RevokeOutcome::Revoked => {}
                RevokeOutcome::AlreadyRevoked { .. } => return Err(already()),
                RevokeOutcome::Unknown => return Err(unknown()),
            }
            record.revoked_ms = Some(now);
            record.revoke_info = request.offline_push_info;
            let record = Arc::new(record);
            let (done, queued) = std::sync::mpsc::channel();
            tenant
                .delivery
                .revoke(Arc::clone(&record), revoke_frame(&record), Some(done));
            let _ = queued.recv();
            info!(app, task_id = %record.task_id, "push revoked");
            tenant.announce(Event::PushRevoked(record));
            // Its notifications already shown are to be overwritten.
            tenant.notify.wake();
            Ok(())
        })
        .await?
    }

    /// A revoke made on this node or another: this node's part of it.
    pub(super) fn apply_revoke(&self, record: Arc<crate::store::PushRecord>) {
        let frame = revoke_frame(&record);
        self.delivery.revoke(record, frame, None);
    }
}

/// The `Revoke` frame of a revoked push.
fn revoke_frame(record: &crate::store::PushRecord) -> bytes::Bytes {
    let frame = ServerFrame::Revoke {
        task_id: record.task_id.clone(),
        offline_push_info: record
            .revoke_info
            .as_deref()
            .and_then(|text| RawValue::from_string(text.to_owned()).ok()),
    };
    text_frame(&serde_json::to_string(&frame).expect("frames serialize"))
}
