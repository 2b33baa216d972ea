//! Accepting an `im_push`, the façade's side: the audience and notification targets from
//! this node's state, the announcement once stored. Reading the request and the limits are
//! [`crate::push`]'s.

use std::sync::Arc;

use serde_json::Value;
use tracing::info;

use super::Tenant;
use crate::bus::Event;
use crate::clock::now_ms;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::notify::shape::wants_notifications;
use crate::push::accept::{accept, Accepted};
use crate::push::validate::parse_push;

impl Tenant {
    /// Accepts an `im_push` from admin `caller`: validates it, fixes the audience, and has
    /// the store apply the limits and keep the record before answering its TaskId.
    pub async fn push(self: &Arc<Self>, body: &Value, caller: &str) -> Result<String, Error> {
        let request = self.read(|directory| parse_push(body, directory, &self.config))?;
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
            let audience = tenant.read(|directory| directory.audience(&request.condition));
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
            info!(app = tenant.sdkappid(), %task_id, audience = record.audience.len(), lifetime_secs = record.lifetime_secs, "push accepted");
            tenant.announce(Event::PushAccepted(Arc::new(record)));
            Metrics::add(&tenant.metrics.pushes_accepted, 1);
            if notifying {
                tenant.notify.wake();
            }
            Ok(task_id)
        })
        .await?
    }
}
