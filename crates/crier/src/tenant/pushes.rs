//! Accepting an `im_push`: the façade's side (the audience, the store, the announcement);
//! reading the request and the rate limits are [`crate::push`]'s.

use std::sync::Arc;

use serde_json::Value;
use tracing::info;

use super::Tenant;
use crate::bus::Event;
use crate::clock::now_ms;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::notify::shape::wants_notifications;
use crate::push::validate::parse_push;
use crate::push::PushRecord;
use crate::store::StoreError;

impl Tenant {
    /// Accepts an `im_push` from admin `caller`: validates it, applies the limits, fixes the
    /// audience and stores the push record durably before answering its TaskId.
    pub async fn push(self: &Arc<Self>, body: &Value, caller: &str) -> Result<String, Error> {
        let request = self.read(|directory| parse_push(body, directory, &self.config))?;
        if !self.config.push_enabled {
            return Err(Error::rejected(
                crier_proto::codes::PUSH_DISABLED,
                "pushing to all users is not enabled for this app (push_enabled = false)",
            ));
        }
        let mut limits = self.pushes.lock().await;
        let now = now_ms();
        if let Some(task_id) = limits.retry_of(now, request.msg_random, request.fingerprint) {
            return Ok(task_id);
        }
        limits.check(now, &self.config)?;

        // Bitmap algebra over millions of accounts takes milliseconds, and storing the push
        // blocks: both run on one blocking thread, which also hands the push to the fan-out.
        // Every hop between threads is a wake-up that costs 0.1-0.5 ms on an idle 2-core
        // machine, and this is the path from the REST call to the first client.
        let tenant = Arc::clone(self);
        let caller = caller.to_owned();
        let (msg_random, fingerprint) = (request.msg_random, request.fingerprint);
        let accepted = tokio::task::spawn_blocking(move || {
            let audience = tenant.read(|directory| directory.audience(&request.condition));
            let record = PushRecord {
                app: tenant.sdkappid(),
                task_id: format!(
                    "{}_{}_{}_{}",
                    tenant.sdkappid(),
                    now,
                    request.msg_random,
                    rand::random::<u32>()
                ),
                created_ms: now,
                lifetime_secs: request.lifetime_secs,
                from_account: request.from_account.unwrap_or(caller),
                msg_random: request.msg_random,
                msg_body: request.msg_body,
                offline_push_info: request.offline_push_info,
                condition: request.condition_text,
                audience,
            };
            // Who gets a notification is fixed now, like the audience: offline accounts with
            // devices.
            let targets = wants_notifications(&record)
                .then(|| {
                    let online = tenant.online();
                    tenant.notify.devices.targets(&record.audience, &online)
                })
                .filter(|targets| !targets.is_empty());
            tenant.store.insert_push(&record, targets.as_ref())?;
            let accepted = Accepted {
                task_id: record.task_id.clone(),
                audience: record.audience.len(),
                lifetime_secs: record.lifetime_secs,
                notifying: targets.is_some(),
            };
            tenant.announce(Event::PushAccepted(Arc::new(record)));
            Ok::<_, StoreError>(accepted)
        })
        .await??;
        limits.record(now, msg_random, fingerprint, accepted.task_id.clone());
        Metrics::add(&self.metrics.pushes_accepted, 1);
        info!(app = self.sdkappid(), task_id = %accepted.task_id, audience = accepted.audience, lifetime_secs = accepted.lifetime_secs, "push accepted");
        if accepted.notifying {
            self.notify.wake();
        }
        Ok(accepted.task_id)
    }
}

/// What the REST answer and the log need of a push once it is stored.
struct Accepted {
    task_id: String,
    audience: u64,
    lifetime_secs: u32,
    notifying: bool,
}
