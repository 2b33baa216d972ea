//! The open sessions of one app, by account number, with a bitmap of who is online so a push
//! reaches `audience AND online` without looking at anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use tokio::sync::Notify;

use super::conn::{Conn, Pushed};
use crate::bus::PresenceSummary;

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

/// What the fan-out and kicks reach a session by.
pub struct SessionLink {
    pub conn: Arc<Conn>,
    pub close: CloseSignal,
    /// Why the session was kicked, shown in the `Kicked` frame.
    pub kick_reason: Mutex<String>,
}

#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub platform: String,
    pub link: Arc<SessionLink>,
}

#[derive(Default)]
struct Registry {
    by_account: HashMap<u32, Vec<SessionHandle>>,
    online: RoaringBitmap,
    /// Of every session here, for this node's heartbeat.
    summary: PresenceSummary,
}

/// What a fan-out did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FanOut {
    pub delivered: u64,
    pub too_slow: u64,
    /// The accounts with a session the frame went to, when asked for (delivery events,
    /// `timpush` statistics and traces).
    pub reached: RoaringBitmap,
}

impl std::ops::AddAssign for FanOut {
    fn add_assign(&mut self, other: FanOut) {
        self.delivered += other.delivered;
        self.too_slow += other.too_slow;
        self.reached |= other.reached;
    }
}

/// What a fan-out writes and what it keeps track of.
struct Write<'a> {
    frame: &'a Bytes,
    too_slow_code: u16,
    stop: &'a AtomicBool,
    track_reached: bool,
}

/// Below this many accounts a push is written by one thread; above, by `writers` threads.
const SESSIONS_PER_EXTRA_WRITER: usize = 256;
/// Accounts written to per hold of the registry.
const ACCOUNTS_PER_HOLD: usize = 256;

#[derive(Default)]
pub struct Sessions {
    registry: RwLock<Registry>,
}

impl Sessions {
    pub fn register(&self, account: u32, session: SessionHandle) {
        let mut registry = self.registry.write();
        registry.summary.add(account, session.id, &session.platform);
        registry
            .by_account
            .entry(account)
            .or_default()
            .push(session);
        registry.online.insert(account);
    }

    pub fn unregister(&self, account: u32, session_id: u64) {
        let mut registry = self.registry.write();
        let Registry {
            by_account,
            summary,
            ..
        } = &mut *registry;
        let Some(sessions) = by_account.get_mut(&account) else {
            return;
        };
        sessions.retain(|s| {
            let leaving = s.id == session_id;
            if leaving {
                summary.remove(account, s.id, &s.platform);
            }
            !leaving
        });
        if sessions.is_empty() {
            registry.by_account.remove(&account);
            registry.online.remove(account);
        }
    }

    /// Writes `frame` (a whole WebSocket frame, shared by the sessions it waits in) to every
    /// open session of the accounts in `recipients` (see [`Sessions::online_among`]; an account
    /// gone since has none left), on up to `writers` threads. A session with too much waiting
    /// already is closed with `too_slow_code`; it catches up on its next login. Once `stop` is
    /// set (the push was revoked), the writers stop within one batch of accounts. With
    /// `track_reached`, the result names the accounts reached.
    /// Heavy for big audiences: call it off the async runtime.
    pub fn fan_out(
        &self,
        recipients: &RoaringBitmap,
        frame: &Bytes,
        too_slow_code: u16,
        writers: usize,
        stop: &AtomicBool,
        track_reached: bool,
    ) -> FanOut {
        let count = recipients.len() as usize;
        let writers = writers.clamp(1, 1 + count / SESSIONS_PER_EXTRA_WRITER);
        let write = Write {
            frame,
            too_slow_code,
            stop,
            track_reached,
        };
        if writers == 1 {
            return self.write_to(recipients.iter(), &write);
        }
        let share = count.div_ceil(writers);
        std::thread::scope(|scope| {
            let others: Vec<_> = (1..writers)
                .map(|part| {
                    let accounts = recipients.iter().skip(part * share).take(share);
                    let write = &write;
                    scope.spawn(move || self.write_to(accounts, write))
                })
                .collect();
            let mut result = self.write_to(recipients.iter().take(share), &write);
            for other in others {
                result += other.join().expect("a fan-out writer does not panic");
            }
            result
        })
    }

    /// Writes `frame` to the sessions of `accounts`, holding the registry (shared) for a few
    /// hundred accounts at a time: sessions are reached in place, with no reference taken per
    /// session (an atomic increment on a cold cache line each, a sixth of a push's CPU at 19k
    /// sessions), and a login or logout waits at most for one such batch.
    fn write_to(&self, accounts: impl Iterator<Item = u32>, write: &Write<'_>) -> FanOut {
        let mut result = FanOut::default();
        let mut accounts = accounts.peekable();
        while accounts.peek().is_some() && !write.stop.load(Ordering::Relaxed) {
            let registry = self.registry.read();
            for account in accounts.by_ref().take(ACCOUNTS_PER_HOLD) {
                for session in registry.by_account.get(&account).into_iter().flatten() {
                    let link = &session.link;
                    match link.conn.push(write.frame) {
                        Pushed::Written | Pushed::Queued => {
                            result.delivered += 1;
                            if write.track_reached {
                                result.reached.insert(account);
                            }
                        }
                        Pushed::TooSlow => {
                            // Later pushes skip it: it is closed and catches up when it logs in.
                            link.conn.stop_pushes();
                            link.close.close(write.too_slow_code);
                            result.too_slow += 1;
                        }
                        // The session is ending and will unregister itself.
                        Pushed::Gone => {}
                    }
                }
            }
        }
        result
    }

    /// Closes every session of `account` with `code`; answers how many there were.
    pub fn close_account(&self, account: u32, code: u16, reason: &str) -> usize {
        let registry = self.registry.read();
        let sessions = registry
            .by_account
            .get(&account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for session in sessions {
            *session.link.kick_reason.lock() = reason.to_owned();
            session.link.close.close(code);
        }
        sessions.len()
    }

    /// Login platforms of the account's open sessions.
    pub fn platforms(&self, account: u32) -> Vec<String> {
        let registry = self.registry.read();
        registry
            .by_account
            .get(&account)
            .into_iter()
            .flatten()
            .map(|s| s.platform.clone())
            .collect()
    }

    /// Who of `accounts` is online now.
    pub fn online_among(&self, accounts: &RoaringBitmap) -> RoaringBitmap {
        accounts & &self.registry.read().online
    }

    /// Who is online now.
    pub fn online(&self) -> RoaringBitmap {
        self.registry.read().online.clone()
    }

    /// Every open session, as (account, session id, platform).
    pub fn sessions(&self) -> Vec<(u32, u64, String)> {
        let registry = self.registry.read();
        registry
            .by_account
            .iter()
            .flat_map(|(account, sessions)| {
                sessions
                    .iter()
                    .map(|s| (*account, s.id, s.platform.clone()))
            })
            .collect()
    }

    /// How many sessions are open, and their digest.
    pub fn summary(&self) -> PresenceSummary {
        self.registry.read().summary
    }

    pub fn is_online(&self, account: u32) -> bool {
        self.registry.read().online.contains(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::conn::{text_frame, ConnIo};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A registered session on a real socket, and the client end of it.
    async fn session(listener: &TcpListener, id: u64) -> (SessionHandle, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let conn = ConnIo::new(accepted.unwrap().0).0;
        conn.accept_pushes_held();
        conn.release(Vec::new());
        let handle = SessionHandle {
            id,
            platform: "Web".into(),
            link: Arc::new(SessionLink {
                conn,
                close: CloseSignal::default(),
                kick_reason: Mutex::new(String::new()),
            }),
        };
        (handle, client.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_split_over_writers_reaches_every_session_of_the_audience_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sessions = Arc::new(Sessions::default());
        // Enough sessions for a second writer; account 7 has two, odd accounts are left out.
        let accounts: Vec<u32> = (0..SESSIONS_PER_EXTRA_WRITER as u32 * 2 + 10).collect();
        let (mut clients, mut links) = (Vec::new(), Vec::new());
        for (id, &account) in accounts.iter().enumerate() {
            let (handle, client) = session(&listener, id as u64).await;
            links.push(Arc::clone(&handle.link));
            sessions.register(account, handle);
            clients.push((account, client));
        }
        let (handle, client) = session(&listener, u64::MAX).await;
        links.push(Arc::clone(&handle.link));
        sessions.register(7, handle);
        clients.push((7, client));
        let audience: RoaringBitmap = accounts.iter().copied().filter(|a| a % 2 == 0).collect();

        let frame = text_frame("{\"Type\":\"Push\"}");
        let (wire, registry) = (frame.clone(), Arc::clone(&sessions));
        let fanned = tokio::task::spawn_blocking(move || {
            registry.fan_out(&audience, &wire, 4008, 2, &AtomicBool::new(false), true)
        })
        .await
        .unwrap();
        let in_audience = clients.iter().filter(|(a, _)| a % 2 == 0).count();
        assert_eq!(
            fanned,
            FanOut {
                delivered: in_audience as u64,
                too_slow: 0,
                reached: accounts.iter().copied().filter(|a| a % 2 == 0).collect(),
            }
        );
        for link in &links {
            link.conn.drain().await.unwrap();
        }
        for (account, client) in clients.iter_mut().filter(|(a, _)| a % 2 == 0) {
            let mut got = vec![0u8; frame.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame, "account {account}");
        }
        // Everything written has arrived by now (loopback delivers within the write).
        for (account, client) in &mut clients {
            let mut more = [0u8; 1];
            let outcome = client.try_read(&mut more);
            assert!(
                matches!(&outcome, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "account {account}: {outcome:?}"
            );
        }
    }
}
