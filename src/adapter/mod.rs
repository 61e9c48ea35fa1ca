//! Fan-out and shared state behind one trait, so a cluster adapter (Redis)
//! can plug in without touching ws/ or http/.
//!
//! The hub changes this node's state first ([`crate::hub::channels`]) and
//! then tells the adapter, which answers with what the change means for the
//! whole deployment: whether the channel became occupied, whether a presence
//! member was added cluster-wide, who the members are.
//!
//! - [`local`]: one process; this node is the whole deployment.
//! - [`redis`]: many nodes sharing messages and state through Redis.

pub mod local;
pub mod redis;

use crate::hub::channels::{FanOut, Subscribed, Unsubscribed};
use crate::hub::idempotency::{Answer, Claim, ClaimToken};
use async_trait::async_trait;
use bytestring::ByteString;
use serde_json::value::RawValue;
use std::time::Duration;

/// An occupied channel with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    /// Channel name.
    pub name: String,
    /// Subscribed sockets.
    pub subscription_count: usize,
    /// Distinct presence members (0 on other channels).
    pub user_count: usize,
}

/// A presence member joining, as the adapter records it.
#[derive(Debug, Clone, Copy)]
pub struct MemberJoin<'a> {
    /// The user id.
    pub user_id: &'a str,
    /// The user info as sent.
    pub user_info: Option<&'a RawValue>,
    /// Most members the channel may hold deployment-wide.
    pub max_members: usize,
    /// The member asked for peer channels (`"peer": true`).
    pub peer: bool,
}

/// What a subscription on this node means for the deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    /// The channel had no subscriber anywhere before, and was not left
    /// within the hold-back (then the cluster cancelled its held vacated
    /// and this occupied is not sent either).
    pub occupied: bool,
    /// The user had no socket on the channel anywhere before (the
    /// `pusher_internal:member_added` frame).
    pub member_added: bool,
    /// The `member_added` webhook is due: `member_added`, unless it cancelled
    /// the user's removal the cluster was holding back.
    pub member_added_webhook: bool,
    /// Subscribers deployment-wide after the change.
    pub subscription_count: usize,
    /// Presence: the `subscription_succeeded` data with every member.
    pub presence_data: Option<String>,
    /// A peer member's join: the user ids of the channel's peer members
    /// deployment-wide (the joiner among them); `None` when only this
    /// node's are known (the local adapter, or Redis unreachable).
    pub peers: Option<Vec<String>>,
}

/// What leaving a channel on this node means for the deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Left {
    /// The channel has no subscriber anywhere now, and its `channel_vacated`
    /// is to be emitted now (not held by the cluster, see `held`).
    pub vacated: bool,
    /// The user has no socket on the channel anywhere now (the
    /// `pusher_internal:member_removed` frame).
    pub member_removed: bool,
    /// The `member_removed` webhook is to be emitted now (false when the
    /// cluster holds it back).
    pub member_removed_webhook: bool,
    /// The cluster holds the channel's `channel_vacated` back (with its
    /// `subscription_count` 0); a node releases it once due, unless the
    /// channel is occupied again first.
    pub held: bool,
    /// Subscribers deployment-wide after the change.
    pub subscription_count: usize,
}

/// What became of one channel's `pusher_internal:subscription_count` at a
/// tick of subscription counting ([`crate::hub::counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountSent {
    /// Sent to every subscriber (on every node).
    Sent,
    /// Another node sent one within the interval: ask again later.
    Later,
    /// Nothing to send: the channel is empty, or its count was sent already.
    Done,
}

/// The deployment-wide presence member limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLimit(pub usize);

/// What claiming an idempotency key found, deployment-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    /// Whose the key is (see [`Claim`]).
    pub claim: Claim,
    /// Keys this node's table evicted to make room (0 or 1).
    pub evicted: u64,
    /// The shared store (Redis) could not answer: this node's table decided,
    /// so a repeat reaching another node meanwhile may be delivered again.
    pub fell_back: bool,
}

/// How published frames reach subscribers and how shared state is kept.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Delivers an already-encoded frame to every subscriber of `channel`
    /// except the socket `except`, on every node.
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: ByteString,
        except: Option<&str>,
    ) -> FanOut;

    /// Records a subscription made on this node (`local` is this node's view).
    async fn joined(
        &self,
        app_id: &str,
        channel: &str,
        local: &Subscribed,
        member: Option<MemberJoin<'_>>,
    ) -> Result<Joined, MemberLimit>;

    /// Records leaving a channel on this node.
    async fn left(
        &self,
        app_id: &str,
        channel: &str,
        local: &Unsubscribed,
        user_id: Option<&str>,
    ) -> Left;

    /// Remembers the last event of a cache channel for `ttl`.
    async fn cache_put(&self, app_id: &str, channel: &str, frame: ByteString, ttl: Duration);

    /// The last event of a cache channel and its remaining life.
    async fn cache_get(&self, app_id: &str, channel: &str) -> Option<(ByteString, Duration)>;

    /// Closes every socket of a signed-in user, on every node.
    async fn terminate_user(&self, app_id: &str, user_id: &str);

    /// Subscribers of `channel` across the deployment.
    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize;

    /// Distinct presence members of `channel` across the deployment.
    async fn user_count(&self, app_id: &str, channel: &str) -> usize;

    /// User ids of a presence channel's members across the deployment.
    async fn member_ids(&self, app_id: &str, channel: &str) -> Vec<String>;

    /// Occupied channels with their counts across the deployment.
    async fn occupied_channels(&self, app_id: &str) -> Vec<ChannelStats>;

    /// Sends each channel's deployment-wide subscriber count to its
    /// subscribers as `pusher_internal:subscription_count`, at most once per
    /// `gap` per channel; `force` (a new subscriber) sends an unchanged
    /// count too. One answer per channel, in order.
    async fn announce_counts(
        &self,
        app_id: &str,
        channels: &[(String, bool)],
        gap: Duration,
    ) -> Vec<CountSent>;

    /// A user's sign-in on this node changed: `online` when their first
    /// socket here signed in, not when their last one here closed. Watchers
    /// of the user on every node get `pusher_internal:watchlist_events`
    /// when the user's deployment-wide state changes (first signed-in socket
    /// anywhere: `online`; last anywhere: `offline`), once. Does not wait.
    fn sign_in_changed(&self, app_id: &str, user_id: &str, online: bool);

    /// Those of `user_ids` signed in on another node and not on this one
    /// (empty with one node, or when the cluster cannot answer).
    async fn signed_in_elsewhere(&self, _app_id: &str, _user_ids: Vec<String>) -> Vec<String> {
        Vec::new()
    }

    /// A peer member (`"peer": true`) of a presence channel joined it
    /// (`added`: their first socket anywhere) or left it (their last
    /// anywhere): every node sends its own peer members of the channel
    /// `pusher:peer_added` / `pusher:peer_removed` for their peer channel
    /// with the user (and, on removal, ends that channel). Does not wait.
    fn peer_changed(&self, app_id: &str, channel: &str, user_id: &str, added: bool);

    /// Whether `user_id` is a peer member of the presence `channel`
    /// anywhere in the deployment.
    async fn is_peer_member(&self, app_id: &str, channel: &str, user_id: &str) -> bool;

    /// Whether a frame published on `channel` could reach anyone; `false`
    /// lets the hub skip encoding it. Cluster adapters cannot tell cheaply.
    fn may_have_subscribers(&self, _app_id: &str, _channel: &str) -> bool {
        true
    }

    /// The next deployment-wide sequence for stored messages of an app, at
    /// least `floor + 1`; `None` when there is no shared counter (one node).
    async fn next_sequence(&self, _app_id: &str, _floor: u64) -> Option<u64> {
        None
    }

    /// Claims an idempotency key of an app for `window` (atomically: of
    /// two claims at once, on any nodes, one wins), or says who has it.
    /// `token` identifies this claim to [`Adapter::store_idempotent_answer`]
    /// and [`Adapter::release_idempotency_key`].
    async fn claim_idempotency_key(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        window: Duration,
    ) -> KeyClaim;

    /// Stores the answer of the claim `token`, for repeats until its window ends.
    async fn store_idempotent_answer(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        answer: &Answer,
    );

    /// Gives up the unanswered claim `token`, so a retry may claim the key.
    async fn release_idempotency_key(&self, app_id: &str, key: &str, token: ClaimToken);

    /// Leaves the deployment on a clean shutdown (after every socket closed).
    async fn close(&self) {}
}
