//! The hub: what ws/ and http/ call to connect, subscribe, sign in and publish.
//!
//! - [`connection`]: the hub's handle on one connection (bounded queue, close signal).
//! - [`authorize`]: who may subscribe to what (names, signatures, presence data).
//! - [`held`]: subscriptions waiting for the sign-in or membership that would authorise them.
//! - [`channels`]: one app's channels → subscribers and presence members on this node.
//! - [`users`]: signed-in users and watchlists on this node.
//! - [`cache`]: the last event of each cache channel.
//! - [`history`]: per-channel history with serials, replay for recovering subscribers.
//! - [`node`]: every app's state on this node.
//! - [`persistence`]: offline subscriptions, stored messages, personal channels.
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
pub mod held;
pub mod history;
pub mod node;
pub mod peer;
pub mod persistence;
pub mod rate;
pub mod socket_id;
pub mod users;

use crate::adapter::{Adapter, ChannelStats, Joined, MemberJoin};
use crate::apps::{App, AppRegistry};
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
use channels::{FanOut, Joining};
use connection::{Connection, ConnectionReceiver};
use node::{AppState, Node};
use persistence::Persistence;
use serde_json::value::RawValue;
use socket_id::SocketIds;
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
/// (which holds the same lock) sees it exactly once. Straight to this node:
/// history is refused at startup with a cluster adapter.
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
) -> (ByteString, FanOut) {
    let ttl = Duration::from_secs(app.history_ttl);
    let now = std::time::Instant::now();
    state.history.with_channel(channel, |h| {
        let mut frame = ByteString::default();
        h.push(now, app.history_size, ttl, event, data, except, |serial| {
            frame = match message_id {
                Some(id) => frames::delivery_frame(id, event, channel, data, user_id, Some(serial)),
                None => frames::history_event_frame(event, channel, data, user_id, serial),
            };
            frame.clone()
        });
        let report = state.channels.deliver(channel, &frame, except);
        (frame, report)
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

/// Replays to a connection what it missed on `channel` since `since`, or
/// queues `pusher:recovery_failed`. A replay that would not fit in the
/// connection's free queue is refused the same way (the client refetches
/// through the history API) rather than closing it as a slow client.
fn queue_recovery(
    history: &mut history::ChannelHistory,
    connection: &Connection,
    channel: &str,
    since: u64,
) -> Recovery {
    history.expire(std::time::Instant::now());
    let replay = match history.replay(since) {
        Ok(frames) if frames.len() < connection.free_capacity() => Ok(frames),
        Ok(_) => Err(history::Gap {
            oldest: history.oldest(),
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

/// Shared state of the server, reached through a handle by every connection and request.
pub struct Hub {
    apps: Arc<AppRegistry>,
    node: Arc<Node>,
    adapter: Arc<dyn Adapter>,
    metrics: Metrics,
    webhooks: Webhooks,
    persistence: Option<Arc<Persistence>>,
    api_rate: rate::ApiRateLimit,
    socket_ids: SocketIds,
    outgoing_queue: usize,
    accepting: AtomicBool,
    message_ids: delivery::MessageIds,
    parked: delivery::parked::Parked,
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
            metrics,
            webhooks,
            persistence,
            api_rate: rate::ApiRateLimit::default(),
            socket_ids: SocketIds::default(),
            outgoing_queue,
            accepting: AtomicBool::new(true),
            message_ids: delivery::MessageIds::default(),
            parked: delivery::parked::Parked::default(),
        }
    }

    /// The configured apps.
    pub fn apps(&self) -> &AppRegistry {
        &self.apps
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts an HTTP API request of `app`; false when over its rate limit.
    pub fn allow_api_request(&self, app: &App) -> bool {
        self.api_rate
            .allow(&app.id, app.max_api_requests_per_second)
    }

    /// The webhook sender.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Whether new connections are accepted (false once shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    fn state(&self, app_id: &str) -> Option<&Arc<AppState>> {
        self.node.app(app_id)
    }

    /// Admits a new connection of `app`, or says which Pusher error refuses it.
    pub fn connect(&self, app: &App) -> Result<ConnectionReceiver, ErrorCode> {
        if !self.is_accepting() {
            return Err(ErrorCode::ServerShuttingDown);
        }
        if !app.enabled {
            return Err(ErrorCode::AppDisabled);
        }
        let state = self.state(&app.id).ok_or(ErrorCode::AppNotFound)?;
        let socket_id: Arc<str> = self.socket_ids.next().into();
        let (connection, receiver) =
            Connection::new(socket_id, app.id.as_str().into(), self.outgoing_queue);
        if !state
            .channels
            .add_connection(connection, app.max_connections)
        {
            return Err(ErrorCode::OverConnectionQuota);
        }
        self.metrics.connections.inc();
        self.metrics.connections_total.inc();
        Ok(receiver)
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
        if let Some(user) = user {
            state.users.unwatch(&user.watchlist, &connection.socket_id);
            if state.users.sign_out(&user.id, &connection.socket_id) {
                let offline = frames::watchlist_event("offline", &[&user.id]);
                for watcher in state.users.watchers_of(&user.id) {
                    watcher.send(offline.clone());
                }
            }
        }
        for channel in channels {
            self.leave(state, connection, &channel).await;
        }
        // Last, so that shutdown (which waits for connections to go) waits
        // for the cluster to hear about the leaves too.
        state.channels.remove_connection(&connection.socket_id);
        self.metrics.connections.dec();
    }

    /// Subscribes a connection after checking name, signature and limits.
    pub async fn subscribe(
        &self,
        app: &App,
        connection: &Arc<Connection>,
        request: &SubscribeRequest,
        signed_in: Option<&str>,
    ) -> Result<Subscription, SubscriptionError> {
        let grant = authorize(app, &connection.socket_id, request, signed_in)?;
        let state = self.state(&app.id).ok_or_else(|| SubscriptionError {
            kind: "AuthError",
            message: "Unknown app".into(),
            status: 404,
        })?;
        let channel = request.channel.as_str();
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
                peer::check_membership(&state.channels, channel, &connection.socket_id)?;
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
        let recover = request
            .since
            .filter(|_| history::applies(app.history, &app.history_channels, channel));
        let (local, recovery) = match recover {
            // Join and queue the replay under the channel's history lock.
            Some(since) => {
                let mut joining = Some(joining);
                let recovered = state.history.with_existing(channel, |h| {
                    let local =
                        state
                            .channels
                            .subscribe(channel, connection, joining.take().flatten())?;
                    let recovery = queue_recovery(h, connection, channel, since);
                    Ok((local, Some(recovery)))
                });
                // No history (none kept, or swept): said before joining, so it
                // precedes live events. Not creating one here keeps unknown
                // channel names from taking memory; a publish racing this
                // join is covered by the refetch the failure asks for.
                recovered.unwrap_or_else(|| {
                    connection.send(frames::recovery_failed(
                        channel,
                        since,
                        None,
                        "the channel has no history",
                    ));
                    state
                        .channels
                        .subscribe(channel, connection, joining.take().flatten())
                        .map(|local| (local, Some(Recovery::Failed)))
                })
            }
            None => state
                .channels
                .subscribe(channel, connection, joining)
                .map(|local| (local, None)),
        }
        .map_err(|limit| SubscriptionError::member_limit(limit.0))?;
        match recovery {
            Some(Recovery::Replayed) => self.metrics.history_recoveries.inc(),
            Some(Recovery::Failed) => self.metrics.history_recovery_failed.inc(),
            None => {}
        }
        let member_join = user_id.as_deref().map(|user_id| MemberJoin {
            user_id,
            user_info: user_info.as_deref(),
            max_members: app.max_presence_members,
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
            self.webhooks
                .emit(&app.id, WebhookEvent::member_added(channel, user_id));
        }
        if local.new_socket {
            self.occupancy_changed(&app.id, channel, &joined);
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
        if let (true, true, Some(user_id)) = (wants_peers, local.member_added, &user_id) {
            announcements = self.announce_peers(state, channel, user_id);
        }
        Ok(Subscription {
            succeeded: frames::subscription_succeeded(channel, data),
            cached,
            user_id,
            announcements,
        })
    }

    /// Unsubscribes a connection; announces member_removed for a user's last socket.
    pub async fn unsubscribe(&self, connection: &Connection, channel: &str) {
        if let Some(state) = self.state(&connection.app_id) {
            self.leave(state, connection, channel).await;
        }
    }

    async fn leave(&self, state: &AppState, connection: &Connection, channel: &str) {
        let was_peer = local_peer(state, channel, &connection.socket_id);
        let local = state.channels.unsubscribe(channel, &connection.socket_id);
        if !local.removed {
            return;
        }
        if let (Some(user_id), true) = (&local.member_removed, was_peer) {
            self.end_peers(state, channel, user_id);
        }
        let app_id = &connection.app_id;
        let left = self
            .adapter
            .left(app_id, channel, &local, local.member_removed.as_deref())
            .await;
        if let (true, Some(user_id)) = (left.member_removed, &local.member_removed) {
            let frame = frames::member_removed(channel, user_id);
            self.spawn_publish(app_id, channel, frame, None);
            self.webhooks
                .emit(app_id, WebhookEvent::member_removed(channel, user_id));
        }
        if channel.starts_with("#server-to-user-") {
            return;
        }
        if left.vacated {
            self.webhooks
                .emit(app_id, WebhookEvent::channel_vacated(channel));
        }
        if self.webhooks.wants(app_id, "subscription_count") {
            self.webhooks.emit(
                app_id,
                WebhookEvent::subscription_count(channel, left.subscription_count),
            );
        }
    }

    /// Offers a peer channel between a new peer member and every other peer
    /// member: the others hear at once, the newcomer's frames are returned.
    fn announce_peers(&self, state: &AppState, channel: &str, user_id: &str) -> Vec<ByteString> {
        let mut own = Vec::new();
        for other in state.channels.peer_members(channel, user_id) {
            let Some(peer) = peer::peer_channel(channel, user_id, &other) else {
                continue;
            };
            own.push(frames::peer_frame(
                "pusher:peer_added",
                channel,
                &peer,
                &other,
            ));
            let frame = frames::peer_frame("pusher:peer_added", channel, &peer, user_id);
            for socket in state.channels.user_sockets(channel, &other) {
                socket.send(frame.clone());
            }
        }
        own
    }

    /// A peer member left: its peer channels end for everyone.
    fn end_peers(&self, state: &AppState, channel: &str, user_id: &str) {
        for other in state.channels.peer_members(channel, user_id) {
            let Some(peer) = peer::peer_channel(channel, user_id, &other) else {
                continue;
            };
            state.channels.close_channel(&peer);
            let frame = frames::peer_frame("pusher:peer_removed", channel, &peer, user_id);
            for socket in state.channels.user_sockets(channel, &other) {
                socket.send(frame.clone());
            }
        }
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
        if self.webhooks.wants(app_id, "subscription_count") {
            self.webhooks.emit(
                app_id,
                WebhookEvent::subscription_count(channel, joined.subscription_count),
            );
        }
    }

    /// Relays a client event to the channel's other subscribers (and to the
    /// app's `client_event` webhooks). The caller has checked the sender may.
    pub fn client_event(
        self: &Arc<Self>,
        app_id: &str,
        socket_id: &str,
        channel: &str,
        event: &str,
        data: &RawValue,
        user_id: Option<&str>,
    ) {
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
                Some(&sender),
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

    /// Verifies `pusher:signin`, binds the connection to the user and joins
    /// `#server-to-user-{id}`. `None` means the signature or data is bad (4009).
    pub fn sign_in(
        &self,
        app: &App,
        connection: &Arc<Connection>,
        auth: &str,
        user_data: &str,
    ) -> Option<SignIn> {
        if !verify_user_auth(
            &app.key,
            &app.secret,
            &connection.socket_id,
            user_data,
            auth,
        ) {
            return None;
        }
        let user = parse_user_data(user_data).ok()?;
        let state = self.state(&app.id)?;
        let user_channel = format!("#server-to-user-{}", user.id);
        // A user channel has no presence data and no member limit.
        state
            .channels
            .subscribe(&user_channel, connection, None)
            .ok()?;
        if state.users.sign_in(&user.id, connection) {
            let online = frames::watchlist_event("online", &[&user.id]);
            for watcher in state.users.watchers_of(&user.id) {
                watcher.send(online.clone());
            }
        }
        state.users.watch(&user.watchlist, connection);
        let online: Vec<&str> = user
            .watchlist
            .iter()
            .filter(|id| state.users.is_online(id))
            .map(String::as_str)
            .collect();
        let watchlist_online =
            (!online.is_empty()).then(|| frames::watchlist_event("online", &online));
        Some(SignIn {
            success: frames::signin_success(user_data),
            user_channel,
            watchlist_online,
            user,
        })
    }

    /// Closes every socket of a signed-in user with 4009, on every node.
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
    /// personal channels of the channel's followers.
    pub async fn publish_event(
        &self,
        app_id: &str,
        channel: &str,
        event: &str,
        data: &RawValue,
        user_id: Option<&str>,
        except: Option<&str>,
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
        let report = match with_history {
            Some((app, state)) => {
                let (frame, report) = publish_with_history(
                    app, state, channel, event, data, user_id, except, message_id,
                );
                self.remember_on_cache_channel(app, channel, &frame).await;
                report
            }
            None => {
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
        self.metrics.frames_sent.inc_by(report.queued);
        self.metrics
            .slow_client_disconnects
            .inc_by(report.overflowed);
        if let Some(persistence) = &self.persistence {
            if persistence.is_followed(app_id, channel) {
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
            metrics.frames_sent.inc_by(report.queued);
        });
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
            }
        }
        self.refresh_history_gauges();
        let expired = self.parked.sweep(std::time::Instant::now());
        self.delivery_expired(delivery::pending::Expiry::Ttl, expired);
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
    /// signed-in user's next connection (see [`delivery::parked`]).
    pub fn park_deliveries(
        &self,
        app: &App,
        user_id: &str,
        entries: Vec<delivery::pending::Entry>,
    ) {
        let count = entries.len();
        let dropped = self
            .parked
            .park(&app.id, user_id, entries, app.delivery.max_pending);
        tracing::debug!(app_id = %app.id, %user_id, count, dropped, "pending deliveries parked for the user");
        self.delivery_expired(delivery::pending::Expiry::Overflow, dropped);
    }

    /// The signed-in user's parked messages of `channel`, for the
    /// connection that just subscribed to it (again, authorised again).
    pub fn claim_deliveries(
        &self,
        app: &App,
        user_id: &str,
        channel: &str,
    ) -> Vec<delivery::pending::Entry> {
        let (claimed, expired) =
            self.parked
                .claim(&app.id, user_id, channel, std::time::Instant::now());
        self.delivery_expired(delivery::pending::Expiry::Ttl, expired);
        claimed
    }

    /// Sets `rusher_history_channels` and `rusher_history_events`.
    pub fn refresh_history_gauges(&self) {
        let (mut channels, mut events) = (0, 0);
        for state in self.node.apps() {
            let counts = state.history.counts();
            channels += counts.channels;
            events += counts.events;
        }
        self.metrics.history_channels.set(channels as i64);
        self.metrics.history_events.set(events as i64);
    }

    /// A page of a channel's history (`GET .../channels/{channel}/history`);
    /// `None` when the app keeps no history for that channel.
    pub fn history_page(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Option<history::Page> {
        if !history::applies(app.history, &app.history_channels, channel) {
            return None;
        }
        let state = self.state(&app.id)?;
        let ttl_now = std::time::Instant::now();
        let page = state.history.with_existing(channel, |h| {
            h.expire(ttl_now);
            h.page(since, limit)
        });
        Some(page.unwrap_or_default())
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

    /// Open connections on this node, all apps.
    pub fn connection_count(&self) -> u64 {
        self.node
            .apps()
            .map(|state| state.channels.connection_count())
            .sum()
    }
}
