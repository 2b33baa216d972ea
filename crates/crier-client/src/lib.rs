//! Client library for Crier, on the same wire types as the server (`crier-proto`).
//!
//! - [`Connection`]: one WebSocket session: log in, read pushes, acknowledge them.
//! - [`Listener`]: a session that reconnects with back-off, drops repeated TaskIds and sends the
//!   application's acks, as the protocol's at-least-once delivery asks of clients. Given the
//!   nodes of a cluster ([`Listener::start_with_servers`]) it fails over between them.
//! - [`Admin`]: signed admin calls to the REST API (`im_push` and the rest), and typed ones for
//!   what the command-line tool does (a scheduled push).
#![forbid(unsafe_code)]

mod admin;
mod connection;
mod listener;

pub use admin::Admin;
pub use connection::{Connection, Event, LoginOptions};
pub use crier_proto::protocol::PushFrame;
pub use listener::{Listener, Received};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("WebSocket failed")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("HTTP request failed")]
    Http(#[from] reqwest::Error),
    #[error("login refused ({code}): {info}")]
    LoginRefused { code: u32, info: String },
    /// A REST call answered with an error code.
    #[error("refused ({code}): {info}")]
    Refused { code: u32, info: String },
    #[error("the server closed the connection (code {code}): {reason}")]
    Closed { code: u16, reason: String },
    #[error("unexpected frame from the server: {0}")]
    Protocol(String),
}
