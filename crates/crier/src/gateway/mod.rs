//! The WebSocket gateway at `GET /v4/ws`: the client protocol of
//! `shared/spec/client-protocol.md` on top of the app's façade. [`session`] runs one
//! connection. Who is online, and the connections the fan-out writes to, are the app's
//! ([`crate::delivery::presence`], [`crate::delivery::conn`]); connections are accepted in
//! [`crate::http`].

pub mod session;

use std::sync::Arc;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::app_state::AppState;
use crate::http::connection::{ClientConn, ReserveConnection};
use crate::metrics::refusals::Refusal;

/// Client frames are small JSON objects; anything larger is not one.
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
/// WebSocket libraries default to 128 KiB read and write buffers per connection, which would
/// dwarf everything else an idle session holds. Frames are small, so small buffers suffice.
/// The read buffer is also zero-filled up to this size before every read attempt, and it
/// stays allocated for the whole session: 1 KiB holds a Login frame in one read.
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 0;

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(ClientConn(conn)): ConnectInfo<ClientConn>,
    reserve: Option<Extension<ReserveConnection>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if reserve.is_some() {
        // The reserve is for an operator's health checks and admin calls, not for sessions
        // that would keep it.
        state.metrics.refusals.count(Refusal::ReserveOnly);
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            "the server is at its connection limit: retry later\n",
        )
            .into_response();
    }
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| session::run(socket, conn, state))
}
