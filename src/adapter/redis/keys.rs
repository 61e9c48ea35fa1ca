//! Key and channel names, all under the configured prefix so several
//! clusters can share one Redis.

/// Builds key names for one prefix and number of shard groups.
///
/// Channels are spread over `groups` shard groups: a channel's group is a
/// stable hash (32-bit FNV-1a) of `app SEP channel` modulo `groups`, the
/// same on every node and every run. Every key about a channel, the
/// per-group sets that list channels (an app's occupied channels, its
/// held-back leaves, a node's shares) and the group's bus channel carry the
/// hash tag `{prefix:g<group>}`: on a Redis Cluster they live in one slot,
/// so each Lua script touches one slot and may `SPUBLISH` to its group's
/// bus channel. The prefix is in the tag so two prefixes sharing a cluster
/// spread independently. Per-user keys use `{app:user}`; node-wide keys
/// (nodes, reaping lock, sequence, idempotency) are single-key commands.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    groups: u16,
    /// Every group's bus channel, built once: a publish names one.
    buses: std::sync::Arc<[String]>,
}

/// Separates fields inside keys and set members; channel names and JSON
/// text never contain it.
pub const SEP: char = '\u{1f}';

impl Keys {
    /// Keys under `prefix`, channels spread over `groups` (at least 1).
    pub fn new(prefix: &str, groups: u16) -> Self {
        let groups = groups.max(1);
        let buses = (0..groups)
            .map(|group| format!("{{{prefix}:g{group}}}:bus"))
            .collect();
        Keys {
            prefix: prefix.to_owned(),
            groups,
            buses,
        }
    }

    /// The number of shard groups.
    pub fn groups(&self) -> u16 {
        self.groups
    }

    /// STRING: the node holding HTTP session `id` (`{key}/{server}/{session}`),
    /// with a time to live (see `xhr_relay`).
    pub fn xhr_session(&self, id: &str) -> String {
        format!("{}:xhr:{id}", self.prefix)
    }

    /// The shard group of a channel (32-bit FNV-1a of `app SEP channel`).
    pub fn group(&self, app_id: &str, channel: &str) -> u16 {
        let mut hash: u32 = 0x811c_9dc5;
        let sep = [SEP as u8];
        for byte in app_id
            .as_bytes()
            .iter()
            .chain(&sep)
            .chain(channel.as_bytes())
        {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        (hash % u32::from(self.groups)) as u16
    }

    /// The hash tag of a group: `{prefix:g<group>}`.
    pub fn tag(&self, group: u16) -> String {
        format!("{{{}:g{group}}}", self.prefix)
    }

    /// The pub/sub channel of a group (SSUBSCRIBE'd on a Redis Cluster):
    /// `{prefix:g<group>}:bus`. `group` comes from [`Self::group`] or
    /// [`Self::node_group`] (below [`Self::groups`]); beyond, the last.
    pub fn bus(&self, group: u16) -> &str {
        let last = self.buses.len().saturating_sub(1);
        &self.buses[usize::from(group).min(last)]
    }

    /// The group whose bus channel is `channel`, if any.
    pub fn bus_group(&self, channel: &str) -> Option<u16> {
        let at = self.buses.iter().position(|bus| bus == channel)?;
        u16::try_from(at).ok()
    }

    /// The bus channel of a channel's group.
    pub fn channel_bus(&self, app_id: &str, channel: &str) -> &str {
        self.bus(self.group(app_id, channel))
    }

    /// The group a node's own messages travel on (usage reports,
    /// invalidations, relays addressed to it): any group reaches every
    /// node, one group keeps a node's messages in order, and nodes spread
    /// over the shards.
    pub fn node_group(&self, node: &str) -> u16 {
        self.group("", node)
    }

    /// A per-channel key: `{prefix:g<group>}:app:kind:channel`.
    fn channel_key(&self, kind: &str, app_id: &str, channel: &str) -> String {
        let tag = self.tag(self.group(app_id, channel));
        format!("{tag}:{app_id}:{kind}:{channel}")
    }

    /// ZSET of live nodes scored by last heartbeat (unix ms).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// SET of `app SEP channel` of a group a node has a share in.
    pub fn node_channels(&self, node: &str, group: u16) -> String {
        format!("{}:node:{node}:channels", self.tag(group))
    }

    /// The id of a channel inside a node's set.
    pub fn node_channel_id(app_id: &str, channel: &str) -> String {
        format!("{app_id}{SEP}{channel}")
    }

    /// HASH node → subscribed sockets.
    pub fn subs(&self, app_id: &str, channel: &str) -> String {
        self.channel_key("subs", app_id, channel)
    }

    /// HASH `node SEP user` → 1.
    pub fn members(&self, app_id: &str, channel: &str) -> String {
        self.channel_key("members", app_id, channel)
    }

    /// HASH user → user_info JSON.
    pub fn info(&self, app_id: &str, channel: &str) -> String {
        self.channel_key("info", app_id, channel)
    }

    /// SET of an app's occupied channels of a group.
    pub fn app_channels(&self, app_id: &str, group: u16) -> String {
        format!("{}:{app_id}:channels", self.tag(group))
    }

    /// ZSET of an app's held-back leave webhooks, scored by when they are
    /// due (unix ms): `v SEP channel` (channel_vacated) and
    /// `r SEP channel SEP user` (member_removed). See [`super::held`].
    /// One ZSET per group.
    pub fn held(&self, app_id: &str, group: u16) -> String {
        format!("{}:{app_id}:held", self.tag(group))
    }

    /// HASH of the last `pusher_internal:subscription_count` sent for a
    /// channel: `n` (the count), `at` (unix ms). See [`super::counts`].
    pub fn count(&self, app_id: &str, channel: &str) -> String {
        self.channel_key("count", app_id, channel)
    }

    /// STRING: last event of a cache channel.
    pub fn cache(&self, app_id: &str, channel: &str) -> String {
        self.channel_key("cache", app_id, channel)
    }

    /// STRING: the app's stored-message sequence.
    pub fn sequence(&self, app_id: &str) -> String {
        format!("{}:{app_id}:seq", self.prefix)
    }

    /// STREAM of a history channel's events, entry id `serial-0`, fields
    /// `f` (frame), `t` (unix ms), `x` (excluded socket, '' for none). In
    /// the channel's group, like its bus channel: the history script
    /// publishes what it stores.
    pub fn history(&self, app_id: &str, channel: &str) -> String {
        self.channel_key("history", app_id, channel)
    }

    /// STRING: a history channel's last serial (same slot as its stream).
    pub fn history_serial(&self, app_id: &str, channel: &str) -> String {
        self.channel_key("serial", app_id, channel)
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

    /// HASH node → 1 for every node where a user has a signed-in socket
    /// (see `adapter::redis::signins`). The `{app:user}` hash tag keeps a
    /// user in one slot.
    pub fn signins(&self, app_id: &str, user_id: &str) -> String {
        format!("{}:signins:{{{app_id}:{user_id}}}", self.prefix)
    }

    /// SET of `app SEP user` signed in on a node: what reaping it must undo.
    pub fn node_signins(&self, node: &str) -> String {
        format!("{}:node:{node}:signins", self.prefix)
    }

    /// Lock held while one node reaps a dead one.
    pub fn reaping(&self, node: &str) -> String {
        format!("{}:reaping:{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster hashes: the text inside the first `{...}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a tag");
        let close = open + key[open..].find('}').expect("a closed tag");
        &key[open + 1..close]
    }

    #[test]
    fn every_key_a_channel_script_touches_shares_the_channels_group_tag() {
        let keys = Keys::new("p", 16);
        for channel in ["c", "presence-room-1", "private-x", "#server-to-user-u"] {
            let g = keys.group("a", channel);
            let tag = format!("p:g{g}");
            for key in [
                keys.subs("a", channel),
                keys.members("a", channel),
                keys.info("a", channel),
                keys.count("a", channel),
                keys.cache("a", channel),
                keys.history("a", channel),
                keys.history_serial("a", channel),
                keys.node_channels("n1", g),
                keys.app_channels("a", g),
                keys.held("a", g),
                keys.channel_bus("a", channel).to_owned(),
            ] {
                assert_eq!(hash_tag(&key), tag, "{key}");
            }
        }
        assert_eq!(
            keys.subs("a", "c"),
            format!("{{p:g{}}}:a:subs:c", keys.group("a", "c"))
        );
        assert_eq!(Keys::node_channel_id("a", "c"), "a\u{1f}c");
        // Two prefixes never share a tag.
        assert_ne!(hash_tag(Keys::new("q", 16).bus(0)), hash_tag(keys.bus(0)));
    }

    #[test]
    fn groups_are_stable_and_spread() {
        let keys = Keys::new("p", 16);
        // FNV-1a of "a\x1fc": the same on every node and every run (the
        // protocol tests compute it too: redis-cluster-helpers.mjs).
        assert_eq!(keys.group("a", "c"), 14);
        assert_eq!(keys.group("b", "c"), 7);
        assert_eq!(Keys::new("other", 16).group("a", "c"), keys.group("a", "c"));
        let used: std::collections::BTreeSet<u16> = (0..200)
            .map(|i| keys.group("a", &format!("room-{i}")))
            .collect();
        assert_eq!(used.len(), 16, "200 channels use every group");
        assert_eq!(Keys::new("p", 1).group("a", "c"), 0);
        assert_eq!(Keys::new("p", 0).groups(), 1);
    }

    #[test]
    fn per_user_keys_keep_their_user_tag() {
        let keys = Keys::new("p", 16);
        assert_eq!(keys.positions("a", "u-1"), "p:positions:{a:u-1}");
        assert_eq!(keys.delivery("a", "u-1"), "p:delivery:{a:u-1}");
        assert_eq!(keys.signins("a", "u-1"), "p:signins:{a:u-1}");
    }
}
