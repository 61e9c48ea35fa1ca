//! One actor per connection, whatever carries it: the Pusher protocol as a
//! client sees it. It holds only its own connection's state (its channels,
//! subscriptions waiting for a sign-in or presence membership, keep-alive
//! clock, rate limit, pending acknowledgements) and reaches shared state
//! through the hub handle.
//!
//! How frames reach the client is the [`Transport`]'s job (a WebSocket in
//! `ws/`, HTTP streaming or polling in `xhr/`, Server-Sent Events in `sse/`):
//! the session hands it encoded frames, probe requests and the close; the
//! transport feeds it the client's frames ([`Session::receive_text`]) and
//! signs of life.

mod acked;
mod outgoing;
mod pacer;
mod probe;
mod pushi_frames;
mod transport;

use crate::hub::rate::{Admission, RateWindow};
use acked::AckedDelivery;
pub use acked::ClaimedDeliveries;
use probe::Probe;

pub use transport::{SessionSettings, Transport, TransportSettings};

use crate::apps::App;
use crate::hub::authorize::SubscriptionError;
use crate::hub::connection::{Connection, ConnectionReceiver};
use crate::hub::held::{self, Awaiting, Held, HeldSubscriptions};
use crate::hub::recovery;
use crate::hub::{HistoryJoin, Hub};
use crate::protocol::channel::channel_type;
use crate::protocol::error::ErrorCode;
use crate::protocol::frames::{self, ClientMessage, FrameError, SubscribeRequest};
use crate::protocol::presence::SignedInUser;
use crate::protocol::pushi::{self, Dialect};
use crate::throttled_log::ThrottledLog;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Handler, SpawnHandle, StreamHandler,
    WrapFuture,
};
use bytestring::ByteString;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Span;

/// One line per 10 s however many connections flood subscribes.
static SUBSCRIPTION_FLOOD_LOG: ThrottledLog = ThrottledLog::new(10_000);

/// The state of one connection, carried by the transport `T`.
pub struct Session<T: Transport> {
    transport: T,
    hub: Arc<Hub>,
    app: Arc<App>,
    connection: Arc<Connection>,
    receiver: Option<ConnectionReceiver>,
    /// Subscribed channels, with the presence user id where there is one.
    channels: HashMap<String, Option<Arc<str>>>,
    /// Subscribed channels with history: where the socket stands on each.
    history: HashMap<String, HistoryJoin>,
    probe: Probe,
    /// Subscriptions waiting for the sign-in or presence membership that
    /// would authorise them, each with the timer that ends its wait.
    held: HeldSubscriptions<SpawnHandle>,
    user: Option<SignedInUser>,
    settings: SessionSettings,
    last_seen: Instant,
    ping_sent: Option<Instant>,
    keepalive: Option<SpawnHandle>,
    client_events: RateWindow,
    /// `pusher:subscribe` and `pusher:unsubscribe` frames in this window.
    subscriptions: RateWindow,
    delivery: Option<Box<AckedDelivery>>,
    /// Apps with `authorized_connections`: the timer that closes the
    /// connection with 4009 unless it authorizes first.
    authorization: Option<SpawnHandle>,
    span: Span,
    /// Frames written and read since the metrics last saw them.
    frames: FrameCounts,
    /// Pusher's frames or pushi's (pushi.js at `/{key}`), as the transport
    /// set on the connection.
    dialect: Dialect,
}

/// Frames counted on the connection and added to
/// `rusher_transport_frames_total` in batches, so the hot path touches no
/// shared counter.
#[derive(Debug, Default)]
struct FrameCounts {
    out: u64,
    r#in: u64,
}

/// Frames counted locally before they are added to the shared metric.
const FRAME_COUNT_BATCH: u64 = 1024;

impl<T: Transport> Session<T> {
    /// A session for an admitted connection.
    pub fn new(
        transport: T,
        hub: Arc<Hub>,
        app: Arc<App>,
        receiver: ConnectionReceiver,
        settings: SessionSettings,
    ) -> Self {
        let connection = receiver.connection.clone();
        let span = tracing::info_span!(
            "connection",
            app_id = %app.id,
            socket_id = %connection.socket_id
        );
        let delivery = app
            .delivery
            .enabled
            .then(|| Box::new(AckedDelivery::new(&app)));
        Session {
            transport,
            hub,
            app,
            receiver: Some(receiver),
            channels: HashMap::new(),
            history: HashMap::new(),
            probe: Probe::default(),
            held: HeldSubscriptions::default(),
            user: None,
            settings,
            last_seen: Instant::now(),
            ping_sent: None,
            keepalive: None,
            client_events: RateWindow::new(Instant::now()),
            subscriptions: RateWindow::new(Instant::now()),
            delivery,
            authorization: None,
            span,
            frames: FrameCounts::default(),
            dialect: connection.dialect(),
            connection,
        }
    }

    /// Hands one encoded frame to the transport.
    pub fn send(&mut self, ctx: &mut T::Context, frame: impl Into<ByteString>) {
        self.frames.out += 1;
        if self.frames.out >= FRAME_COUNT_BATCH {
            self.flush_frame_counts();
        }
        self.transport.text(ctx, frame.into());
    }

    /// Hands a frame built for this connection alone (a subscription's
    /// answer, a cache channel's last event) to the transport, in pushi's
    /// form for a pushi.js client.
    fn send_own(&mut self, ctx: &mut T::Context, frame: ByteString) {
        let frame = match self.dialect {
            Dialect::Pusher => frame,
            Dialect::Pushi => pushi::session_frame(&frame).unwrap_or(frame),
        };
        self.send(ctx, frame);
    }

    /// Sends `pusher:error` with `code` (none for errors that keep the
    /// connection open) and `message`.
    pub fn error(&mut self, ctx: &mut T::Context, code: Option<u16>, message: &str) {
        self.send(ctx, frames::error_frame(code, message));
    }

    /// Adds the frames counted here to the shared metric.
    fn flush_frame_counts(&mut self) {
        let frames = &self.hub.metrics().transport_frames;
        let name = self.transport.name();
        for (direction, count) in [("out", &mut self.frames.out), ("in", &mut self.frames.r#in)] {
            if *count > 0 {
                frames
                    .with_label_values(&[name, direction])
                    .inc_by(std::mem::take(count));
            }
        }
    }

    /// The connection's tracing span.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The transport, for its own bookkeeping.
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Sends `pusher:error` with the code, then closes with the same code.
    pub fn close(&mut self, ctx: &mut T::Context, code: u16) {
        let message = match code {
            4004 => ErrorCode::OverConnectionQuota.message(),
            4100 => ErrorCode::OverCapacity.message(),
            4200 => ErrorCode::ServerShuttingDown.message(),
            4201 => ErrorCode::PongNotReceived.message(),
            4009 => ErrorCode::Unauthorized.message(),
            _ => "Connection closed",
        };
        self.close_with(ctx, code, message);
    }

    /// [`Session::close`] with a more specific `message`.
    fn close_with(&mut self, ctx: &mut T::Context, code: u16, message: &str) {
        tracing::debug!(parent: &self.span, code, "closing connection");
        self.error(ctx, Some(code), message);
        self.transport.close(ctx, code, message);
        ctx.stop();
    }

    /// Apps with `authorized_connections`: a connection that is not
    /// authorized when `authorization_timeout` ends is closed with 4009
    /// (pusher-js does not reconnect after a 4000-4099 code).
    fn start_authorization_timer(&mut self, ctx: &mut T::Context) {
        if !self.app.authorized_connections || self.connection.is_authorized() {
            return;
        }
        let timeout = self.app.authorization_timeout();
        self.authorization = Some(ctx.run_later(timeout, |session, ctx| {
            session.authorization = None;
            if session.connection.is_authorized() || session.connection.is_closing() {
                return;
            }
            session.hub.metrics().authorization_timeouts.inc();
            // Short enough for a WebSocket close reason (123 bytes).
            let message = format!(
                "Connection not authorized within {} s (authorized_connections)",
                session.app.authorization_timeout
            );
            session.close_with(ctx, ErrorCode::Unauthorized.code(), &message);
        }));
    }

    /// The hub authorized the connection: the authorization timer stops.
    fn authorized(&mut self, ctx: &mut T::Context) {
        if let Some(timer) = self.authorization.take() {
            ctx.cancel_future(timer);
        }
    }

    /// Any frame from the client proves it is alive.
    pub fn saw_activity(&mut self) {
        self.last_seen = Instant::now();
        self.ping_sent = None;
    }

    /// Schedules the next keep-alive check after `delay`.
    fn schedule_keepalive(&mut self, ctx: &mut T::Context, delay: Duration) {
        self.keepalive = Some(ctx.run_later(delay, |session, ctx| session.check_keepalive(ctx)));
    }

    /// Pings after `activity_timeout` of silence; closes 4201 when the ping
    /// goes unanswered for `pong_timeout`. One timer per connection.
    fn check_keepalive(&mut self, ctx: &mut T::Context) {
        let now = Instant::now();
        if let Some(sent) = self.ping_sent {
            let waited = now.duration_since(sent);
            if waited >= self.settings.pong_timeout {
                self.close(ctx, ErrorCode::PongNotReceived.code());
            } else {
                self.schedule_keepalive(ctx, self.settings.pong_timeout - waited);
            }
            return;
        }
        let idle = now.duration_since(self.last_seen);
        if idle >= self.settings.activity_timeout {
            // Only the Pusher-level ping, as hosted Pusher does: clients
            // answer it with `pusher:pong`. pushi.js does not: it gets the
            // transport's ping, which its browser answers.
            let below = self.dialect == Dialect::Pushi && self.transport.transport_ping(ctx);
            if !below {
                self.send(ctx, frames::ping_frame());
            }
            self.ping_sent = Some(now);
            self.schedule_keepalive(ctx, self.settings.pong_timeout);
        } else {
            self.schedule_keepalive(ctx, self.settings.activity_timeout - idle);
        }
    }

    /// One frame from the client (a JSON text, as pusher-js sends it).
    pub fn receive_text(&mut self, ctx: &mut T::Context, text: &str) {
        self.frames.r#in += 1;
        if self.dialect == Dialect::Pushi && self.receive_pushi(ctx, text) {
            return;
        }
        match frames::parse_client_frame(text) {
            Ok(ClientMessage::Ping) => self.send(ctx, frames::pong_frame()),
            Ok(ClientMessage::Pong) => {}
            Ok(ClientMessage::Subscribe(request)) => {
                if self.subscription_allowed(ctx, &request.channel) {
                    self.subscribe(ctx, request);
                } else {
                    // The client's channel learns it failed (pusher-js emits
                    // pusher:subscription_error on it) instead of pending
                    // forever; the outgoing queue bounds what a flood costs.
                    let refused = frames::subscription_error(
                        &request.channel,
                        "LimitReached",
                        "Subscription refused: subscription_rate exceeded; retry later",
                        429,
                    );
                    self.send(ctx, refused);
                }
            }
            Ok(ClientMessage::Unsubscribe { channel }) => {
                if !self.subscription_allowed(ctx, &channel) {
                    return;
                }
                // A waiting subscription just stops waiting: nothing is sent.
                if let Some(held) = self.held.take(&channel) {
                    ctx.cancel_future(held.timer);
                    return;
                }
                // The user channel belongs to the sign-in, not to the client.
                if !channel.starts_with("#server-to-user-")
                    && self.channels.remove(&channel).is_some()
                {
                    if let (Some(_), Some(user)) = (self.history.remove(&channel), &self.user) {
                        self.hub.forget_position(
                            &self.app,
                            &user.id,
                            &self.connection.socket_id,
                            &channel,
                        );
                    }
                    self.drop_pending(ctx, &channel);
                    let (hub, connection) = (self.hub.clone(), self.connection.clone());
                    let answer = (self.dialect == Dialect::Pushi)
                        .then(|| pushi::unsubscription_succeeded(&channel));
                    let leaving = async move { hub.unsubscribe(&connection, &channel).await };
                    ctx.wait(leaving.into_actor(self).map(|(), session, ctx| {
                        if let Some(answer) = answer {
                            session.send(ctx, answer);
                        }
                    }));
                }
            }
            Ok(ClientMessage::Signin { auth, user_data }) => self.sign_in(ctx, &auth, &user_data),
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(ctx, &event, &channel, &data, false),
            Ok(ClientMessage::Ack { message_ids }) => self.ack(ctx, &message_ids),
            Err(FrameError::InvalidData {
                event: "pusher:ack",
                reason,
            }) => {
                tracing::debug!(parent: &self.span, %reason, "malformed ack");
                if self.ack_allowed(ctx) {
                    let code = ErrorCode::AckRefused;
                    self.error(
                        ctx,
                        Some(code.code()),
                        &format!("Invalid pusher:ack: {reason}"),
                    );
                }
            }
            Ok(ClientMessage::Unknown { event }) => {
                tracing::debug!(parent: &self.span, %event, "unknown event");
                let message = if event.starts_with("pusher") {
                    format!("Unsupported event: {event}")
                } else {
                    // The usual mistake: a client event without its prefix.
                    format!(
                        "Unsupported event: {event}; events sent by clients must be named client-*"
                    )
                };
                self.error(ctx, None, &message);
            }
            Err(error) => {
                tracing::debug!(parent: &self.span, %error, "malformed frame");
                self.error(ctx, None, &format!("Invalid frame: {error}"));
            }
        }
    }

    /// Counts a client's `pusher:subscribe` or `pusher:unsubscribe` against
    /// the app's `subscription_rate`. Over it the frame is not acted on
    /// (a subscribe gets its `pusher:subscription_error` 429), is counted,
    /// and the first one of the window answered with `pusher:error` 4301
    /// (the connection stays open, as for client events): a flood costs a
    /// parse and a counter per frame, and at most one reply a second.
    fn subscription_allowed(&mut self, ctx: &mut T::Context, channel: &str) -> bool {
        let limit = self.app.subscription_rate();
        let Admission::Refused { first } = self.subscriptions.admit(limit, Instant::now()) else {
            return true;
        };
        self.hub.metrics().subscription_refusals.inc();
        if first {
            if let Some(suppressed) = SUBSCRIPTION_FLOOD_LOG.ready() {
                tracing::warn!(parent: &self.span, %channel, limit, suppressed, "subscription_rate reached: pusher:subscribe/unsubscribe frames refused with 4301");
            }
            let message = format!(
                "Subscription rejected: rate limit exceeded ({limit} pusher:subscribe/pusher:unsubscribe a second); {channel} and further ones this second are ignored"
            );
            self.error(ctx, Some(ErrorCode::ClientEventRateLimit.code()), &message);
        }
        false
    }

    /// Subscribes as `pusher:subscribe` with `request` would (a transport
    /// that joins channels for its client calls it directly).
    pub fn subscribe(&mut self, ctx: &mut T::Context, request: SubscribeRequest) {
        let channel = request.channel.as_str();
        // pusher-js subscribes to its own user channel after sign-in; the
        // sign-in already joined it, so that (and only that) is a no-op success.
        if channel.starts_with("#server-to-user-") && self.channels.contains_key(channel) {
            self.send(ctx, frames::subscription_succeeded(channel, "{}"));
            return;
        }
        // Already waiting: it is answered once, when the wait ends.
        if self.held.contains(channel) {
            return;
        }
        if !self.channels.contains_key(channel)
            && self.channels.len() + self.held.len() >= self.app.max_channels_per_connection
        {
            let error = format!(
                "Connection is subscribed to the maximum of {} channels",
                self.app.max_channels_per_connection
            );
            self.send(
                ctx,
                frames::subscription_error(channel, "LimitReached", &error, 400),
            );
            return;
        }
        let (hub, app, connection) = (self.hub.clone(), self.app.clone(), self.connection.clone());
        let signed_in = self.user.as_ref().map(|user| user.id.clone());
        let resubscribed = self
            .channels
            .contains_key(channel)
            .then(|| self.history.get(channel).map(|join| join.position))
            .flatten();
        let subscribing = async move {
            let result = hub
                .subscribe(
                    &app,
                    &connection,
                    &request,
                    signed_in.as_deref(),
                    resubscribed,
                )
                .await;
            (request, result)
        };
        // `wait` holds this connection's other frames until the hub answered,
        // so frames keep their order (e.g. a client event right after subscribing).
        ctx.wait(subscribing.into_actor(self).map(
            |(request, result), session, ctx| match result {
                Ok(subscription) => {
                    if channel_type(&request.channel).needs_auth() {
                        // The hub authorized the connection before joining.
                        session.authorized(ctx);
                    }
                    let position = subscription.history.map(|join| join.position);
                    session
                        .transport
                        .subscribed(ctx, &request.channel, position);
                    session.send_own(ctx, subscription.succeeded);
                    if let Some(cached) = subscription.cached {
                        // A cache channel's last event may carry a message id.
                        session.record_delivery(ctx, &cached);
                        session.send_own(ctx, cached);
                    }
                    for frame in subscription.announcements {
                        session.send_own(ctx, frame);
                    }
                    if let Some(join) = subscription.history {
                        session
                            .history
                            .entry(request.channel.clone())
                            .or_insert(join);
                    }
                    let is_member = subscription.user_id.is_some();
                    session.claim_parked(ctx, vec![request.channel.clone()], false);
                    session
                        .channels
                        .insert(request.channel.clone(), subscription.user_id);
                    if is_member {
                        session.release_held(ctx, &Awaiting::Membership(request.channel));
                    }
                }
                Err(error) => match error.closes_connection() {
                    Some(code) => session.close(ctx, code.code()),
                    None => session.refuse_or_hold(ctx, request, error),
                },
            },
        ));
    }

    /// Refuses a subscription, unless the connection's sign-in or presence
    /// membership, still to come, would authorise it: then it waits for that
    /// (at most `subscribe_wait`, at most [`held::MAX_HELD`] at once).
    fn refuse_or_hold(
        &mut self,
        ctx: &mut T::Context,
        request: SubscribeRequest,
        refusal: SubscriptionError,
    ) {
        let wait = self.settings.subscribe_wait;
        let signed_in = self.user.as_ref().map(|user| user.id.as_str());
        let awaiting = held::awaiting(&self.app, &request, signed_in, |channel| {
            self.channels.contains_key(channel)
        });
        match awaiting {
            Some(awaiting)
                if !wait.is_zero()
                    && self.held.has_room()
                    && !self.held.contains(&request.channel) =>
            {
                tracing::debug!(parent: &self.span, channel = %request.channel, ?awaiting, "subscription waits");
                let channel = request.channel.clone();
                let timer = ctx.run_later(wait, move |session, ctx| {
                    if let Some(held) = session.held.take(&channel) {
                        session.refuse(ctx, &held.request.channel, &held.refusal);
                    }
                });
                self.held.hold(Held {
                    request,
                    awaiting,
                    refusal,
                    timer,
                });
            }
            _ => self.refuse(ctx, &request.channel, &refusal),
        }
    }

    fn refuse(&mut self, ctx: &mut T::Context, channel: &str, error: &SubscriptionError) {
        tracing::debug!(parent: &self.span, %channel, reason = %error.message, "subscription refused");
        self.send(
            ctx,
            frames::subscription_error(channel, error.kind, &error.message, error.status),
        );
    }

    /// What the held subscriptions waited for arrived: ask the hub again, in
    /// the order they came.
    fn release_held(&mut self, ctx: &mut T::Context, what: &Awaiting) {
        if self.held.is_empty() {
            return;
        }
        for held in self.held.release(what) {
            ctx.cancel_future(held.timer);
            self.subscribe(ctx, held.request);
        }
    }

    /// Signs in as `pusher:signin` with `auth` and `user_data` would: the
    /// user channel, watchlist and `terminate_connections` then apply; a
    /// signature that does not verify closes with 4009.
    pub fn sign_in(&mut self, ctx: &mut T::Context, auth: &str, user_data: &str) {
        if self.user.is_some() {
            return self.error(ctx, None, "Connection is already signed in");
        }
        match self
            .hub
            .sign_in(&self.app, &self.connection, auth, user_data)
        {
            Ok(signed_in) => {
                tracing::debug!(parent: &self.span, user_id = %signed_in.user.id, "signed in");
                self.authorized(ctx);
                self.send(ctx, signed_in.success);
                if let Some(online) = signed_in.watchlist_online {
                    self.send(ctx, online);
                }
                if !self.history.is_empty() {
                    let mut joins: Vec<(String, HistoryJoin)> = self
                        .history
                        .iter()
                        .map(|(channel, join)| (channel.clone(), *join))
                        .collect();
                    let (hub, app, connection) =
                        (self.hub.clone(), self.app.clone(), self.connection.clone());
                    let user_id = signed_in.user.id.clone();
                    let recovering = async move {
                        hub.recover_signed_in(&app, &connection, &user_id, &mut joins)
                            .await;
                        joins
                    };
                    // `wait`, as for a subscribe: the held subscribes
                    // released below and the client's next frames come
                    // after the recovery (a shared store may be read).
                    ctx.wait(recovering.into_actor(self).map(|joins, session, _| {
                        // A channel left meanwhile cannot be: frames waited.
                        session.history.extend(joins);
                    }));
                }
                self.user = Some(signed_in.user);
                self.start_mirror(ctx);
                // The user channel, and channels subscribed before the sign-in.
                let mut claiming = vec![signed_in.user_channel.clone()];
                claiming.extend(self.channels.keys().cloned());
                self.claim_parked(ctx, claiming, false);
                self.channels.insert(signed_in.user_channel, None);
                self.release_held(ctx, &Awaiting::SignIn);
            }
            Err(refused) => {
                // Refused as they would have been without the wait, then closed.
                for held in self.held.release(&Awaiting::SignIn) {
                    ctx.cancel_future(held.timer);
                    self.refuse(ctx, &held.request.channel, &held.refusal);
                }
                self.close(ctx, refused.code().code());
            }
        }
    }

    /// Relays a client event under the app's client-event rules; `echo`
    /// (pushi's flag) sends it back to the sender too.
    fn client_event(
        &mut self,
        ctx: &mut T::Context,
        event: &str,
        channel: &str,
        data: &RawValue,
        echo: bool,
    ) {
        if !self.app.client_events {
            return self.error(ctx, None, "Client events are not enabled for this app");
        }
        if let Some(refusal) = channel_type(channel).kind.client_event_refusal() {
            return self.error(ctx, None, refusal);
        }
        let Some(user_id) = self.channels.get(channel) else {
            return self.error(
                ctx,
                None,
                "Client event on a channel the socket is not subscribed to",
            );
        };
        if event.len() > self.app.max_event_name_length {
            let message = format!(
                "Client event name is longer than {} characters",
                self.app.max_event_name_length
            );
            return self.error(ctx, None, &message);
        }
        if data.get().len() > self.app.max_event_data_bytes {
            let message = format!(
                "Client event data is larger than {} bytes",
                self.app.max_event_data_bytes
            );
            return self.error(ctx, None, &message);
        }
        let admitted = self
            .client_events
            .admit(self.app.client_event_rate, Instant::now());
        if admitted != Admission::Allowed {
            let code = ErrorCode::ClientEventRateLimit;
            return self.error(ctx, Some(code.code()), code.message());
        }
        self.hub.client_event(
            &self.app.id,
            &self.connection.socket_id,
            channel,
            event,
            data,
            user_id.as_deref(),
            echo,
        );
    }
}

impl<T: Transport> Actor for Session<T> {
    type Context = T::Context;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.hub
            .metrics()
            .transport_sessions
            .with_label_values(&[self.transport.name()])
            .inc();
        tracing::debug!(parent: &self.span, transport = self.transport.name(), "connected");
        let established = match self.dialect {
            Dialect::Pusher => frames::connection_established(
                &self.connection.socket_id,
                self.settings.activity_timeout.as_secs(),
            ),
            Dialect::Pushi => pushi::connection_established(&self.connection.socket_id),
        };
        self.send(ctx, established);
        if let Some(receiver) = self.receiver.take() {
            ctx.add_stream(outgoing::Outgoing::paced(receiver.outgoing));
        }
        // The hub asks for a close (slow client, shutdown, terminate) from
        // any thread; it arrives as a message, costing nothing until then.
        let session = ctx.address().downgrade();
        self.connection.on_close_request(Box::new(move |code| {
            if let Some(session) = session.upgrade() {
                session.do_send(CloseRequest(code));
            }
        }));
        if T::CLIENT_ANSWERS_PINGS {
            self.schedule_keepalive(ctx, self.settings.activity_timeout);
        }
        self.start_authorization_timer(ctx);
        self.transport.started(ctx);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(parent: &self.span, channels = self.channels.len(), "disconnected");
        self.transport.stopped(ctx);
        self.flush_frame_counts();
        self.hub
            .metrics()
            .transport_sessions
            .with_label_values(&[self.transport.name()])
            .dec();
        // Nobody reads the queue any more: make further sends return Closed at once.
        self.connection
            .request_close(ErrorCode::ServerShuttingDown.code());
        let (hub, connection) = (self.hub.clone(), self.connection.clone());
        let channels = self.channels.drain().map(|(channel, _)| channel).collect();
        let user = self.user.take();
        let parking = self.take_parking(user.as_ref());
        let app = self.app.clone();
        actix::spawn(async move {
            // Parked before the connection is gone, so a reconnect that sees
            // it gone finds them.
            if let Some((user_id, entries, gone)) = parking {
                let socket_id = &connection.socket_id;
                hub.park_deliveries(&app, &user_id, socket_id, entries, gone)
                    .await;
            }
            hub.disconnect(&connection, channels, user).await
        });
    }
}

/// The hub asked this connection to close with a code.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct CloseRequest(pub u16);

impl CloseRequest {
    /// A request to close with the Pusher close `code` (a transport that
    /// finds its client too slow asks for 4100 this way).
    pub fn new(code: u16) -> Self {
        CloseRequest(code)
    }
}

impl<T: Transport> Handler<CloseRequest> for Session<T> {
    type Result = ();

    fn handle(&mut self, request: CloseRequest, ctx: &mut Self::Context) {
        self.close(ctx, request.0);
    }
}

/// Frames published to this connection, already encoded.
impl<T: Transport> StreamHandler<ByteString> for Session<T> {
    fn handle(&mut self, frame: ByteString, ctx: &mut Self::Context) {
        if frame.is_empty() {
            return self.send_probe(ctx);
        }
        // Anonymous sockets pay nothing; signed-in ones a suffix check.
        let confirm =
            self.user.is_some() && !self.history.is_empty() && recovery::carries_serial(&frame);
        if self.delivery.is_some() {
            self.record_delivery(ctx, &frame);
        }
        self.send(ctx, frame);
        if confirm {
            self.probe_soon(ctx);
        }
    }

    // The queue ends only when the hub forgot the connection: nothing to do.
    fn finished(&mut self, _: &mut Self::Context) {}
}
