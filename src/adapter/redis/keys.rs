//! Key and channel names, all under the configured prefix so several
//! clusters can share one Redis.

/// Builds key names for one prefix and node.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// Separates fields inside keys and set members; channel names and JSON
/// text never contain it.
pub const SEP: char = '\u{1f}';

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix itself (scripts build per-channel keys from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// STRING: the node holding HTTP session `id` (`{key}/{server}/{session}`),
    /// with a time to live (see `xhr_relay`).
    pub fn xhr_session(&self, id: &str) -> String {
        format!("{}:xhr:{id}", self.prefix)
    }

    /// The pub/sub channel every node listens on.
    pub fn bus(&self) -> String {
        format!("{}:bus", self.prefix)
    }

    /// ZSET of live nodes scored by last heartbeat (unix ms).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// SET of `app SEP channel` a node has a share in.
    pub fn node_channels(&self, node: &str) -> String {
        format!("{}:node:{node}:channels", self.prefix)
    }

    /// The id of a channel inside a node's set.
    pub fn node_channel_id(app_id: &str, channel: &str) -> String {
        format!("{app_id}{SEP}{channel}")
    }

    /// HASH node → subscribed sockets.
    pub fn subs(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:subs:{channel}", self.prefix)
    }

    /// HASH `node SEP user` → 1.
    pub fn members(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:members:{channel}", self.prefix)
    }

    /// HASH user → user_info JSON.
    pub fn info(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:info:{channel}", self.prefix)
    }

    /// SET of an app's occupied channels.
    pub fn app_channels(&self, app_id: &str) -> String {
        format!("{}:{app_id}:channels", self.prefix)
    }

    /// ZSET of an app's held-back leave webhooks, scored by when they are
    /// due (unix ms): `v SEP channel` (channel_vacated) and
    /// `r SEP channel SEP user` (member_removed). See [`super::held`].
    pub fn held(&self, app_id: &str) -> String {
        format!("{}:{app_id}:held", self.prefix)
    }

    /// HASH of the last `pusher_internal:subscription_count` sent for a
    /// channel: `n` (the count), `at` (unix ms). See [`super::counts`].
    pub fn count(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:count:{channel}", self.prefix)
    }

    /// STRING: last event of a cache channel.
    pub fn cache(&self, app_id: &str, channel: &str) -> String {
        format!("{}:{app_id}:cache:{channel}", self.prefix)
    }

    /// STRING: the app's stored-message sequence.
    pub fn sequence(&self, app_id: &str) -> String {
        format!("{}:{app_id}:seq", self.prefix)
    }

    /// STREAM of a history channel's events, entry id `serial-0`, fields
    /// `f` (frame), `t` (unix ms), `x` (excluded socket, '' for none). The
    /// `{app:channel}` hash tag keeps a channel's history keys in one slot.
    pub fn history(&self, app_id: &str, channel: &str) -> String {
        format!("{}:history:{{{app_id}:{channel}}}", self.prefix)
    }

    /// STRING: a history channel's last serial (same slot as its stream).
    pub fn history_serial(&self, app_id: &str, channel: &str) -> String {
        format!("{}:serial:{{{app_id}:{channel}}}", self.prefix)
    }

    /// STRING: an idempotency key's claim (`p` + token) or answer (`a` +
    /// JSON), expiring with the window. The key is any text (binary-safe).
    pub fn idempotency(&self, app_id: &str, key: &str) -> String {
        format!("{}:{app_id}:idem:{key}", self.prefix)
    }

    /// HASH of a signed-in user's recovery positions: field `channel SEP
    /// socket_id`, value `serial:unix_seconds` (the serial confirmed, and
    /// when it was last written); expires `recovery_window` after the last
    /// write. The `{app:user}` hash tag keeps a user in one slot.
    pub fn positions(&self, app_id: &str, user_id: &str) -> String {
        format!("{}:positions:{{{app_id}:{user_id}}}", self.prefix)
    }

    /// HASH message id → a signed-in user's unacknowledged delivery (see
    /// `adapter::redis::delivery`). The `{app:user}` hash tag keeps a
    /// user's key in one slot.
    pub fn delivery(&self, app_id: &str, user_id: &str) -> String {
        format!("{}:delivery:{{{app_id}:{user_id}}}", self.prefix)
    }

    /// Lock held while one node reaps a dead one.
    pub fn reaping(&self, node: &str) -> String {
        format!("{}:reaping:{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_what_the_reap_script_rebuilds() {
        let keys = Keys::new("p");
        // reap() rebuilds these from prefix, app and channel.
        assert_eq!(keys.subs("a", "c"), "p:a:subs:c");
        assert_eq!(keys.members("a", "c"), "p:a:members:c");
        assert_eq!(keys.info("a", "c"), "p:a:info:c");
        assert_eq!(keys.app_channels("a"), "p:a:channels");
        assert_eq!(Keys::node_channel_id("a", "c"), "a\u{1f}c");
    }

    #[test]
    fn a_channels_history_keys_share_one_hash_tag() {
        let keys = Keys::new("p");
        assert_eq!(keys.history("a", "c-1"), "p:history:{a:c-1}");
        assert_eq!(keys.history_serial("a", "c-1"), "p:serial:{a:c-1}");
        assert_eq!(keys.positions("a", "u-1"), "p:positions:{a:u-1}");
        assert_eq!(keys.delivery("a", "u-1"), "p:delivery:{a:u-1}");
    }
}
