//! Crier: a self-hostable push service speaking Tencent Cloud Chat's Push to All Users API.
//!
//! - [`config`]: the typed configuration (file, environment, flags).
//! - [`auth`]: admin calls: the query string, the UserSig check, the admin list.
//! - [`directory`]: accounts, tags and attributes as roaring bitmaps; conditions as algebra.
//! - [`push`]: reading an `im_push`, rate limits, the push record.
//! - [`store`]: durable state behind a trait; SQLite is the embedded default.
//! - [`tenant`]: one app at run time, tying the above together.
//! - [`delivery`]: online fan-out, kept pushes for offline accounts, acknowledgements.
//! - [`gateway`]: the WebSocket client protocol at `/v4/ws`.
//! - [`metrics`]: counters at `/metrics`.
//! - [`api`]: the Tencent-compatible REST surface, thin handlers over the parts.
//! - [`console`]: the web console's files at `/console/`; its reads are `api::crier_reads`,
//!   and [`metrics_history`] keeps the delivery history its Overview charts.
//! - [`http`]: the edge: connections under a cap, timeouts, body budget, shutdown deadline.
//! - [`server`]: `serve(listener, state, shutdown)`, used by `main` and by the tests.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod directory;
pub mod error;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod metrics_history;
pub mod notify;
pub mod push;
pub mod report;
pub mod server;
pub mod store;
pub mod tenant;
