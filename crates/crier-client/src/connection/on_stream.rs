//! Logging in over a TCP stream the caller opened itself, e.g. one bound to a chosen source
//! address (load generators spread their sockets over several `127.0.0.x`), with the caller's
//! WebSocket buffer sizes.

use crier_proto::protocol::{ClientFrame, ServerFrame};
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use super::{Connection, Incoming, LoginOptions};
use crate::ClientError;

impl Connection {
    /// Like [`Connection::connect`], over `stream`, an open TCP connection to the server named
    /// by `options.url` (plain `ws://` only). `config` sizes the WebSocket buffers (`None`:
    /// the library's defaults).
    pub async fn connect_on(
        stream: TcpStream,
        options: &LoginOptions,
        config: Option<WebSocketConfig>,
    ) -> Result<Connection, ClientError> {
        let (mut socket, _) = tokio_tungstenite::client_async_with_config(
            options.url.as_str(),
            MaybeTlsStream::Plain(stream),
            config,
        )
        .await?;
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
}
