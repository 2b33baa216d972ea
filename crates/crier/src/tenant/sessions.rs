//! What the gateway and the account commands ask of an app about its users: logging a
//! session in and out, what waits for it, acknowledgements, kicks, deletions, online status
//! and devices. Effects on other sessions are announced on the bus ([`Tenant::handle`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crier_proto::protocol::close;
use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;

use super::Tenant;
use crate::bus::{Event, NodeId};
use crate::delivery::conn::Conn;
use crate::delivery::presence::{CloseSignal, SessionHandle, SessionLink};
use crate::directory::DirOp;
use crate::error::Error;
use crate::notify::devices::{Device, RegisterError};

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// A logged-in session. Dropping it logs the session out.
pub struct SessionGuard {
    tenant: Arc<Tenant>,
    account: u32,
    handle: SessionHandle,
}

impl SessionGuard {
    pub fn account(&self) -> u32 {
        self.account
    }

    /// Completes when the session is to end (kicked, deleted, too slow), with the close code.
    pub fn closed(&self) -> impl std::future::Future<Output = u16> + Send + 'static {
        let link = Arc::clone(&self.handle.link);
        async move { link.close.closed().await }
    }

    /// Why the session was kicked, for the `Kicked` frame.
    pub fn kick_reason(&self) -> String {
        self.handle.link.kick_reason.lock().clone()
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let tenant = &self.tenant;
        tenant
            .delivery
            .sessions
            .unregister(self.account, self.handle.id);
        tenant.announce(Event::Presence {
            account: self.account,
            session: self.handle.id,
            platform: std::mem::take(&mut self.handle.platform),
            online: false,
        });
    }
}

impl Tenant {
    /// Logs a session of `identifier` in on `conn`, registering the account on its first
    /// login. From now on pushes reach the session (held on `conn` until it releases them).
    pub async fn log_in(
        self: &Arc<Self>,
        identifier: &str,
        platform: String,
        conn: Arc<Conn>,
    ) -> Result<SessionGuard, Error> {
        // A first login registers the account: from then on it is one of "all users".
        let name = identifier.to_owned();
        self.write(move |d| {
            Ok(if d.is_live(&name) {
                vec![]
            } else {
                vec![DirOp::Import {
                    accounts: vec![name],
                }]
            })
        })
        .await?;
        let account = self
            .read(|d| d.account_number(identifier))
            .ok_or_else(|| Error::Internal("a registered account has no number".into()))?;
        let handle = SessionHandle {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            platform,
            link: Arc::new(SessionLink {
                conn,
                close: CloseSignal::default(),
                kick_reason: Mutex::new(String::new()),
            }),
        };
        self.delivery.sessions.register(account, handle.clone());
        self.announce(Event::Presence {
            account,
            session: handle.id,
            platform: handle.platform.clone(),
            online: true,
        });
        Ok(SessionGuard {
            tenant: Arc::clone(self),
            account,
            handle,
        })
    }

    /// The frames of the kept pushes `account` has not acknowledged, oldest first, counted
    /// as delivered.
    pub fn catch_up_frames(&self, account: u32, now_ms: u64) -> Vec<Bytes> {
        self.delivery.pending_for(account, now_ms)
    }

    /// Records that `account` has these pushes; unknown or foreign TaskIds are ignored.
    pub fn acknowledge(&self, account: u32, task_ids: &[String]) {
        self.delivery.ack(account, task_ids);
    }

    /// The live account's number, or `None` for an account not imported (or deleted).
    pub fn live_account(&self, identifier: &str) -> Option<u32> {
        self.read(|d| {
            d.account_number(identifier)
                .filter(|_| d.is_live(identifier))
        })
    }

    /// Ends every session of the account, on every node: they get `Kicked` and close with
    /// 4003.
    pub fn kick(&self, account: u32, reason: &str) {
        self.announce(Event::Kick {
            account,
            reason: reason.to_owned(),
        });
    }

    pub(super) fn close_sessions(&self, account: u32, reason: &str) {
        self.delivery
            .sessions
            .close_account(account, close::KICKED, reason);
    }

    /// Deletes the live ones of `accounts`; answers, for each, whether it was live. Their
    /// sessions are closed and their devices forgotten, on every node. What was kept for them
    /// is not acknowledged on their behalf (reports would count it as read): a deleted
    /// account's number is retired, never live again.
    pub async fn delete_accounts(
        self: &Arc<Self>,
        accounts: Vec<String>,
    ) -> Result<Vec<bool>, Error> {
        // Numbers are read before the write: deleting retires them.
        let numbers: Vec<Option<u32>> = accounts.iter().map(|a| self.live_account(a)).collect();
        let names = accounts.clone();
        self.write(move |d| {
            let live: Vec<String> = names.into_iter().filter(|a| d.is_live(a)).collect();
            Ok(if live.is_empty() {
                vec![]
            } else {
                vec![DirOp::Delete { accounts: live }]
            })
        })
        .await?;
        let deleted: Vec<(u32, String)> = accounts
            .into_iter()
            .zip(&numbers)
            .filter_map(|(account, number)| Some(((*number)?, account)))
            .collect();
        let tenant = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            for (number, name) in deleted {
                tenant.notify.devices.forget_account(number, &name)?;
                tenant.announce(Event::AccountDeleted { account: number });
            }
            Ok::<_, Error>(())
        })
        .await??;
        Ok(numbers.iter().map(Option::is_some).collect())
    }

    /// The platforms of the account's open sessions, on every node.
    pub fn online_platforms(&self, account: u32) -> Vec<String> {
        let mut platforms = self.delivery.sessions.platforms(account);
        platforms.extend(self.remote_presence.platforms(account));
        platforms
    }

    /// Registers a notification device for `account` (named `name`). Blocking.
    pub fn register_device(
        &self,
        account: u32,
        name: &str,
        device: Device,
    ) -> Result<(), RegisterError> {
        self.notify
            .devices
            .register(account, name, device.clone())?;
        self.announce(Event::DeviceRegistered { account, device });
        Ok(())
    }

    /// Forgets a device `account` gives up (not one another account holds). Blocking.
    pub fn unregister_device(&self, account: u32, device: &Device) -> Result<(), RegisterError> {
        if self.notify.devices.unregister_own(account, device)? {
            self.announce(Event::DeviceUnregistered {
                device: device.clone(),
            });
        }
        Ok(())
    }
}

/// A session on another node: the node, and the session's id there.
type RemoteSession = (NodeId, u64);

/// Sessions open on other nodes, as their presence announcements told, and when each node
/// was last heard of.
#[derive(Default)]
pub(super) struct RemotePresence {
    by_account: RwLock<HashMap<u32, Vec<(RemoteSession, String)>>>,
    last_seen_ms: RwLock<HashMap<NodeId, u64>>,
}

impl RemotePresence {
    pub(super) fn node_seen(&self, node: &NodeId, now_ms: u64) {
        self.last_seen_ms.write().insert(Arc::clone(node), now_ms);
    }

    /// Forgets the sessions of nodes not heard of since `silent_since_ms` (stopped, or cut
    /// off: their clients reconnect elsewhere).
    pub(super) fn forget_silent_nodes(&self, silent_since_ms: u64) {
        let mut last_seen = self.last_seen_ms.write();
        let silent: Vec<NodeId> = last_seen
            .iter()
            .filter(|(_, seen)| **seen < silent_since_ms)
            .map(|(node, _)| Arc::clone(node))
            .collect();
        if silent.is_empty() {
            return;
        }
        for node in &silent {
            last_seen.remove(node);
            tracing::warn!(%node, "a node went silent; forgetting its sessions");
        }
        self.by_account.write().retain(|_, sessions| {
            sessions.retain(|((node, _), _)| !silent.contains(node));
            !sessions.is_empty()
        });
    }

    /// Accounts with a session on another node.
    pub(super) fn online(&self) -> RoaringBitmap {
        self.by_account.read().keys().copied().collect()
    }

    pub(super) fn update(
        &self,
        account: u32,
        session: RemoteSession,
        platform: &str,
        online: bool,
    ) {
        self.last_seen_ms
            .write()
            .entry(Arc::clone(&session.0))
            .or_insert_with(crate::clock::now_ms);
        let mut by_account = self.by_account.write();
        let sessions = by_account.entry(account).or_default();
        let known = sessions.iter().position(|(s, _)| *s == session);
        match (online, known) {
            (true, None) => sessions.push((session, platform.to_owned())),
            (false, Some(at)) => {
                sessions.swap_remove(at);
            }
            // A repeat of what is known already.
            (true, Some(_)) | (false, None) => {}
        }
        if sessions.is_empty() {
            by_account.remove(&account);
        }
    }

    fn platforms(&self, account: u32) -> Vec<String> {
        self.by_account
            .read()
            .get(&account)
            .map(|sessions| sessions.iter().map(|(_, p)| p.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sessions_come_and_go_per_session_and_repeats_change_nothing() {
        let presence = RemotePresence::default();
        let (a, b): (NodeId, NodeId) = ("a".into(), "b".into());
        let session = |node: &NodeId, id| (Arc::clone(node), id);
        presence.update(7, session(&a, 1), "iOS", true);
        presence.update(7, session(&b, 1), "Web", true);
        presence.update(7, session(&a, 2), "iOS", true);
        // A repeat (a node that started asked for every session again) adds nothing.
        presence.update(7, session(&a, 1), "iOS", true);
        let mut platforms = presence.platforms(7);
        platforms.sort();
        assert_eq!(platforms, ["Web", "iOS", "iOS"]);
        presence.update(7, session(&a, 2), "iOS", false);
        presence.update(7, session(&a, 2), "iOS", false);
        presence.update(7, session(&b, 1), "Web", false);
        assert_eq!(presence.platforms(7), ["iOS"]);
        presence.update(7, session(&a, 1), "iOS", false);
        assert!(presence.platforms(7).is_empty());
        assert!(presence.by_account.read().is_empty());
    }
}
