//! The bus of a cluster: announcements travel between nodes on NATS, one subject per app
//! (`{prefix}.app.{sdkappid}`).
//!
//! An announcement is handled on the node that makes it at once, on the publishing thread
//! (as [`super::local::LocalBus`] does), then published, in the order made (one task hands
//! them to the NATS client); other nodes handle it when it arrives, in the order it was
//! published, on a blocking thread (a handler may read the store). The order matters to
//! presence: a node's list of its sessions and its heartbeat's summary of them hold for the
//! logins and logouts announced before them. NATS carries only references: a push travels as its TaskId and is read back from
//! the store, which holds everything an announcement refers to before it is made. A lost
//! announcement therefore only delays its effect until the node's periodic look at the store
//! (`tenant::cluster`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::local::LocalBus;
use super::{Announcement, Bus, Event, Handler, NodeId, PresenceSummary};
use crate::notify::devices::Device;
use crate::notify::Provider;
use crate::store::Store;

/// What goes over the wire: an announcement with references instead of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireAnnouncement {
    app: u64,
    node: String,
    event: WireEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    PushAccepted {
        task_id: String,
    },
    PushRevoked {
        task_id: String,
    },
    Kick {
        account: u32,
        reason: String,
    },
    AccountDeleted {
        account: u32,
    },
    Presence {
        account: u32,
        session: u64,
        platform: String,
        online: bool,
    },
    PresenceWanted {
        of: String,
    },
    PresenceList {
        part: u32,
        parts: u32,
        /// (account, session, platform): a third the size of named fields.
        sessions: Vec<(u32, u64, String)>,
    },
    NodeAlive {
        presence: PresenceSummary,
    },
    DeviceRegistered {
        account: u32,
        provider: Provider,
        token: String,
    },
    DeviceUnregistered {
        provider: Provider,
        token: String,
    },
    DirectoryHead {
        seq: u64,
    },
}

impl WireEvent {
    fn of(event: &Event) -> WireEvent {
        match event {
            Event::PushAccepted(record) => WireEvent::PushAccepted {
                task_id: record.task_id.clone(),
            },
            Event::PushRevoked(record) => WireEvent::PushRevoked {
                task_id: record.task_id.clone(),
            },
            Event::Kick { account, reason } => WireEvent::Kick {
                account: *account,
                reason: reason.clone(),
            },
            Event::AccountDeleted { account } => WireEvent::AccountDeleted { account: *account },
            Event::Presence {
                account,
                session,
                platform,
                online,
            } => WireEvent::Presence {
                account: *account,
                session: *session,
                platform: platform.clone(),
                online: *online,
            },
            Event::PresenceWanted { of } => WireEvent::PresenceWanted { of: of.to_string() },
            Event::PresenceList {
                part,
                parts,
                sessions,
            } => WireEvent::PresenceList {
                part: *part,
                parts: *parts,
                sessions: sessions.clone(),
            },
            Event::NodeAlive { presence } => WireEvent::NodeAlive {
                presence: *presence,
            },
            Event::DeviceRegistered { account, device } => WireEvent::DeviceRegistered {
                account: *account,
                provider: device.provider,
                token: device.token.clone(),
            },
            Event::DeviceUnregistered { device } => WireEvent::DeviceUnregistered {
                provider: device.provider,
                token: device.token.clone(),
            },
            Event::DirectoryHead { seq } => WireEvent::DirectoryHead { seq: *seq },
        }
    }
}

/// Announcements made and not yet handed to the NATS client, at most. While NATS is away the
/// client holds what it can, then this fills, then announcements are dropped: each is in the
/// store, or (presence) repaired by the heartbeats.
const WAITING_ANNOUNCEMENTS: usize = 16_384;

/// The client's default waits up to 4 s between attempts to reach NATS again; presence, and
/// the repair of what was lost meanwhile, waits for it.
const RECONNECT_AT_MOST_EVERY: Duration = Duration::from_secs(1);

pub struct NatsBus {
    client: async_nats::Client,
    /// To the task that hands announcements to the client, one at a time, in order.
    outbox: mpsc::Sender<(String, Bytes)>,
    /// Announcements are being dropped (the outbox is full); logged once per episode.
    dropping: AtomicBool,
    prefix: String,
    node: NodeId,
    store: Arc<dyn Store>,
    local: LocalBus,
    runtime: Handle,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot reach NATS at {url}: {reason}")]
pub struct ConnectError {
    url: String,
    reason: String,
}

impl NatsBus {
    /// Connects to the NATS server at `url` (`nats://host:port`). Subjects start with
    /// `prefix`, so several clusters (or tests) can share one NATS server.
    pub async fn connect(
        url: &str,
        prefix: &str,
        node: NodeId,
        store: Arc<dyn Store>,
    ) -> Result<NatsBus, ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("crier {node}"))
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(100) * attempts as u32).min(RECONNECT_AT_MOST_EVERY)
            })
            .connect(url)
            .await
            .map_err(|error| ConnectError {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
        let (outbox, mut waiting) = mpsc::channel::<(String, Bytes)>(WAITING_ANNOUNCEMENTS);
        let publisher = client.clone();
        tokio::spawn(async move {
            while let Some((subject, payload)) = waiting.recv().await {
                if let Err(error) = publisher.publish(subject, payload).await {
                    // The store holds what this announced; other nodes find it there.
                    warn!(%error, "an announcement could not be published; other nodes will find it in the store");
                }
            }
        });
        Ok(NatsBus {
            client,
            outbox,
            dropping: AtomicBool::new(false),
            prefix: prefix.to_owned(),
            node,
            store,
            local: LocalBus::default(),
            runtime: Handle::current(),
        })
    }

    fn subject(&self, app: u64) -> String {
        format!("{}.app.{app}", self.prefix)
    }
}

impl Bus for NatsBus {
    fn publish(&self, announcement: Announcement) {
        let wire = WireAnnouncement {
            app: announcement.app,
            node: announcement.node.to_string(),
            event: WireEvent::of(&announcement.event),
        };
        self.local.publish(announcement);
        let payload = serde_json::to_vec(&wire).expect("announcements serialize");
        match self
            .outbox
            .try_send((self.subject(wire.app), payload.into()))
        {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    info!("announcements are published again");
                }
            }
            Err(_) => {
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    warn!("NATS is not taking announcements; dropping them until it does (other nodes find what they announce in the store)");
                }
            }
        }
    }

    fn spans_nodes(&self) -> bool {
        true
    }

    fn subscribe(&self, app: u64, handler: Handler) {
        self.local.subscribe(app, Arc::clone(&handler));
        let (client, subject) = (self.client.clone(), self.subject(app));
        let (store, node) = (Arc::clone(&self.store), Arc::clone(&self.node));
        self.runtime.spawn(async move {
            let mut messages = match client.subscribe(subject.clone()).await {
                Ok(messages) => messages,
                Err(error) => {
                    warn!(app, %subject, %error, "cannot subscribe to the app's announcements; this node learns of other nodes' work from the store only");
                    return;
                }
            };
            while let Some(message) = messages.next().await {
                let wire: WireAnnouncement = match serde_json::from_slice(&message.payload) {
                    Ok(wire) => wire,
                    Err(error) => {
                        warn!(app, %error, "an announcement could not be read; ignored");
                        continue;
                    }
                };
                if *wire.node == *node || wire.app != app {
                    continue;
                }
                let (store, handler) = (Arc::clone(&store), Arc::clone(&handler));
                // In order: the next announcement waits for this one's handler.
                let handled = tokio::task::spawn_blocking(move || {
                    if let Some(announcement) = hydrate(&*store, wire) {
                        handler(&announcement);
                    }
                })
                .await;
                if let Err(error) = handled {
                    warn!(app, %error, "handling an announcement failed");
                }
            }
            debug!(app, "announcements of the app ended");
        });
    }
}

/// The announcement `wire` refers to, with its push read back from the store. Blocking.
fn hydrate(store: &dyn Store, wire: WireAnnouncement) -> Option<Announcement> {
    let event = match wire.event {
        WireEvent::PushAccepted { task_id } => match store.push_record(wire.app, &task_id) {
            Ok(Some(record)) => Event::PushAccepted(Arc::new(record)),
            Ok(None) => {
                debug!(app = wire.app, %task_id, "an announced push is gone already");
                return None;
            }
            Err(error) => {
                warn!(app = wire.app, %task_id, %error, "an announced push could not be read; the periodic look at the store will find it");
                return None;
            }
        },
        WireEvent::PushRevoked { task_id } => match store.push_record(wire.app, &task_id) {
            Ok(Some(record)) if record.revoked_ms.is_some() => Event::PushRevoked(Arc::new(record)),
            Ok(_) => {
                debug!(app = wire.app, %task_id, "a revoked push is gone already");
                return None;
            }
            Err(error) => {
                warn!(app = wire.app, %task_id, %error, "a revoked push could not be read; the periodic look at the store will find it");
                return None;
            }
        },
        WireEvent::Kick { account, reason } => Event::Kick { account, reason },
        WireEvent::AccountDeleted { account } => Event::AccountDeleted { account },
        WireEvent::Presence {
            account,
            session,
            platform,
            online,
        } => Event::Presence {
            account,
            session,
            platform,
            online,
        },
        WireEvent::PresenceWanted { of } => Event::PresenceWanted { of: of.into() },
        WireEvent::PresenceList {
            part,
            parts,
            sessions,
        } => Event::PresenceList {
            part,
            parts,
            sessions,
        },
        WireEvent::NodeAlive { presence } => Event::NodeAlive { presence },
        WireEvent::DeviceRegistered {
            account,
            provider,
            token,
        } => Event::DeviceRegistered {
            account,
            device: Device { provider, token },
        },
        WireEvent::DeviceUnregistered { provider, token } => Event::DeviceUnregistered {
            device: Device { provider, token },
        },
        WireEvent::DirectoryHead { seq } => Event::DirectoryHead { seq },
    };
    Some(Announcement {
        app: wire.app,
        node: wire.node.into(),
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_travel_as_references() {
        let wire = WireAnnouncement {
            app: 7,
            node: "node-a".into(),
            event: WireEvent::PushAccepted {
                task_id: "7_1_2_3".into(),
            },
        };
        let text = serde_json::to_string(&wire).unwrap();
        assert_eq!(
            text,
            r#"{"app":7,"node":"node-a","event":{"type":"push_accepted","task_id":"7_1_2_3"}}"#
        );
        assert_eq!(
            serde_json::from_str::<WireAnnouncement>(&text).unwrap(),
            wire
        );
    }

    #[test]
    fn presence_travels_as_a_summary_and_compact_lists() {
        let alive = WireEvent::of(&Event::NodeAlive {
            presence: PresenceSummary {
                sessions: 2,
                digest: u64::MAX,
            },
        });
        let list = WireEvent::of(&Event::PresenceList {
            part: 1,
            parts: 3,
            sessions: vec![(7, 12, "iOS".into())],
        });
        let wanted = WireEvent::of(&Event::PresenceWanted {
            of: "node-b".into(),
        });
        let texts = [&alive, &list, &wanted].map(|event| serde_json::to_string(event).unwrap());
        assert_eq!(
            texts,
            [
                r#"{"type":"node_alive","presence":{"sessions":2,"digest":18446744073709551615}}"#,
                r#"{"type":"presence_list","part":1,"parts":3,"sessions":[[7,12,"iOS"]]}"#,
                r#"{"type":"presence_wanted","of":"node-b"}"#,
            ]
        );
        for (text, event) in texts.iter().zip([alive, list, wanted]) {
            assert_eq!(serde_json::from_str::<WireEvent>(text).unwrap(), event);
        }
    }
}
