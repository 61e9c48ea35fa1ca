//! The in-process adapter: this node is the whole deployment.

use super::{Adapter, ChannelStats};
use crate::hub::channels::{AppChannels, FanOut};
use crate::hub::node::Node;
use async_trait::async_trait;
use bytestring::ByteString;
use std::sync::Arc;

/// Delivers to this node's subscribers only.
pub struct LocalAdapter {
    node: Arc<Node>,
}

impl LocalAdapter {
    /// An adapter over this node's state.
    pub fn new(node: Arc<Node>) -> Self {
        LocalAdapter { node }
    }

    fn channels(&self, app_id: &str) -> Option<&AppChannels> {
        self.node.app(app_id).map(|state| &state.channels)
    }
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
        self.channels(app_id)
            .map_or_else(FanOut::default, |c| c.deliver(channel, &frame, except))
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.channels(app_id)
            .map_or(0, |c| c.subscription_count(channel))
    }

    async fn user_count(&self, app_id: &str, channel: &str) -> usize {
        self.channels(app_id).map_or(0, |c| c.user_count(channel))
    }

    async fn member_ids(&self, app_id: &str, channel: &str) -> Vec<String> {
        self.channels(app_id)
            .map_or_else(Vec::new, |c| c.member_ids(channel))
    }

    async fn occupied_channels(&self, app_id: &str) -> Vec<ChannelStats> {
        self.channels(app_id).map_or_else(Vec::new, |c| {
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
