//! The state of this node: one [`AppState`] per app, created when the app
//! is first used (an app added at runtime gets it like a configured one)
//! and dropped when the app leaves the registry ([`Node::retain_apps`]).
//! Readers load the table without a lock; only a creation or a removal
//! (rare) takes the writers' mutex and swaps a new table in.

use super::cache::EventCache;
use super::channels::{AppChannels, FanOut};
use super::counts::CountChanges;
use super::history::AppHistory;
use super::idempotency::IdempotencyTable;
use super::recovery::UserPositions;
use super::users::Users;
use crate::apps::{App, AppRegistry};
use arc_swap::ArcSwap;
use bytestring::ByteString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    apps: ArcSwap<HashMap<String, Arc<AppState>>>,
    /// Where apps are looked up for a state created on first use.
    registry: Arc<AppRegistry>,
    /// Serializes the (rare) table swaps, never held by readers.
    writing: Mutex<()>,
}

impl AppState {
    /// Empty state shaped by the app's options.
    pub fn new(app: &App) -> Self {
        AppState {
            channels: AppChannels::default(),
            users: Users::default(),
            cache: EventCache::new(Duration::from_secs(app.cache_ttl)),
            history: AppHistory::new(app.history_size, Duration::from_secs(app.history_ttl)),
            idempotency: IdempotencyTable::new(app.idempotency_max_keys),
            positions: UserPositions::default(),
            // Kept for every app: `subscription_count` may be turned on at
            // runtime; the hub records changes only for apps with it on.
            count_changes: Some(CountChanges::default()),
        }
    }
}

impl Node {
    /// Empty state for every app of the registry; later apps get theirs on
    /// first use.
    pub fn new(apps: &Arc<AppRegistry>) -> Self {
        let table = apps
            .all()
            .map(|app| (app.id.clone(), Arc::new(AppState::new(&app))))
            .collect();
        Node {
            apps: ArcSwap::from_pointee(table),
            registry: apps.clone(),
            writing: Mutex::new(()),
        }
    }

    /// The state of one app (by id, not alias), created on first use while
    /// the app is in the registry.
    pub fn app(&self, app_id: &str) -> Option<Arc<AppState>> {
        if let Some(state) = self.apps.load().get(app_id) {
            return Some(state.clone());
        }
        let app = self.registry.by_id(app_id).filter(|app| app.id == app_id)?;
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.apps.load_full();
        if let Some(state) = current.get(app_id) {
            return Some(state.clone());
        }
        let state = Arc::new(AppState::new(&app));
        let mut table = (*current).clone();
        table.insert(app_id.to_owned(), state.clone());
        self.apps.store(Arc::new(table));
        Some(state)
    }

    /// The state of one app if this node has it already (never creates it).
    pub fn existing(&self, app_id: &str) -> Option<Arc<AppState>> {
        self.apps.load().get(app_id).cloned()
    }

    /// Drops the state of apps no longer in the registry; returns it (so
    /// the caller can close what is still open).
    pub fn retain_apps(&self) -> Vec<Arc<AppState>> {
        let ids = self.registry.ids();
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.apps.load_full();
        if current.keys().all(|id| ids.contains(id)) {
            return Vec::new();
        }
        let (kept, gone): (HashMap<_, _>, HashMap<_, _>) = current
            .iter()
            .map(|(id, state)| (id.clone(), state.clone()))
            .partition(|(id, _)| ids.contains(id));
        self.apps.store(Arc::new(kept));
        gone.into_values().collect()
    }

    /// The channels of one app.
    pub fn channels(&self, app_id: &str) -> Option<Channels> {
        self.app(app_id).map(Channels)
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
        for state in self.apps.load().values() {
            state.history.forget_all();
        }
    }

    /// The ids of every app with state on this node.
    pub fn app_ids(&self) -> Vec<String> {
        self.apps.load().keys().cloned().collect()
    }

    /// Every app's state on this node, as of now.
    pub fn apps(&self) -> Vec<Arc<AppState>> {
        self.apps.load().values().cloned().collect()
    }
}

/// One app's channels, holding its state alive while in use.
#[derive(Debug, Clone)]
pub struct Channels(Arc<AppState>);

impl std::ops::Deref for Channels {
    type Target = AppChannels;

    fn deref(&self) -> &AppChannels {
        &self.0.channels
    }
}
