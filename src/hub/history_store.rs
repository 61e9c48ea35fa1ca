//! Where channel histories live, chosen once in server.rs: this node's
//! memory ([`HistoryStore::Memory`], one node), or a store every node shares
//! ([`HistoryStore::Shared`]: the Redis stream with `adapter = "redis"`).
//!
//! The hub has one publish path and one recovery path with the store behind
//! it. With a shared store the node's [`super::history::AppHistory`] is a
//! mirror: every node, the publishing one included, appends each event the
//! bus brings (in the bus order, which is the serial order) and delivers it
//! under the channel's history lock, so recovery from the mirror is exact as
//! on one node; what the mirror lacks is read from the store.

use super::history::{Fetched, Page};
use crate::apps::App;
use async_trait::async_trait;
use serde_json::value::RawValue;
use std::sync::Arc;

/// The shared store cannot be reached (or did not answer within the
/// adapter's operation timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The reason sent in `pusher:recovery_failed` and the 503 of the history API.
pub const UNAVAILABLE: &str = "history is unavailable: its store (Redis) cannot be reached";

/// An event to publish on a channel with history.
#[derive(Debug, Clone, Copy)]
pub struct Publication<'a> {
    /// Channel.
    pub channel: &'a str,
    /// Event name.
    pub event: &'a str,
    /// Data as published.
    pub data: &'a RawValue,
    /// Sender of a client event on a presence channel.
    pub user_id: Option<&'a str>,
    /// Socket that does not get it (API `socket_id`, client event sender).
    pub except: Option<&'a str>,
    /// Acknowledged delivery's id for this publish (`[apps.delivery]`).
    pub message_id: Option<&'a str>,
}

/// A history every node shares.
#[async_trait]
pub trait SharedHistory: Send + Sync + 'static {
    /// Stores the event with the next serial and delivers it through the
    /// bus to every node (this one too), in serial order, without waiting.
    /// When the store is unreachable the event goes at once, without a
    /// serial, to this node's subscribers, and its write is queued (bounded)
    /// for when the store is back.
    fn publish(&self, app: &App, event: Publication<'_>);

    /// Whether the store holding `channel`'s history is reachable now (its
    /// last operation succeeded; on a sharded store, that channel's shard).
    fn available(&self, app: &App, channel: &str) -> bool;

    /// What the store keeps after `since` (at most `history_size` events),
    /// read so that this node's mirror has handled every event the read
    /// saw: on return, events up to the fetched latest are in the fetched
    /// part or the mirror, and later ones reach subscribers live.
    async fn fetch(&self, app: &App, channel: &str, since: u64) -> Result<Fetched, Unavailable>;

    /// A page of the history API from the store (every node answers the same).
    async fn page(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<Page, Unavailable>;
}

/// Where histories live.
#[derive(Clone, Default)]
pub enum HistoryStore {
    /// This node's ring buffers (`adapter = "local"`).
    #[default]
    Memory,
    /// A store every node shares; this node's buffers mirror it.
    Shared(Arc<dyn SharedHistory>),
}
