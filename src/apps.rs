//! Apps and the registry that finds them by id (HTTP API) or key (WebSocket).

use crate::config::AppConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// One app: credentials and limits, shared by every connection of the app.
pub type App = AppConfig;

/// Finds apps by id or by key.
#[derive(Debug, Default)]
pub struct AppRegistry {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
}

impl AppRegistry {
    /// Builds the registry from the configured apps (already validated unique).
    pub fn new(apps: impl IntoIterator<Item = App>) -> Self {
        let mut registry = AppRegistry::default();
        for app in apps {
            let app = Arc::new(app);
            registry.by_id.insert(app.id.clone(), app.clone());
            for alias in &app.id_aliases {
                registry.by_id.insert(alias.clone(), app.clone());
            }
            registry.by_key.insert(app.key.clone(), app);
        }
        registry
    }

    /// The app with this id or one of its `id_aliases` (HTTP API paths).
    pub fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.by_id.get(id).cloned()
    }

    /// The app with this key (WebSocket URL).
    pub fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.by_key.get(key).cloned()
    }

    /// Every app, once each (keys are unique; ids have aliases).
    pub fn all(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_key.values()
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
}
