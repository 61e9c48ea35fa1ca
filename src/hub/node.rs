//! The state of this node: one [`AppState`] per configured app.

use super::cache::EventCache;
use super::channels::AppChannels;
use super::users::Users;
use crate::apps::AppRegistry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One app's state on this node.
#[derive(Debug)]
pub struct AppState {
    /// Channels, subscribers, presence members, connections.
    pub channels: AppChannels,
    /// Signed-in users and watchlists.
    pub users: Users,
    /// Last event of each cache channel.
    pub cache: EventCache,
}

/// This node's state, per app.
#[derive(Debug, Default)]
pub struct Node {
    apps: HashMap<String, Arc<AppState>>,
}

impl Node {
    /// Empty state for every app of the registry.
    pub fn new(apps: &AppRegistry) -> Self {
        Node {
            apps: apps
                .all()
                .map(|app| {
                    let state = AppState {
                        channels: AppChannels::default(),
                        users: Users::default(),
                        cache: EventCache::new(Duration::from_secs(app.cache_ttl)),
                    };
                    (app.id.clone(), Arc::new(state))
                })
                .collect(),
        }
    }

    /// The state of one app.
    pub fn app(&self, app_id: &str) -> Option<&Arc<AppState>> {
        self.apps.get(app_id)
    }

    /// The ids of every app.
    pub fn app_ids(&self) -> impl Iterator<Item = &str> {
        self.apps.keys().map(String::as_str)
    }

    /// Every app's state.
    pub fn apps(&self) -> impl Iterator<Item = &Arc<AppState>> {
        self.apps.values()
    }
}
