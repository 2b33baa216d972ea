//! One WebSocket connection: `Login` within ten seconds, then a `select!` loop over inbound
//! frames, the close signal (kick, too slow), server shutdown, and writing what the socket
//! could not take at once (pushes are written by the fan-out itself, see [`super::conn`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use crier_proto::protocol::{close, ClientFrame, ServerFrame, LOGIN_PLATFORMS, LOGIN_TIMEOUT_SECS};
use crier_proto::{codes, usersig};
use parking_lot::Mutex;

use super::conn::Conn;
use super::sessions::{CloseSignal, SessionHandle, SessionLink};
use crate::clock::{now_ms, now_secs};
use crate::directory::DirOp;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::notify::devices::{Device, MAX_TOKEN_BYTES};
use crate::notify::Provider;
use crate::server::AppState;
use crate::tenant::Tenant;

/// A client that does not take a frame within this long is gone or hopelessly slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const GOING_AWAY: u16 = 1001;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

fn frame_text(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).expect("frames serialize"))
}

fn error_frame(error: &Error) -> Utf8Bytes {
    frame_text(&ServerFrame::Error {
        error_code: error.tencent_code(),
        error_info: error.to_string(),
    })
}

async fn send(socket: &mut WebSocket, text: Utf8Bytes) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(text))).await,
        Ok(Ok(()))
    )
}

/// Writes what waits on the connection; false if the client did not take it in time.
async fn drain(conn: &Conn) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, conn.drain()).await,
        Ok(Ok(()))
    )
}

async fn close_with(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// The next text frame, skipping control frames; `None` when the client is gone.
async fn next_text(socket: &mut WebSocket) -> Option<Utf8Bytes> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => return Some(text),
            Ok(Message::Binary(_)) => return Some(Utf8Bytes::from_static("<binary>")),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
}

struct LoggedIn {
    tenant: Arc<Tenant>,
    identifier: String,
    platform: String,
}

async fn authenticate(state: &AppState, text: &str) -> Result<LoggedIn, Error> {
    let frame: ClientFrame = serde_json::from_str(text).map_err(|e| {
        Error::rejected(
            codes::USERSIG_MALFORMED,
            format!(
                "the first frame must be a Login frame with SdkAppId, Identifier and UserSig: {e}"
            ),
        )
    })?;
    let ClientFrame::Login {
        sdk_app_id,
        identifier,
        user_sig,
        platform,
    } = frame
    else {
        return Err(Error::rejected(
            codes::USERSIG_MALFORMED,
            "the first frame must be Login",
        ));
    };
    let tenant = state.tenants.get(&sdk_app_id).ok_or_else(|| {
        Error::rejected(
            codes::UNKNOWN_APP,
            format!("SdkAppId {sdk_app_id} is not an app of this server"),
        )
    })?;
    usersig::verify(
        &user_sig,
        sdk_app_id,
        &identifier,
        &tenant.config.secret_key.0,
        now_secs(),
    )?;
    if identifier.is_empty() || identifier.len() > crate::api::fields::MAX_ACCOUNT_BYTES {
        return Err(Error::rejected(
            codes::USERSIG_MALFORMED,
            "Identifier must be 1 to 32 bytes",
        ));
    }
    let platform = platform.unwrap_or_else(|| "Web".into());
    if !LOGIN_PLATFORMS.contains(&platform.as_str()) {
        return Err(Error::rejected(
            codes::BAD_JSON,
            format!("Platform {platform:?} is not one of {LOGIN_PLATFORMS:?}"),
        ));
    }
    Ok(LoggedIn {
        tenant: Arc::clone(tenant),
        identifier,
        platform,
    })
}

async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

pub async fn run(mut socket: WebSocket, conn: Arc<Conn>, state: Arc<AppState>) {
    let login = match tokio::time::timeout(
        Duration::from_secs(LOGIN_TIMEOUT_SECS),
        next_text(&mut socket),
    )
    .await
    {
        Err(_) => {
            return close_with(socket, close::LOGIN_TIMEOUT, "no Login within 10 seconds").await
        }
        Ok(None) => return,
        Ok(Some(text)) => text,
    };
    let LoggedIn {
        tenant,
        identifier,
        platform,
    } = match authenticate(&state, &login).await {
        Ok(logged_in) => logged_in,
        Err(error) => {
            Metrics::add(&state.metrics.login_failures, 1);
            send(&mut socket, error_frame(&error)).await;
            return close_with(socket, close::LOGIN_FAILED, "login failed").await;
        }
    };
    // A first login registers the account: from then on it is one of "all users".
    let name = identifier.clone();
    let registered = tenant
        .write(move |d| {
            Ok(if d.is_live(&name) {
                vec![]
            } else {
                vec![DirOp::Import {
                    accounts: vec![name],
                }]
            })
        })
        .await;
    let Some(account) = registered
        .ok()
        .and_then(|()| tenant.read(|d| d.account_number(&identifier)))
    else {
        send(
            &mut socket,
            error_frame(&Error::Internal("registering the account failed".into())),
        )
        .await;
        return close_with(socket, close::LOGIN_FAILED, "login failed").await;
    };

    let handle = SessionHandle {
        id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
        platform,
        link: Arc::new(SessionLink {
            conn: Arc::clone(&conn),
            close: CloseSignal::default(),
            kick_reason: Mutex::new(String::new()),
        }),
    };
    // Online before reading what was kept: a push accepted in between reaches the session one
    // way or the other (possibly both; clients drop repeats by TaskId). It is held until the
    // login reply and the catch-up are out.
    conn.accept_pushes_held();
    let delivery = &tenant.delivery;
    delivery.sessions.register(account, handle.clone());
    Metrics::add(&state.metrics.logins, 1);
    state.metrics.sessions_open.fetch_add(1, Ordering::Relaxed);

    let mut session = Session {
        socket,
        account,
        identifier: identifier.clone(),
        tenant: Arc::clone(&tenant),
        handle: handle.clone(),
        state: Arc::clone(&state),
        conn: Arc::clone(&conn),
    };
    let close = session.serve(identifier).await;
    delivery.sessions.unregister(account, handle.id);
    conn.stop_pushes();
    state.metrics.sessions_open.fetch_sub(1, Ordering::Relaxed);
    if let Some((code, reason)) = close {
        if code == close::KICKED {
            send(
                &mut session.socket,
                frame_text(&ServerFrame::Kicked {
                    reason: reason.clone(),
                }),
            )
            .await;
        }
        close_with(session.socket, code, &reason).await;
    }
}

struct Session {
    socket: WebSocket,
    account: u32,
    identifier: String,
    tenant: Arc<Tenant>,
    handle: SessionHandle,
    state: Arc<AppState>,
    conn: Arc<Conn>,
}

impl Session {
    /// Runs the logged-in session; answers the close frame to end with, if any.
    async fn serve(&mut self, identifier: String) -> Option<(u16, String)> {
        let login_ok = frame_text(&ServerFrame::LoginOk {
            identifier,
            server_time: now_secs(),
        });
        if !send(&mut self.socket, login_ok).await {
            return None;
        }
        let pending = self.tenant.delivery.pending_for(self.account, now_ms());
        Metrics::add(&self.state.metrics.deliveries_offline, pending.len() as u64);
        // One buffer, one write: a catch-up of hundreds of kept pushes costs one round of
        // writes, not one per frame.
        self.conn.release(pending.concat());
        if !drain(&self.conn).await {
            return None;
        }
        let mut shutdown = self.state.shutdown.subscribe();
        let link = Arc::clone(&self.handle.link);
        let close = &link.close;
        // The long waits are set up once: registering them again with their notifiers on
        // every frame would cost each of N sessions as much per push as sending the frame.
        let closed = close.closed();
        let stopping = stopped(&mut shutdown);
        tokio::pin!(closed, stopping);
        loop {
            // Biased: a close (kick, too slow) wins over writing what waits.
            tokio::select! {
                biased;
                code = &mut closed => return Some(self.closing(code)),
                () = self.conn.drain_needed() => {
                    // A client that stopped reading blocks this write; being closed as too
                    // slow (or kicked) meanwhile must not wait for the write timeout.
                    tokio::select! {
                        biased;
                        code = &mut closed => return Some(self.closing(code)),
                        drained = drain(&self.conn) => if !drained {
                            return None;
                        },
                    }
                }
                () = &mut stopping => return Some((GOING_AWAY, "server shutting down".into())),
                inbound = next_text(&mut self.socket) => {
                    if let Some(reply) = self.handle_frame(&inbound?).await {
                        if !send(&mut self.socket, reply).await {
                            return None;
                        }
                    }
                }
            }
        }
    }

    fn closing(&self, code: u16) -> (u16, String) {
        if code == close::TOO_SLOW {
            return (code, "too slow to keep up; log in again to catch up".into());
        }
        Metrics::add(&self.state.metrics.kicks, 1);
        (code, self.handle.link.kick_reason.lock().clone())
    }

    async fn handle_frame(&mut self, text: &str) -> Option<Utf8Bytes> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                let error = Error::rejected(
                    codes::BAD_JSON,
                    format!("malformed frame: {e}; frames are JSON objects with a Type field"),
                );
                return Some(error_frame(&error));
            }
        };
        match frame {
            ClientFrame::Ping => Some(frame_text(&ServerFrame::Pong)),
            ClientFrame::Ack { task_ids } => {
                self.tenant.delivery.ack(self.account, &task_ids);
                None
            }
            ClientFrame::Login { .. } => Some(error_frame(&Error::rejected(
                codes::BAD_JSON,
                "this session is already logged in",
            ))),
            ClientFrame::RegisterDevice { platform, token } => {
                let owner = (self.account, self.identifier.clone());
                change_device(Arc::clone(&self.tenant), owner, &platform, token, true).await
            }
            ClientFrame::UnregisterDevice { platform, token } => {
                let owner = (self.account, self.identifier.clone());
                change_device(Arc::clone(&self.tenant), owner, &platform, token, false).await
            }
        }
    }
}

/// Registers or forgets a notification device; answers an `Error` frame if it could not.
/// The session waits for the store so a later frame cannot overtake this one.
async fn change_device(
    tenant: Arc<Tenant>,
    (account, name): (u32, String),
    platform: &str,
    token: String,
    register: bool,
) -> Option<Utf8Bytes> {
    let Some(provider) = Provider::parse(platform) else {
        return Some(error_frame(&Error::rejected(
            codes::BAD_JSON,
            format!("Platform {platform:?} is not one of \"apns\", \"fcm\", \"webhook\""),
        )));
    };
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Some(error_frame(&Error::rejected(
            codes::BAD_JSON,
            format!("Token must be 1 to {MAX_TOKEN_BYTES} bytes"),
        )));
    }
    let device = Device { provider, token };
    let changed = tokio::task::spawn_blocking(move || {
        let devices = &tenant.notify.devices;
        if register {
            devices.register(account, &name, device)
        } else {
            devices.unregister_own(account, &device).map(drop)
        }
    })
    .await;
    match changed {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error_frame(&Error::Store(error))),
        Err(error) => Some(error_frame(&Error::from(error))),
    }
}
