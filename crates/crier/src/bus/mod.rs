//! The bus: every effect that crosses sessions (and, in a cluster, nodes) is announced here
//! rather than called directly, so that a NATS implementation can carry the same
//! announcements between nodes without touching the code that makes or handles them.
//!
//! - [`Event::PushAccepted`]: each node fans the push out to its own sessions of the audience
//!   and keeps it for catch-up at login.
//! - [`Event::PushRevoked`]: each node stops delivering the push and sends `Revoke` to its own
//!   sessions of the audience.
//! - [`Event::Kick`] and [`Event::AccountDeleted`]: each node closes its sessions of the
//!   account.
//! - [`Event::Presence`]: a session logged in or out on some node (`query_online_status`
//!   reports sessions on every node, and a push notifies no one online anywhere).
//!   [`Event::NodeAlive`] says, once a second, that a node still runs (the sessions of a node
//!   that went silent are forgotten) and sums up its sessions ([`presence`]); a node whose
//!   picture of them differs (it just started, or announcements were lost while NATS was
//!   away) sends [`Event::PresenceWanted`], and that node answers with every session it has
//!   ([`Event::PresenceList`]), which replaces what the others knew of it.
//! - [`Event::DirectoryHead`]: the directory log has a new head; nodes behind it catch up.
//! - [`Event::DeviceRegistered`], [`Event::DeviceUnregistered`]: the device registry changed
//!   (every node keeps it in memory, for whichever node runs a notification job).
//!
//! Announcements are never the only copy of anything: what they announce is in the store
//! first, so a lost announcement delays an effect (until a node catches up from the store),
//! never loses it. The in-process bus ([`local::LocalBus`]) hands each announcement to the
//! app's handler on the publishing thread: on one node that is exactly a direct call.

pub mod local;
pub mod nats;
pub mod presence;

use std::sync::Arc;

use crate::notify::devices::Device;
use crate::store::PushRecord;
pub use presence::PresenceSummary;

/// Which node made an announcement (`--node-id`, or one made up at start).
pub type NodeId = Arc<str>;

#[derive(Debug, Clone)]
pub enum Event {
    PushAccepted(Arc<PushRecord>),
    /// The record as stored after the revoke (`revoked_ms` and `revoke_info` set).
    PushRevoked(Arc<PushRecord>),
    Kick {
        account: u32,
        reason: String,
    },
    AccountDeleted {
        account: u32,
    },
    /// `session` is unique on its node, so an announcement repeated (a node that started
    /// asked for them again) changes nothing.
    Presence {
        account: u32,
        session: u64,
        platform: String,
        online: bool,
    },
    /// Asks node `of` for a [`Event::PresenceList`].
    PresenceWanted {
        of: NodeId,
    },
    /// Part `part` (from 0) of `parts` of every session the announcing node had when asked,
    /// as (account, session, platform): split so that no announcement outgrows what NATS
    /// carries.
    PresenceList {
        part: u32,
        parts: u32,
        sessions: Vec<(u32, u64, String)>,
    },
    NodeAlive {
        presence: PresenceSummary,
    },
    DeviceRegistered {
        account: u32,
        device: Device,
    },
    DeviceUnregistered {
        device: Device,
    },
    DirectoryHead {
        seq: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Announcement {
    pub app: u64,
    pub node: NodeId,
    pub event: Event,
}

/// Runs for every announcement of one app, on whichever thread delivers it: keep it short
/// and non-blocking (hand heavy work to a thread of its own).
pub type Handler = Arc<dyn Fn(&Announcement) + Send + Sync>;

pub trait Bus: Send + Sync + 'static {
    /// Announces to every node, this one included. Does not wait for handlers elsewhere.
    fn publish(&self, announcement: Announcement);

    /// Sets the handler of `app`'s announcements on this node (one per app; a second
    /// replaces the first).
    fn subscribe(&self, app: u64, handler: Handler);

    /// Whether other nodes may share the store (and so a node must also look at the store
    /// for what they did, in case an announcement was lost).
    fn spans_nodes(&self) -> bool {
        false
    }
}
