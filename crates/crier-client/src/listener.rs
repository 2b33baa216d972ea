//! A session that stays up: reconnects with exponential back-off (with jitter), drops pushes it
//! has already handed over (delivery is at least once), and sends the application's acks on
//! whichever connection is current.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crier_proto::protocol::{close, PushFrame};
use tokio::sync::mpsc;

use crate::{ClientError, Connection, Event, LoginOptions};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// TaskIds remembered for dropping repeats.
const SEEN_CAPACITY: usize = 10_000;

pub struct Listener {
    pushes: mpsc::Receiver<PushFrame>,
    acks: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<ClientError>,
}

impl Listener {
    /// Starts listening in the background. `sign` makes a fresh UserSig for each (re)login.
    pub fn start(options: LoginOptions, sign: impl Fn() -> String + Send + 'static) -> Listener {
        let (push_sender, pushes) = mpsc::channel(1024);
        let (acks, ack_receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(options, sign, push_sender, ack_receiver));
        Listener { pushes, acks, task }
    }

    /// The next push not handed over before. `None` when listening stopped for good (login
    /// refused, kicked, closed); [`Listener::stop_reason`] says why.
    pub async fn next(&mut self) -> Option<PushFrame> {
        self.pushes.recv().await
    }

    /// Acknowledges a push once the application has dealt with it; until then the server keeps
    /// it and redelivers it at the next login.
    pub fn ack(&self, task_id: String) {
        // A send error means the task has stopped; `stop_reason` reports why.
        let _ = self.acks.send(task_id);
    }

    /// Sends the acks given so far, closes the connection and answers why listening ended.
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

struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True the first time a TaskId comes by.
    fn first_time(&mut self, task_id: &str) -> bool {
        if !self.ids.insert(task_id.to_owned()) {
            return false;
        }
        self.order.push_back(task_id.to_owned());
        if self.order.len() > SEEN_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

async fn run(
    mut options: LoginOptions,
    sign: impl Fn() -> String,
    pushes: mpsc::Sender<PushFrame>,
    mut acks: mpsc::UnboundedReceiver<String>,
) -> ClientError {
    let mut seen = Seen {
        ids: HashSet::new(),
        order: VecDeque::new(),
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        options.user_sig = sign();
        let outcome = match Connection::connect(&options).await {
            Ok(connection) => {
                backoff = FIRST_BACKOFF;
                listen(connection, &pushes, &mut acks, &mut seen).await
            }
            Err(error) => error,
        };
        match outcome {
            ClientError::LoginRefused { .. } => return outcome,
            ClientError::Closed {
                code: close::KICKED | close::LOGIN_FAILED | 1000,
                ..
            } => return outcome,
            error => {
                let error =
                    std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(": ");
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "connection lost; reconnecting")
            }
        }
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn closed_by_us() -> ClientError {
    ClientError::Closed {
        code: 1000,
        reason: "listener closed".into(),
    }
}

async fn listen(
    mut connection: Connection,
    pushes: &mpsc::Sender<PushFrame>,
    acks: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Seen,
) -> ClientError {
    loop {
        tokio::select! {
            ack = acks.recv() => {
                let Some(first) = ack else {
                    // The application is done: what it acknowledged is sent, so close cleanly.
                    return match connection.close().await {
                        Ok(()) => closed_by_us(),
                        Err(error) => error,
                    };
                };
                let mut batch = vec![first];
                while let Ok(more) = acks.try_recv() {
                    batch.push(more);
                }
                if let Err(error) = connection.ack(batch).await {
                    return error;
                }
            }
            event = connection.next_event() => match event {
                Err(error) => return error,
                Ok(Event::Push(push)) => {
                    if seen.first_time(&push.task_id) && pushes.send(push).await.is_err() {
                        return closed_by_us();
                    }
                }
                Ok(Event::Closed { code, reason }) => return ClientError::Closed { code, reason },
                Ok(Event::Kicked { .. } | Event::Error { .. } | Event::Pong) => {}
            },
        }
    }
}
