//! A signed-in user's unacknowledged messages between two connections
//! (`store = "memory"`: this node's memory).
//!
//! When a signed-in connection closes, its pending messages are parked
//! under (app, user id); the user's next connection that subscribes to a
//! channel again (authorised again) claims that channel's messages, which
//! are resent at once and keep their resend count and expiry. Anonymous
//! connections' messages are not parked: nobody could claim them.
//!
//! Bounded: at most `max_pending` messages per user (the oldest go first),
//! each at most until its `message_ttl` expiry; [`Parked::sweep`] (the
//! server's periodic sweeper, one per node) drops the expired. A sharded
//! map: users do not share a lock.

use super::pending::Entry;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Parked messages of every signed-in user of every app on this node.
#[derive(Debug, Default)]
pub struct Parked {
    users: DashMap<(Arc<str>, String), VecDeque<Entry>>,
}

impl Parked {
    /// Parks a closed connection's messages (oldest first) for the user;
    /// returns how many older ones were dropped to stay within `max_pending`.
    pub fn park(
        &self,
        app_id: &str,
        user_id: &str,
        entries: Vec<Entry>,
        max_pending: usize,
    ) -> usize {
        if entries.is_empty() {
            return 0;
        }
        let mut slot = self
            .users
            .entry((app_id.into(), user_id.to_owned()))
            .or_default();
        for entry in entries {
            if !slot.iter().any(|kept| kept.id == entry.id) {
                slot.push_back(entry);
            }
        }
        let over = slot.len().saturating_sub(max_pending);
        slot.drain(..over);
        over
    }

    /// Takes the user's parked messages of `channel` that have not expired
    /// (oldest first), and how many had expired.
    pub fn claim(
        &self,
        app_id: &str,
        user_id: &str,
        channel: &str,
        now: Instant,
    ) -> (Vec<Entry>, usize) {
        let key = (Arc::<str>::from(app_id), user_id.to_owned());
        let Some(mut slot) = self.users.get_mut(&key) else {
            return (Vec::new(), 0);
        };
        let (mut claimed, mut expired) = (Vec::new(), 0);
        slot.retain(|entry| {
            if now >= entry.expires {
                expired += 1;
                false
            } else if &*entry.channel == channel {
                claimed.push(entry.clone());
                false
            } else {
                true
            }
        });
        let empty = slot.is_empty();
        drop(slot);
        if empty {
            self.users.remove_if(&key, |_, slot| slot.is_empty());
        }
        (claimed, expired)
    }

    /// Drops expired messages and empty users; how many messages expired.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut expired = 0;
        self.users.retain(|_, slot| {
            let before = slot.len();
            slot.retain(|entry| now < entry.expires);
            expired += before - slot.len();
            !slot.is_empty()
        });
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(id: &str, channel: &str, expires: Instant) -> Entry {
        Entry {
            id: id.into(),
            channel: channel.into(),
            frame: id.into(),
            resends: 1,
            expires,
        }
    }

    #[test]
    fn a_user_claims_a_channel_s_messages_once() {
        let parked = Parked::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let dropped = parked.park(
            "app",
            "u1",
            vec![
                entry("a", "x", later),
                entry("b", "y", later),
                entry("c", "x", later),
            ],
            10,
        );
        assert_eq!(dropped, 0);
        assert_eq!(parked.claim("app", "u2", "x", now).0.len(), 0);
        assert_eq!(parked.claim("other", "u1", "x", now).0.len(), 0);
        let (claimed, expired) = parked.claim("app", "u1", "x", now);
        let ids: Vec<&str> = claimed.iter().map(|e| &*e.id).collect();
        assert_eq!((ids, expired), (vec!["a", "c"], 0));
        assert!(parked.claim("app", "u1", "x", now).0.is_empty());
        assert_eq!(parked.claim("app", "u1", "y", now).0.len(), 1);
        assert!(parked.users.is_empty());
    }

    #[test]
    fn parking_is_bounded_and_expiry_is_swept() {
        let parked = Parked::default();
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let later = now + Duration::from_secs(10);
        let dropped = parked.park(
            "app",
            "u",
            vec![
                entry("a", "x", soon),
                entry("b", "x", later),
                entry("c", "x", later),
            ],
            2,
        );
        assert_eq!(dropped, 1);
        assert_eq!(parked.sweep(now + Duration::from_secs(2)), 0);
        assert_eq!(parked.sweep(now + Duration::from_secs(11)), 2);
        assert!(parked.users.is_empty());
    }
}
