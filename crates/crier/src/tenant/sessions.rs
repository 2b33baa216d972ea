//! What the gateway and the account commands ask of an app about its users: logging a
//! session in and out, what waits for it, acknowledgements, kicks, deletions, online status
//! and devices. Effects on other sessions are announced on the bus ([`Tenant::handle`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crier_proto::protocol::close;
use parking_lot::Mutex;

use super::Tenant;
use crate::bus::Event;
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
        let _order = tenant.presence_order.lock();
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
        {
            let _order = self.presence_order.lock();
            self.delivery.sessions.register(account, handle.clone());
            self.announce(Event::Presence {
                account,
                session: handle.id,
                platform: handle.platform.clone(),
                online: true,
            });
        }
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
