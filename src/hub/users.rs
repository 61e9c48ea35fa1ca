//! Signed-in users of one app on this node: their sockets, and who watches them.

use super::connection::{Connection, SocketId};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;

type Sockets = HashMap<SocketId, Arc<Connection>>;

/// Users signed in through `pusher:signin`, and watchlists.
#[derive(Debug, Default)]
pub struct Users {
    sockets: DashMap<Arc<str>, Sockets>,
    watchers: DashMap<Arc<str>, Sockets>,
}

fn add(map: &DashMap<Arc<str>, Sockets>, key: &str, connection: &Arc<Connection>) -> bool {
    let mut sockets = map.entry(Arc::from(key)).or_default();
    sockets.insert(connection.socket_id.clone(), connection.clone());
    sockets.len() == 1
}

fn remove(map: &DashMap<Arc<str>, Sockets>, key: &str, socket_id: &str) -> bool {
    let mut emptied = false;
    map.remove_if_mut(key, |_, sockets| {
        emptied = sockets.remove(socket_id).is_some() && sockets.is_empty();
        sockets.is_empty()
    });
    emptied
}

impl Users {
    /// Binds a socket to a user; true when it is the user's first (now online).
    pub fn sign_in(&self, user_id: &str, connection: &Arc<Connection>) -> bool {
        add(&self.sockets, user_id, connection)
    }

    /// Unbinds a socket; true when it was the user's last (now offline).
    pub fn sign_out(&self, user_id: &str, socket_id: &str) -> bool {
        remove(&self.sockets, user_id, socket_id)
    }

    /// Whether the user has a signed-in socket on this node.
    pub fn is_online(&self, user_id: &str) -> bool {
        self.sockets.contains_key(user_id)
    }

    /// Every user with a signed-in socket on this node (a cluster adapter
    /// re-announces them after an outage).
    pub fn signed_in(&self) -> Vec<String> {
        self.sockets.iter().map(|e| e.key().to_string()).collect()
    }

    /// The user's sockets on this node.
    pub fn connections_of(&self, user_id: &str) -> Vec<Arc<Connection>> {
        self.sockets
            .get(user_id)
            .map_or_else(Vec::new, |s| s.values().cloned().collect())
    }

    /// Registers `connection` as watching each of `watched`.
    pub fn watch(&self, watched: &[String], connection: &Arc<Connection>) {
        for user_id in watched {
            add(&self.watchers, user_id, connection);
        }
    }

    /// Forgets `socket_id` as a watcher of each of `watched`.
    pub fn unwatch(&self, watched: &[String], socket_id: &str) {
        for user_id in watched {
            remove(&self.watchers, user_id, socket_id);
        }
    }

    /// The sockets watching `user_id`.
    pub fn watchers_of(&self, user_id: &str) -> Vec<Arc<Connection>> {
        self.watchers
            .get(user_id)
            .map_or_else(Vec::new, |s| s.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_with_first_socket_offline_with_last() {
        let users = Users::default();
        let (a, _ra) = Connection::new("1.1".into(), "app".into(), 4);
        let (b, _rb) = Connection::new("1.2".into(), "app".into(), 4);
        assert!(users.sign_in("u1", &a));
        assert!(!users.sign_in("u1", &b));
        assert_eq!(users.connections_of("u1").len(), 2);
        assert!(!users.sign_out("u1", "1.1"));
        assert!(users.is_online("u1"));
        assert_eq!(users.signed_in(), vec!["u1".to_string()]);
        assert!(users.sign_out("u1", "1.2"));
        assert!(!users.is_online("u1"));
        assert!(!users.sign_out("u1", "1.2"));
    }

    #[test]
    fn watchers_are_tracked_per_watched_user() {
        let users = Users::default();
        let (a, _ra) = Connection::new("1.1".into(), "app".into(), 4);
        users.watch(&["u2".into(), "u3".into()], &a);
        assert_eq!(users.watchers_of("u2").len(), 1);
        users.unwatch(&["u2".into(), "u3".into()], "1.1");
        assert!(users.watchers_of("u2").is_empty());
    }
}
