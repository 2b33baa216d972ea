//! Sessions open on other nodes, as their announcements told (for `query_online_status`, and so
//! that a push notifies no one online anywhere), and what keeps that picture right when
//! announcements are lost: each node's heartbeat sums up its sessions, and when the sum kept
//! here differs, [`RemotePresence::heard_alive`] says to ask that node for its list, which then
//! replaces the picture of it ([`RemotePresence::take_list_part`]).
//!
//! A node makes its presence announcements in order with its sessions' changes (see
//! `Tenant::presence_order`) and NATS delivers one node's announcements in the order made, so
//! a heartbeat or a list holds exactly for the logins and logouts that arrived before it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use roaring::RoaringBitmap;

use crate::bus::{NodeId, PresenceSummary};

/// A session on another node: the node, and the session's id there.
type RemoteSession = (NodeId, u64);

/// A session as a list names it: (account, session, platform).
type Listed = (u32, u64, String);

/// Heartbeats to let pass, after asking a node for its list, before asking again: its answer
/// may come after a heartbeat it sent before it heard the question.
const HEARTBEATS_BEFORE_ASKING_AGAIN: u32 = 3;

#[derive(Default)]
pub(super) struct RemotePresence {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_account: HashMap<u32, Vec<(RemoteSession, String)>>,
    nodes: HashMap<NodeId, NodeView>,
}

/// What is known of one other node.
struct NodeView {
    last_seen_ms: u64,
    /// Of its sessions in `by_account`.
    summary: PresenceSummary,
    /// Heartbeats still to let pass before asking it for its list again.
    asked: u32,
    /// Its list, while parts of it are still to come.
    incoming: Option<IncomingList>,
}

struct IncomingList {
    next_part: u32,
    sessions: HashSet<Listed>,
}

impl NodeView {
    fn heard_at(now_ms: u64) -> NodeView {
        NodeView {
            last_seen_ms: now_ms,
            summary: PresenceSummary::default(),
            asked: 0,
            incoming: None,
        }
    }
}

impl RemotePresence {
    /// `node`'s heartbeat, summing up its sessions. Answers whether to ask it for its list:
    /// the sessions kept here for it are not the ones it has.
    pub(super) fn heard_alive(
        &self,
        node: &NodeId,
        presence: PresenceSummary,
        now_ms: u64,
    ) -> bool {
        let mut inner = self.inner.write();
        let view = inner
            .nodes
            .entry(Arc::clone(node))
            .or_insert_with(|| NodeView::heard_at(now_ms));
        view.last_seen_ms = now_ms;
        if view.summary == presence {
            view.asked = 0;
            return false;
        }
        if view.asked > 0 {
            view.asked -= 1;
            return false;
        }
        view.asked = HEARTBEATS_BEFORE_ASKING_AGAIN;
        true
    }

    /// Forgets the sessions of nodes not heard of since `silent_since_ms` (stopped, or cut
    /// off: their clients reconnect elsewhere). Heard of again, such a node is asked for its
    /// list at its first heartbeat.
    pub(super) fn forget_silent_nodes(&self, silent_since_ms: u64) {
        let mut inner = self.inner.write();
        let silent: Vec<NodeId> = inner
            .nodes
            .iter()
            .filter(|(_, view)| view.last_seen_ms < silent_since_ms)
            .map(|(node, _)| Arc::clone(node))
            .collect();
        if silent.is_empty() {
            return;
        }
        for node in &silent {
            inner.nodes.remove(node);
            tracing::warn!(%node, "a node went silent; forgetting its sessions");
        }
        inner.drop_sessions(|node| silent.contains(node));
    }

    /// Accounts with a session on another node.
    pub(super) fn online(&self) -> RoaringBitmap {
        self.inner.read().by_account.keys().copied().collect()
    }

    /// The platforms of the account's sessions on other nodes.
    pub(super) fn platforms(&self, account: u32) -> Vec<String> {
        self.inner
            .read()
            .by_account
            .get(&account)
            .map(|sessions| sessions.iter().map(|(_, p)| p.clone()).collect())
            .unwrap_or_default()
    }

    /// A session logged in or out on another node; a repeat of what is known changes nothing.
    pub(super) fn update(
        &self,
        account: u32,
        session: RemoteSession,
        platform: &str,
        online: bool,
    ) {
        let mut inner = self.inner.write();
        let view = inner
            .nodes
            .entry(Arc::clone(&session.0))
            .or_insert_with(|| NodeView::heard_at(crate::clock::now_ms()));
        if let Some(list) = &mut view.incoming {
            // Announced after the list was taken, so not in it.
            let listed = (account, session.1, platform.to_owned());
            if online {
                list.sessions.insert(listed);
            } else {
                list.sessions.remove(&listed);
            }
        }
        inner.apply(account, session, platform, online);
    }

    /// Part `part` of `parts` of `node`'s list of its sessions. The last part replaces what was
    /// known of it; a part out of turn (one was lost) drops the list, and the next heartbeat
    /// that differs asks again.
    pub(super) fn take_list_part(
        &self,
        node: &NodeId,
        part: u32,
        parts: u32,
        sessions: &[Listed],
        now_ms: u64,
    ) {
        let mut inner = self.inner.write();
        let view = inner
            .nodes
            .entry(Arc::clone(node))
            .or_insert_with(|| NodeView::heard_at(now_ms));
        if part == 0 {
            view.incoming = Some(IncomingList {
                next_part: 0,
                sessions: HashSet::new(),
            });
        }
        let Some(list) = view.incoming.as_mut().filter(|list| list.next_part == part) else {
            view.incoming = None;
            return;
        };
        list.sessions.extend(sessions.iter().cloned());
        list.next_part += 1;
        if list.next_part < parts {
            return;
        }
        let listed = std::mem::take(&mut list.sessions);
        view.incoming = None;
        view.asked = 0;
        inner.drop_sessions(|other| other == node);
        for (account, session, platform) in listed {
            inner.apply(account, (Arc::clone(node), session), &platform, true);
        }
    }
}

impl Inner {
    fn apply(&mut self, account: u32, session: RemoteSession, platform: &str, online: bool) {
        let Some(view) = self.nodes.get_mut(&session.0) else {
            return;
        };
        let sessions = self.by_account.entry(account).or_default();
        let known = sessions.iter().position(|(s, _)| *s == session);
        match (online, known) {
            (true, None) => {
                view.summary.add(account, session.1, platform);
                sessions.push((session, platform.to_owned()));
            }
            (false, Some(at)) => {
                let ((_, id), platform) = sessions.swap_remove(at);
                view.summary.remove(account, id, &platform);
            }
            // A repeat of what is known already.
            (true, Some(_)) | (false, None) => {}
        }
        if sessions.is_empty() {
            self.by_account.remove(&account);
        }
    }

    /// Drops the sessions of the nodes `of` picks (their summaries are the caller's to reset).
    fn drop_sessions(&mut self, of: impl Fn(&NodeId) -> bool) {
        self.by_account.retain(|_, sessions| {
            sessions.retain(|((node, _), _)| !of(node));
            !sessions.is_empty()
        });
        for (node, view) in &mut self.nodes {
            if of(node) {
                view.summary = PresenceSummary::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(node: &NodeId, id: u64) -> RemoteSession {
        (Arc::clone(node), id)
    }

    fn sorted_platforms(presence: &RemotePresence, account: u32) -> Vec<String> {
        let mut platforms = presence.platforms(account);
        platforms.sort();
        platforms
    }

    #[test]
    fn remote_sessions_come_and_go_per_session_and_repeats_change_nothing() {
        let presence = RemotePresence::default();
        let (a, b): (NodeId, NodeId) = ("a".into(), "b".into());
        presence.update(7, session(&a, 1), "iOS", true);
        presence.update(7, session(&b, 1), "Web", true);
        presence.update(7, session(&a, 2), "iOS", true);
        // A repeat (a list crossing an announcement) adds nothing.
        presence.update(7, session(&a, 1), "iOS", true);
        assert_eq!(sorted_platforms(&presence, 7), ["Web", "iOS", "iOS"]);
        presence.update(7, session(&a, 2), "iOS", false);
        presence.update(7, session(&a, 2), "iOS", false);
        presence.update(7, session(&b, 1), "Web", false);
        assert_eq!(presence.platforms(7), ["iOS"]);
        presence.update(7, session(&a, 1), "iOS", false);
        assert!(presence.platforms(7).is_empty());
        assert!(presence.inner.read().by_account.is_empty());
    }

    #[test]
    fn a_heartbeat_that_differs_asks_for_the_list_which_replaces_the_picture() {
        let presence = RemotePresence::default();
        let a: NodeId = "a".into();
        presence.update(1, session(&a, 1), "iOS", true);
        presence.update(2, session(&a, 2), "Web", true);
        let agreed = PresenceSummary::of([(1, 1, "iOS"), (2, 2, "Web")]);
        assert!(!presence.heard_alive(&a, agreed, 1_000));

        // Node a lost session 2 and gained 3 while its announcements were lost.
        let truth = [(1, 1, "iOS".to_owned()), (3, 3, "Android".to_owned())];
        let summary = PresenceSummary::of(truth.iter().map(|(a, s, p)| (*a, *s, p.as_str())));
        assert!(presence.heard_alive(&a, summary, 2_000));
        // Asked once: the next heartbeats (sent before a heard the question) ask nothing.
        assert!(!presence.heard_alive(&a, summary, 3_000));
        presence.take_list_part(&a, 0, 2, &truth[..1], 3_100);
        // A logout announced after the list was taken, between its parts.
        presence.update(1, session(&a, 1), "iOS", false);
        assert_eq!(presence.platforms(1), Vec::<String>::new());
        presence.take_list_part(&a, 1, 2, &truth[1..], 3_200);
        assert!(
            presence.platforms(1).is_empty(),
            "the logout after the list holds"
        );
        assert!(presence.platforms(2).is_empty());
        assert_eq!(presence.platforms(3), ["Android"]);
        assert_eq!(presence.online(), RoaringBitmap::from_iter([3]));
        assert!(!presence.heard_alive(&a, PresenceSummary::of([(3, 3, "Android")]), 4_000));
    }

    #[test]
    fn a_list_missing_a_part_is_dropped_and_asked_for_again() {
        let presence = RemotePresence::default();
        let a: NodeId = "a".into();
        presence.update(1, session(&a, 1), "iOS", true);
        let truth = PresenceSummary::of([(2, 2, "Web"), (3, 3, "Web")]);
        assert!(presence.heard_alive(&a, truth, 1_000));
        presence.take_list_part(&a, 0, 3, &[(2, 2, "Web".into())], 1_100);
        // Part 1 was lost.
        presence.take_list_part(&a, 2, 3, &[(3, 3, "Web".into())], 1_200);
        assert_eq!(presence.platforms(1), ["iOS"], "the old picture stays");
        assert!(presence.platforms(3).is_empty());
        let mut asked = 0;
        for heartbeat in 0..=HEARTBEATS_BEFORE_ASKING_AGAIN {
            asked += u32::from(presence.heard_alive(&a, truth, 2_000 + u64::from(heartbeat)));
        }
        assert_eq!(asked, 1);
    }

    #[test]
    fn a_silent_node_is_forgotten_and_asked_again_when_heard() {
        let presence = RemotePresence::default();
        let (a, b): (NodeId, NodeId) = ("a".into(), "b".into());
        presence.update(1, session(&a, 1), "iOS", true);
        presence.update(2, session(&b, 1), "Web", true);
        assert!(!presence.heard_alive(&a, PresenceSummary::of([(1, 1, "iOS")]), 1_000));
        assert!(!presence.heard_alive(&b, PresenceSummary::of([(2, 1, "Web")]), 7_000));
        presence.forget_silent_nodes(5_000);
        assert_eq!(presence.online(), RoaringBitmap::from_iter([2]));
        assert!(presence.heard_alive(&a, PresenceSummary::of([(1, 1, "iOS")]), 8_000));
        presence.take_list_part(&a, 0, 1, &[(1, 1, "iOS".into())], 8_100);
        assert_eq!(presence.online(), RoaringBitmap::from_iter([1, 2]));
    }
}
