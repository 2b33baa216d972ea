//! One logged-in WebSocket session.

use crier_proto::protocol::{ClientFrame, PushFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ClientError;

mod on_stream;

/// Who logs in where. `user_sig` is made for `identifier` with the app's key.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// `ws://host:port/v4/ws`. A [`Listener`](crate::Listener) started with several servers
    /// sets it to each of them in turn.
    pub url: String,
    pub sdkappid: u64,
    pub identifier: String,
    pub user_sig: String,
    pub platform: Option<String>,
}

enum Incoming {
    Frame(ServerFrame),
    Closed { code: u16, reason: String },
}

/// What the server sent after login.
#[derive(Debug, Clone)]
pub enum Event {
    Push(PushFrame),
    Error {
        code: u32,
        info: String,
    },
    Kicked {
        reason: String,
    },
    /// The push with this TaskId was recalled: hide it, and drop it if it still arrives.
    Revoke {
        task_id: String,
        /// The notification that replaces the one shown, as JSON text.
        offline_push_info: Option<String>,
    },
    Pong,
    /// The server closed the connection with this close code.
    Closed {
        code: u16,
        reason: String,
    },
}

pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The server's clock at login, Unix seconds.
    pub server_time: u64,
}

impl Connection {
    /// Connects and logs in; answers once `LoginOK` arrives.
    pub async fn connect(options: &LoginOptions) -> Result<Connection, ClientError> {
        let (socket, _) = tokio_tungstenite::connect_async(options.url.as_str()).await?;
        Connection::log_in(socket, options).await
    }

    /// Sends `Login` on an open WebSocket; answers once `LoginOK` arrives.
    async fn log_in(
        mut socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
        options: &LoginOptions,
    ) -> Result<Connection, ClientError> {
        let login = ClientFrame::Login {
            sdk_app_id: options.sdkappid,
            identifier: options.identifier.clone(),
            user_sig: options.user_sig.clone(),
            platform: options.platform.clone(),
        };
        socket
            .send(Message::text(
                serde_json::to_string(&login).expect("frames serialize"),
            ))
            .await?;
        let mut connection = Connection {
            socket,
            server_time: 0,
        };
        match connection.read_frame().await? {
            Incoming::Frame(ServerFrame::LoginOk { server_time, .. }) => {
                connection.server_time = server_time;
                Ok(connection)
            }
            Incoming::Frame(ServerFrame::Error {
                error_code,
                error_info,
            }) => Err(ClientError::LoginRefused {
                code: error_code,
                info: error_info,
            }),
            Incoming::Frame(other) => {
                Err(ClientError::Protocol(format!("{other:?} before LoginOK")))
            }
            Incoming::Closed { code, reason } => Err(ClientError::Closed { code, reason }),
        }
    }

    /// The next event; `Closed` once the connection has ended (1006 when it ended without a
    /// close frame).
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            return Ok(match self.read_frame().await? {
                Incoming::Closed { code, reason } => Event::Closed { code, reason },
                Incoming::Frame(ServerFrame::Push(push)) => Event::Push(push),
                Incoming::Frame(ServerFrame::Error {
                    error_code,
                    error_info,
                }) => Event::Error {
                    code: error_code,
                    info: error_info,
                },
                Incoming::Frame(ServerFrame::Kicked { reason }) => Event::Kicked { reason },
                Incoming::Frame(ServerFrame::Revoke {
                    task_id,
                    offline_push_info,
                }) => Event::Revoke {
                    task_id,
                    offline_push_info: offline_push_info.map(|raw| raw.get().to_owned()),
                },
                Incoming::Frame(ServerFrame::Pong) => Event::Pong,
                // A second LoginOK carries nothing a logged-in client needs.
                Incoming::Frame(ServerFrame::LoginOk { .. }) => continue,
            });
        }
    }

    async fn read_frame(&mut self) -> Result<Incoming, ClientError> {
        loop {
            let message = match self.socket.next().await {
                None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                    return Ok(Incoming::Closed {
                        code: 1006,
                        reason: String::new(),
                    })
                }
                Some(message) => message?,
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return Ok(Incoming::Closed { code, reason });
                }
                _ => continue,
            };
            let frame = ServerFrame::parse(&text)
                .map_err(|e| ClientError::Protocol(format!("{e}: {text}")))?;
            return Ok(Incoming::Frame(frame));
        }
    }

    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(
                serde_json::to_string(frame).expect("frames serialize"),
            ))
            .await?;
        Ok(())
    }

    pub async fn ack(&mut self, task_ids: Vec<String>) -> Result<(), ClientError> {
        self.send(&ClientFrame::Ack { task_ids }).await
    }

    pub async fn close(mut self) -> Result<(), ClientError> {
        self.socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await?;
        Ok(())
    }
}
