//! Apps and the registry that finds them by id (HTTP API) or key (WebSocket).
//!
//! The registry holds the config file's apps and, beside them, the apps
//! managed at runtime (admin API, `[apps_store]`). Its tables are swapped
//! whole ([`arc_swap`]): a handshake or a signed request reads them without
//! a lock and never waits on the store; a change builds new tables and
//! tells its watchers ([`AppRegistry::subscribe`]), which create or drop
//! their per-app state.
//!
//! - [`store`]: where runtime apps are kept (memory or MongoDB).
//! - [`admin`]: create / update / delete, validated like the config file.
//! - [`sync`]: keeps the registry in step with the store on every node.

pub mod admin;
pub mod store;
pub mod sync;

use crate::config::AppConfig;
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;

/// One app: credentials and limits, shared by every connection of the app.
pub type App = AppConfig;

/// Where an app of the registry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppSource {
    /// `[[apps]]` of the config file (wins over a stored app).
    Config,
    /// The apps store (admin API).
    Store,
}

impl AppSource {
    /// The `source` label of `rusher_apps`.
    pub fn label(self) -> &'static str {
        match self {
            AppSource::Config => "config",
            AppSource::Store => "store",
        }
    }
}

/// One snapshot of the registry: what readers see, never changed in place.
#[derive(Debug, Default)]
struct Tables {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
    /// Every app once, config apps first, with its source.
    list: Vec<(Arc<App>, AppSource)>,
}

impl Tables {
    /// Adds `app` unless one of its ids or its key is taken; returns what
    /// is taken otherwise.
    fn add(&mut self, app: Arc<App>, source: AppSource) -> Result<(), String> {
        if self.by_key.contains_key(&app.key) {
            return Err(format!("key `{}`", app.key));
        }
        let ids: Vec<&String> = std::iter::once(&app.id)
            .chain(app.id_aliases.iter().filter(|a| **a != app.id))
            .collect();
        if let Some(taken) = ids.iter().find(|id| self.by_id.contains_key(id.as_str())) {
            return Err(format!("id `{taken}`"));
        }
        for id in ids {
            self.by_id.insert(id.clone(), app.clone());
        }
        self.by_key.insert(app.key.clone(), app.clone());
        self.list.push((app, source));
        Ok(())
    }
}

/// A stored app left out of the registry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The stored app's id.
    pub id: String,
    /// What it clashes with (`id `x`` or `key `y``).
    pub taken: String,
}

/// Finds apps by id or by key; lock-free reads, whole-table swaps.
#[derive(Debug)]
pub struct AppRegistry {
    tables: ArcSwap<Tables>,
    /// The config file's apps, kept to rebuild the tables on a store change.
    config_apps: Vec<Arc<App>>,
    /// Bumped after every swap; watchers diff their state against the tables.
    changes: watch::Sender<u64>,
}

impl Default for AppRegistry {
    fn default() -> Self {
        AppRegistry::new([])
    }
}

impl AppRegistry {
    /// Builds the registry from the configured apps (already validated unique).
    pub fn new(apps: impl IntoIterator<Item = App>) -> Self {
        let config_apps: Vec<Arc<App>> = apps.into_iter().map(Arc::new).collect();
        let mut tables = Tables::default();
        for app in &config_apps {
            // Validated unique by Config::validate; a clash here is a bug in
            // a test's hand-made list, kept out rather than panicking.
            if let Err(taken) = tables.add(app.clone(), AppSource::Config) {
                tracing::error!(app_id = %app.id, %taken, "config app left out: already used");
            }
        }
        AppRegistry {
            tables: ArcSwap::from_pointee(tables),
            config_apps,
            changes: watch::channel(0).0,
        }
    }

    /// The app with this id or one of its `id_aliases` (HTTP API paths).
    pub fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.tables.load().by_id.get(id).cloned()
    }

    /// The app with this key (WebSocket URL).
    pub fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.tables.load().by_key.get(key).cloned()
    }

    /// Every app, once each (keys are unique; ids have aliases), as of now.
    pub fn all(&self) -> impl Iterator<Item = Arc<App>> {
        let tables = self.tables.load_full();
        (0..tables.list.len()).map(move |i| tables.list[i].0.clone())
    }

    /// Every app with where it comes from, as of now.
    pub fn all_with_source(&self) -> Vec<(Arc<App>, AppSource)> {
        self.tables.load().list.clone()
    }

    /// Where the app with this id (not an alias) comes from.
    pub fn source(&self, id: &str) -> Option<AppSource> {
        let tables = self.tables.load();
        tables
            .list
            .iter()
            .find(|(app, _)| app.id == id)
            .map(|(_, source)| *source)
    }

    /// Whether `id` or `key` is taken by a config-file app (which wins over
    /// any stored app).
    pub fn config_app_uses(&self, id: &str, key: &str) -> bool {
        self.config_apps.iter().any(|app| {
            app.key == key || app.id == id || app.id_aliases.iter().any(|alias| alias == id)
        })
    }

    /// Replaces the stored apps with `stored` (the whole store's content):
    /// config apps win, then stored apps in order; a clash leaves the
    /// stored app out (returned, for the caller to log and count). Watchers
    /// are told. Readers see the old tables or the new, never a mix.
    pub fn replace_stored(&self, stored: impl IntoIterator<Item = App>) -> Vec<Skipped> {
        let mut tables = Tables::default();
        for app in &self.config_apps {
            let _ = tables.add(app.clone(), AppSource::Config);
        }
        let mut skipped = Vec::new();
        for app in stored {
            let id = app.id.clone();
            if let Err(taken) = tables.add(Arc::new(app), AppSource::Store) {
                skipped.push(Skipped { id, taken });
            }
        }
        self.tables.store(Arc::new(tables));
        self.changes.send_modify(|generation| *generation += 1);
        skipped
    }

    /// A receiver that wakes after every change of the registry.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Apps per source (`rusher_apps{source}`).
    pub fn counts(&self) -> [(AppSource, usize); 2] {
        let tables = self.tables.load();
        let stored = tables
            .list
            .iter()
            .filter(|(_, source)| *source == AppSource::Store)
            .count();
        [
            (AppSource::Config, tables.list.len() - stored),
            (AppSource::Store, stored),
        ]
    }

    /// The ids (not aliases) of every app, as of now.
    pub fn ids(&self) -> HashSet<String> {
        self.tables
            .load()
            .list
            .iter()
            .map(|(app, _)| app.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_found_by_id_and_by_key() {
        let registry = AppRegistry::new([
            AppConfig::with_credentials("1", "k1", "s1"),
            AppConfig::with_credentials("2", "k2", "s2"),
        ]);
        assert_eq!(
            registry.by_id("2").map(|a| a.key.clone()),
            Some("k2".into())
        );
        assert_eq!(
            registry.by_key("k1").map(|a| a.id.clone()),
            Some("1".into())
        );
        assert!(registry.by_key("1").is_none());
        assert_eq!(registry.all().count(), 2);
    }

    #[test]
    fn an_alias_finds_the_same_app_which_is_listed_once() {
        let registry = AppRegistry::new([AppConfig {
            id_aliases: vec!["1".into()],
            ..AppConfig::with_credentials("app-id", "app-key", "app-secret")
        }]);
        let by_alias = registry.by_id("1").map(|a| a.id.clone());
        assert_eq!(by_alias, Some("app-id".into()));
        assert_eq!(registry.all().count(), 1);
    }

    #[test]
    fn a_swap_adds_changes_and_removes_stored_apps_and_tells_watchers() {
        let registry = AppRegistry::new([AppConfig::with_credentials("c", "ck", "cs")]);
        let mut changes = registry.subscribe();
        let skipped = registry.replace_stored([AppConfig::with_credentials("s", "sk", "ss")]);
        assert!(skipped.is_empty());
        assert!(changes.has_changed().unwrap_or(false));
        changes.mark_unchanged();
        assert_eq!(
            registry.by_key("sk").map(|a| a.id.clone()),
            Some("s".into())
        );
        assert_eq!(registry.source("s"), Some(AppSource::Store));
        assert_eq!(registry.source("c"), Some(AppSource::Config));
        // A reader holding the old app keeps it; new reads see the change.
        let before = registry.by_id("s");
        registry.replace_stored([AppConfig {
            enabled: false,
            ..AppConfig::with_credentials("s", "sk", "ss")
        }]);
        assert!(before.is_some_and(|app| app.enabled));
        assert!(registry.by_id("s").is_some_and(|app| !app.enabled));
        registry.replace_stored([]);
        assert!(registry.by_id("s").is_none() && registry.by_key("sk").is_none());
        assert!(registry.by_id("c").is_some());
        assert!(changes.has_changed().unwrap_or(false));
        assert_eq!(
            registry.counts(),
            [(AppSource::Config, 1), (AppSource::Store, 0)]
        );
    }

    #[test]
    fn a_config_app_wins_over_a_stored_app_with_its_id_or_key() {
        let registry = AppRegistry::new([AppConfig {
            id_aliases: vec!["1".into()],
            ..AppConfig::with_credentials("c", "ck", "cs")
        }]);
        let skipped = registry.replace_stored([
            AppConfig::with_credentials("c", "other", "x"),
            AppConfig::with_credentials("1", "other2", "x"),
            AppConfig::with_credentials("s", "ck", "x"),
            AppConfig::with_credentials("ok", "okk", "x"),
        ]);
        let ids: Vec<&str> = skipped.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["c", "1", "s"]);
        assert_eq!(
            registry.by_key("ck").map(|a| a.secret.clone()),
            Some("cs".into())
        );
        assert!(registry.by_key("okk").is_some());
        assert!(registry.config_app_uses("1", "zzz"));
        assert!(!registry.config_app_uses("ok", "okk"));
    }
}
