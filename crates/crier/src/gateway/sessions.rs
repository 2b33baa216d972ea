//! The open sessions of one app, by account number, with a bitmap of who is online so a push
//! reaches `audience AND online` without looking at anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use roaring::RoaringBitmap;
use tokio::sync::{mpsc, Notify};

/// Tells a session task to end, and with which close code.
#[derive(Default)]
pub struct CloseSignal {
    code: AtomicU16,
    notify: Notify,
}

impl CloseSignal {
    pub fn close(&self, code: u16) {
        // The first reason wins: a kicked session that is also slow is still kicked.
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_one();
        }
    }

    pub async fn closed(&self) -> u16 {
        loop {
            let code = self.code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub platform: String,
    pub outbound: mpsc::Sender<Utf8Bytes>,
    pub close: Arc<CloseSignal>,
    /// Why the session was kicked, shown in the `Kicked` frame.
    pub kick_reason: Arc<Mutex<String>>,
}

#[derive(Default)]
struct Registry {
    by_account: HashMap<u32, Vec<SessionHandle>>,
    online: RoaringBitmap,
}

/// What a fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    pub delivered: u64,
    pub too_slow: u64,
}

#[derive(Default)]
pub struct Sessions {
    registry: Mutex<Registry>,
}

impl Sessions {
    pub fn register(&self, account: u32, session: SessionHandle) {
        let mut registry = self.registry.lock();
        registry
            .by_account
            .entry(account)
            .or_default()
            .push(session);
        registry.online.insert(account);
    }

    pub fn unregister(&self, account: u32, session_id: u64) {
        let mut registry = self.registry.lock();
        let Some(sessions) = registry.by_account.get_mut(&account) else {
            return;
        };
        sessions.retain(|s| s.id != session_id);
        if sessions.is_empty() {
            registry.by_account.remove(&account);
            registry.online.remove(account);
        }
    }

    /// Queues `frame` on every session of every account in `audience AND online`. A session
    /// whose queue is full is closed with `too_slow_code`; it catches up on its next login.
    /// Heavy for big audiences: call it off the async runtime.
    pub fn fan_out(
        &self,
        audience: &RoaringBitmap,
        frame: &Utf8Bytes,
        too_slow_code: u16,
    ) -> FanOut {
        let registry = self.registry.lock();
        let mut result = FanOut::default();
        for account in &(audience & &registry.online) {
            for session in registry.by_account.get(&account).into_iter().flatten() {
                match session.outbound.try_send(frame.clone()) {
                    Ok(()) => result.delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        session.close.close(too_slow_code);
                        result.too_slow += 1;
                    }
                    // The session is ending and will unregister itself.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        result
    }

    /// Closes every session of `account` with `code`; answers how many there were.
    pub fn close_account(&self, account: u32, code: u16, reason: &str) -> usize {
        let registry = self.registry.lock();
        let sessions = registry
            .by_account
            .get(&account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for session in sessions {
            *session.kick_reason.lock() = reason.to_owned();
            session.close.close(code);
        }
        sessions.len()
    }

    /// Login platforms of the account's open sessions.
    pub fn platforms(&self, account: u32) -> Vec<String> {
        let registry = self.registry.lock();
        registry
            .by_account
            .get(&account)
            .into_iter()
            .flatten()
            .map(|s| s.platform.clone())
            .collect()
    }

    /// Who is online now.
    pub fn online(&self) -> RoaringBitmap {
        self.registry.lock().online.clone()
    }

    pub fn is_online(&self, account: u32) -> bool {
        self.registry.lock().online.contains(account)
    }
}
