//! The nodes a [`Listener`](super::Listener) logs in to: which one is next (round-robin), and
//! when a whole round of them has failed so that it is time to back off.

pub(super) struct Servers {
    urls: Vec<String>,
    /// Index of the URL to try next.
    next: usize,
    /// Nodes tried since the last back-off, or since the last login: the node of a login that
    /// later ends counts as tried, so that the others are tried before backing off.
    tried_this_round: usize,
}

impl Servers {
    /// `urls` is not empty; the first attempt goes to `urls[first % urls.len()]`.
    pub(super) fn new(urls: Vec<String>, first: usize) -> Servers {
        debug_assert!(!urls.is_empty(), "a listener needs a server");
        let next = first % urls.len().max(1);
        Servers {
            urls,
            next,
            tried_this_round: 0,
        }
    }

    /// The URL to try now; the turn moves on to the one after it.
    pub(super) fn next_url(&mut self) -> &str {
        let url = &self.urls[self.next];
        self.next = (self.next + 1) % self.urls.len();
        self.tried_this_round += 1;
        url
    }

    /// A login succeeded on the URL last handed out: a new round starts with it.
    pub(super) fn logged_in(&mut self) {
        self.tried_this_round = 1;
    }

    /// True when every node has been tried since the last back-off or login (and starts a
    /// new round); false when another node is still to be tried first.
    pub(super) fn round_over(&mut self) -> bool {
        if self.tried_this_round < self.urls.len() {
            return false;
        }
        self.tried_this_round = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(count: usize, first: usize) -> Servers {
        Servers::new(
            (0..count).map(|i| format!("ws://n{i}/v4/ws")).collect(),
            first,
        )
    }

    #[test]
    fn urls_come_in_turn_from_the_first_one_given() {
        let mut servers = servers(3, 4);
        let order: Vec<String> = (0..5).map(|_| servers.next_url().to_owned()).collect();
        assert_eq!(
            order,
            [
                "ws://n1/v4/ws",
                "ws://n2/v4/ws",
                "ws://n0/v4/ws",
                "ws://n1/v4/ws",
                "ws://n2/v4/ws"
            ]
        );
    }

    #[test]
    fn a_round_is_over_once_every_node_failed() {
        let mut servers = servers(3, 0);
        for _ in 0..2 {
            servers.next_url();
            assert!(!servers.round_over());
        }
        servers.next_url();
        assert!(servers.round_over());
        servers.next_url();
        assert!(!servers.round_over(), "a new round started");
    }

    #[test]
    fn after_a_lost_login_the_other_nodes_are_tried_before_backing_off() {
        let mut servers = servers(2, 0);
        servers.next_url();
        assert!(!servers.round_over());
        assert_eq!(servers.next_url(), "ws://n1/v4/ws");
        servers.logged_in();
        // n1's connection ends: n0 next, without backing off; back off once n0 fails too.
        assert!(!servers.round_over());
        assert_eq!(servers.next_url(), "ws://n0/v4/ws");
        assert!(servers.round_over());
    }

    #[test]
    fn one_server_backs_off_after_every_attempt() {
        let mut servers = servers(1, 7);
        servers.next_url();
        servers.logged_in();
        assert!(servers.round_over());
        assert_eq!(servers.next_url(), "ws://n0/v4/ws");
        assert!(servers.round_over());
    }
}
