//! Writes each accepted push to the sessions online for it, in acceptance order.
//!
//! One fan-out thread per app takes the pushes as they are accepted. From a few hundred
//! recipients up, helper threads (one per further core, started once with it) write shares of
//! the audience beside it; spawning a writer per push cost a thread start before the first
//! write. The push's own thread does not write: it hands the push over and returns, so the
//! REST answer does not wait for a core behind the writes.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use bytes::Bytes;
use roaring::RoaringBitmap;
use tracing::warn;

use super::TaskStats;
use crate::gateway::sessions::{FanOut, Sessions};
use crate::metrics::Metrics;

/// Below this many accounts a push is written by one thread; each further this many, one
/// more helper joins (up to one per core).
const ACCOUNTS_PER_EXTRA_WRITER: usize = 256;

pub struct FanOutJob {
    /// The push's audience AND online, as it was accepted.
    pub recipients: RoaringBitmap,
    pub frame: Bytes,
    pub stats: Arc<TaskStats>,
}

/// One share of a push for a helper: the `part`th of `parts` slices of its recipients.
struct Share {
    job: Arc<FanOutJob>,
    part: usize,
    parts: usize,
    done: Sender<FanOut>,
}

pub struct FanOuts {
    jobs: Sender<FanOutJob>,
}

impl FanOuts {
    /// Starts the fan-out thread and `helpers` helper threads (one per core beyond the first
    /// is right).
    pub fn start(
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        too_slow_code: u16,
        helpers: usize,
    ) -> FanOuts {
        let writers = Writers {
            helpers: (1..=helpers)
                .filter_map(|index| start_helper(index, Arc::clone(&sessions), too_slow_code))
                .collect(),
            sessions,
            too_slow_code,
        };
        let (jobs, accepted) = channel::<FanOutJob>();
        std::thread::Builder::new()
            .name("crier-fan-out".into())
            .spawn(move || {
                for job in accepted {
                    let written = writers.write(job);
                    Metrics::add(&metrics.deliveries_online, written.delivered);
                    Metrics::add(&metrics.slow_consumer_closes, written.too_slow);
                }
            })
            .expect("the fan-out thread starts");
        FanOuts { jobs }
    }

    /// Queues `job` behind the pushes accepted before it.
    pub fn enqueue(&self, job: FanOutJob) {
        if self.jobs.send(job).is_err() {
            warn!("the fan-out thread is gone; online sessions get this push on their next login");
        }
    }
}

fn start_helper(
    index: usize,
    sessions: Arc<Sessions>,
    too_slow_code: u16,
) -> Option<Sender<Share>> {
    let (sender, shares) = channel::<Share>();
    let started = std::thread::Builder::new()
        .name(format!("crier-fan-out-{index}"))
        .spawn(move || {
            for share in shares {
                let written = write_share(
                    &sessions,
                    &share.job,
                    share.part,
                    share.parts,
                    too_slow_code,
                );
                let _ = share.done.send(written);
            }
        });
    match started {
        Ok(_) => Some(sender),
        Err(error) => {
            warn!(%error, "could not start a fan-out helper; pushes are written by fewer threads");
            None
        }
    }
}

struct Writers {
    sessions: Arc<Sessions>,
    too_slow_code: u16,
    helpers: Vec<Sender<Share>>,
}

impl Writers {
    fn write(&self, job: FanOutJob) -> FanOut {
        let count = job.recipients.len() as usize;
        let parts = (1 + self.helpers.len()).min(1 + count / ACCOUNTS_PER_EXTRA_WRITER);
        let job = Arc::new(job);
        let (done, results) = channel();
        // Helpers first: they wake while this thread writes its own share.
        let mut written = FanOut::default();
        let mut handed = 0;
        for (index, helper) in self.helpers[..parts - 1].iter().enumerate() {
            let share = Share {
                job: Arc::clone(&job),
                part: index + 1,
                parts,
                done: done.clone(),
            };
            match helper.send(share) {
                Ok(()) => handed += 1,
                // A helper that died leaves its share to this thread.
                Err(returned) => {
                    let share = returned.0;
                    written +=
                        write_share(&self.sessions, &job, share.part, parts, self.too_slow_code);
                }
            }
        }
        written += write_share(&self.sessions, &job, 0, parts, self.too_slow_code);
        drop(done);
        for _ in 0..handed {
            match results.recv() {
                Ok(share) => written += share,
                Err(_) => break,
            }
        }
        job.stats
            .online
            .fetch_add(written.delivered, Ordering::Relaxed);
        written
    }
}

/// Writes the `part`th of `parts` equal slices of the job's recipients.
fn write_share(
    sessions: &Sessions,
    job: &FanOutJob,
    part: usize,
    parts: usize,
    too_slow_code: u16,
) -> FanOut {
    let share = (job.recipients.len() as usize).div_ceil(parts);
    let accounts = job.recipients.iter().skip(part * share).take(share);
    sessions.write_to(accounts, &job.frame, too_slow_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::conn::text_frame;
    use crate::gateway::sessions::tests::session;
    use crate::gateway::sessions::SessionLink;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    struct Clients {
        by_account: Vec<(u32, TcpStream)>,
        links: Vec<Arc<SessionLink>>,
    }

    /// One session for each of `accounts`, and a second one for account 7.
    async fn connect(sessions: &Sessions, accounts: &[u32]) -> Clients {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut clients = Clients {
            by_account: Vec::new(),
            links: Vec::new(),
        };
        for (id, &account) in accounts.iter().chain([7].iter()).enumerate() {
            let (handle, client) = session(&listener, id as u64).await;
            clients.links.push(Arc::clone(&handle.link));
            sessions.register(account, handle);
            clients.by_account.push((account, client));
        }
        clients
    }

    impl Clients {
        /// Reads `frames`, in order, from every session of the accounts `chosen` picks.
        async fn read(&mut self, chosen: impl Fn(u32) -> bool, frames: &[&Bytes]) {
            for link in &self.links {
                link.conn.drain().await.unwrap();
            }
            for (account, client) in self.by_account.iter_mut() {
                if !chosen(*account) {
                    continue;
                }
                for frame in frames {
                    let mut got = vec![0u8; frame.len()];
                    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
                        .await
                        .expect("the push arrives")
                        .unwrap();
                    assert_eq!(&got[..], &frame[..], "account {account}");
                }
            }
        }

        /// Nothing more was written to anyone (loopback delivers within the write).
        fn assert_quiet(&mut self) {
            for (account, client) in &mut self.by_account {
                let mut more = [0u8; 1];
                let outcome = client.try_read(&mut more);
                assert!(
                    matches!(&outcome, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                    "account {account}: {outcome:?}"
                );
            }
        }
    }

    fn job(recipients: RoaringBitmap, text: &str) -> FanOutJob {
        FanOutJob {
            recipients,
            frame: text_frame(text),
            stats: Arc::default(),
        }
    }

    /// Waits until the fan-out thread has written `job`'s push.
    async fn written(stats: &TaskStats, expected: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stats.online.load(Ordering::Relaxed) < expected {
            assert!(
                std::time::Instant::now() < deadline,
                "the push was not written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushes_split_over_helpers_reach_every_session_of_their_audience_once_in_order() {
        let sessions = Arc::new(Sessions::default());
        let metrics = Arc::new(Metrics::default());
        // Enough recipients for two helpers.
        let accounts: Vec<u32> = (0..ACCOUNTS_PER_EXTRA_WRITER as u32 * 4 + 10).collect();
        let mut clients = connect(&sessions, &accounts).await;
        let fan_outs = FanOuts::start(Arc::clone(&sessions), Arc::clone(&metrics), 4008, 2);
        let evens = |a: u32| a % 2 == 0;
        let odds = |a: u32| a % 2 == 1;
        let first = job(
            accounts.iter().copied().filter(|&a| evens(a)).collect(),
            "{\"Push\":1}",
        );
        let second = job(
            accounts.iter().copied().filter(|&a| odds(a)).collect(),
            "{\"Push\":2}",
        );
        let (first_frame, second_frame) = (first.frame.clone(), second.frame.clone());
        let (first_stats, second_stats) = (Arc::clone(&first.stats), Arc::clone(&second.stats));
        let sessions_of = |chosen: &dyn Fn(u32) -> bool| {
            clients
                .by_account
                .iter()
                .filter(|(a, _)| chosen(*a))
                .count() as u64
        };
        let (to_first, to_second) = (sessions_of(&evens), sessions_of(&odds));

        fan_outs.enqueue(first);
        fan_outs.enqueue(second);
        written(&first_stats, to_first).await;
        written(&second_stats, to_second).await;

        assert_eq!(first_stats.online.load(Ordering::Relaxed), to_first);
        assert_eq!(second_stats.online.load(Ordering::Relaxed), to_second);
        assert_eq!(
            metrics.deliveries_online.load(Ordering::Relaxed),
            to_first + to_second
        );
        clients.read(|a| a != 7 && evens(a), &[&first_frame]).await;
        clients.read(|a| a != 7 && odds(a), &[&second_frame]).await;
        // Account 7 is odd: both its sessions get the second push only.
        clients.read(|a| a == 7, &[&second_frame]).await;
        clients.assert_quiet();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_in_two_audiences_gets_both_pushes_in_acceptance_order() {
        let sessions = Arc::new(Sessions::default());
        let mut clients = connect(&sessions, &[1, 2, 7]).await;
        let fan_outs = FanOuts::start(Arc::clone(&sessions), Arc::default(), 4008, 1);
        let first = job([1, 7].into_iter().collect(), "{\"Push\":1}");
        let second = job([2, 7].into_iter().collect(), "{\"Push\":2}");
        let (first_frame, second_frame) = (first.frame.clone(), second.frame.clone());
        let second_stats = Arc::clone(&second.stats);

        fan_outs.enqueue(first);
        fan_outs.enqueue(second);
        written(&second_stats, 3).await;

        clients.read(|a| a == 1, &[&first_frame]).await;
        clients
            .read(|a| a == 7, &[&first_frame, &second_frame])
            .await;
        clients.read(|a| a == 2, &[&second_frame]).await;
        clients.assert_quiet();
    }
}
