//! What a node says of its sessions in its heartbeat ([`super::Event::NodeAlive`]), so that
//! another node can tell whether its picture of them is right without hearing them all again:
//! how many there are, and a digest that does not depend on their order (the wrapping sum of
//! a 64-bit hash of each), both kept up to date one login or logout at a time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceSummary {
    pub sessions: u64,
    pub digest: u64,
}

impl PresenceSummary {
    pub fn add(&mut self, account: u32, session: u64, platform: &str) {
        self.sessions += 1;
        self.digest = self
            .digest
            .wrapping_add(session_hash(account, session, platform));
    }

    pub fn remove(&mut self, account: u32, session: u64, platform: &str) {
        self.sessions = self.sessions.saturating_sub(1);
        self.digest = self
            .digest
            .wrapping_sub(session_hash(account, session, platform));
    }

    /// The summary of `sessions`, as (account, session id, platform).
    pub fn of<'a>(sessions: impl IntoIterator<Item = (u32, u64, &'a str)>) -> PresenceSummary {
        let mut summary = PresenceSummary::default();
        for (account, session, platform) in sessions {
            summary.add(account, session, platform);
        }
        summary
    }
}

/// A specified hash, the same on every node whatever its build: the standard library's is
/// not promised to stay the same between releases. A sum rather than an XOR of them, so a
/// session counted twice does not cancel out.
fn session_hash(account: u32, session: u64, platform: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(account.to_le_bytes());
    hasher.update(session.to_le_bytes());
    hasher.update(platform.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_depends_on_the_sessions_not_on_their_order_or_history() {
        let sessions = [(7, 1, "iOS"), (7, 2, "Web"), (9, 3, "Android")];
        let forward = PresenceSummary::of(sessions);
        let backward = PresenceSummary::of(sessions.into_iter().rev());
        assert_eq!(forward, backward);
        assert_eq!(forward.sessions, 3);

        let mut churned = PresenceSummary::of([(7, 2, "Web"), (5, 4, "iOS")]);
        churned.add(9, 3, "Android");
        churned.remove(5, 4, "iOS");
        churned.add(7, 1, "iOS");
        assert_eq!(churned, forward);

        // Any one difference shows: another account, session or platform, or one missing.
        for other in [(8, 1, "iOS"), (7, 4, "iOS"), (7, 1, "Web")] {
            let mut changed = PresenceSummary::of([(7, 2, "Web"), (9, 3, "Android")]);
            changed.add(other.0, other.1, other.2);
            assert_ne!(changed, forward, "{other:?}");
        }
        let mut missing = forward;
        missing.remove(7, 2, "Web");
        assert_eq!(
            missing,
            PresenceSummary::of([(7, 1, "iOS"), (9, 3, "Android")])
        );
        assert_ne!(missing, forward);
        assert_eq!(PresenceSummary::of([]), PresenceSummary::default());
    }
}
