//! Logging in over a TCP stream the caller opened itself, e.g. one bound to a chosen source
//! address (load generators spread their sockets over several `127.0.0.x`), with the caller's
//! WebSocket buffer sizes.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::MaybeTlsStream;

use super::{Connection, LoginOptions};
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
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            options.url.as_str(),
            MaybeTlsStream::Plain(stream),
            config,
        )
        .await?;
        Connection::log_in(socket, options).await
    }
}
