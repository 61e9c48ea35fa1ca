//! The hub: what ws/ and http/ call to connect, subscribe, sign in and publish.
//!
//! - [`connection`]: the hub's handle on one connection (bounded queue, close signal).
//! - [`authorize`]: who may subscribe to what (names, signatures, presence data).
//! - [`held`]: subscriptions waiting for the sign-in or membership that would authorise them.
//! - [`channels`]: one app's channels → subscribers and presence members on this node.
//! - [`counts`]: subscription counting (`pusher_internal:subscription_count`, coalesced).
//! - [`users`]: signed-in users and watchlists on this node.
//! - [`cache`]: the last event of each cache channel.
//! - [`history`]: per-channel history with serials, replay for recovering subscribers.
//! - [`history_store`]: where histories live (this node's memory, or a shared store).
//! - [`idempotency`]: idempotency keys of publishes, claimed and answered once.
//! - [`idempotent_publish`]: a publish request's claim, wait and release of its key.
//! - [`recovery`]: where signed-in users' sockets stood, so pusher-js recovers unmodified.
//! - [`recovery_store`]: where those positions live (this node, or also Redis).
//! - [`retention`]: long retention of histories in MongoDB (seeding, reads).
//! - [`node`]: every app's state on this node.
//! - [`persistence`]: offline subscriptions, stored messages, personal channels.
//! - [`invalidation`]: changes to state nodes cache from the store, announced to every node.
//! - [`peer`]: peer channels between peer members of a presence channel.
//! - [`rate`]: the per-app HTTP API rate limit.
//! - [`socket_id`]: unique socket ids.
//!
//! Fan-out goes through the [`Adapter`], never straight to [`node`], so a
//! cluster adapter sees every publish.

pub mod authorize;
pub mod cache;
pub mod channels;
pub mod connection;
pub mod counts;
pub mod frame_queue;
pub mod held;
pub mod history;
pub mod history_store;
pub mod idempotency;
pub mod idempotent_publish;
pub mod invalidation;
pub mod latest;
pub mod node;
pub mod peer;
pub mod persistence;
pub mod rate;
pub mod recovery;
pub mod recovery_store;
pub mod retention;
pub mod socket_id;
pub mod users;

use crate::adapter::{Adapter, ChannelStats, Joined, MemberJoin};
use crate::apps::{App, AppRegistry};
use crate::console::tap::{ConsoleEvent, ConsoleTap};
use crate::delivery;
use crate::metrics::Metrics;
use crate::protocol::auth::verify_user_auth;
use crate::protocol::channel::channel_type;
use crate::protocol::error::ErrorCode;
use crate::protocol::frames::{self, SubscribeRequest};
use crate::protocol::presence::{parse_user_data, SignedInUser};
use crate::webhooks::event::WebhookEvent;
use crate::webhooks::Webhooks;
use authorize::{authorize, Grant, SubscriptionError};
use bytestring::ByteString;
use channels::{FanOut, Joining, Subscribed};
use connection::{Connection, ConnectionReceiver};
use history_store::{HistoryStore, Publication, UNAVAILABLE};
use node::{AppState, Node};
use persistence::Persistence;
use recovery_store::PositionStore;
use serde_json::value::RawValue;
use socket_id::SocketIds;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A granted subscription: what to send the subscriber, in order.
#[derive(Debug)]
pub struct Subscription {
    /// `pusher_internal:subscription_succeeded`.
    pub succeeded: ByteString,
    /// For cache channels: the last event, or `pusher:cache_miss`.
    pub cached: Option<ByteString>,
    /// For presence channels: the subscriber's user id.
    pub user_id: Option<Arc<str>>,
    /// Frames that follow the success (e.g. peer channels offered).
    pub announcements: Vec<ByteString>,
    /// On a channel with history: where the socket stands (see [`HistoryJoin`]).
    pub history: Option<HistoryJoin>,
}

/// Where a socket stands on a channel with history once subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryJoin {
    /// The socket gets every event above this serial live.
    pub live_after: u64,
    /// Everything up to this serial is the client's or queued to it before
    /// the live events: `live_after`, or where a recovery started.
    pub position: u64,
    /// Recovered (or told `pusher:recovery_failed`) at subscribe: a later
    /// sign-in does not recover it again.
    pub recovered: bool,
}

/// A successful sign-in: what to send the user, in order.
#[derive(Debug)]
pub struct SignIn {
    /// The signed-in user.
    pub user: SignedInUser,
    /// `pusher:signin_success`.
    pub success: ByteString,
    /// The `#server-to-user-{id}` channel the connection joined.
    pub user_channel: String,
    /// Watchlist `online` event for watched users already online.
    pub watchlist_online: Option<ByteString>,
}

/// Whether `channel` has subscription counts (the `subscription_count`
/// webhook and `pusher_internal:subscription_count`): every channel but
/// presence ones, which have members instead, as on Pusher. (User channels
/// never get here: they belong to sign-in.)
pub fn counts_subscriptions(channel: &str) -> bool {
    use crate::protocol::channel::ChannelKind;
    !matches!(
        channel_type(channel).kind,
        ChannelKind::Presence | ChannelKind::ServerToUser
    )
}

/// Why `pusher:signin` was refused: the session closes with the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefused {
    /// The signature or the user data is bad: 4009.
    Unauthorized,
    /// The sign-in authorized the connection of an app with
    /// `authorized_connections` already at `max_connections`: 4004.
    OverConnectionQuota,
}

impl SignInRefused {
    /// The close code that answers it.
    pub fn code(self) -> ErrorCode {
        match self {
            SignInRefused::Unauthorized => ErrorCode::Unauthorized,
            SignInRefused::OverConnectionQuota => ErrorCode::OverConnectionQuota,
        }
    }
}

/// Whether the socket is a peer member on `channel`.
fn local_peer(state: &AppState, channel: &str, socket_id: &str) -> bool {
    matches!(
        state.channels.subscriber_user(channel, socket_id),
        Some(Some(user)) if state.channels.is_peer_member(channel, &user)
    )
}

/// Publishes on a channel with history: under the channel's history lock,
/// assigns the next serial, encodes the frame once (with `"serial"`), keeps
/// it and queues it to this node's subscribers, so a recovering subscribe
/// (which holds the same lock) sees it exactly once. The memory store: one
/// node (a shared store delivers from the bus, see [`history_store`]).
#[allow(clippy::too_many_arguments)]
fn publish_with_history(
    app: &App,
    state: &AppState,
    channel: &str,
    event: &str,
    data: &RawValue,
    user_id: Option<&str>,
    except: Option<&str>,
    message_id: Option<&str>,
) -> (u64, ByteString, FanOut) {
    let ttl = Duration::from_secs(app.history_ttl);
    let now = std::time::Instant::now();
    state.history.with_channel(channel, |h| {
        let mut frame = ByteString::default();
        let (serial, _) = h.push(now, app.history_size, ttl, event, data, except, |serial| {
            frame = match message_id {
                Some(id) => frames::delivery_frame(id, event, channel, data, user_id, Some(serial)),
                None => frames::history_event_frame(event, channel, data, user_id, serial),
            };
            frame.clone()
        });
        let report = state.channels.deliver(channel, &frame, except);
        (serial, frame, report)
    })
}

/// What a subscribe with `since` on a channel with history queues after
/// joining, under the channel's history lock (so no publish falls between
/// the replay and the live events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Every missed event was queued (maybe none).
    Replayed,
    /// `pusher:recovery_failed` was queued.
    Failed,
}

/// Replays to a connection what it missed on `channel` since `since`
/// (`replay`, computed under the channel's history lock), or queues
/// `pusher:recovery_failed`. A replay that would not fit in the connection's
/// free queue is refused the same way (the client refetches through the
/// history API) rather than closing it as a slow client.
fn queue_recovery(
    replay: Result<Vec<ByteString>, history::Gap>,
    oldest: Option<u64>,
    connection: &Connection,
    channel: &str,
    since: u64,
) -> Recovery {
    let replay = match replay {
        Ok(frames) if frames.len() < connection.free_capacity() => Ok(frames),
        Ok(_) => Err(history::Gap {
            oldest,
            reason: "the replay does not fit in the connection's outgoing queue",
        }),
        Err(gap) => Err(gap),
    };
    match replay {
        Ok(frames) => {
            for frame in frames {
                connection.send(frame);
            }
            Recovery::Replayed
        }
        Err(gap) => {
            connection.send(frames::recovery_failed(
                channel, since, gap.oldest, gap.reason,
            ));
            Recovery::Failed
        }
    }
}

/// Where a recovery's missed events come from.
enum RecoverFrom {
    /// This node's buffer (memory store, or a mirror that covers `since`).
    Buffer,
    /// The shared store's events joined with this node's mirror.
    Shared(history::Fetched),
    /// The long-retention archive holds more than the connection's queue
    /// takes (its oldest serial).
    TooMany(Option<u64>),
    /// The store the range needs is unreachable: the reason.
    Unavailable(&'static str),
}

impl RecoverFrom {
    /// The frames after `since` up to `until` (call under the channel's
    /// history lock, after [`history::ChannelHistory::expire`]), or why
    /// they cannot all be given.
    fn replay(
        &self,
        h: &history::ChannelHistory,
        since: u64,
        until: u64,
    ) -> Result<Vec<ByteString>, history::Gap> {
        match self {
            RecoverFrom::Shared(fetched) => h.join(since, until, fetched),
            RecoverFrom::TooMany(oldest) => Err(history::Gap {
                oldest: *oldest,
                reason: retention::REPLAY_TOO_LONG,
            }),
            RecoverFrom::Buffer | RecoverFrom::Unavailable(_) => h.replay_until(since, until),
        }
    }
}

/// Shared state of the server, reached through a handle by every connection and request.
pub struct Hub {
    apps: Arc<AppRegistry>,
    node: Arc<Node>,
    adapter: Arc<dyn Adapter>,
    metrics: Metrics,
    webhooks: Webhooks,
    persistence: Option<Arc<Persistence>>,
    notifier: Option<Arc<crate::notify::Notifier>>,
    api_rate: Arc<rate::ApiRateLimit>,
    /// Usage shared with the other nodes (Redis adapter): limits count the
    /// whole deployment.
    usage: Option<Arc<crate::usage::ClusterUsage>>,
    socket_ids: SocketIds,
    outgoing_queue: usize,
    accepting: AtomicBool,
    history_store: HistoryStore,
    position_store: PositionStore,
    long_history: Option<retention::LongHistory>,
    message_ids: delivery::MessageIds,
    deliveries: delivery::store::Deliveries,
    invalidations: Arc<invalidation::Invalidations>,
    /// What the open consoles watch (nothing, at the cost of one atomic
    /// load, when none is open).
    console: Arc<ConsoleTap>,
}

impl Hub {
    /// A hub over `node`, fanning out through `adapter`.
    pub fn new(
        apps: Arc<AppRegistry>,
        node: Arc<Node>,
        adapter: Arc<dyn Adapter>,
        metrics: Metrics,
        webhooks: Webhooks,
        persistence: Option<Arc<Persistence>>,
        outgoing_queue: usize,
    ) -> Self {
        Hub {
            apps,
            node,
            adapter,
            webhooks,
            persistence,
            notifier: None,
            api_rate: Arc::default(),
            usage: None,
            socket_ids: SocketIds::default(),
            outgoing_queue,
            accepting: AtomicBool::new(true),
            history_store: HistoryStore::Memory,
            position_store: PositionStore::Local,
            long_history: None,
            message_ids: delivery::MessageIds::default(),
            deliveries: delivery::store::Deliveries::new(metrics.clone()),
            metrics,
            invalidations: Arc::default(),
            console: Arc::default(),
        }
    }

    /// Each open console queues at most `queue` events (`[console] watcher_queue`).
    pub fn with_console_queue(mut self, queue: usize) -> Self {
        self.console = Arc::new(ConsoleTap::new(queue));
        self.webhooks.attach_console(self.console.clone());
        self
    }

    /// The consoles' tap (see [`crate::console::tap`]).
    pub fn console(&self) -> &Arc<ConsoleTap> {
        &self.console
    }

    /// Shares changes to cached state with the other nodes through
    /// `invalidations` (default: this node's own, one node).
    pub fn with_invalidations(mut self, invalidations: Arc<invalidation::Invalidations>) -> Self {
        self.invalidations = invalidations;
        self
    }

    /// Where changes to cached state are announced ([`invalidation`]).
    pub fn invalidations(&self) -> &Arc<invalidation::Invalidations> {
        &self.invalidations
    }

    /// Parks signed-in users' unacknowledged messages of apps with
    /// `store = "redis"` in `shared` (default: this node's memory).
    pub fn with_parked_store(mut self, shared: Arc<dyn delivery::store::ParkedStore>) -> Self {
        self.deliveries = self.deliveries.with_shared(shared);
        self
    }

    /// Counts the other nodes' usage against this node's limits, and
    /// records this node's for them (see [`crate::usage`]).
    pub fn with_usage(mut self, usage: Arc<crate::usage::ClusterUsage>) -> Self {
        usage.attach_api_rate(&self.api_rate);
        self.usage = Some(usage);
        self
    }

    /// The usage shared with the other nodes (Redis adapter only).
    pub fn usage(&self) -> Option<&Arc<crate::usage::ClusterUsage>> {
        self.usage.as_ref()
    }

    /// Sends events to the notification handlers' registrations too.
    pub fn with_notifier(mut self, notifier: Arc<crate::notify::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The notification handlers, when started.
    pub fn notifier(&self) -> Option<&Arc<crate::notify::Notifier>> {
        self.notifier.as_ref()
    }

    /// Keeps channel histories in `store` (default: this node's memory).
    pub fn with_history_store(mut self, store: HistoryStore) -> Self {
        self.history_store = store;
        self
    }

    /// Also keeps signed-in users' recovery positions in `store` (default:
    /// this node's memory only).
    pub fn with_position_store(mut self, store: PositionStore) -> Self {
        self.position_store = store;
        self
    }

    /// Keeps the histories of apps with `history_retention` in `long` too.
    pub fn with_long_history(mut self, long: Option<retention::LongHistory>) -> Self {
        self.long_history = long;
        self
    }

    /// The apps (config file and store).
    pub fn apps(&self) -> &Arc<AppRegistry> {
        &self.apps
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts an HTTP API request of `app`; false when over its rate limit.
    pub fn allow_api_request(&self, app: &App) -> bool {
        let allowed = self
            .api_rate
            .allow(&app.id, app.max_api_requests_per_second);
        if let (true, Some(usage)) = (allowed && app.max_api_requests_per_second > 0, &self.usage) {
            usage.admitted_api_request(&app.id);
        }
        allowed
    }

    /// Connections of `app_id` open on the other nodes (none without Redis).
    fn remote_open(&self, app_id: &str) -> crate::usage::remote::OpenConnections {
        self.usage
            .as_ref()
            .map(|usage| usage.remote_open(app_id))
            .unwrap_or_default()
    }

    /// The webhook sender.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Whether new connections are accepted (false once shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    fn state(&self, app_id: &str) -> Option<Arc<AppState>> {
        self.node.app(app_id)
    }

    /// Frames a connection's outgoing queue holds (`server.outgoing_queue`).
    pub fn outgoing_queue(&self) -> usize {
        self.outgoing_queue
    }

    /// Admits a new connection of `app`, or says which Pusher error refuses it.
    ///
    /// `authorized`: the request itself proved the app's backend allowed it
    /// (an SSE stream whose signed token names a user or a signed channel).
    /// Otherwise a connection of an app with `authorized_connections` starts
    /// unauthorized: it does not count against `max_connections` but against
    /// [`App::unauthorized_cap`] (refused with 4100, over capacity), until
    /// [`Hub::authorize_connection`].
    pub fn connect(&self, app: &App, authorized: bool) -> Result<ConnectionReceiver, ErrorCode> {
        let admitted = self.admit(app, authorized);
        self.console.emit(&app.id, || match &admitted {
            Ok(receiver) => ConsoleEvent::new("connected").socket(&receiver.connection.socket_id),
            Err(code) => ConsoleEvent::refused(*code),
        });
        admitted
    }

    fn admit(&self, app: &App, authorized: bool) -> Result<ConnectionReceiver, ErrorCode> {
        if !self.is_accepting() {
            return Err(ErrorCode::ServerShuttingDown);
        }
        if !app.enabled {
            return Err(ErrorCode::AppDisabled);
        }
        let state = self.state(&app.id).ok_or(ErrorCode::AppNotFound)?;
        let state = &*state;
        let socket_id: Arc<str> = self.socket_ids.next().into();
        let (connection, receiver) =
            Connection::new(socket_id, app.id.as_str().into(), self.outgoing_queue);
        // The caps hold for the deployment: what the other nodes reported
        // open takes places too (see crate::usage).
        let elsewhere = self.remote_open(&app.id);
        let (max, refusal, elsewhere) = if app.authorized_connections && !authorized {
            connection.set_unauthorized();
            (
                app.unauthorized_cap(),
                ErrorCode::OverCapacity,
                elsewhere.unauthorized,
            )
        } else {
            (
                app.max_connections,
                ErrorCode::OverConnectionQuota,
                elsewhere.authorized,
            )
        };
        let Some(max) = crate::usage::remote::room(max, elsewhere) else {
            return Err(refusal);
        };
        if !state.channels.add_connection(connection.clone(), max) {
            return Err(refusal);
        }
        if !connection.is_authorized() {
            self.metrics.unauthorized_connections.inc();
        }
        self.metrics.connections.inc();
        self.metrics.connections_total.inc();
        Ok(receiver)
    }

    /// The connection signed in or was granted a channel that needs a
    /// signature: an unauthorized one (see [`Hub::connect`]) now counts
    /// against `max_connections`. Pusher does not count unauthorized
    /// connections; one that authorizes while the app is at its quota is
    /// refused as a new connection over quota would be (4004, counted in
    /// `rusher_connections_refused_total`); the caller closes it.
    pub fn authorize_connection(
        &self,
        app: &App,
        connection: &Connection,
    ) -> Result<(), ErrorCode> {
        if connection.is_authorized() {
            return Ok(());
        }
        let Some(state) = self.state(&app.id) else {
            return Ok(());
        };
        let state = &*state;
        let elsewhere = self.remote_open(&app.id).authorized;
        let authorized = match crate::usage::remote::room(app.max_connections, elsewhere) {
            Some(max) => state.channels.authorize(connection, max),
            None => Err(channels::OverQuota),
        };
        match authorized {
            Ok(true) => {
                self.metrics.unauthorized_connections.dec();
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(channels::OverQuota) => {
                let code = ErrorCode::OverConnectionQuota;
                self.metrics.connection_refused(code.code());
                Err(code)
            }
        }
    }

    /// Removes a connection: its subscriptions (with member_removed where it
    /// was a user's last socket), its sign-in and its watchlist.
    pub async fn disconnect(
        &self,
        connection: &Connection,
        channels: Vec<String>,
        user: Option<SignedInUser>,
    ) {
        let Some(state) = self.state(&connection.app_id) else {
            return;
        };
        let state = &*state;
        self.console.emit(&connection.app_id, || {
            ConsoleEvent::new("disconnected").socket(&connection.socket_id)
        });
        if let Some(user) = user {
            state
                .positions
                .closed(&user.id, &connection.socket_id, std::time::Instant::now());
            if let (PositionStore::Shared(shared), Some(app)) =
                (&self.position_store, self.apps.by_id(&connection.app_id))
            {
                shared.closed(&app, &user.id, &connection.socket_id);
            }
            state.users.unwatch(&user.watchlist, &connection.socket_id);
            if state.users.sign_out(&user.id, &connection.socket_id) {
                // Offline for watchers once the user's last socket anywhere went.
                self.adapter
                    .sign_in_changed(&connection.app_id, &user.id, false);
            }
        }
        for channel in channels {
            self.leave(state, connection, &channel).await;
        }
        // Last, so that shutdown (which waits for connections to go) waits
        // for the cluster to hear about the leaves too.
        if state.channels.remove_connection(&connection.socket_id) == Some(false) {
            self.metrics.unauthorized_connections.dec();
        }
        self.metrics.connections.dec();
    }

    /// Subscribes a connection after checking name, signature and limits.
    ///
    /// On a channel with history it joins under the channel's history lock
    /// and replays from the request's `since`, else, for a signed-in user,
    /// from the user's position ([`recovery`]). `resubscribed` is the
    /// `position` of the socket's existing subscription to the channel
    /// ([`HistoryJoin`]): every event above it was already sent to the
    /// socket, so a replay stops there and a repeated subscribe never
    /// duplicates.
    pub async fn subscribe(
        &self,
        app: &App,
        connection: &Arc<Connection>,
        request: &SubscribeRequest,
        signed_in: Option<&str>,
        resubscribed: Option<u64>,
    ) -> Result<Subscription, SubscriptionError> {
        let grant = authorize(app, &connection.socket_id, request, signed_in)?;
        let state = self.state(&app.id).ok_or_else(|| SubscriptionError {
            kind: "AuthError",
            message: "Unknown app".into(),
            status: 404,
        })?;
        let state = &*state;
        let channel = request.channel.as_str();
        // Granted a channel only the app's backend could sign for (or one
        // the socket's sign-in or membership opened): authorized, before
        // joining, so a connection over quota joins nothing.
        if channel_type(channel).needs_auth() {
            self.authorize_connection(app, connection)
                .map_err(|_| SubscriptionError::over_connection_quota())?;
        }
        let mut catch_up = None;
        let member = match grant {
            Grant::Plain => None,
            Grant::Member(member) => Some(member),
            Grant::Personal { user_id, since } => {
                catch_up = Some(match &self.persistence {
                    Some(persistence) => persistence.catch_up(&app.id, &user_id, since).await,
                    None => Vec::new(),
                });
                None
            }
            Grant::PeerByMembership => {
                let (presence, other) =
                    peer::check_membership(&state.channels, channel, &connection.socket_id)?;
                // The other user may be a peer member on another node.
                if !state.channels.is_peer_member(&presence, other)
                    && !self.adapter.is_peer_member(&app.id, &presence, other).await
                {
                    return Err(peer::not_both_peers());
                }
                None
            }
        };
        let user_id: Option<Arc<str>> = member.as_ref().map(|m| m.user_id.as_str().into());
        let wants_peers = member.as_ref().is_some_and(|m| m.peer);
        let user_info = member.and_then(|m| m.user_info);
        let joining = user_id.as_ref().map(|user_id| Joining {
            user_id: user_id.clone(),
            user_info: user_info.clone(),
            max_members: app.max_presence_members,
            peer: wants_peers,
        });
        let with_history = history::applies(app.history, &app.history_channels, channel);
        // The client's `since` wins: it knows what it saw. Else a signed-in
        // user's position (see `recovery`, `recovery_store`).
        let resume = match (with_history, request.since, signed_in, resubscribed) {
            (false, ..) => None,
            (true, Some(since), ..) => Some(since),
            (true, None, Some(user), None) => {
                self.take_position(app, state, user, &connection.socket_id, channel)
                    .await
            }
            (true, None, ..) => None,
        };
        let (local, recovery, live_after) = if with_history {
            self.join_history(
                app,
                state,
                connection,
                channel,
                resume,
                resubscribed,
                joining,
            )
            .await
        } else {
            state
                .channels
                .subscribe(channel, connection, joining)
                .map(|local| (local, None, None))
        }
        .map_err(|limit| SubscriptionError::member_limit(limit.0))?;
        match recovery {
            Some(Recovery::Replayed) => self.metrics.history_recoveries.inc(),
            Some(Recovery::Failed) => self.metrics.history_recovery_failed.inc(),
            None => {}
        }
        let history_join = live_after.map(|live_after| HistoryJoin {
            live_after,
            position: match (recovery, resume) {
                (Some(Recovery::Replayed), Some(since)) => since.min(live_after),
                _ => live_after,
            },
            recovered: recovery.is_some(),
        });
        if let (Some(user), Some(join), None) = (signed_in, history_join, resubscribed) {
            self.keep_position(
                app,
                state,
                user,
                &connection.socket_id,
                channel,
                join.position,
            );
        }
        let member_join = user_id.as_deref().map(|user_id| MemberJoin {
            user_id,
            user_info: user_info.as_deref(),
            max_members: app.max_presence_members,
            peer: wants_peers,
        });
        let joined = match self
            .adapter
            .joined(&app.id, channel, &local, member_join)
            .await
        {
            Ok(joined) => joined,
            Err(limit) => {
                // Full elsewhere in the deployment: undo this node's part.
                state.channels.unsubscribe(channel, &connection.socket_id);
                return Err(SubscriptionError::member_limit(limit.0));
            }
        };
        if let (true, Some(user_id)) = (joined.member_added, &user_id) {
            let frame = frames::member_added(channel, user_id, user_info.as_deref());
            self.spawn_publish(&app.id, channel, frame, Some(&connection.socket_id));
            if joined.member_added_webhook {
                self.webhooks
                    .emit(&app.id, WebhookEvent::member_added(channel, user_id));
            }
        }
        if local.new_socket {
            self.occupancy_changed(&app.id, channel, &joined);
            if let Some(changes) = state.count_changes.as_ref() {
                if app.subscription_count && counts_subscriptions(channel) {
                    changes.changed(channel, true);
                }
            }
        }
        let catch_up_data = catch_up.map(|messages| frames::catch_up_data(&messages));
        let data = joined
            .presence_data
            .as_deref()
            .or(catch_up_data.as_deref())
            .unwrap_or("{}");
        let cached = if channel_type(channel).cache {
            Some(match self.adapter.cache_get(&app.id, channel).await {
                Some((frame, _)) => frame,
                None => {
                    self.webhooks
                        .emit(&app.id, WebhookEvent::cache_miss(channel));
                    frames::cache_miss(channel)
                }
            })
        } else {
            None
        };
        let mut announcements = Vec::new();
        if let (true, Some(user_id)) = (wants_peers, &user_id) {
            if local.member_added {
                announcements = Self::peers_offered(state, channel, user_id, &joined);
            }
            if joined.member_added {
                // The other peer members, on every node, hear of the newcomer.
                self.adapter.peer_changed(&app.id, channel, user_id, true);
            }
        }
        self.console.emit(&app.id, || {
            ConsoleEvent::new("subscribed")
                .channel(channel)
                .socket(&connection.socket_id)
        });
        Ok(Subscription {
            succeeded: frames::subscription_succeeded(channel, data),
            cached,
            user_id,
            announcements,
            history: history_join,
        })
    }

    /// Joins a channel with history under its history lock and, when
    /// `resume` is set, queues what the connection missed after that serial
    /// (or `pusher:recovery_failed`), so no publish falls between the replay
    /// and the live events. A replay stops at `resubscribed` (the position
    /// of the socket's existing subscription: everything above it was sent).
    /// With a shared store, what this node's mirror lacks is read first,
    /// outside any lock. Returns the subscription, the recovery's outcome and
    /// the serial above which events reach the socket live (`None` when the
    /// channel has no history here).
    #[allow(clippy::too_many_arguments)]
    async fn join_history(
        &self,
        app: &App,
        state: &AppState,
        connection: &Arc<Connection>,
        channel: &str,
        resume: Option<u64>,
        resubscribed: Option<u64>,
        joining: Option<Joining>,
    ) -> Result<(Subscribed, Option<Recovery>, Option<u64>), channels::MemberLimitReached> {
        if let (Some(long), HistoryStore::Memory) = (self.long_history(app), &self.history_store) {
            long.seed(app, &state.history, channel).await;
        }
        let from = match resume {
            Some(since) => {
                self.recover_from(app, state, connection, channel, since)
                    .await
            }
            None => RecoverFrom::Buffer,
        };
        let stream_latest = self.stream_latest(app, state, channel, &from).await;
        let mut joining = Some(joining);
        let mut join = |h: &mut history::ChannelHistory| {
            let local = state
                .channels
                .subscribe(channel, connection, joining.take().flatten())?;
            h.expire(std::time::Instant::now());
            let live_after = match &self.history_store {
                HistoryStore::Memory => Some(h.last_serial()),
                // A mirror's serials are the stream's only once it has seen
                // the channel on the bus; before, the stream's latest is
                // where this socket's live events start. Neither known
                // (Redis away): no position, so none is kept or confirmed
                // for this socket on this channel.
                HistoryStore::Shared(_) => h.latest().max(stream_latest),
            };
            // Everything above a subscribed socket's position reached it;
            // a new subscription has no bound (a mirror may trail the stream).
            let until = resubscribed.unwrap_or(u64::MAX);
            let recovery = resume.map(|since| {
                let replay = from.replay(h, since, until);
                queue_recovery(replay, h.oldest(), connection, channel, since)
            });
            Ok((local, recovery, live_after))
        };
        let joined = match (&from, resume) {
            (RecoverFrom::Unavailable(_), _) => None,
            (RecoverFrom::TooMany(_), _) => Some(state.history.with_channel(channel, &mut join)),
            // Without a recovery the history is created, so a signed-in
            // socket's position exists from its first event.
            (_, None) => Some(state.history.with_channel(channel, &mut join)),
            // A channel the store knows: its mirror may not exist yet here.
            (RecoverFrom::Shared(fetched), Some(_)) if fetched.latest.is_some() => {
                Some(state.history.with_channel(channel, &mut join))
            }
            _ => state.history.with_existing(channel, &mut join),
        };
        // No history (none kept, or swept), or no store: said before
        // joining, so it precedes live events. Not creating one here keeps
        // unknown channel names from taking memory; a publish racing this
        // join is covered by the refetch the failure asks for.
        joined.unwrap_or_else(|| {
            if let Some(since) = resume {
                let reason = match from {
                    RecoverFrom::Unavailable(reason) => reason,
                    _ => "the channel has no history",
                };
                connection.send(frames::recovery_failed(channel, since, None, reason));
            }
            state
                .channels
                .subscribe(channel, connection, joining.take().flatten())
                .map(|local| (local, resume.map(|_| Recovery::Failed), None))
        })
    }

    /// The long-retention archive, for an app that keeps one.
    fn long_history(&self, app: &App) -> Option<&retention::LongHistory> {
        self.long_history
            .as_ref()
            .filter(|_| app.history_retention > 0)
    }

    /// Where a recovery from `since` takes the events it replays: this
    /// node's buffer (the memory store, or a mirror that covers `since`),
    /// else the shared store's read (joined with the mirror), with the
    /// long-retention archive's older part before it when the buffer or the
    /// stream lost the start. Reads run outside any lock.
    async fn recover_from(
        &self,
        app: &App,
        state: &AppState,
        connection: &Connection,
        channel: &str,
        since: u64,
    ) -> RecoverFrom {
        let long = self.long_history(app);
        let shared = match (&self.history_store, long) {
            (HistoryStore::Memory, None) => return RecoverFrom::Buffer,
            (HistoryStore::Memory, Some(long)) => {
                return self
                    .recover_from_archive(app, state, connection, channel, since, long)
                    .await
            }
            (HistoryStore::Shared(shared), _) if !shared.available(app, channel) => {
                return RecoverFrom::Unavailable(UNAVAILABLE)
            }
            (HistoryStore::Shared(shared), _) => shared,
        };
        let now = std::time::Instant::now();
        let covered = state.history.with_existing(channel, |h| {
            h.expire(now);
            h.covers(since)
        });
        if covered == Some(true) {
            return RecoverFrom::Buffer;
        }
        match shared.fetch(app, channel, since).await {
            Ok(fetched) => match long {
                Some(long) if retention::needs_older(&fetched, since) => {
                    // The stream lost the start: the archive has it.
                    match long
                        .fetch(app, channel, since, connection.free_capacity())
                        .await
                    {
                        Ok(retention::Archived::Events(older)) => {
                            RecoverFrom::Shared(retention::merge_older(older, fetched))
                        }
                        Ok(retention::Archived::TooMany(oldest)) => RecoverFrom::TooMany(oldest),
                        Err(reason) => RecoverFrom::Unavailable(reason),
                    }
                }
                _ => RecoverFrom::Shared(fetched),
            },
            Err(history_store::Unavailable) => RecoverFrom::Unavailable(UNAVAILABLE),
        }
    }

    /// With a shared store, the stream's latest serial (0: none yet) when
    /// this node's mirror has not seen `channel` on the bus (it just
    /// started, or the channel was quiet): a fresh mirror's last serial
    /// means nothing, and a position taken from it would make a later
    /// recovery replay what the socket never needed, or had. `None` when
    /// the mirror knows (or with the memory store, or Redis away). Events
    /// published after the read reach the mirror before or after the join;
    /// either way the join starts after the higher of the two.
    async fn stream_latest(
        &self,
        app: &App,
        state: &AppState,
        channel: &str,
        from: &RecoverFrom,
    ) -> Option<u64> {
        let HistoryStore::Shared(shared) = &self.history_store else {
            return None;
        };
        match from {
            RecoverFrom::Shared(fetched) => Some(fetched.latest.unwrap_or(0)),
            RecoverFrom::Unavailable(_) | RecoverFrom::TooMany(_) => None,
            RecoverFrom::Buffer => {
                let seen = state
                    .history
                    .with_existing(channel, |h| h.latest().is_some());
                if seen == Some(true) {
                    return None;
                }
                // One small read (no marker, at most one entry).
                let page = shared.page(app, channel, 0, 0).await.ok()?;
                Some(page.latest.unwrap_or(0))
            }
        }
    }

    /// Where a new socket of a signed-in user resumes `channel` (see
    /// [`recovery::UserPositions::take`]). With a shared position store its
    /// answer (every node's sockets) and this node's are both used up, and
    /// the lower wins; when it cannot be read, this node's alone answers
    /// (fail-open, counted).
    async fn take_position(
        &self,
        app: &App,
        state: &AppState,
        user: &str,
        socket_id: &str,
        channel: &str,
    ) -> Option<u64> {
        let local = state.positions.take(
            user,
            socket_id,
            channel,
            app.recovery_window(),
            std::time::Instant::now(),
        );
        let PositionStore::Shared(shared) = &self.position_store else {
            return local;
        };
        match shared.take(app, user, socket_id, channel).await {
            Ok(found) => recovery_store::lower(found, local),
            Err(recovery_store::Unavailable) => {
                self.metrics.recovery_fail_open.inc();
                local
            }
        }
    }

    /// Where a recovery on one node with long retention reads from: the
    /// buffer when it holds every event after `since`, else the archive
    /// (outside any lock; joined with the buffer under it).
    async fn recover_from_archive(
        &self,
        app: &App,
        state: &AppState,
        connection: &Connection,
        channel: &str,
        since: u64,
        long: &retention::LongHistory,
    ) -> RecoverFrom {
        let now = std::time::Instant::now();
        let covered = state.history.with_existing(channel, |h| {
            h.expire(now);
            h.covers(since)
        });
        if covered == Some(true) {
            return RecoverFrom::Buffer;
        }
        match long
            .fetch(app, channel, since, connection.free_capacity())
            .await
        {
            Ok(retention::Archived::Events(fetched)) => RecoverFrom::Shared(fetched),
            Ok(retention::Archived::TooMany(oldest)) => RecoverFrom::TooMany(oldest),
            Err(reason) => RecoverFrom::Unavailable(reason),
        }
    }

    /// Sets where a signed-in socket stands on a channel; counted when the
    /// app's limits refuse it.
    fn keep_position(
        &self,
        app: &App,
        state: &AppState,
        user: &str,
        socket_id: &Arc<str>,
        channel: &str,
        serial: u64,
    ) {
        if state
            .positions
            .set(user, socket_id, channel, serial, app.recovery_users)
            .is_err()
        {
            self.metrics.recovery_refused.inc();
        }
        if let PositionStore::Shared(shared) = &self.position_store {
            let position = vec![(channel.to_owned(), serial)];
            shared.write(app, user, socket_id, position, recovery_store::Write::Set);
        }
    }

    /// A socket signed in: keeps where it stands on each of its history
    /// channels (`joins`, from [`HistoryJoin`]). A channel it subscribed to
    /// before signing in (pusher-js re-subscribes public channels at once,
    /// signs in after its auth request) and did not recover with `since`
    /// first gets what the user's position says it missed, up to its
    /// `live_after`. Those frames follow any live event the socket got
    /// before the sign-in (README: the ordering caveat). Each join is
    /// updated to what the socket was sent.
    pub async fn recover_signed_in(
        &self,
        app: &App,
        connection: &Connection,
        user: &str,
        joins: &mut [(String, HistoryJoin)],
    ) {
        let Some(state) = self.state(&app.id) else {
            return;
        };
        let state = &*state;
        for (channel, join) in joins.iter_mut() {
            let live_after = join.live_after;
            let taken = if join.recovered {
                None
            } else {
                self.take_position(app, state, user, &connection.socket_id, channel)
                    .await
            };
            let position = match taken {
                Some(since) if since < live_after => {
                    let from = self
                        .recover_from(app, state, connection, channel, since)
                        .await;
                    let now = std::time::Instant::now();
                    let replay = |h: &mut history::ChannelHistory| {
                        h.expire(now);
                        let replay = from.replay(h, since, live_after);
                        queue_recovery(replay, h.oldest(), connection, channel, since)
                    };
                    let recovery = match &from {
                        RecoverFrom::Unavailable(_) => None,
                        RecoverFrom::TooMany(_) => {
                            Some(state.history.with_channel(channel, replay))
                        }
                        // The store knows the channel: its mirror may be gone here.
                        RecoverFrom::Shared(fetched) if fetched.latest.is_some() => {
                            Some(state.history.with_channel(channel, replay))
                        }
                        _ => state.history.with_existing(channel, replay),
                    };
                    match recovery {
                        Some(Recovery::Replayed) => {
                            self.metrics.history_recoveries.inc();
                            since
                        }
                        Some(Recovery::Failed) => {
                            self.metrics.history_recovery_failed.inc();
                            live_after
                        }
                        None => {
                            let reason = match from {
                                RecoverFrom::Unavailable(reason) => reason,
                                _ => "the channel has no history",
                            };
                            connection.send(frames::recovery_failed(channel, since, None, reason));
                            self.metrics.history_recovery_failed.inc();
                            live_after
                        }
                    }
                }
                _ => join.position,
            };
            join.position = position;
            join.recovered = true;
            self.keep_position(app, state, user, &connection.socket_id, channel, position);
        }
    }

    /// The latest serial of each of `channels` that has a history: every
    /// event up to it was queued to a socket subscribed to it (publishes
    /// queue under the same lock), so a probe queued after this snapshot
    /// confirms them when answered.
    pub fn history_snapshot<'a>(
        &self,
        app_id: &str,
        channels: impl Iterator<Item = &'a str>,
    ) -> Vec<(String, u64)> {
        let Some(state) = self.state(app_id) else {
            return Vec::new();
        };
        let state = &*state;
        // `latest`, not `last_serial`: a mirror that has not seen the
        // channel on the bus yet has no serial to confirm.
        channels
            .filter_map(|channel| {
                let last = state.history.with_existing(channel, |h| h.latest())??;
                Some((channel.to_owned(), last))
            })
            .collect()
    }

    /// A signed-in socket's client confirmed `snapshot` (its probe's pong).
    pub fn confirm_positions(
        &self,
        app: &App,
        user: &str,
        socket_id: &Arc<str>,
        snapshot: &[(String, u64)],
    ) {
        let Some(state) = self.state(&app.id) else {
            return;
        };
        let state = &*state;
        self.metrics.recovery_confirmations.inc();
        for (channel, serial) in snapshot {
            if state
                .positions
                .confirm(user, socket_id, channel, *serial, app.recovery_users)
                .is_err()
            {
                self.metrics.recovery_refused.inc();
            }
        }
        // One small write per probe (at most one per PROBE_DELAY per socket).
        if let PositionStore::Shared(shared) = &self.position_store {
            shared.write(
                app,
                user,
                socket_id,
                snapshot.to_vec(),
                recovery_store::Write::Raise,
            );
        }
    }

    /// A signed-in socket unsubscribed: it is not recovered from on `channel`.
    pub fn forget_position(&self, app: &App, user: &str, socket_id: &str, channel: &str) {
        if let Some(state) = self.state(&app.id) {
            state.positions.forget(user, socket_id, channel);
        }
        if let PositionStore::Shared(shared) = &self.position_store {
            shared.forget(app, user, socket_id, channel);
        }
    }

    /// Unsubscribes a connection; announces member_removed for a user's last socket.
    pub async fn unsubscribe(&self, connection: &Connection, channel: &str) {
        if let Some(state) = self.state(&connection.app_id) {
            self.leave(&state, connection, channel).await;
        }
    }

    async fn leave(&self, state: &AppState, connection: &Connection, channel: &str) {
        let was_peer = local_peer(state, channel, &connection.socket_id);
        let local = state.channels.unsubscribe(channel, &connection.socket_id);
        if !local.removed {
            return;
        }
        self.console.emit(&connection.app_id, || {
            ConsoleEvent::new("unsubscribed")
                .channel(channel)
                .socket(&connection.socket_id)
        });
        if let Some(changes) = state.count_changes.as_ref() {
            let counted = || {
                self.apps
                    .by_id(&connection.app_id)
                    .is_some_and(|app| app.subscription_count)
            };
            if counts_subscriptions(channel) && counted() {
                changes.changed(channel, false);
            }
        }
        let app_id = &connection.app_id;
        let left = self
            .adapter
            .left(app_id, channel, &local, local.member_removed.as_deref())
            .await;
        if let (true, Some(user_id)) = (left.member_removed, &local.member_removed) {
            if was_peer {
                // Its peer channels end on every node.
                self.adapter.peer_changed(app_id, channel, user_id, false);
            }
            let frame = frames::member_removed(channel, user_id);
            self.spawn_publish(app_id, channel, frame, None);
            if left.member_removed_webhook {
                self.webhooks
                    .emit(app_id, WebhookEvent::member_removed(channel, user_id));
            }
        }
        if channel.starts_with("#server-to-user-") {
            return;
        }
        if left.vacated {
            self.webhooks
                .emit(app_id, WebhookEvent::channel_vacated(channel));
        }
        // The 0 of a vacated the cluster holds comes with it (or never).
        if !left.held
            && counts_subscriptions(channel)
            && self.webhooks.wants(app_id, "subscription_count")
        {
            self.webhooks.emit(
                app_id,
                WebhookEvent::subscription_count(channel, left.subscription_count),
            );
        }
    }

    /// The `pusher:peer_added` frames a new peer member's socket gets: one
    /// per other peer member of the channel, deployment-wide when the
    /// adapter knows them, else on this node.
    fn peers_offered(
        state: &AppState,
        channel: &str,
        user_id: &str,
        joined: &Joined,
    ) -> Vec<ByteString> {
        let others: Vec<String> = match &joined.peers {
            Some(peers) => peers
                .iter()
                .filter(|p| p.as_str() != user_id)
                .cloned()
                .collect(),
            None => state.channels.peer_members(channel, user_id),
        };
        others
            .iter()
            .filter_map(|other| {
                let peer = peer::peer_channel(channel, user_id, other)?;
                Some(frames::peer_frame(
                    "pusher:peer_added",
                    channel,
                    &peer,
                    other,
                ))
            })
            .collect()
    }

    /// Webhooks for a new subscriber: occupied and subscription_count.
    fn occupancy_changed(&self, app_id: &str, channel: &str, joined: &Joined) {
        // User channels belong to sign-in; backends hear about users, not these.
        if channel.starts_with("#server-to-user-") {
            return;
        }
        if joined.occupied {
            self.webhooks
                .emit(app_id, WebhookEvent::channel_occupied(channel));
        }
        if counts_subscriptions(channel) && self.webhooks.wants(app_id, "subscription_count") {
            self.webhooks.emit(
                app_id,
                WebhookEvent::subscription_count(channel, joined.subscription_count),
            );
        }
    }

    /// Relays a client event to the channel's other subscribers, with `echo`
    /// (pushi's flag) to the sender as well, and to the app's `client_event`
    /// webhooks. The caller has checked the sender may.
    #[allow(clippy::too_many_arguments)]
    pub fn client_event(
        self: &Arc<Self>,
        app_id: &str,
        socket_id: &str,
        channel: &str,
        event: &str,
        data: &RawValue,
        user_id: Option<&str>,
        echo: bool,
    ) {
        self.console.emit(app_id, || {
            ConsoleEvent::new("client_event")
                .channel(channel)
                .event(event, data.get())
                .socket(socket_id)
        });
        let hub = self.clone();
        let (app, target, name, sender) = (
            app_id.to_owned(),
            channel.to_owned(),
            event.to_owned(),
            socket_id.to_owned(),
        );
        let (payload, user) = (data.to_owned(), user_id.map(str::to_owned));
        tokio::spawn(async move {
            hub.publish_event(
                &app,
                &target,
                &name,
                &payload,
                user.as_deref(),
                // pushi's `echo`: the sender gets it too.
                (!echo).then_some(sender.as_str()),
                true,
            )
            .await;
        });
        if self.webhooks.wants(app_id, "client_event") {
            // The webhook carries data as a string: a string payload as is,
            // anything else as its JSON text.
            let text = serde_json::from_str::<String>(data.get())
                .unwrap_or_else(|_| data.get().to_owned());
            self.webhooks.emit(
                app_id,
                WebhookEvent::client_event(channel, event, &text, socket_id, user_id),
            );
        }
    }

    /// Verifies `pusher:signin`, authorizes the connection (see
    /// [`Hub::authorize_connection`]), binds it to the user and joins
    /// `#server-to-user-{id}`.
    pub fn sign_in(
        &self,
        app: &App,
        connection: &Arc<Connection>,
        auth: &str,
        user_data: &str,
    ) -> Result<SignIn, SignInRefused> {
        if !verify_user_auth(
            &app.key,
            &app.secret,
            &connection.socket_id,
            user_data,
            auth,
        ) {
            return Err(SignInRefused::Unauthorized);
        }
        let user = parse_user_data(user_data).map_err(|_| SignInRefused::Unauthorized)?;
        self.authorize_connection(app, connection)
            .map_err(|_| SignInRefused::OverConnectionQuota)?;
        let state = self.state(&app.id).ok_or(SignInRefused::Unauthorized)?;
        let state = &*state;
        let user_channel = format!("#server-to-user-{}", user.id);
        // A user channel has no presence data and no member limit.
        state
            .channels
            .subscribe(&user_channel, connection, None)
            .map_err(|_| SignInRefused::Unauthorized)?;
        if state.users.sign_in(&user.id, connection) {
            // Online for watchers if it is the user's first socket anywhere.
            self.adapter.sign_in_changed(&app.id, &user.id, true);
        }
        state.users.watch(&user.watchlist, connection);
        let (online, elsewhere): (Vec<&String>, Vec<&String>) = user
            .watchlist
            .iter()
            .partition(|id| state.users.is_online(id));
        let online: Vec<&str> = online.into_iter().map(String::as_str).collect();
        let watchlist_online =
            (!online.is_empty()).then(|| frames::watchlist_event("online", &online));
        if !elsewhere.is_empty() {
            self.watched_elsewhere(app, connection, elsewhere.into_iter().cloned().collect());
        }
        Ok(SignIn {
            success: frames::signin_success(user_data),
            user_channel,
            watchlist_online,
            user,
        })
    }

    /// Sends the watcher one `online` event for the watched users signed in
    /// on other nodes only (asked without blocking the sign-in: it follows
    /// `pusher:signin_success` and the `online` of this node's users).
    fn watched_elsewhere(&self, app: &App, watcher: &Arc<Connection>, user_ids: Vec<String>) {
        let (adapter, app_id, watcher) = (self.adapter.clone(), app.id.clone(), watcher.clone());
        tokio::spawn(async move {
            let online = adapter.signed_in_elsewhere(&app_id, user_ids).await;
            if !online.is_empty() {
                let ids: Vec<&str> = online.iter().map(String::as_str).collect();
                watcher.send(frames::watchlist_event("online", &ids));
            }
        });
    }

    /// Closes with 4009, on every node, every socket of the app signed in as
    /// `user_id` or a presence member as `user_id` on any channel (see
    /// [`crate::adapter::local::close_user_sockets`]).
    pub async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.adapter.terminate_user(app_id, user_id).await;
    }

    /// Keeps `frame` as the last event of `channel` for `cache_ttl` when it
    /// is a cache channel; nothing otherwise.
    async fn remember_on_cache_channel(&self, app: &App, channel: &str, frame: &ByteString) {
        if channel_type(channel).cache {
            let ttl = Duration::from_secs(app.cache_ttl);
            self.adapter
                .cache_put(&app.id, channel, frame.clone(), ttl)
                .await;
        }
    }

    /// Publishes an event on a channel of an app: one encoding for every
    /// recipient, remembered on cache channels, stored and forwarded to the
    /// personal channels of the channel's followers. `persist` false (pushi's
    /// `"persist": false`): live on the channel only, neither stored nor
    /// forwarded to followers.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_event(
        &self,
        app_id: &str,
        channel: &str,
        event: &str,
        data: &RawValue,
        user_id: Option<&str>,
        except: Option<&str>,
        persist: bool,
    ) -> FanOut {
        let app = self.apps.by_id(app_id);
        // Acknowledged delivery: one id per publish, in the one encoding
        // every subscriber shares.
        let message_id = app
            .as_deref()
            .filter(|app| app.delivery.applies(channel))
            .map(|_| self.message_ids.next_id());
        let message_id = message_id.as_deref();
        let with_history = app
            .as_deref()
            .filter(|app| history::applies(app.history, &app.history_channels, channel))
            .zip(self.state(app_id));
        let report = match (with_history, &self.history_store) {
            (Some((app, state)), HistoryStore::Memory) => {
                let state = &*state;
                if let Some(long) = &self.long_history {
                    long.seed(app, &state.history, channel).await;
                }
                let (serial, frame, report) = publish_with_history(
                    app, state, channel, event, data, user_id, except, message_id,
                );
                // Kept for long retention from the store's queue, after the lock.
                if let Some(persistence) = &self.persistence {
                    persistence.record_history(app_id, channel, serial, &frame, except);
                }
                self.remember_on_cache_channel(app, channel, &frame).await;
                report
            }
            // Delivered from the bus, on every node, in serial order.
            (Some((app, _)), HistoryStore::Shared(shared)) => {
                let publication = Publication {
                    channel,
                    event,
                    data,
                    user_id,
                    except,
                    message_id,
                };
                shared.publish(app, publication);
                if channel_type(channel).cache {
                    let frame = match message_id {
                        Some(id) => frames::delivery_frame(id, event, channel, data, user_id, None),
                        None => frames::client_event_frame(event, channel, data, user_id),
                    };
                    self.remember_on_cache_channel(app, channel, &frame).await;
                }
                FanOut::default()
            }
            (None, _) => {
                let frame = match message_id {
                    Some(id) => frames::delivery_frame(id, event, channel, data, user_id, None),
                    None => frames::client_event_frame(event, channel, data, user_id),
                };
                if let Some(app) = &app {
                    self.remember_on_cache_channel(app, channel, &frame).await;
                }
                self.adapter.publish(app_id, channel, frame, except).await
            }
        };
        self.metrics.events_published.inc();
        report.record(&self.metrics);
        // Only here, on the node the event entered: one notification per
        // target in a cluster. Never waits (a bounded queue).
        if let Some(notifier) = &self.notifier {
            notifier.route(app_id, channel, event, data, user_id);
        }
        if let Some(persistence) = &self.persistence {
            if persist && persistence.is_followed(app_id, channel) {
                // One sequence for the whole deployment where the adapter
                // shares one (Redis); this node's counter otherwise.
                let floor = persistence.current_seq(app_id);
                let seq = match self.adapter.next_sequence(app_id, floor).await {
                    Some(seq) => {
                        persistence.observe_seq(app_id, seq);
                        seq
                    }
                    None => persistence.next_seq(app_id),
                };
                let message = persistence.record(app_id, seq, channel, event, data.get());
                for user_id in persistence.followers_of(app_id, channel) {
                    let personal = format!("personal-{user_id}");
                    // Most followers are offline: encode only for a channel someone is on.
                    if !self.adapter.may_have_subscribers(app_id, &personal) {
                        continue;
                    }
                    let frame =
                        frames::personal_frame(&personal, event, data, channel, message.seq);
                    self.adapter.publish(app_id, &personal, frame, None).await;
                }
            }
        }
        report
    }

    /// The persistence layer (offline subscriptions), when configured.
    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// Publishes without waiting, for announcements made from synchronous code.
    fn spawn_publish(&self, app_id: &str, channel: &str, frame: ByteString, except: Option<&str>) {
        let adapter = self.adapter.clone();
        let metrics = self.metrics.clone();
        let (app_id, channel) = (app_id.to_owned(), channel.to_owned());
        let except = except.map(str::to_owned);
        tokio::spawn(async move {
            let report = adapter
                .publish(&app_id, &channel, frame, except.as_deref())
                .await;
            report.record(&metrics);
        });
    }

    /// Starts subscription counting: one task per app with
    /// `subscription_count = true` (see [`counts`]); none otherwise. Apps
    /// added, changed or removed at runtime get their task started,
    /// restarted (new interval) or stopped.
    pub fn start_subscription_counting(self: &Arc<Self>) {
        let hub = self.clone();
        let mut changes = self.apps.subscribe();
        tokio::spawn(async move {
            let mut tasks: HashMap<String, (u64, tokio::task::JoinHandle<()>)> = HashMap::new();
            loop {
                let wanted: HashMap<String, u64> = hub
                    .apps
                    .all()
                    .filter(|app| app.subscription_count)
                    .map(|app| (app.id.clone(), app.subscription_count_interval_ms))
                    .collect();
                tasks.retain(|id, (gap, task)| {
                    let keep = wanted.get(id) == Some(gap);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for (app_id, gap) in wanted {
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        tasks.entry(app_id.clone())
                    {
                        let task = tokio::spawn(hub.clone().count_subscriptions(app_id, gap));
                        slot.insert((gap, task));
                    }
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// One app's subscription counting loop, every tick of its interval.
    async fn count_subscriptions(self: Arc<Self>, app_id: String, gap_ms: u64) {
        let mut ticker = counts::CountTicker::new(Duration::from_millis(gap_ms));
        let mut tick = tokio::time::interval(ticker.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.announce_subscription_counts(&app_id, &mut ticker)
                .await;
        }
    }

    /// Closes every open connection of an app with `code` (an app disabled
    /// or deleted at runtime: 4003); returns how many.
    pub fn close_app(&self, state: &AppState, code: ErrorCode) -> usize {
        let mut closed = 0;
        for connection in state.channels.connections() {
            connection.request_close(code.code());
            closed += 1;
        }
        closed
    }

    /// Applies a change of the registry to this node: closes the
    /// connections of apps now disabled or gone (4003, as Pusher refuses a
    /// disabled app), and drops the state of apps gone.
    pub fn apps_changed(&self) {
        for app in self.apps.all().filter(|app| !app.enabled) {
            if let Some(state) = self.node.existing(&app.id) {
                let closed = self.close_app(&state, ErrorCode::AppDisabled);
                if closed > 0 {
                    tracing::info!(app_id = %app.id, closed, "app disabled: its connections closed");
                }
            }
        }
        for state in self.node.retain_apps() {
            let closed = self.close_app(&state, ErrorCode::AppDisabled);
            tracing::info!(
                closed,
                "app removed: its connections closed and its state dropped"
            );
        }
    }

    /// One tick of an app's subscription counting: the changed channels
    /// whose turn it is get their count.
    async fn announce_subscription_counts(&self, app_id: &str, ticker: &mut counts::CountTicker) {
        let Some(state) = self.state(app_id) else {
            return;
        };
        let state = &*state;
        let Some(changes) = state.count_changes.as_ref() else {
            return;
        };
        let due = ticker.due(changes, std::time::Instant::now());
        if due.is_empty() {
            return;
        }
        let outcomes = self.adapter.announce_counts(app_id, &due, ticker.gap).await;
        let now = std::time::Instant::now();
        for ((channel, force), outcome) in due.into_iter().zip(outcomes) {
            if outcome == crate::adapter::CountSent::Sent {
                self.metrics.subscription_count_frames.inc();
            }
            ticker.record(channel, force, outcome, now);
        }
    }

    /// Subscribers of a channel.
    pub async fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.adapter.subscription_count(app_id, channel).await
    }

    /// Distinct members of a presence channel.
    pub async fn user_count(&self, app_id: &str, channel: &str) -> usize {
        self.adapter.user_count(app_id, channel).await
    }

    /// User ids of a presence channel's members.
    pub async fn member_ids(&self, app_id: &str, channel: &str) -> Vec<String> {
        self.adapter.member_ids(app_id, channel).await
    }

    /// The remaining life of a cache channel's last event, if any.
    pub async fn cache_ttl(&self, app_id: &str, channel: &str) -> Option<Duration> {
        self.adapter
            .cache_get(app_id, channel)
            .await
            .map(|(_, ttl)| ttl)
    }

    /// Occupied channels of an app with their counts.
    pub async fn occupied_channels(&self, app_id: &str) -> Vec<ChannelStats> {
        self.adapter.occupied_channels(app_id).await
    }

    /// Drops expired cache entries and idle channel histories of every app.
    pub fn sweep_caches(&self) {
        for state in self.node.apps() {
            state.cache.sweep();
        }
        for app in self.apps.all() {
            if let Some(state) = self.state(&app.id) {
                state.history.sweep(Duration::from_secs(app.history_ttl));
                state
                    .positions
                    .sweep(app.recovery_window(), std::time::Instant::now());
            }
        }
        self.refresh_history_gauges();
        self.deliveries.sweep(std::time::Instant::now());
    }

    /// Counts `n` acknowledged-delivery messages dropped unacknowledged.
    pub fn delivery_expired(&self, why: delivery::pending::Expiry, n: usize) {
        if n > 0 {
            self.metrics
                .delivery_expired
                .with_label_values(&[why.label()])
                .inc_by(n as u64);
            self.metrics.delivery_pending.sub(n as i64);
        }
    }

    /// Keeps a closed connection's unacknowledged messages for the
    /// signed-in user's next connection, and forgets the ids it mirrored
    /// that are no longer pending (see [`delivery::store`]).
    pub async fn park_deliveries(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        entries: Vec<delivery::pending::Entry>,
        gone: Vec<Arc<str>>,
    ) {
        self.deliveries
            .park(app, user_id, socket_id, entries, gone)
            .await;
    }

    /// The signed-in user's parked messages of `channels`, for the
    /// connection that just subscribed to them (again, authorised again).
    pub async fn claim_deliveries(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        channels: &[String],
    ) -> delivery::store::Claimed {
        self.deliveries
            .claim(app, user_id, socket_id, channels)
            .await
    }

    /// Whether a signed-in connection of `app` mirrors its pending messages
    /// to a shared store ([`Hub::mirror_deliveries`]).
    pub fn mirrors_deliveries(&self, app: &App) -> bool {
        self.deliveries.mirrors(app)
    }

    /// Records a live signed-in connection's new pending messages in the
    /// shared store and forgets its `gone` ones, so they survive this node.
    pub async fn mirror_deliveries(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        writes: Vec<delivery::pending::Entry>,
        gone: Vec<Arc<str>>,
    ) {
        self.deliveries
            .mirror(app, user_id, socket_id, writes, gone)
            .await;
    }

    /// Sets `rusher_history_channels`, `rusher_history_events`,
    /// `rusher_recovery_users` and `rusher_recovery_positions`.
    pub fn refresh_history_gauges(&self) {
        let (mut channels, mut events) = (0, 0);
        for state in self.node.apps() {
            let counts = state.history.counts();
            channels += counts.channels;
            events += counts.events;
        }
        self.metrics.history_channels.set(channels as i64);
        self.metrics.history_events.set(events as i64);
        let (mut users, mut positions) = (0, 0);
        for state in self.node.apps() {
            let counts = state.positions.counts();
            users += counts.users;
            positions += counts.positions;
        }
        self.metrics.recovery_users.set(users as i64);
        self.metrics.recovery_positions.set(positions as i64);
    }

    /// A page of a channel's history (`GET .../channels/{channel}/history`);
    /// `None` when the app keeps no history for that channel. From the
    /// shared store when there is one (every node answers the same), which
    /// may be unreachable.
    pub async fn history_page(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Option<Result<history::Page, &'static str>> {
        if !history::applies(app.history, &app.history_channels, channel) {
            return None;
        }
        let long = self
            .long_history
            .as_ref()
            .filter(|_| app.history_retention > 0);
        if let HistoryStore::Shared(shared) = &self.history_store {
            let page = match shared.page(app, channel, since, limit).await {
                Ok(page) => page,
                Err(_) => return Some(Err(UNAVAILABLE)),
            };
            let Some(long) = long.filter(|_| retention::page_needs_older(&page, since)) else {
                return Some(Ok(page));
            };
            // The stream lost the start: the archive's page, then the stream's.
            let archived = match long.page(app, channel, since, limit).await {
                Ok(page) => page,
                Err(reason) => return Some(Err(reason)),
            };
            let after = archived.events.last().map_or(since, |e| e.serial);
            let room = limit - archived.events.len().min(limit);
            return Some(match shared.page(app, channel, after, room.max(1)).await {
                Ok(tail) => Ok(retention::extend_page(archived, tail, room)),
                Err(_) => Err(UNAVAILABLE),
            });
        }
        let state = self.state(&app.id)?;
        let state = &*state;
        let now = std::time::Instant::now();
        let covered = state.history.with_existing(channel, |h| {
            h.expire(now);
            h.covers(since)
        });
        // Long retention: what the buffer no longer holds comes from the
        // archive, followed by the buffer's newer events.
        if let (Some(long), false) = (long, covered == Some(true)) {
            let archived = match long.page(app, channel, since, limit).await {
                Ok(page) => page,
                Err(reason) => return Some(Err(reason)),
            };
            let after = archived.events.last().map_or(since, |e| e.serial);
            let room = limit - archived.events.len().min(limit);
            let tail = state
                .history
                .with_existing(channel, |h| h.page(after, room.max(1)))
                .unwrap_or_default();
            return Some(Ok(retention::extend_page(archived, tail, room)));
        }
        let page = state
            .history
            .with_existing(channel, |h| h.page(since, limit));
        Some(Ok(page.unwrap_or_default()))
    }

    /// Stops admitting connections and API calls (`/ready` 503); open
    /// connections go on until [`Hub::close_all`].
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Stops admitting connections and asks every open one to close with `code`.
    pub fn close_all(&self, code: ErrorCode) -> usize {
        self.accepting.store(false, Ordering::Release);
        let mut closed = 0;
        for state in self.node.apps() {
            for connection in state.channels.connections() {
                connection.request_close(code.code());
                closed += 1;
            }
        }
        closed
    }

    /// Leaves the deployment (after every socket closed).
    pub async fn close_adapter(&self) {
        self.adapter.close().await;
    }

    /// Open connections of `app_id`: this node's, and what the other nodes
    /// reported (Redis adapter; see [`crate::usage`]).
    pub fn app_connection_count(&self, app_id: &str) -> u64 {
        let local = self
            .state(app_id)
            .map_or(0, |state| state.channels.connection_count());
        let remote = self.remote_open(app_id);
        local + remote.authorized + remote.unauthorized
    }

    /// Open connections on this node, all apps.
    pub fn connection_count(&self) -> u64 {
        self.node
            .apps()
            .iter()
            .map(|state| state.channels.connection_count())
            .sum()
    }
}
