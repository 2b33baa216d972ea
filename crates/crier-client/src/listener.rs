//! A session that stays up: reconnects with exponential back-off (with jitter), fails over
//! between the nodes of a cluster, drops pushes it has already handed over (delivery is at
//! least once), and sends the application's acks on whichever connection is current.
//!
//! `run` is the loop over logins (which node, when to back off, which ends are final);
//! `listen` is one logged-in connection; `Seen` remembers the TaskIds handed over.

mod servers;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crier_proto::protocol::{close, PushFrame};
use tokio::sync::mpsc;

use crate::{ClientError, Connection, Event, LoginOptions};
use servers::Servers;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A node that has not accepted the login within this long counts as down: the next is tried.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// TaskIds remembered for dropping repeats.
const SEEN_CAPACITY: usize = 10_000;

pub struct Listener {
    pushes: mpsc::Receiver<PushFrame>,
    acks: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<ClientError>,
}

impl Listener {
    /// Starts listening in the background on `options.url`. `sign` makes a fresh UserSig for
    /// each (re)login.
    pub fn start(options: LoginOptions, sign: impl Fn() -> String + Send + 'static) -> Listener {
        Listener::start_with_servers(Vec::new(), options, sign)
    }

    /// Like [`Listener::start`], on a cluster: `servers` are the WebSocket URLs of its nodes
    /// (`ws://host:port/v4/ws`), any of which serves the account; `options.url` is used only
    /// when `servers` is empty.
    ///
    /// The first login goes to a node chosen at random, so that clients spread over the
    /// nodes. When a connection cannot be made, or ends for a reason that is not final (not
    /// kicked, not refused, not closed by the application), the next node in turn is tried
    /// at once; the back-off applies only after every node has failed in a row. Logging in
    /// on another node delivers the pushes kept for the account that were not acknowledged;
    /// those already handed over are dropped as repeats.
    pub fn start_with_servers(
        servers: Vec<String>,
        options: LoginOptions,
        sign: impl Fn() -> String + Send + 'static,
    ) -> Listener {
        let servers = if servers.is_empty() {
            vec![options.url.clone()]
        } else {
            servers
        };
        let first = rand::random::<usize>() % servers.len();
        Listener::spawn(Servers::new(servers, first), options, sign)
    }

    fn spawn(
        servers: Servers,
        options: LoginOptions,
        sign: impl Fn() -> String + Send + 'static,
    ) -> Listener {
        let (push_sender, pushes) = mpsc::channel(1024);
        let (acks, ack_receiver) = mpsc::unbounded_channel();
        let delivery = Delivery {
            pushes: push_sender,
            acks: ack_receiver,
            seen: Seen::default(),
            unsent: Vec::new(),
        };
        let task = tokio::spawn(run(servers, options, sign, delivery));
        Listener { pushes, acks, task }
    }

    /// The next push not handed over before. `None` when listening stopped for good (login
    /// refused, kicked, closed); [`Listener::stop_reason`] says why.
    pub async fn next(&mut self) -> Option<PushFrame> {
        self.pushes.recv().await
    }

    /// Acknowledges a push once the application has dealt with it; until then the server keeps
    /// it and redelivers it at the next login. An ack given while reconnecting is sent on the
    /// next connection.
    pub fn ack(&self, task_id: String) {
        // A send error means the task has stopped; `stop_reason` reports why.
        let _ = self.acks.send(task_id);
    }

    /// Sends the acks given so far, closes the connection and answers why listening ended.
    /// While no server can be reached it gives up at the next back-off and answers the last
    /// connection error (the server then redelivers what was not acknowledged).
    pub async fn close(self) -> ClientError {
        let Listener { pushes, acks, task } = self;
        // Dropping the ack sender is what tells the task to finish up.
        drop((pushes, acks));
        outcome(task).await
    }

    pub async fn stop_reason(self) -> ClientError {
        outcome(self.task).await
    }
}

async fn outcome(task: tokio::task::JoinHandle<ClientError>) -> ClientError {
    match task.await {
        Ok(error) => error,
        Err(e) => ClientError::Protocol(format!("listener task failed: {e}")),
    }
}

/// TaskIds handed over to the application, with whether it has acknowledged each.
#[derive(Default)]
struct Seen {
    acked: HashMap<String, bool>,
    order: VecDeque<String>,
}

enum Sighting {
    First,
    /// Handed over before and acknowledged: the ack may have been lost with the connection it
    /// went out on, so it is sent again.
    Acked,
    /// Handed over before; the application acknowledges it when it is done with it.
    Unacked,
}

impl Seen {
    fn sighting(&mut self, task_id: &str) -> Sighting {
        match self.acked.get(task_id) {
            Some(true) => return Sighting::Acked,
            Some(false) => return Sighting::Unacked,
            None => {}
        }
        self.acked.insert(task_id.to_owned(), false);
        self.order.push_back(task_id.to_owned());
        if self.order.len() > SEEN_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.acked.remove(&oldest);
            }
        }
        Sighting::First
    }

    fn acknowledged(&mut self, task_id: &str) {
        if let Some(acked) = self.acked.get_mut(task_id) {
            *acked = true;
        }
    }
}

/// What outlives each connection: the application's ends of the channels, the TaskIds handed
/// over, and acks taken from the application that no connection has sent yet.
struct Delivery {
    pushes: mpsc::Sender<PushFrame>,
    acks: mpsc::UnboundedReceiver<String>,
    seen: Seen,
    unsent: Vec<String>,
}

async fn run(
    mut servers: Servers,
    mut options: LoginOptions,
    sign: impl Fn() -> String,
    mut delivery: Delivery,
) -> ClientError {
    let mut backoff = FIRST_BACKOFF;
    loop {
        options.url = servers.next_url().to_owned();
        options.user_sig = sign();
        let outcome = match log_in(&options).await {
            Ok(connection) => {
                servers.logged_in();
                backoff = FIRST_BACKOFF;
                listen(connection, &mut delivery).await
            }
            Err(error) => error,
        };
        if is_final(&outcome) {
            return outcome;
        }
        let error = std::iter::successors(Some(&outcome as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        if !servers.round_over() {
            tracing::warn!(%error, url = %options.url, "connection lost; trying the next server");
            continue;
        }
        tracing::warn!(%error, url = %options.url, retry_in_ms = backoff.as_millis() as u64, "connection lost; reconnecting");
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        if !delivery.wait(backoff + jitter).await {
            return outcome;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Ends after which listening stops instead of reconnecting.
fn is_final(outcome: &ClientError) -> bool {
    matches!(
        outcome,
        ClientError::LoginRefused { .. }
            | ClientError::Closed {
                code: close::KICKED | close::LOGIN_FAILED | 1000,
                ..
            }
    )
}

/// Connects and logs in, or fails within [`LOGIN_TIMEOUT`].
async fn log_in(options: &LoginOptions) -> Result<Connection, ClientError> {
    match tokio::time::timeout(LOGIN_TIMEOUT, Connection::connect(options)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ClientError::WebSocket(
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no LoginOK within 10 s").into(),
        )),
    }
}

fn closed_by_us() -> ClientError {
    ClientError::Closed {
        code: 1000,
        reason: "listener closed".into(),
    }
}

impl Delivery {
    /// Sleeps for `delay`, keeping the acks given meanwhile for the next connection. False
    /// when the application closed the listener in the meantime.
    async fn wait(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                ack = self.acks.recv() => match ack {
                    Some(task_id) => {
                        self.seen.acknowledged(&task_id);
                        self.unsent.push(task_id);
                    }
                    None => return false,
                },
            }
        }
    }

    /// Sends `batch` (after any acks left over from an earlier connection); on failure they
    /// are all kept for the next connection.
    async fn send_acks(
        &mut self,
        connection: &mut Connection,
        batch: Vec<String>,
    ) -> Result<(), ClientError> {
        let mut all = std::mem::take(&mut self.unsent);
        all.extend(batch);
        if all.is_empty() {
            return Ok(());
        }
        if let Err(error) = connection.ack(all.clone()).await {
            self.unsent = all;
            return Err(error);
        }
        Ok(())
    }
}

async fn listen(mut connection: Connection, delivery: &mut Delivery) -> ClientError {
    if let Err(error) = delivery.send_acks(&mut connection, Vec::new()).await {
        return error;
    }
    loop {
        tokio::select! {
            ack = delivery.acks.recv() => {
                let Some(first) = ack else {
                    // The application is done: what it acknowledged is sent, so close cleanly.
                    return match connection.close().await {
                        Ok(()) => closed_by_us(),
                        Err(error) => error,
                    };
                };
                let mut batch = vec![first];
                while let Ok(more) = delivery.acks.try_recv() {
                    batch.push(more);
                }
                for task_id in &batch {
                    delivery.seen.acknowledged(task_id);
                }
                if let Err(error) = delivery.send_acks(&mut connection, batch).await {
                    return error;
                }
            }
            event = connection.next_event() => match event {
                Err(error) => return error,
                Ok(Event::Push(push)) => match delivery.seen.sighting(&push.task_id) {
                    Sighting::First => {
                        if delivery.pushes.send(push).await.is_err() {
                            return closed_by_us();
                        }
                    }
                    Sighting::Acked => {
                        if let Err(error) = delivery.send_acks(&mut connection, vec![push.task_id]).await {
                            return error;
                        }
                    }
                    Sighting::Unacked => {}
                },
                Ok(Event::Closed { code, reason }) => return ClientError::Closed { code, reason },
                Ok(Event::Kicked { .. } | Event::Error { .. } | Event::Pong) => {}
            },
        }
    }
}
