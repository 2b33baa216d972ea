//! The bus of a single node: an announcement is handled on the thread that publishes it,
//! which on one node is exactly the direct call it replaces.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{Announcement, Bus, Handler};

#[derive(Default)]
pub struct LocalBus {
    handlers: RwLock<HashMap<u64, Handler>>,
}

impl Bus for LocalBus {
    fn publish(&self, announcement: Announcement) {
        let handler = self.handlers.read().get(&announcement.app).cloned();
        if let Some(handler) = handler {
            handler(&announcement);
        }
    }

    fn subscribe(&self, app: u64, handler: Handler) {
        self.handlers.write().insert(app, handler);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::bus::Event;

    #[test]
    fn announcements_reach_the_handler_of_their_app_only() {
        let bus = LocalBus::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for app in [1, 2] {
            let seen = Arc::clone(&seen);
            bus.subscribe(
                app,
                Arc::new(move |a: &Announcement| seen.lock().push((app, a.app))),
            );
        }
        let announce = |app| Announcement {
            app,
            node: "n".into(),
            event: Event::DirectoryHead { seq: 1 },
        };
        bus.publish(announce(2));
        bus.publish(announce(3));
        assert_eq!(*seen.lock(), [(2, 2)]);
    }
}
