//! Crier: a self-hostable push service speaking Tencent Cloud Chat's Push to All Users API.
//!
//! Layers, each importing only from those below it (`scripts/check-layers` checks this):
//! - edges: [`server`] (wires routes, the edge and background work; `serve(listener, state,
//!   shutdown)` is used by `main` and the tests), [`api`] (the Tencent REST surface, thin
//!   handlers), [`gateway`] (the WebSocket protocol at `/v4/ws`), [`http`] (connections under
//!   a cap, timeouts, body budget, shutdown deadline), [`auth`] (signed admin calls),
//!   [`console`] (the web console's files at `/console/`; its reads are `api::crier_reads`);
//! - [`app_state`]: what handlers share: the apps, the store, metrics, limits;
//! - [`tenant`]: one app's façade; the edges call its methods, never its parts;
//! - the parts: [`push`] (reading an `im_push`, its rules), [`delivery`] (presence, fan-out,
//!   kept pushes, acknowledgements), [`notify`] (devices, providers, the job runner),
//!   [`events`] (the hand-off of delivery events from `delivery` and `notify` to their
//!   consumers), [`callback`] (delivery callbacks to the app's server, from a durable queue),
//!   [`bus`] (announcements between sessions and nodes), [`directory`] (accounts, tags and
//!   attributes as roaring bitmaps), [`store`] (durable state behind a trait; SQLite is the
//!   embedded default), [`supervise`] (background threads that restart after a panic);
//! - below everything: [`error`] (one place errors become wire answers), [`metrics`] (and
//!   [`metrics_history`], the per-minute history the console charts),
//!   [`config`] (imports nothing from the crate), [`clock`], [`huge_pages`] (the heap's page
//!   size, asked for when `serve` starts).
#![forbid(unsafe_code)]

pub mod api;
pub mod app_state;
pub mod auth;
pub mod bus;
pub mod callback;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod directory;
pub mod error;
pub mod events;
pub mod gateway;
pub mod http;
pub mod huge_pages;
pub mod metrics;
pub mod metrics_history;
pub mod notify;
pub mod push;
pub mod server;
pub mod store;
pub mod supervise;
pub mod tenant;
