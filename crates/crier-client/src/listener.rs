//! A session that stays up: reconnects with exponential back-off (with jitter), acknowledges
//! what it hands over, and drops pushes it has already seen (delivery is at least once).

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
    task: tokio::task::JoinHandle<ClientError>,
}

impl Listener {
    /// Starts listening in the background. `sign` makes a fresh UserSig for each (re)login.
    pub fn start(options: LoginOptions, sign: impl Fn() -> String + Send + 'static) -> Listener {
        let (sender, pushes) = mpsc::channel(1024);
        let task = tokio::spawn(run(options, sign, sender));
        Listener { pushes, task }
    }

    /// The next new push, already acknowledged to the server. `None` when listening stopped
    /// for good (login refused, kicked); [`Listener::stop_reason`] says why.
    pub async fn next(&mut self) -> Option<PushFrame> {
        self.pushes.recv().await
    }

    pub async fn stop_reason(self) -> ClientError {
        match self.task.await {
            Ok(error) => error,
            Err(e) => ClientError::Protocol(format!("listener task failed: {e}")),
        }
    }
}

async fn run(
    mut options: LoginOptions,
    sign: impl Fn() -> String,
    pushes: mpsc::Sender<PushFrame>,
) -> ClientError {
    let mut seen = (HashSet::new(), VecDeque::new());
    let mut backoff = FIRST_BACKOFF;
    loop {
        options.user_sig = sign();
        let outcome = match Connection::connect(&options).await {
            Ok(connection) => {
                backoff = FIRST_BACKOFF;
                listen(connection, &pushes, &mut seen).await
            }
            Err(error) => error,
        };
        match outcome {
            ClientError::LoginRefused { .. } => return outcome,
            ClientError::Closed {
                code: close::KICKED | close::LOGIN_FAILED,
                ..
            } => return outcome,
            _ if pushes.is_closed() => return outcome,
            error => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "connection lost; reconnecting")
            }
        }
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn listen(
    mut connection: Connection,
    pushes: &mpsc::Sender<PushFrame>,
    seen: &mut (HashSet<String>, VecDeque<String>),
) -> ClientError {
    loop {
        let event = match connection.next_event().await {
            Ok(event) => event,
            Err(error) => return error,
        };
        match event {
            Event::Push(push) => {
                let task_id = push.task_id.clone();
                if seen.0.insert(task_id.clone()) {
                    seen.1.push_back(task_id.clone());
                    if seen.1.len() > SEEN_CAPACITY {
                        let oldest = seen.1.pop_front().expect("not empty");
                        seen.0.remove(&oldest);
                    }
                    if pushes.send(push).await.is_err() {
                        return ClientError::Closed {
                            code: 1000,
                            reason: "listener dropped".into(),
                        };
                    }
                }
                if let Err(error) = connection.ack(vec![task_id]).await {
                    return error;
                }
            }
            Event::Closed { code, reason } => return ClientError::Closed { code, reason },
            Event::Kicked { .. } | Event::Error { .. } | Event::Pong => {}
        }
    }
}
