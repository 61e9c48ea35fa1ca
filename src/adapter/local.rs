//! The in-process adapter: this node is the whole deployment, so the
//! deployment-wide answers are this node's.

use super::{Adapter, ChannelStats, CountSent, Joined, KeyClaim, Left, MemberJoin, MemberLimit};
use crate::hub::channels::{FanOut, Subscribed, Unsubscribed};
use crate::hub::idempotency::{Answer, Claim, ClaimToken};
use crate::hub::node::Node;
use crate::protocol::error::ErrorCode;
use crate::protocol::frames;
use async_trait::async_trait;
use bytestring::ByteString;
use std::sync::Arc;
use std::time::Duration;

/// Delivers to this node's subscribers only.
pub struct LocalAdapter {
    node: Arc<Node>,
}

impl LocalAdapter {
    /// An adapter over this node's state.
    pub fn new(node: Arc<Node>) -> Self {
        LocalAdapter { node }
    }
}

/// This node's view of a join, for adapters with nobody else to ask.
pub fn local_joined(local: &Subscribed) -> Joined {
    Joined {
        occupied: local.new_socket && local.subscribers == 1,
        member_added: local.member_added,
        member_added_webhook: local.member_added,
        subscription_count: local.subscribers,
        presence_data: local.presence_data.clone(),
        peers: None,
    }
}

/// Sends `pusher_internal:watchlist_events` (`online` or `offline` for
/// `user_id`) to this node's watchers of the user.
pub fn announce_watchlist_locally(node: &Node, app_id: &str, user_id: &str, online: bool) {
    let Some(state) = node.app(app_id) else {
        return;
    };
    let watchers = state.users.watchers_of(user_id);
    if watchers.is_empty() {
        return;
    }
    let name = if online { "online" } else { "offline" };
    let frame = frames::watchlist_event(name, &[user_id]);
    for watcher in watchers {
        watcher.send(frame.clone());
    }
}

/// Tells this node's peer members of `channel` that the peer member
/// `user_id` joined or left (see [`crate::hub::peer::tell_local_peers`]).
pub fn tell_peers_locally(node: &Node, app_id: &str, channel: &str, user_id: &str, added: bool) {
    if let Some(state) = node.app(app_id) {
        crate::hub::peer::tell_local_peers(&state.channels, channel, user_id, added);
    }
}

/// This node's view of a leave.
pub fn local_left(local: &Unsubscribed) -> Left {
    Left {
        vacated: local.removed && local.subscribers == 0,
        member_removed: local.member_removed.is_some(),
        member_removed_webhook: local.member_removed.is_some(),
        held: false,
        subscription_count: local.subscribers,
    }
}

/// Sends this node's count of `channel` to this node's subscribers (the
/// whole deployment with the local adapter; a Redis outage otherwise).
pub fn announce_count_locally(node: &Node, app_id: &str, channel: &str) -> CountSent {
    let count = node
        .channels(app_id)
        .map_or(0, |c| c.subscription_count(channel));
    if count == 0 {
        return CountSent::Done;
    }
    node.deliver(
        app_id,
        channel,
        &frames::subscription_count(channel, count),
        None,
    );
    CountSent::Sent
}

/// Claims an idempotency key in this node's table (an unknown app has no
/// table: the claim is granted, nothing is remembered).
pub fn claim_key_locally(
    node: &Node,
    app_id: &str,
    key: &str,
    token: ClaimToken,
    window: Duration,
) -> KeyClaim {
    let Some(state) = node.app(app_id) else {
        return KeyClaim {
            claim: Claim::Claimed(token),
            evicted: 0,
            fell_back: false,
        };
    };
    let claimed = state
        .idempotency
        .claim(key, token, std::time::Instant::now(), window);
    KeyClaim {
        claim: claimed.claim,
        evicted: claimed.evicted,
        fell_back: false,
    }
}

/// Closes this node's sockets of a user with 4009 (`terminate_connections`):
/// those signed in as the user and those that are a presence member with
/// that `user_id` on any channel, signed in or not. Both identities are
/// signed by the app's backend; a socket that only joined a presence channel
/// is the user's as much as a signed-in one (README "HTTP API"). Returns how
/// many sockets were asked to close.
pub fn close_user_sockets(node: &Node, app_id: &str, user_id: &str) -> usize {
    let Some(state) = node.app(app_id) else {
        return 0;
    };
    let mut sockets = state.users.connections_of(user_id);
    sockets.extend(state.channels.member_connections(user_id));
    sockets.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
    sockets.dedup_by(|a, b| a.socket_id == b.socket_id);
    for connection in &sockets {
        connection.request_close(ErrorCode::Unauthorized.code());
    }
    sockets.len()
}

#[async_trait]
impl Adapter for LocalAdapter {
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: ByteString,
        except: Option<&str>,
    ) -> FanOut {
        self.node.deliver(app_id, channel, &frame, except)
    }

    async fn joined(
        &self,
        _app_id: &str,
        _channel: &str,
        local: &Subscribed,
        _member: Option<MemberJoin<'_>>,
    ) -> Result<Joined, MemberLimit> {
        // The member limit was enforced by this node's state already.
        Ok(local_joined(local))
    }

    async fn left(
        &self,
        _app_id: &str,
        _channel: &str,
        local: &Unsubscribed,
        _user_id: Option<&str>,
    ) -> Left {
        local_left(local)
    }

    async fn announce_counts(
        &self,
        app_id: &str,
        channels: &[(String, bool)],
        _gap: Duration,
    ) -> Vec<CountSent> {
        // The caller keeps the interval per channel; this node is everyone.
        channels
            .iter()
            .map(|(channel, _)| announce_count_locally(&self.node, app_id, channel))
            .collect()
    }

    fn sign_in_changed(&self, app_id: &str, user_id: &str, online: bool) {
        announce_watchlist_locally(&self.node, app_id, user_id, online);
    }

    fn peer_changed(&self, app_id: &str, channel: &str, user_id: &str, added: bool) {
        tell_peers_locally(&self.node, app_id, channel, user_id, added);
    }

    async fn is_peer_member(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        self.node
            .app(app_id)
            .is_some_and(|state| state.channels.is_peer_member(channel, user_id))
    }

    fn may_have_subscribers(&self, app_id: &str, channel: &str) -> bool {
        self.node
            .channels(app_id)
            .is_some_and(|c| c.subscription_count(channel) > 0)
    }

    async fn cache_put(&self, app_id: &str, channel: &str, frame: ByteString, _ttl: Duration) {
        if let Some(state) = self.node.app(app_id) {
            state.cache.put(channel, frame);
        }
    }

    async fn cache_get(&self, app_id: &str, channel: &str) -> Option<(ByteString, Duration)> {
        self.node.app(app_id)?.cache.get(channel)
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) {
        close_user_sockets(&self.node, app_id, user_id);
    }

    async fn claim_idempotency_key(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        window: Duration,
    ) -> KeyClaim {
        claim_key_locally(&self.node, app_id, key, token, window)
    }

    async fn store_idempotent_answer(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        answer: &Answer,
    ) {
        if let Some(state) = self.node.app(app_id) {
            state.idempotency.store(key, token, answer.clone());
        }
    }

    async fn release_idempotency_key(&self, app_id: &str, key: &str, token: ClaimToken) {
        if let Some(state) = self.node.app(app_id) {
            state.idempotency.release(key, token);
        }
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.node
            .channels(app_id)
            .map_or(0, |c| c.subscription_count(channel))
    }

    async fn user_count(&self, app_id: &str, channel: &str) -> usize {
        self.node
            .channels(app_id)
            .map_or(0, |c| c.user_count(channel))
    }

    async fn member_ids(&self, app_id: &str, channel: &str) -> Vec<String> {
        self.node
            .channels(app_id)
            .map_or_else(Vec::new, |c| c.member_ids(channel))
    }

    async fn occupied_channels(&self, app_id: &str) -> Vec<ChannelStats> {
        self.node.channels(app_id).map_or_else(Vec::new, |c| {
            c.occupied()
                .into_iter()
                .map(|(name, subscription_count, user_count)| ChannelStats {
                    name,
                    subscription_count,
                    user_count,
                })
                .collect()
        })
    }
}
