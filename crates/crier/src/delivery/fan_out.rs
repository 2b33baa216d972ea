//! Writes each accepted push to the sessions online for it, in acceptance order.
//!
//! There is no fan-out thread to hand a push to: the thread that stored the push writes it,
//! right after the REST answer is on its way, unless another push is being written; then it
//! queues it for that thread, which writes it next. From a few hundred accounts up, helper
//! threads (one per further core, started once) write shares of the audience beside it.
//!
//! Every hand-over between threads is a wake-up, and on a busy 2-core machine a wake-up can
//! cost milliseconds: the push path had three (to the store thread, to the fan-out thread,
//! to a writer spawned per push) before its first socket write.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
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

#[derive(Default)]
struct Queue {
    jobs: VecDeque<FanOutJob>,
    /// A thread holds the [`Turn`] and writes `jobs` until none is left.
    writing: bool,
}

/// One share of a push for a helper: the `part`th of `parts` slices of its recipients.
struct Share {
    job: Arc<FanOutJob>,
    part: usize,
    parts: usize,
    done: Sender<FanOut>,
}

pub struct FanOuts {
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    too_slow_code: u16,
    queue: Mutex<Queue>,
    helpers: Vec<Sender<Share>>,
}

/// The duty to write the queued pushes, taken by the thread whose push found no fan-out
/// running. [`Turn::run`] writes them; a turn dropped unrun (an early return, a panic) still
/// writes them, or they would wait for the next push.
#[must_use = "the queued pushes are written when the turn runs"]
pub struct Turn<'a> {
    fan_outs: Option<&'a FanOuts>,
}

impl Turn<'_> {
    /// Writes this push and every push queued meanwhile, in order, until none is left.
    pub fn run(mut self) {
        self.write_queue();
    }

    fn write_queue(&mut self) {
        if let Some(fan_outs) = self.fan_outs.take() {
            fan_outs.write_queue();
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.write_queue();
    }
}

impl FanOuts {
    /// Starts `helpers` helper threads (one per core beyond the first is right).
    pub fn start(
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        too_slow_code: u16,
        helpers: usize,
    ) -> FanOuts {
        let helpers = (1..=helpers)
            .filter_map(|index| {
                let (sender, shares) = channel::<Share>();
                let sessions = Arc::clone(&sessions);
                let started = std::thread::Builder::new()
                    .name(format!("crier-fan-out-{index}"))
                    .spawn(move || {
                        for share in shares {
                            let written = write_share(&sessions, &share.job, share.part, share.parts, too_slow_code);
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
            })
            .collect();
        FanOuts {
            sessions,
            metrics,
            too_slow_code,
            queue: Mutex::default(),
            helpers,
        }
    }

    /// Queues `job` behind the pushes accepted before it. Answers the turn to write them if
    /// no thread is writing; the caller runs it once the push's answer is on its way.
    pub fn enqueue(&self, job: FanOutJob) -> Turn<'_> {
        let mut queue = self.queue.lock();
        queue.jobs.push_back(job);
        let mine = !std::mem::replace(&mut queue.writing, true);
        Turn {
            fan_outs: mine.then_some(self),
        }
    }

    fn write_queue(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock();
                match queue.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        queue.writing = false;
                        return;
                    }
                }
            };
            let written = self.write(job);
            Metrics::add(&self.metrics.deliveries_online, written.delivered);
            Metrics::add(&self.metrics.slow_consumer_closes, written.too_slow);
        }
    }

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
                    client.read_exact(&mut got).await.unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_split_over_helpers_reaches_every_session_of_the_audience_once() {
        let sessions = Arc::new(Sessions::default());
        let metrics = Arc::new(Metrics::default());
        // Enough recipients for two helpers; odd accounts are left out.
        let accounts: Vec<u32> = (0..ACCOUNTS_PER_EXTRA_WRITER as u32 * 4 + 10).collect();
        let mut clients = connect(&sessions, &accounts).await;
        let fan_outs = FanOuts::start(Arc::clone(&sessions), Arc::clone(&metrics), 4008, 2);
        let audience: RoaringBitmap = accounts.iter().copied().filter(|a| a % 2 == 0).collect();
        let push = job(audience, "{\"Type\":\"Push\"}");
        let (frame, stats) = (push.frame.clone(), Arc::clone(&push.stats));

        let fan_outs = tokio::task::spawn_blocking(move || {
            fan_outs.enqueue(push).run();
            fan_outs
        })
        .await
        .unwrap();

        let in_audience = clients
            .by_account
            .iter()
            .filter(|(a, _)| a % 2 == 0)
            .count() as u64;
        assert_eq!(stats.online.load(Ordering::Relaxed), in_audience);
        assert_eq!(
            metrics.deliveries_online.load(Ordering::Relaxed),
            in_audience
        );
        assert!(!fan_outs.queue.lock().writing);
        clients.read(|a| a % 2 == 0, &[&frame]).await;
        clients.assert_quiet();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushes_queued_behind_a_running_turn_are_written_by_it_in_order() {
        let sessions = Arc::new(Sessions::default());
        let mut clients = connect(&sessions, &[1, 2, 7]).await;
        let fan_outs = FanOuts::start(Arc::clone(&sessions), Arc::default(), 4008, 1);
        let first = job([1, 7].into_iter().collect(), "{\"Push\":1}");
        let second = job([2, 7].into_iter().collect(), "{\"Push\":2}");
        let (first_frame, second_frame) = (first.frame.clone(), second.frame.clone());

        let turn = fan_outs.enqueue(first);
        // Another thread's push while the first is not written yet: it only queues.
        fan_outs.enqueue(second).run();
        clients.assert_quiet();

        turn.run();
        clients.read(|a| a == 1, &[&first_frame]).await;
        // Both sessions of 7 get both, in acceptance order.
        clients
            .read(|a| a == 7, &[&first_frame, &second_frame])
            .await;
        clients.read(|a| a == 2, &[&second_frame]).await;
        clients.assert_quiet();
        assert!(!fan_outs.queue.lock().writing);
    }
}
