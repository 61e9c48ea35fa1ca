//! The state of this node: one [`AppState`] per configured app.

use super::cache::EventCache;
use super::channels::{AppChannels, FanOut};
use super::counts::CountChanges;
use super::history::AppHistory;
use super::idempotency::IdempotencyTable;
use super::recovery::UserPositions;
use super::users::Users;
use crate::apps::AppRegistry;
use bytestring::ByteString;
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
    /// Per-channel history with serials (apps with `history = true`).
    pub history: AppHistory,
    /// Idempotency keys claimed through this node (see [`super::idempotency`]).
    pub idempotency: IdempotencyTable,
    /// Where signed-in users' sockets stand on history channels.
    pub positions: UserPositions,
    /// Channels whose subscription count changed (apps with
    /// `subscription_count = true` only: nothing to do for the others).
    pub count_changes: Option<CountChanges>,
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
                        history: AppHistory::new(
                            app.history_size,
                            Duration::from_secs(app.history_ttl),
                        ),
                        idempotency: IdempotencyTable::new(app.idempotency_max_keys),
                        positions: UserPositions::default(),
                        count_changes: app.subscription_count.then(CountChanges::default),
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

    /// The channels of one app.
    pub fn channels(&self, app_id: &str) -> Option<&AppChannels> {
        self.app(app_id).map(|state| &state.channels)
    }

    /// Queues an encoded frame to this node's subscribers of a channel,
    /// all but the socket `except`.
    pub fn deliver(
        &self,
        app_id: &str,
        channel: &str,
        frame: &ByteString,
        except: Option<&str>,
    ) -> FanOut {
        self.channels(app_id)
            .map_or_else(FanOut::default, |c| c.deliver(channel, frame, except))
    }

    /// Mirrors an event of a shared history (from the bus) and queues it to
    /// this node's subscribers (all but `except`) when `live`, under the
    /// channel's history lock, so a recovering subscribe sees it exactly once.
    pub fn deliver_serial(
        &self,
        app_id: &str,
        channel: &str,
        serial: u64,
        frame: &ByteString,
        except: Option<&str>,
        live: bool,
    ) -> FanOut {
        let Some(state) = self.app(app_id) else {
            return FanOut::default();
        };
        let (size, ttl) = state.history.limits();
        let now = std::time::Instant::now();
        state.history.with_channel(channel, |h| {
            h.mirror(now, size, ttl, serial, frame.clone());
            if live {
                state.channels.deliver(channel, frame, except)
            } else {
                FanOut::default()
            }
        })
    }

    /// Forgets every app's history mirrors (bus messages may have been missed).
    pub fn forget_history_mirrors(&self) {
        for state in self.apps.values() {
            state.history.forget_all();
        }
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
