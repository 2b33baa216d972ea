//! One WebSocket connection: `Login` within ten seconds, then a `select!` loop over inbound
//! frames, the close signal (kick, too slow), server shutdown, and writing what the socket
//! could not take at once (pushes are written by the fan-out itself, see [`crate::delivery::conn`]).
//! A client that breaks the WebSocket protocol is told so with the RFC 6455 close code.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::app_state::AppState;
use crate::clock::{now_ms, now_secs};
use crate::delivery::conn::Conn;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::notify::devices::{Device, MAX_TOKEN_BYTES};
use crate::notify::Provider;
use crate::tenant::{SessionGuard, Tenant};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use crier_proto::protocol::{close, ClientFrame, ServerFrame, LOGIN_PLATFORMS, LOGIN_TIMEOUT_SECS};
use crier_proto::{codes, usersig};

/// A client that does not take a frame within this long is gone or hopelessly slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A close frame's reason has room for 123 bytes (RFC 6455, 5.5).
const MAX_CLOSE_REASON_BYTES: usize = 123;

fn frame_text(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(frame).expect("frames serialize"))
}

/// The `Error` frame for `error`, shaped by [`Error::to_wire`] like a REST answer.
fn error_frame(error: &Error) -> Utf8Bytes {
    let wire = error.to_wire();
    frame_text(&ServerFrame::Error {
        error_code: wire.code,
        error_info: wire.info,
    })
}

async fn send(socket: &mut WebSocket, text: Utf8Bytes) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(text))).await,
        Ok(Ok(()))
    )
}

/// Writes what waits on the connection, unless the session is closed first (its close code):
/// a client that stopped reading blocks this write, and being closed as too slow (or kicked)
/// meanwhile must not wait for the write timeout. `Err(None)` if the client did not take it
/// in time.
async fn drain_unless_closed(
    conn: &Conn,
    closed: Pin<&mut impl Future<Output = u16>>,
) -> Result<(), Option<u16>> {
    tokio::select! {
        biased;
        code = closed => Err(Some(code)),
        drained = tokio::time::timeout(WRITE_TIMEOUT, conn.drain()) => match drained {
            Ok(Ok(())) => Ok(()),
            _ => Err(None),
        },
    }
}

async fn close_with(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Why a session reads nothing more.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The client closed, or the connection failed: there is nobody left to tell anything.
    Gone,
    /// The client broke the WebSocket protocol; it is closed with this code and reason.
    Violation { code: u16, reason: String },
}

/// The next text frame, skipping control frames.
async fn next_text(socket: &mut WebSocket) -> Result<Utf8Bytes, Ended> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Binary(_))) => return Ok(Utf8Bytes::from_static("<binary>")),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            None | Some(Ok(Message::Close(_))) => return Err(Ended::Gone),
            Some(Err(error)) => return Err(ended_by(&error)),
        }
    }
}

/// What a failed read means for the client: RFC 6455 (7.4.1) names a close code for each way
/// of breaking the protocol, so a client's developer learns what was wrong instead of seeing
/// the connection drop. Failures of the connection itself leave nobody to tell.
fn ended_by(error: &axum::Error) -> Ended {
    use tungstenite::error::{Error as WsError, ProtocolError};
    let Some(error) =
        std::error::Error::source(error).and_then(|inner| inner.downcast_ref::<WsError>())
    else {
        return Ended::Gone;
    };
    let (code, reason) = match error {
        WsError::Utf8(_) => (
            close::INVALID_PAYLOAD,
            "a text frame is not valid UTF-8".into(),
        ),
        WsError::Capacity(limit) => (close::MESSAGE_TOO_BIG, limit.to_string()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return Ended::Gone,
        WsError::Protocol(violation) => (close::PROTOCOL_ERROR, violation.to_string()),
        _ => return Ended::Gone,
    };
    tracing::debug!(code, %error, "closing a WebSocket that broke the protocol");
    Ended::Violation {
        code,
        reason: shortened(reason, MAX_CLOSE_REASON_BYTES),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn shortened(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
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
        &tenant.config().secret_key.0,
        now_secs(),
    )?;
    if identifier.is_empty() || identifier.len() > crier_proto::usersig::MAX_IDENTIFIER_BYTES {
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
        Ok(Err(Ended::Gone)) => return,
        Ok(Err(Ended::Violation { code, reason })) => {
            return close_with(socket, code, &reason).await
        }
        Ok(Ok(text)) => text,
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
    // Online before reading what was kept: a push accepted in between reaches the session one
    // way or the other (possibly both; clients drop repeats by TaskId). It is held until the
    // login reply and the catch-up are out.
    conn.accept_pushes_held();
    let guard = match tenant
        .log_in(&identifier, platform, Arc::clone(&conn))
        .await
    {
        Ok(guard) => guard,
        Err(error) => {
            conn.stop_pushes();
            send(&mut socket, error_frame(&error)).await;
            return close_with(socket, close::LOGIN_FAILED, "login failed").await;
        }
    };
    Metrics::add(&state.metrics.logins, 1);
    state.metrics.sessions_open.fetch_add(1, Ordering::Relaxed);

    let mut session = Session {
        socket,
        identifier: identifier.clone(),
        tenant: Arc::clone(&tenant),
        guard,
        state: Arc::clone(&state),
        conn: Arc::clone(&conn),
    };
    let close = session.serve(identifier).await;
    // Logged out before the last frames go, so no push is written after `Kicked`.
    let Session {
        mut socket, guard, ..
    } = session;
    drop(guard);
    conn.stop_pushes();
    state.metrics.sessions_open.fetch_sub(1, Ordering::Relaxed);
    if let Some((code, reason)) = close {
        if code == close::KICKED {
            send(
                &mut socket,
                frame_text(&ServerFrame::Kicked {
                    reason: reason.clone(),
                }),
            )
            .await;
        }
        close_with(socket, code, &reason).await;
    }
}

struct Session {
    socket: WebSocket,
    identifier: String,
    tenant: Arc<Tenant>,
    guard: SessionGuard,
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
        let mut shutdown = self.state.shutdown.subscribe();
        let tenant = Arc::clone(&self.tenant);
        let account = self.guard.account();
        // The long waits are set up once: registering them again with their notifiers on
        // every frame would cost each of N sessions as much per push as sending the frame.
        let closed = self.guard.closed();
        let stopping = stopped(&mut shutdown);
        tokio::pin!(closed, stopping);

        let pending = tenant.catch_up_frames(account, now_ms());
        Metrics::add(&self.state.metrics.deliveries_offline, pending.len() as u64);
        // The kept frames themselves, shared with every other session that catches up on
        // them, written several to a write.
        self.conn.release(pending);
        if let Err(end) = drain_unless_closed(&self.conn, closed.as_mut()).await {
            return end.map(|code| self.closing(code));
        }
        loop {
            // Biased: a close (kick, too slow) wins over writing what waits.
            tokio::select! {
                biased;
                code = &mut closed => return Some(self.closing(code)),
                () = self.conn.drain_needed() => {
                    if let Err(end) = drain_unless_closed(&self.conn, closed.as_mut()).await {
                        return end.map(|code| self.closing(code));
                    }
                }
                () = &mut stopping => {
                    return Some((close::GOING_AWAY, "server shutting down".into()))
                }
                inbound = next_text(&mut self.socket) => {
                    let text = match inbound {
                        Ok(text) => text,
                        Err(Ended::Gone) => return None,
                        Err(Ended::Violation { code, reason }) => return Some((code, reason)),
                    };
                    if let Some(reply) = self.handle_frame(&text).await {
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
        (code, self.guard.kick_reason())
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
                self.tenant.acknowledge(self.guard.account(), &task_ids);
                None
            }
            ClientFrame::Login { .. } => Some(error_frame(&Error::rejected(
                codes::BAD_JSON,
                "this session is already logged in",
            ))),
            ClientFrame::RegisterDevice { platform, token } => {
                let owner = (self.guard.account(), self.identifier.clone());
                change_device(Arc::clone(&self.tenant), owner, &platform, token, true).await
            }
            ClientFrame::UnregisterDevice { platform, token } => {
                let owner = (self.guard.account(), self.identifier.clone());
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
        if register {
            tenant.register_device(account, &name, device)
        } else {
            tenant.unregister_device(account, &device)
        }
    })
    .await;
    // A refused device leaves the session open, like every other refused client frame.
    match changed {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error_frame(&Error::from(error))),
        Err(error) => Some(error_frame(&Error::from(error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};

    fn sent(frame: Utf8Bytes) -> (u64, String) {
        let frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(frame["Type"], "Error");
        (
            frame["ErrorCode"].as_u64().unwrap(),
            frame["ErrorInfo"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn failures_inside_the_server_reach_the_client_without_their_detail() {
        let secret = "disk I/O error at /var/lib/crier/crier.db";
        for error in [
            Error::Store(StoreError::Corrupt(secret.into())),
            Error::Internal(secret.into()),
        ] {
            let (code, info) = sent(error_frame(&error));
            assert_eq!(code, u64::from(codes::INTERNAL));
            assert!(info.starts_with("internal error (error id "), "{info}");
            assert!(!info.contains("disk"), "{info}");
        }
        // A refused request still says how to fix it.
        let refused = Error::rejected(codes::BAD_JSON, "Token must be 1 to 4096 bytes");
        assert_eq!(
            sent(error_frame(&refused)),
            (90001, "Token must be 1 to 4096 bytes".into())
        );
    }

    #[test]
    fn protocol_violations_get_their_rfc_6455_close_code_and_failures_none() {
        let ended = |error: WsError| ended_by(&axum::Error::new(error));
        let code = |error: WsError| match ended(error) {
            Ended::Violation { code, reason } => {
                assert!(!reason.is_empty() && reason.len() <= MAX_CLOSE_REASON_BYTES);
                Some(code)
            }
            Ended::Gone => None,
        };
        assert_eq!(code(WsError::Utf8("\u{fffd}".into())), Some(1007));
        let too_long = CapacityError::MessageTooLong {
            size: 100_000,
            max_size: 65_536,
        };
        assert_eq!(code(WsError::Capacity(too_long)), Some(1009));
        for violation in [
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::NonZeroReservedBits,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::InvalidOpcode(3),
        ] {
            assert_eq!(code(WsError::Protocol(violation)), Some(1002));
        }
        assert_eq!(
            code(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            None
        );
        assert_eq!(
            code(WsError::Io(std::io::ErrorKind::ConnectionReset.into())),
            None
        );
        assert_eq!(
            ended_by(&axum::Error::new(std::io::Error::other(
                "not tungstenite's"
            ))),
            Ended::Gone
        );
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(shortened("short".into(), 123), "short");
        let long = "é".repeat(100);
        let cut = shortened(long, 123);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
