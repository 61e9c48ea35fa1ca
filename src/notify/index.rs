//! The registrations in memory, per app then channel, so that routing an
//! event never reads the store. Sharded (`DashMap`): no global lock.

use super::registration::Registration;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;

/// One app's registrations.
#[derive(Default)]
struct AppIndex {
    /// channel → its registrations.
    channels: HashMap<String, Vec<Arc<Registration>>>,
    /// Registrations in all.
    total: usize,
    /// Registrations on `personal-*` channels (reached through follows).
    personal: usize,
}

impl AppIndex {
    fn add(&mut self, registration: Registration) {
        let personal = registration.user_id().is_some();
        let list = self
            .channels
            .entry(registration.channel.clone())
            .or_default();
        match list.iter_mut().find(|r| same(r, &registration)) {
            // Same target again: its Web Push keys may be new.
            Some(existing) => *existing = Arc::new(registration),
            None => {
                list.push(Arc::new(registration));
                self.total += 1;
                self.personal += usize::from(personal);
            }
        }
    }
}

fn same(a: &Registration, b: &Registration) -> bool {
    a.kind == b.kind && a.target == b.target && a.channel == b.channel
}

/// Every app's registrations.
#[derive(Default)]
pub struct Index {
    apps: DashMap<String, AppIndex>,
}

impl Index {
    /// Replaces an app's registrations (a reload from the store).
    pub fn replace(&self, app_id: &str, registrations: Vec<Registration>) {
        let mut fresh = AppIndex::default();
        for registration in registrations {
            fresh.add(registration);
        }
        self.apps.insert(app_id.to_owned(), fresh);
    }

    /// Replaces the registrations of one channel of an app (a reload of
    /// that channel from the store).
    pub fn replace_channel(&self, app_id: &str, channel: &str, registrations: Vec<Registration>) {
        let mut app = self.apps.entry(app_id.to_owned()).or_default();
        if let Some(old) = app.channels.remove(channel) {
            let personal = old.iter().filter(|r| r.user_id().is_some()).count();
            app.total -= old.len();
            app.personal -= personal;
        }
        for registration in registrations {
            if registration.channel == channel {
                app.add(registration);
            }
        }
    }

    /// Adds (or updates) one registration.
    pub fn insert(&self, app_id: &str, registration: Registration) {
        self.apps
            .entry(app_id.to_owned())
            .or_default()
            .add(registration);
    }

    /// Removes one registration (matched on channel, kind and target); true
    /// when it was there.
    pub fn remove(&self, app_id: &str, registration: &Registration) -> bool {
        let Some(mut app) = self.apps.get_mut(app_id) else {
            return false;
        };
        let Some(list) = app.channels.get_mut(&registration.channel) else {
            return false;
        };
        let before = list.len();
        list.retain(|r| !same(r, registration));
        let removed = before != list.len();
        if list.is_empty() {
            app.channels.remove(&registration.channel);
        }
        if removed {
            app.total -= 1;
            app.personal -= usize::from(registration.user_id().is_some());
        }
        removed
    }

    /// Whether the registration (channel, kind, target) is indexed.
    pub fn contains(&self, app_id: &str, registration: &Registration) -> bool {
        self.apps.get(app_id).is_some_and(|app| {
            app.channels
                .get(&registration.channel)
                .is_some_and(|list| list.iter().any(|r| same(r, registration)))
        })
    }

    /// (registrations on `channel`, registrations of the app).
    pub fn counts(&self, app_id: &str, channel: &str) -> (usize, usize) {
        self.apps.get(app_id).map_or((0, 0), |app| {
            (app.channels.get(channel).map_or(0, Vec::len), app.total)
        })
    }

    /// (anything registered on `channel`, anything registered on a
    /// personal channel) — the publish path's cheap check.
    pub fn interest(&self, app_id: &str, channel: &str) -> (bool, bool) {
        if self.apps.is_empty() {
            return (false, false);
        }
        self.apps.get(app_id).map_or((false, false), |app| {
            (
                app.total > 0 && app.channels.contains_key(channel),
                app.personal > 0,
            )
        })
    }

    /// The registrations on `channel`.
    pub fn on_channel(&self, app_id: &str, channel: &str) -> Vec<Arc<Registration>> {
        self.apps
            .get(app_id)
            .and_then(|app| app.channels.get(channel).cloned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::registration::Kind;
    use super::*;

    fn web(channel: &str, url: &str) -> Registration {
        Registration {
            channel: channel.into(),
            kind: Kind::Web,
            target: url.into(),
            keys: None,
        }
    }

    #[test]
    fn counts_follow_inserts_and_removes() {
        let index = Index::default();
        assert_eq!(index.interest("a", "news"), (false, false));
        index.insert("a", web("news", "http://x"));
        index.insert("a", web("news", "http://x"));
        index.insert("a", web("personal-u", "http://y"));
        assert_eq!(index.counts("a", "news"), (1, 2));
        assert_eq!(index.interest("a", "news"), (true, true));
        assert_eq!(index.interest("a", "other"), (false, true));
        assert!(index.contains("a", &web("personal-u", "http://y")));
        assert!(index.remove("a", &web("personal-u", "http://y")));
        assert!(!index.remove("a", &web("personal-u", "http://y")));
        assert_eq!(index.interest("a", "news"), (true, false));
        index.replace("a", vec![]);
        assert_eq!(index.counts("a", "news"), (0, 0));
    }

    #[test]
    fn replacing_one_channel_keeps_the_others_and_the_counts_right() {
        let index = Index::default();
        index.insert("a", web("news", "http://x"));
        index.insert("a", web("personal-u", "http://y"));
        index.replace_channel(
            "a",
            "personal-u",
            vec![web("personal-u", "http://y"), web("personal-u", "http://z")],
        );
        assert_eq!(index.counts("a", "personal-u"), (2, 3));
        assert_eq!(index.interest("a", "news"), (true, true));
        index.replace_channel("a", "personal-u", vec![]);
        assert_eq!(index.counts("a", "personal-u"), (0, 1));
        assert_eq!(index.interest("a", "news"), (true, false));
        assert!(index.contains("a", &web("news", "http://x")));
        index.replace_channel("b", "news", vec![web("news", "http://w")]);
        assert_eq!(index.counts("b", "news"), (1, 1));
    }
}
