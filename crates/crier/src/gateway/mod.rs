//! The WebSocket gateway at `GET /v4/ws`: the client protocol of
//! `shared/spec/client-protocol.md`. [`session`] runs one connection; [`sessions`] is the
//! per-app registry that fan-out and kicks go through; [`conn`] lets the fan-out write pushes
//! straight to the connections it reaches.

pub mod conn;
pub mod session;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tokio::net::TcpListener;

use crate::server::AppState;
use conn::{Conn, ConnIo};

/// Client frames are small JSON objects; anything larger is not one.
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
/// WebSocket libraries default to 128 KiB read and write buffers per connection, which would
/// dwarf everything else an idle session holds. Frames are small, so small buffers suffice.
/// The read buffer is also zero-filled up to this size before every read attempt, and it
/// stays allocated for the whole session: 1 KiB holds a Login frame in one read.
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 0;

/// Accepts connections as [`ConnIo`]s, so that a WebSocket session can reach its socket.
pub struct GatewayListener(pub TcpListener);

impl Listener for GatewayListener {
    type Io = ConnIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ConnIo, SocketAddr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        // Pushes are small frames that must leave at once, not wait for Nagle's algorithm to
        // coalesce them with an acknowledgement the client may delay by up to 40 ms.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        (ConnIo::new(tcp), addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The connection a request came on, for the gateway to hand to its session.
#[derive(Clone)]
pub struct ClientConn(pub Arc<Conn>);

impl Connected<IncomingStream<'_, GatewayListener>> for ClientConn {
    fn connect_info(stream: IncomingStream<'_, GatewayListener>) -> ClientConn {
        ClientConn(Arc::clone(&stream.io().0))
    }
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(ClientConn(conn)): ConnectInfo<ClientConn>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| session::run(socket, conn, state))
}
