//! Fan-out and shared state behind one trait, so a cluster adapter (Redis)
//! or persistence can plug in without touching ws/ or http/.
//!
//! - [`local`]: one process; delivers straight to this node's subscribers.

pub mod local;

use crate::hub::channels::FanOut;
use async_trait::async_trait;
use bytestring::ByteString;

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

/// How published frames reach subscribers and how channel state is read.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Delivers an already-encoded frame to every subscriber of `channel`
    /// except the socket `except`.
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: ByteString,
        except: Option<&str>,
    ) -> FanOut;

    /// Subscribers of `channel` across the deployment.
    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize;

    /// Distinct presence members of `channel` across the deployment.
    async fn user_count(&self, app_id: &str, channel: &str) -> usize;

    /// User ids of a presence channel's members across the deployment.
    async fn member_ids(&self, app_id: &str, channel: &str) -> Vec<String>;

    /// Occupied channels with their counts across the deployment.
    async fn occupied_channels(&self, app_id: &str) -> Vec<ChannelStats>;
}
