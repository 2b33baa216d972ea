//! A session that stays up: reconnects with exponential back-off (with jitter), fails over
//! between the nodes of a cluster, drops pushes it has already handed over (delivery is at
//! least once), and sends the application's acks on whichever connection is current.
//!
//! `run` is the loop over logins (which node, when to back off, which ends are final);
//! `listen` is one logged-in connection; `Seen` remembers the TaskIds handed over.

mod seen;
mod servers;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crier_proto::protocol::{close, ClientFrame, PushFrame};
use tokio::sync::mpsc;

use crate::{ClientError, Connection, Event, LoginOptions};
use seen::{Seen, Sighting};
use servers::Servers;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A node that has not accepted the login within this long counts as down: the next is tried.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection gets a Ping this often; one that has sent nothing by the next time is
/// taken for dead (a node that vanished without closing its connections) and the next tried.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// What a [`Listener`] hands over.
#[derive(Debug, Clone)]
pub enum Received {
    /// A push not handed over before.
    Push(PushFrame),
    /// A push was recalled (`v4/timpush/revoke`): the application hides it if it has it; the
    /// listener drops it if it still arrives.
    Revoke {
        task_id: String,
        /// The notification that replaces the one shown, as JSON text.
        offline_push_info: Option<String>,
    },
}

pub struct Listener {
    pushes: mpsc::Receiver<Received>,
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
    /// those already handed over are dropped as repeats. A connection that stays silent for a
    /// heartbeat after a Ping (30 s) counts as failed too, so a node that vanishes without
    /// closing its connections is left within about a minute.
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
        Listener::spawn(Servers::new(servers, first), HEARTBEAT, options, sign)
    }

    fn spawn(
        servers: Servers,
        heartbeat: Duration,
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
            heartbeat,
        };
        let task = tokio::spawn(run(servers, options, sign, delivery));
        Listener { pushes, acks, task }
    }

    /// The next push not handed over before, or revoke. `None` when listening stopped for good
    /// (login refused, kicked, closed); [`Listener::stop_reason`] says why.
    pub async fn next_received(&mut self) -> Option<Received> {
        self.pushes.recv().await
    }

    /// Like [`Listener::next_received`], for an application that only takes pushes: revokes
    /// are passed over (a revoked push is still dropped if it arrives after its revoke).
    pub async fn next(&mut self) -> Option<PushFrame> {
        loop {
            match self.pushes.recv().await? {
                Received::Push(push) => return Some(push),
                Received::Revoke { .. } => continue,
            }
        }
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

/// What outlives each connection: the application's ends of the channels, the TaskIds handed
/// over, and acks taken from the application that no connection has sent yet.
struct Delivery {
    pushes: mpsc::Sender<Received>,
    acks: mpsc::UnboundedReceiver<String>,
    seen: Seen,
    unsent: Vec<String>,
    /// [`HEARTBEAT`], shorter in tests.
    heartbeat: Duration,
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
        Err(_elapsed) => Err(timed_out(format!(
            "no LoginOK within {} s",
            LOGIN_TIMEOUT.as_secs()
        ))),
    }
}

fn timed_out(what: String) -> ClientError {
    ClientError::WebSocket(std::io::Error::new(std::io::ErrorKind::TimedOut, what).into())
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

    /// Hands a push over unless it is a repeat or revoked, and a revoke the first time it
    /// comes; answers how the connection ended if `event` ends it.
    async fn take(
        &mut self,
        event: Result<Event, ClientError>,
        connection: &mut Connection,
    ) -> Option<ClientError> {
        let push = match event {
            Err(error) => return Some(error),
            Ok(Event::Closed { code, reason }) => {
                return Some(ClientError::Closed { code, reason })
            }
            Ok(Event::Kicked { .. } | Event::Error { .. } | Event::Pong) => return None,
            Ok(Event::Revoke {
                task_id,
                offline_push_info,
            }) => {
                if !self.seen.revoked(&task_id) {
                    return None;
                }
                let revoke = Received::Revoke {
                    task_id,
                    offline_push_info,
                };
                return self.pushes.send(revoke).await.err().map(|_| closed_by_us());
            }
            Ok(Event::Push(push)) => push,
        };
        match self.seen.sighting(&push.task_id) {
            Sighting::First => self
                .pushes
                .send(Received::Push(push))
                .await
                .err()
                .map(|_| closed_by_us()),
            Sighting::Acked => self.send_acks(connection, vec![push.task_id]).await.err(),
            Sighting::Unacked | Sighting::Revoked => None,
        }
    }
}

async fn listen(mut connection: Connection, delivery: &mut Delivery) -> ClientError {
    if let Err(error) = delivery.send_acks(&mut connection, Vec::new()).await {
        return error;
    }
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + delivery.heartbeat,
        delivery.heartbeat,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether anything came since the last tick, and whether a Ping is waiting for its Pong.
    let (mut heard, mut pinged) = (false, false);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if pinged {
                    let silent = delivery.heartbeat.as_secs_f64();
                    return timed_out(format!("nothing from the server {silent} s after a Ping"));
                }
                if std::mem::take(&mut heard) {
                    continue;
                }
                if let Err(error) = connection.send(&ClientFrame::Ping).await {
                    return error;
                }
                pinged = true;
            }
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
            event = connection.next_event() => {
                (heard, pinged) = (true, false);
                if let Some(end) = delivery.take(event, &mut connection).await {
                    return end;
                }
            }
        }
    }
}
