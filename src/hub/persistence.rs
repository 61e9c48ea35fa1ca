//! Offline subscriptions on the hub's side: who follows which channel (an
//! in-memory index, so an unfollowed channel costs one map lookup per
//! publish), sequencing of stored messages, the bounded write queue, and
//! catch-up for `personal-{user_id}` channels. The same queue and writer
//! carry the events of channels with long retention (`history_retention`,
//! [`crate::store::archive`]), with the same outage behaviour.
//!
//! The follow index is the store's, cached: a follow or unfollow is
//! announced ([`super::invalidation`]) once stored, and every node (this one
//! too) reloads that user's follow of that channel from the store; a full
//! reload every 10 s is the safety net. One task applies both, in order, so
//! a slow full reload never overwrites a newer change with an older read.

use super::invalidation::{Change, Invalidations, Kind, Received, Subscription};
use crate::apps::AppRegistry;
use crate::config::StoreConfig;
use crate::metrics::Metrics;
use crate::store::archive::{ArchivedEvent, HistoryArchive};
use crate::store::{now_ms, Follow, Store, StoreError, StoredMessage};
use crate::throttled_log::ThrottledLog;
use dashmap::DashMap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

type AppChannel = (String, String);

/// One write waiting in the bounded queue.
enum Write {
    /// A stored message of a followed channel.
    Message(Arc<str>, StoredMessage),
    /// A history event kept for long retention; `true` once counted in
    /// `rusher_history_writes_queued_total` (it waited for the store).
    History(ArchivedEvent, bool),
}

/// Long retention's side of the queue.
struct Archive {
    store: Arc<dyn HistoryArchive>,
    /// History writes ever queued, and (watched) ever finished: written or
    /// dropped. A reader waits until those queued before it are finished.
    queued: AtomicU64,
    finished: watch::Sender<u64>,
    /// Whether a history write was ever dropped: serials it held are not in
    /// the archive, so a channel is seeded above them (see `hub::retention`).
    dropped_any: AtomicBool,
}

/// The hub's persistence layer.
pub struct Persistence {
    store: Arc<dyn Store>,
    /// (app, channel) → users following it.
    followers: DashMap<AppChannel, HashSet<Arc<str>>>,
    /// Next sequence per app (an app added at runtime starts at 0: its id
    /// is new, and with Redis the cluster-wide counter rules).
    sequences: DashMap<String, AtomicU64>,
    /// The apps: `history_retention` per app, and which apps exist.
    apps: Arc<AppRegistry>,
    writes: mpsc::Sender<Write>,
    archive: Option<Archive>,
    settings: StoreConfig,
    metrics: Metrics,
    healthy: AtomicBool,
    /// Messages queued or being written, so shutdown can wait for them.
    pending: AtomicUsize,
    /// Messages ever queued, and (watched) ever finished: written or
    /// dropped. A read of the messages waits for those queued before it.
    messages_queued: AtomicU64,
    messages_finished: watch::Sender<u64>,
    drop_log: ThrottledLog,
    /// Where follows and unfollows are announced to every node.
    invalidations: Arc<Invalidations>,
}

impl Persistence {
    /// Loads the follow index and the sequences, then starts the writer and
    /// the index refresher on the current runtime. `archive` keeps the
    /// history events of apps with `history_retention` (MongoDB only);
    /// follows made anywhere arrive through `invalidations`.
    pub async fn start(
        store: Arc<dyn Store>,
        archive: Option<Arc<dyn HistoryArchive>>,
        apps: &Arc<AppRegistry>,
        settings: StoreConfig,
        metrics: Metrics,
        invalidations: Arc<Invalidations>,
    ) -> Result<Arc<Self>, StoreError> {
        let sequences = DashMap::new();
        for app in apps.all() {
            let max = store.max_seq(&app.id).await?;
            sequences.insert(app.id.clone(), AtomicU64::new(max));
        }
        let (writes, queue) = mpsc::channel(settings.write_queue);
        let archive = archive.map(|store| Archive {
            store,
            queued: AtomicU64::new(0),
            finished: watch::channel(0).0,
            dropped_any: AtomicBool::new(false),
        });
        let persistence = Arc::new(Persistence {
            store,
            archive,
            followers: DashMap::new(),
            sequences,
            apps: apps.clone(),
            writes,
            settings,
            metrics,
            healthy: AtomicBool::new(true),
            pending: AtomicUsize::new(0),
            messages_queued: AtomicU64::new(0),
            messages_finished: watch::channel(0).0,
            drop_log: ThrottledLog::new(1000),
            invalidations: invalidations.clone(),
        });
        // Subscribed before the first load: a change stored meanwhile is
        // applied after it.
        let changes = invalidations.subscribe(Kind::Follows);
        persistence.reload_index().await?;
        tokio::spawn(writer(persistence.clone(), queue));
        tokio::spawn(refresher(persistence.clone(), changes));
        Ok(persistence)
    }

    /// Rebuilds the follow index from the store (other nodes may have
    /// changed follows).
    async fn reload_index(&self) -> Result<(), StoreError> {
        for app_id in self.apps.ids() {
            let app_id = &app_id;
            let follows = self.store.follows(app_id).await?;
            let mut fresh: HashMap<AppChannel, HashSet<Arc<str>>> = HashMap::new();
            for follow in follows {
                fresh
                    .entry((app_id.clone(), follow.channel))
                    .or_default()
                    .insert(follow.user_id.into());
            }
            self.followers
                .retain(|key, _| key.0 != *app_id || fresh.contains_key(key));
            for (key, users) in fresh {
                self.followers.insert(key, users);
            }
        }
        Ok(())
    }

    /// Reloads whether `user_id` follows `channel` from the store (a follow
    /// or unfollow made on some node).
    async fn reload_follow(
        &self,
        app_id: &str,
        user_id: &str,
        channel: &str,
    ) -> Result<(), StoreError> {
        if self.apps.by_id(app_id).is_none_or(|app| app.id != app_id) {
            return Ok(());
        }
        let follows = self.store.subscriptions(app_id, user_id).await?;
        let key = (app_id.to_owned(), channel.to_owned());
        if follows.iter().any(|follow| follow.channel == channel) {
            self.followers
                .entry(key)
                .or_default()
                .insert(user_id.into());
        } else {
            self.followers.remove_if_mut(&key, |_, users| {
                users.remove(user_id);
                users.is_empty()
            });
        }
        Ok(())
    }

    /// Tells every node (this one too) that a follow changed in the store.
    fn announce_follow(&self, app_id: &str, user_id: &str, channel: &str) {
        self.invalidations.announce(Change::Follow {
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            channel: channel.to_owned(),
        });
    }

    /// Notes how a store operation went: counts failures, flips (and logs)
    /// [`Self::is_healthy`]; returns the result unchanged.
    pub fn outcome<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("store reachable again");
                }
            }
            Err(error) => {
                self.metrics.store_errors.inc();
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(%error, "store unreachable: live delivery goes on, persistence waits");
                }
            }
        }
        result
    }

    /// The store (shared with the notification registrations, `crate::notify`).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the last store operation succeeded (fail fast while it is down).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The long-retention archive, when the store is MongoDB.
    pub fn archive(&self) -> Option<&Arc<dyn HistoryArchive>> {
        self.archive.as_ref().map(|a| &a.store)
    }

    /// Whether a history write was ever dropped (queue full).
    pub fn history_dropped_any(&self) -> bool {
        self.archive
            .as_ref()
            .is_some_and(|a| a.dropped_any.load(Ordering::Acquire))
    }

    /// Queues a history event of an app with `history_retention` for the
    /// archive (nothing for other apps). Never waits: a full queue drops and
    /// counts it (`rusher_history_writes_dropped_total`).
    pub fn record_history(
        &self,
        app_id: &str,
        channel: &str,
        serial: u64,
        frame: &bytestring::ByteString,
        socket_id: Option<&str>,
    ) {
        let Some(archive) = &self.archive else {
            return;
        };
        let Some(retention_ms) = self
            .apps
            .by_id(app_id)
            .filter(|app| app.id == app_id && app.history_retention > 0)
            .map(|app| app.history_retention.saturating_mul(1000))
        else {
            return;
        };
        let time_ms = now_ms();
        let event = ArchivedEvent {
            app_id: app_id.into(),
            channel: channel.into(),
            serial,
            frame: frame.clone(),
            socket_id: socket_id.map(Arc::from),
            time_ms,
            expires_ms: time_ms.saturating_add(retention_ms),
        };
        // It will wait for the store: counted as such.
        let waits = !self.is_healthy();
        self.pending.fetch_add(1, Ordering::AcqRel);
        archive.queued.fetch_add(1, Ordering::AcqRel);
        if self.writes.try_send(Write::History(event, waits)).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            archive.finished.send_modify(|n| *n += 1);
            archive.dropped_any.store(true, Ordering::Release);
            self.metrics.history_writes_dropped.inc();
            if let Some(suppressed) = self.drop_log.ready() {
                tracing::error!(
                    app_id,
                    channel,
                    serial,
                    also_dropped = suppressed,
                    "store write queue full: history events not kept for long retention (see rusher_history_writes_dropped_total)"
                );
            }
        } else if waits {
            self.metrics.history_writes_queued.inc();
        }
    }

    /// Waits (at most `timeout`) until every history write queued before
    /// the call is written or dropped, so a read of the archive sees what
    /// this node published; false when the time ran out.
    pub async fn history_settled(&self, timeout: Duration) -> bool {
        let Some(archive) = &self.archive else {
            return true;
        };
        let target = archive.queued.load(Ordering::Acquire);
        let mut finished = archive.finished.subscribe();
        tokio::time::timeout(timeout, finished.wait_for(|n| *n >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The users following `channel`; empty (and cheap) for most channels.
    pub fn followers_of(&self, app_id: &str, channel: &str) -> Vec<Arc<str>> {
        self.followers
            .get(&(app_id.to_owned(), channel.to_owned()))
            .map_or_else(Vec::new, |users| users.iter().cloned().collect())
    }

    /// Whether anyone follows `channel` (checked before any allocation).
    pub fn is_followed(&self, app_id: &str, channel: &str) -> bool {
        !self.followers.is_empty()
            && self
                .followers
                .contains_key(&(app_id.to_owned(), channel.to_owned()))
    }

    /// The next sequence from this node's counter.
    pub fn next_seq(&self, app_id: &str) -> u64 {
        if let Some(seq) = self.sequences.get(app_id) {
            return seq.fetch_add(1, Ordering::AcqRel) + 1;
        }
        if self.apps.by_id(app_id).is_none_or(|app| app.id != app_id) {
            return 0;
        }
        let seq = self.sequences.entry(app_id.to_owned()).or_default();
        seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Raises this node's counter to a sequence handed out elsewhere (a
    /// cluster-wide counter), so a fallback to the local one stays monotonic.
    pub fn observe_seq(&self, app_id: &str, seen: u64) {
        if let Some(seq) = self.sequences.get(app_id) {
            seq.fetch_max(seen, Ordering::AcqRel);
        } else if self.apps.by_id(app_id).is_some_and(|app| app.id == app_id) {
            self.sequences
                .entry(app_id.to_owned())
                .or_default()
                .fetch_max(seen, Ordering::AcqRel);
        }
    }

    /// The highest sequence this node knows for the app.
    pub fn current_seq(&self, app_id: &str) -> u64 {
        self.sequences
            .get(app_id)
            .map_or(0, |seq| seq.load(Ordering::Acquire))
    }

    /// Queues a sequenced message of a followed channel for storing,
    /// once whatever the number of followers. A full queue drops and counts.
    pub fn record(
        &self,
        app_id: &str,
        seq: u64,
        channel: &str,
        event: &str,
        data: &str,
    ) -> StoredMessage {
        let message = StoredMessage {
            seq,
            channel: channel.to_owned(),
            event: event.to_owned(),
            data: data.to_owned(),
            time_ms: now_ms(),
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.messages_queued.fetch_add(1, Ordering::AcqRel);
        if self
            .writes
            .try_send(Write::Message(app_id.into(), message.clone()))
            .is_err()
        {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.messages_finished.send_modify(|n| *n += 1);
            self.metrics.store_dropped.inc();
            if let Some(suppressed) = self.drop_log.ready() {
                tracing::error!(
                    app_id,
                    channel,
                    seq = message.seq,
                    also_dropped = suppressed,
                    "store write queue full: messages not stored (see rusher_store_dropped_total)"
                );
            }
        }
        message
    }

    /// Waits until every queued message is written, or until `deadline`
    /// (shutdown: what was published before it is not lost).
    pub async fn flush(&self, deadline: std::time::Instant) {
        while self.pending.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.pending.load(Ordering::Acquire);
        if left > 0 {
            tracing::error!(messages = left, "shutdown grace over: messages not stored");
        }
    }

    /// `POST subscribe`: the user follows `channel` from now on.
    pub async fn follow(
        &self,
        app_id: &str,
        user_id: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let follow = Follow {
            user_id: user_id.to_owned(),
            channel: channel.to_owned(),
            from_seq: self.current_seq(app_id),
        };
        let created = self.outcome(self.store.follow(app_id, &follow).await)?;
        self.followers
            .entry((app_id.to_owned(), channel.to_owned()))
            .or_default()
            .insert(user_id.into());
        self.announce_follow(app_id, user_id, channel);
        Ok(created)
    }

    /// `POST unsubscribe`: the user stops following `channel`.
    pub async fn unfollow(
        &self,
        app_id: &str,
        user_id: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let removed = self.outcome(self.store.unfollow(app_id, user_id, channel).await)?;
        let key = (app_id.to_owned(), channel.to_owned());
        self.followers.remove_if_mut(&key, |_, users| {
            users.remove(user_id);
            users.is_empty()
        });
        self.announce_follow(app_id, user_id, channel);
        Ok(removed)
    }

    /// The channels a user follows.
    pub async fn subscriptions(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let follows = self.outcome(self.store.subscriptions(app_id, user_id).await)?;
        Ok(follows.into_iter().map(|f| f.channel).collect())
    }

    /// Every follow of the app, optionally only of `user_id` and/or of
    /// `channel` (pushi's `GET /subscriptions?user_id=&event=`).
    pub async fn follows(
        &self,
        app_id: &str,
        user_id: Option<&str>,
        channel: Option<&str>,
    ) -> Result<Vec<Follow>, StoreError> {
        let follows = match user_id {
            Some(user_id) => self.store.subscriptions(app_id, user_id).await,
            None => self.store.follows(app_id).await,
        };
        let mut follows = self.outcome(follows)?;
        follows.retain(|f| channel.is_none_or(|channel| f.channel == channel));
        Ok(follows)
    }

    /// The newest `limit` messages stored for the app (those of the channels
    /// followed now), newest first, including every message this node queued
    /// before the call (pushi's `GET /events?count=`).
    pub async fn recent_messages(
        &self,
        app_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.messages_settled().await;
        let follows = self.outcome(self.store.follows(app_id).await)?;
        let channels: std::collections::BTreeSet<String> =
            follows.into_iter().map(|f| f.channel).collect();
        let mut messages = Vec::new();
        for channel in channels {
            let found = self.outcome(self.store.messages(app_id, &channel, 0, limit).await)?;
            messages.extend(found);
        }
        messages.sort_by_key(|m| std::cmp::Reverse(m.seq));
        messages.truncate(limit);
        Ok(messages)
    }

    /// Waits (at most the store's `timeout_ms`) until every message queued
    /// on this node before the call is written or dropped, so a read sees
    /// what was published before it (a backend that publishes, then reads
    /// the user's messages, finds them). Not while the store is down: the
    /// writes wait for it, and the read fails at once anyway.
    async fn messages_settled(&self) {
        if !self.is_healthy() {
            return;
        }
        let target = self.messages_queued.load(Ordering::Acquire);
        let mut finished = self.messages_finished.subscribe();
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let _ = tokio::time::timeout(timeout, finished.wait_for(|n| *n >= target)).await;
    }

    /// The newest `limit` messages of every channel the user follows with a
    /// sequence above `since` (and above the follow's start), oldest first,
    /// including every message this node queued before the call.
    pub async fn messages_for(
        &self,
        app_id: &str,
        user_id: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.messages_settled().await;
        let follows = self.outcome(self.store.subscriptions(app_id, user_id).await)?;
        let mut messages = Vec::new();
        for follow in follows {
            let after = since.max(follow.from_seq);
            let found = self.outcome(
                self.store
                    .messages(app_id, &follow.channel, after, limit)
                    .await,
            )?;
            messages.extend(found);
        }
        messages.sort_by_key(|m| m.seq);
        let skip = messages.len().saturating_sub(limit);
        Ok(messages.split_off(skip))
    }

    /// Catch-up for a personal channel: like [`Self::messages_for`] with the
    /// configured count; empty when the store is down (fail-open).
    pub async fn catch_up(&self, app_id: &str, user_id: &str, since: u64) -> Vec<StoredMessage> {
        self.messages_for(app_id, user_id, since, self.settings.catch_up_messages)
            .await
            .unwrap_or_default()
    }
}

/// Writes queued messages and history events in batches; on failure keeps
/// the batch and retries with back-off (the bounded queue absorbs the wait,
/// then drops and counts).
async fn writer(persistence: Arc<Persistence>, mut queue: mpsc::Receiver<Write>) {
    let mut backoff = Duration::from_millis(100);
    while let Some(first) = queue.recv().await {
        let mut by_app: HashMap<Arc<str>, Vec<StoredMessage>> = HashMap::new();
        let mut history: Vec<ArchivedEvent> = Vec::new();
        let mut history_waited = 0;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(write) = next.take() {
            match write {
                Write::Message(app_id, message) => by_app.entry(app_id).or_default().push(message),
                Write::History(event, waited) => {
                    history_waited += usize::from(waited);
                    history.push(event);
                }
            }
            taken += 1;
            if taken < 500 {
                next = queue.try_recv().ok();
            }
        }
        for (app_id, batch) in by_app {
            loop {
                match persistence.outcome(persistence.store.append(&app_id, &batch).await) {
                    Ok(()) => {
                        persistence.pending.fetch_sub(batch.len(), Ordering::AcqRel);
                        persistence
                            .messages_finished
                            .send_modify(|n| *n += batch.len() as u64);
                        backoff = Duration::from_millis(100);
                        let channels: HashSet<&str> =
                            batch.iter().map(|m| m.channel.as_str()).collect();
                        for channel in channels {
                            let _ =
                                persistence.outcome(persistence.store.trim(&app_id, channel).await);
                        }
                        break;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        if let (Some(archive), false) = (&persistence.archive, history.is_empty()) {
            write_history(
                &persistence,
                archive,
                &history,
                history_waited,
                &mut backoff,
            )
            .await;
        }
    }
}

/// Writes one batch of history events until the archive takes it (a
/// retried insert stores each event once: unique serials). Counts the
/// events that had to wait (queued) and those written after a failure
/// (retried).
async fn write_history(
    persistence: &Persistence,
    archive: &Archive,
    batch: &[ArchivedEvent],
    already_counted: usize,
    backoff: &mut Duration,
) {
    let mut failed = false;
    loop {
        match persistence.outcome(archive.store.append(batch).await) {
            Ok(()) => {
                persistence.pending.fetch_sub(batch.len(), Ordering::AcqRel);
                archive.finished.send_modify(|n| *n += batch.len() as u64);
                if failed {
                    persistence
                        .metrics
                        .history_writes_retried
                        .inc_by(batch.len() as u64);
                }
                *backoff = Duration::from_millis(100);
                return;
            }
            Err(_) => {
                if !failed {
                    failed = true;
                    let newly = batch.len().saturating_sub(already_counted);
                    persistence
                        .metrics
                        .history_writes_queued
                        .inc_by(newly as u64);
                }
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Keeps the follow index the store's: applies each announced change (the
/// follows of other nodes and this node's own, in order), and reloads the
/// whole index every 10 s and after changes were missed. One task, so a
/// reload never overwrites a newer change with an older read.
async fn refresher(persistence: Arc<Persistence>, mut changes: Subscription) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        let result = tokio::select! {
            _ = tick.tick() => persistence.reload_index().await,
            received = changes.next() => match received {
                Received::Change(Change::Follow { app_id, user_id, channel }) => {
                    persistence.reload_follow(&app_id, &user_id, &channel).await
                }
                Received::Change(_) => Ok(()),
                Received::Missed => {
                    tracing::warn!("follow changes came faster than they were applied: reloading every follow");
                    persistence.reload_index().await
                }
            },
        };
        let _ = persistence.outcome(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;
    use crate::store::memory::MemoryStore;
    use crate::store::Retention;

    /// Two nodes sharing one store; each node's changes are handed to the
    /// other as the bus would (`forward`).
    async fn two_nodes() -> (Arc<Persistence>, Arc<Persistence>, [Arc<Invalidations>; 2]) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Retention {
            ttl_ms: 60_000,
            max_per_channel: 10,
        }));
        let apps = Arc::new(AppRegistry::new([AppConfig::with_credentials(
            "a", "key", "secret",
        )]));
        let invalidations = [Arc::default(), Arc::default()];
        let mut nodes = Vec::new();
        for own in &invalidations {
            let node = Persistence::start(
                store.clone(),
                None,
                &apps,
                StoreConfig::default(),
                Metrics::new(),
                Arc::clone(own),
            )
            .await
            .unwrap();
            nodes.push(node);
        }
        let b = nodes.pop().unwrap();
        let a = nodes.pop().unwrap();
        (a, b, invalidations)
    }

    async fn settles(node: &Persistence, followed: bool) {
        for _ in 0..200 {
            if node.is_followed("a", "news") == followed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the follow index did not become {followed}");
    }

    fn change(user: &str) -> Change {
        Change::Follow {
            app_id: "a".into(),
            user_id: user.into(),
            channel: "news".into(),
        }
    }

    #[tokio::test]
    async fn a_follow_announced_by_one_node_holds_on_the_other_and_an_unfollow_likewise() {
        let (a, b, [_, to_b]) = two_nodes().await;
        a.follow("a", "u", "news").await.unwrap();
        assert!(!b.is_followed("a", "news"), "not before the announcement");
        to_b.received(change("u"));
        settles(&b, true).await;
        assert_eq!(b.followers_of("a", "news"), vec![Arc::<str>::from("u")]);
        a.unfollow("a", "u", "news").await.unwrap();
        to_b.received(change("u"));
        settles(&b, false).await;
    }

    #[tokio::test]
    async fn a_follow_and_an_unfollow_at_once_on_two_nodes_end_as_the_store_says_in_any_order() {
        let (a, b, [to_a, to_b]) = two_nodes().await;
        // a follows, then b unfollows: a's own immediate update says
        // followed, but every reload (of its own change and of b's) reads
        // the store, which says unfollowed.
        a.follow("a", "u", "news").await.unwrap();
        b.unfollow("a", "u", "news").await.unwrap();
        to_a.received(change("u"));
        to_b.received(change("u"));
        settles(&a, false).await;
        settles(&b, false).await;
    }
}
