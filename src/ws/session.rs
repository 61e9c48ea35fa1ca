//! One actor per WebSocket connection. It holds only its own connection's
//! state (its channels, subscriptions waiting for a sign-in or presence
//! membership, keep-alive clock, rate limit) and reaches shared state through
//! the hub handle.

use super::WsSettings;
use crate::apps::App;
use crate::delivery::pending::{Due, Entry, Expiry, Pending, Policy, Recorded};
use crate::delivery::store::Claimed;
use crate::delivery::MAX_MESSAGE_ID_LEN;
use crate::hub::authorize::SubscriptionError;
use crate::hub::connection::{Connection, ConnectionReceiver};
use crate::hub::held::{self, Awaiting, Held, HeldSubscriptions};
use crate::hub::recovery::{self, PROBE_DELAY};
use crate::hub::{HistoryJoin, Hub};
use crate::protocol::channel::channel_type;
use crate::protocol::error::ErrorCode;
use crate::protocol::frames::{self, ClientMessage, FrameError, SubscribeRequest};
use crate::protocol::presence::SignedInUser;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Handler, SpawnHandle, StreamHandler,
    WrapFuture,
};
use actix_web_actors::ws;
use bytestring::ByteString;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Span;

/// Client events allowed per connection in one rate window.
#[derive(Debug)]
struct RateWindow {
    started: Instant,
    count: u32,
}

/// A signed-in socket confirming what its client read (`hub::recovery`):
/// at most one probe queued or sent at a time.
#[derive(Debug, Default)]
struct Probe {
    /// A frame with a serial was written since the last snapshot.
    dirty: bool,
    /// A timer will take the next snapshot.
    scheduled: bool,
    /// The probe queued or sent: its id (the ping payload) and the latest
    /// serials its pong confirms.
    outstanding: Option<(u64, Vec<(String, u64)>)>,
    next_id: u64,
}

/// Acknowledged delivery on one connection (apps with `[apps.delivery]` on):
/// its pending messages, the one timer armed for the earliest due, and the
/// ack rate window.
struct AckedDelivery {
    policy: Policy,
    pending: Pending,
    /// The armed timer and when it fires.
    timer: Option<(SpawnHandle, Instant)>,
    acks: RateWindow,
    /// Signed in with a shared store (`store = "redis"`): what is mirrored.
    mirror: Option<Mirror>,
}

/// A signed-in connection's pending messages as mirrored to the shared
/// store, so they outlive this node. Written in batches: at most one flush
/// per [`MIRROR_DELAY`], of what changed since the last one.
#[derive(Debug, Default)]
struct Mirror {
    /// Ids the store holds for this connection (as far as it knows).
    written: HashSet<Arc<str>>,
    /// A flush timer is armed.
    scheduled: bool,
}

/// How long a signed-in connection's new pending messages wait before they
/// are mirrored to the shared store, in one batch: a message acknowledged
/// sooner (the usual case) is never written to Redis; a node killed sooner
/// loses only what arrived in that last moment.
const MIRROR_DELAY: Duration = Duration::from_millis(250);

/// The state of one connection.
pub struct Session {
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
    settings: WsSettings,
    last_seen: Instant,
    ping_sent: Option<Instant>,
    keepalive: Option<SpawnHandle>,
    client_events: RateWindow,
    delivery: Option<Box<AckedDelivery>>,
    span: Span,
}

impl Session {
    /// A session for an admitted connection.
    pub fn new(
        hub: Arc<Hub>,
        app: Arc<App>,
        receiver: ConnectionReceiver,
        settings: WsSettings,
    ) -> Self {
        let connection = receiver.connection.clone();
        let span = tracing::info_span!(
            "connection",
            app_id = %app.id,
            socket_id = %connection.socket_id
        );
        let delivery = app.delivery.enabled.then(|| {
            Box::new(AckedDelivery {
                policy: app.delivery.policy(),
                pending: Pending::default(),
                timer: None,
                acks: RateWindow {
                    started: Instant::now(),
                    count: 0,
                },
                mirror: None,
            })
        });
        Session {
            hub,
            app,
            connection,
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
            client_events: RateWindow {
                started: Instant::now(),
                count: 0,
            },
            delivery,
            span,
        }
    }

    fn error(&self, ctx: &mut ws::WebsocketContext<Self>, code: Option<u16>, message: &str) {
        ctx.text(frames::error_frame(code, message));
    }

    /// Sends `pusher:error` with the code, then closes with the same code.
    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16) {
        let message = match code {
            4100 => ErrorCode::OverCapacity.message(),
            4200 => ErrorCode::ServerShuttingDown.message(),
            4201 => ErrorCode::PongNotReceived.message(),
            4009 => ErrorCode::Unauthorized.message(),
            _ => "Connection closed",
        };
        tracing::debug!(parent: &self.span, code, "closing connection");
        self.error(ctx, Some(code), message);
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Other(code),
            description: Some(message.into()),
        }));
        ctx.stop();
    }

    /// Any frame from the client proves it is alive.
    fn saw_activity(&mut self) {
        self.last_seen = Instant::now();
        self.ping_sent = None;
    }

    /// Schedules the next keep-alive check after `delay`.
    fn schedule_keepalive(&mut self, ctx: &mut ws::WebsocketContext<Self>, delay: Duration) {
        self.keepalive = Some(ctx.run_later(delay, |session, ctx| session.check_keepalive(ctx)));
    }

    /// Pings after `activity_timeout` of silence; closes 4201 when the ping
    /// goes unanswered for `pong_timeout`. One timer per connection.
    fn check_keepalive(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
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
            // answer it with `pusher:pong`.
            ctx.text(frames::ping_frame());
            self.ping_sent = Some(now);
            self.schedule_keepalive(ctx, self.settings.pong_timeout);
        } else {
            self.schedule_keepalive(ctx, self.settings.activity_timeout - idle);
        }
    }

    fn handle_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        match frames::parse_client_frame(text) {
            Ok(ClientMessage::Ping) => ctx.text(frames::pong_frame()),
            Ok(ClientMessage::Pong) => {}
            Ok(ClientMessage::Subscribe(request)) => self.subscribe(ctx, request),
            Ok(ClientMessage::Unsubscribe { channel }) => {
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
                    if let Some(delivery) = self.delivery.as_mut() {
                        let dropped = delivery.pending.drop_channel(&channel);
                        self.hub.delivery_expired(Expiry::Closed, dropped);
                        if dropped > 0 {
                            self.schedule_mirror(ctx);
                        }
                    }
                    let (hub, connection) = (self.hub.clone(), self.connection.clone());
                    let leaving = async move { hub.unsubscribe(&connection, &channel).await };
                    ctx.wait(leaving.into_actor(self));
                }
            }
            Ok(ClientMessage::Signin { auth, user_data }) => self.sign_in(ctx, &auth, &user_data),
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(ctx, &event, &channel, &data),
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

    fn subscribe(&mut self, ctx: &mut ws::WebsocketContext<Self>, request: SubscribeRequest) {
        let channel = request.channel.as_str();
        // pusher-js subscribes to its own user channel after sign-in; the
        // sign-in already joined it, so that (and only that) is a no-op success.
        if channel.starts_with("#server-to-user-") && self.channels.contains_key(channel) {
            ctx.text(frames::subscription_succeeded(channel, "{}"));
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
            ctx.text(frames::subscription_error(
                channel,
                "LimitReached",
                &error,
                400,
            ));
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
                    ctx.text(subscription.succeeded);
                    if let Some(cached) = subscription.cached {
                        // A cache channel's last event may carry a message id.
                        session.record_delivery(ctx, &cached);
                        ctx.text(cached);
                    }
                    for frame in subscription.announcements {
                        ctx.text(frame);
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
                Err(error) => session.refuse_or_hold(ctx, request, error),
            },
        ));
    }

    /// Refuses a subscription, unless the connection's sign-in or presence
    /// membership, still to come, would authorise it: then it waits for that
    /// (at most `subscribe_wait`, at most [`held::MAX_HELD`] at once).
    fn refuse_or_hold(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
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

    fn refuse(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        channel: &str,
        error: &SubscriptionError,
    ) {
        tracing::debug!(parent: &self.span, %channel, reason = %error.message, "subscription refused");
        ctx.text(frames::subscription_error(
            channel,
            error.kind,
            &error.message,
            error.status,
        ));
    }

    /// What the held subscriptions waited for arrived: ask the hub again, in
    /// the order they came.
    fn release_held(&mut self, ctx: &mut ws::WebsocketContext<Self>, what: &Awaiting) {
        if self.held.is_empty() {
            return;
        }
        for held in self.held.release(what) {
            ctx.cancel_future(held.timer);
            self.subscribe(ctx, held.request);
        }
    }

    fn sign_in(&mut self, ctx: &mut ws::WebsocketContext<Self>, auth: &str, user_data: &str) {
        if self.user.is_some() {
            return self.error(ctx, None, "Connection is already signed in");
        }
        match self
            .hub
            .sign_in(&self.app, &self.connection, auth, user_data)
        {
            Some(signed_in) => {
                tracing::debug!(parent: &self.span, user_id = %signed_in.user.id, "signed in");
                ctx.text(signed_in.success);
                if let Some(online) = signed_in.watchlist_online {
                    ctx.text(online);
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
                if let Some(delivery) = self.delivery.as_mut() {
                    if self.hub.mirrors_deliveries(&self.app) {
                        delivery.mirror = Some(Mirror::default());
                        self.schedule_mirror(ctx);
                    }
                }
                // The user channel, and channels subscribed before the sign-in.
                let mut claiming = vec![signed_in.user_channel.clone()];
                claiming.extend(self.channels.keys().cloned());
                self.claim_parked(ctx, claiming, false);
                self.channels.insert(signed_in.user_channel, None);
                self.release_held(ctx, &Awaiting::SignIn);
            }
            None => {
                // Refused as they would have been without the wait, then closed.
                for held in self.held.release(&Awaiting::SignIn) {
                    ctx.cancel_future(held.timer);
                    self.refuse(ctx, &held.request.channel, &held.refusal);
                }
                self.close(ctx, ErrorCode::Unauthorized.code());
            }
        }
    }

    /// A frame with a `message_id` was written: pending until acknowledged.
    fn record_delivery(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: &ByteString) {
        let Some(delivery) = self.delivery.as_mut() else {
            return;
        };
        let Some((id, channel)) = frames::delivery_head(frame) else {
            return;
        };
        let recorded =
            delivery
                .pending
                .record(&delivery.policy, id, channel, frame.clone(), Instant::now());
        self.count_recorded(recorded);
        self.arm_delivery_timer(ctx);
        self.schedule_mirror(ctx);
    }

    fn count_recorded(&self, recorded: Recorded) {
        let metrics = self.hub.metrics();
        match recorded {
            Recorded::New => metrics.delivery_pending.inc(),
            Recorded::Duplicate => {}
            Recorded::EvictedOldest => {
                metrics.delivery_pending.inc();
                tracing::debug!(parent: &self.span, "pending deliveries full: oldest dropped");
                self.hub.delivery_expired(Expiry::Overflow, 1);
            }
        }
    }

    /// Arms the connection's one delivery timer for the earliest due
    /// message, unless it is armed for that time or earlier already.
    fn arm_delivery_timer(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(delivery) = self.delivery.as_mut() else {
            return;
        };
        let Some(wake) = delivery.pending.next_wake() else {
            return;
        };
        if let Some((handle, at)) = delivery.timer {
            if at <= wake {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = wake.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |session, ctx| {
            if let Some(delivery) = session.delivery.as_mut() {
                delivery.timer = None;
            }
            session.resend_due(ctx);
        });
        delivery.timer = Some((handle, wake));
    }

    /// Resends what is due and drops what expired, then re-arms the timer.
    fn resend_due(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(delivery) = self.delivery.as_mut() else {
            return;
        };
        let due = delivery.pending.take_due(&delivery.policy, Instant::now());
        let mut expired = false;
        for item in due {
            match item {
                Due::Resend(frame) => {
                    self.hub.metrics().delivery_retried.inc();
                    ctx.text(frame);
                }
                Due::Expired(why) => {
                    tracing::debug!(parent: &self.span, reason = why.label(), "delivery expired unacknowledged");
                    self.hub.delivery_expired(why, 1);
                    expired = true;
                }
            }
        }
        self.arm_delivery_timer(ctx);
        if expired {
            self.schedule_mirror(ctx);
        }
    }

    /// Arms the mirror flush, unless armed already or nothing is mirrored.
    fn schedule_mirror(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(mirror) = self.delivery.as_mut().and_then(|d| d.mirror.as_mut()) else {
            return;
        };
        if !mirror.scheduled {
            mirror.scheduled = true;
            ctx.run_later(MIRROR_DELAY, |session, _| session.flush_mirror());
        }
    }

    /// Writes the pending messages the store lacks and forgets those no
    /// longer pending: one store call, off the connection (a failure only
    /// costs durability; it is counted).
    fn flush_mirror(&mut self) {
        let (Some(delivery), Some(user)) = (self.delivery.as_mut(), &self.user) else {
            return;
        };
        let Some(mirror) = delivery.mirror.as_mut() else {
            return;
        };
        mirror.scheduled = false;
        let writes: Vec<Entry> = delivery
            .pending
            .entries()
            .filter(|entry| !mirror.written.contains(&entry.id))
            .cloned()
            .collect();
        let gone: Vec<Arc<str>> = mirror
            .written
            .iter()
            .filter(|id| !delivery.pending.contains(id))
            .cloned()
            .collect();
        if writes.is_empty() && gone.is_empty() {
            return;
        }
        for id in &gone {
            mirror.written.remove(id);
        }
        mirror
            .written
            .extend(writes.iter().map(|entry| entry.id.clone()));
        let (hub, app) = (self.hub.clone(), self.app.clone());
        let (user_id, socket_id) = (user.id.clone(), self.connection.socket_id.clone());
        actix::spawn(async move {
            hub.mirror_deliveries(&app, &user_id, &socket_id, writes, gone)
                .await;
        });
    }

    /// A signed-in user (re)subscribed to `channels`: claims what an
    /// earlier connection of the user left unacknowledged on them, off the
    /// connection (it never waits for the store), and resends it
    /// ([`ClaimedDeliveries`]). `retried`: this is the one later claim made
    /// when another connection's node still looked alive.
    fn claim_parked(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        channels: Vec<String>,
        retried: bool,
    ) {
        let Some(user) = &self.user else {
            return;
        };
        if self.delivery.is_none() {
            return;
        }
        let channels: Vec<String> = channels
            .into_iter()
            .filter(|channel| self.app.delivery.applies(channel))
            .collect();
        if channels.is_empty() {
            return;
        }
        let (hub, app, address) = (self.hub.clone(), self.app.clone(), ctx.address());
        let (user_id, socket_id) = (user.id.clone(), self.connection.socket_id.clone());
        actix::spawn(async move {
            let claimed = hub
                .claim_deliveries(&app, &user_id, &socket_id, &channels)
                .await;
            if claimed.entries.is_empty() && claimed.retry_after.is_none() {
                return;
            }
            let entries = claimed.entries.clone();
            let handed = address
                .send(ClaimedDeliveries {
                    claimed,
                    channels,
                    retried,
                })
                .await;
            // The connection closed meanwhile: they wait for the next one.
            if handed.is_err() && !entries.is_empty() {
                hub.park_deliveries(&app, &user_id, &socket_id, entries, Vec::new())
                    .await;
            }
        });
    }

    /// Resends claimed messages of channels still subscribed; parks the
    /// others again.
    fn resend_claimed(&mut self, ctx: &mut ws::WebsocketContext<Self>, entries: Vec<Entry>) {
        let now = Instant::now();
        let mut unsubscribed = Vec::new();
        let mut resent = 0;
        for entry in entries {
            if !self.channels.contains_key(&*entry.channel) {
                unsubscribed.push(entry);
                continue;
            }
            let frame = entry.frame.clone();
            let Some(delivery) = self.delivery.as_mut() else {
                return;
            };
            let recorded = delivery.pending.restore(&delivery.policy, entry, now);
            match recorded {
                // Already pending here (it reached this connection live too).
                Recorded::Duplicate => self.hub.metrics().delivery_pending.dec(),
                Recorded::New | Recorded::EvictedOldest => {
                    resent += 1;
                    self.hub.metrics().delivery_retried.inc();
                    ctx.text(frame);
                    if recorded == Recorded::EvictedOldest {
                        self.hub.delivery_expired(Expiry::Overflow, 1);
                    }
                }
            }
        }
        tracing::debug!(parent: &self.span, resent, unsubscribed = unsubscribed.len(), "resent a user's unacknowledged deliveries");
        if let (false, Some(user)) = (unsubscribed.is_empty(), &self.user) {
            let (hub, app) = (self.hub.clone(), self.app.clone());
            let (user_id, socket_id) = (user.id.clone(), self.connection.socket_id.clone());
            actix::spawn(async move {
                hub.park_deliveries(&app, &user_id, &socket_id, unsubscribed, Vec::new())
                    .await;
            });
        }
        self.arm_delivery_timer(ctx);
        self.schedule_mirror(ctx);
    }

    /// Counts an ack frame against `ack_rate`; answers 4301 when over it.
    fn ack_allowed(&mut self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        let limit = self.app.delivery.ack_rate;
        let Some(delivery) = self.delivery.as_mut() else {
            return true;
        };
        let now = Instant::now();
        if now.duration_since(delivery.acks.started) >= Duration::from_secs(1) {
            delivery.acks = RateWindow {
                started: now,
                count: 0,
            };
        }
        if delivery.acks.count >= limit {
            self.error(
                ctx,
                Some(ErrorCode::ClientEventRateLimit.code()),
                "pusher:ack rejected: rate limit exceeded (batch ids with message_ids)",
            );
            return false;
        }
        delivery.acks.count += 1;
        true
    }

    /// `pusher:ack`: forgets the acknowledged messages; names the ids that
    /// are not pending here (`pusher:error` 4302, the connection stays).
    fn ack(&mut self, ctx: &mut ws::WebsocketContext<Self>, message_ids: &[String]) {
        let refused = ErrorCode::AckRefused.code();
        if self.delivery.is_none() {
            let message = "pusher:ack refused: acknowledged delivery is not enabled for this app";
            return self.error(ctx, Some(refused), message);
        }
        if !self.ack_allowed(ctx) {
            return;
        }
        let most = self.app.delivery.max_pending;
        if message_ids.len() > most {
            let message = format!("pusher:ack refused: more than {most} message_ids in one ack");
            return self.error(ctx, Some(refused), &message);
        }
        if message_ids.iter().any(|id| id.len() > MAX_MESSAGE_ID_LEN) {
            let message = format!(
                "pusher:ack refused: a message_id is longer than {MAX_MESSAGE_ID_LEN} characters"
            );
            return self.error(ctx, Some(refused), &message);
        }
        let Some(delivery) = self.delivery.as_mut() else {
            return;
        };
        let unknown: Vec<&str> = message_ids
            .iter()
            .filter(|id| !delivery.pending.ack(id))
            .map(String::as_str)
            .collect();
        let acked = (message_ids.len() - unknown.len()) as u64;
        let metrics = self.hub.metrics();
        metrics.delivery_acked.inc_by(acked);
        metrics.delivery_pending.sub(acked as i64);
        if acked > 0 {
            self.schedule_mirror(ctx);
        }
        if !unknown.is_empty() {
            tracing::debug!(parent: &self.span, unknown = unknown.len(), "ack for messages not pending");
            let shown: Vec<&str> = unknown.iter().take(5).copied().collect();
            let more = unknown.len().saturating_sub(shown.len());
            let message = format!(
                "pusher:ack refused for message_id {}{}: not pending on this connection \
                 (already acknowledged, expired, or never sent to it)",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
            );
            self.error(ctx, Some(refused), &message);
        }
    }

    fn client_event(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        event: &str,
        channel: &str,
        data: &RawValue,
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
        let now = Instant::now();
        if now.duration_since(self.client_events.started) >= Duration::from_secs(1) {
            self.client_events = RateWindow {
                started: now,
                count: 0,
            };
        }
        if self.client_events.count >= self.app.client_event_rate {
            let code = ErrorCode::ClientEventRateLimit;
            return self.error(ctx, Some(code.code()), code.message());
        }
        self.client_events.count += 1;
        self.hub.client_event(
            &self.app.id,
            &self.connection.socket_id,
            channel,
            event,
            data,
            user_id.as_deref(),
        );
    }
}

impl Session {
    /// A frame with a serial reached a signed-in client's socket: confirm
    /// it soon (one probe at a time, [`PROBE_DELAY`] after the first frame).
    fn probe_soon(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.probe.dirty = true;
        if self.probe.scheduled || self.probe.outstanding.is_some() {
            return;
        }
        self.probe.scheduled = true;
        ctx.run_later(PROBE_DELAY, |session, ctx| session.queue_probe(ctx));
    }

    /// Snapshots the latest serials of the socket's history channels, then
    /// queues the probe marker behind every frame up to them.
    fn queue_probe(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.probe.scheduled = false;
        if self.user.is_none() || self.probe.outstanding.is_some() {
            return;
        }
        let snapshot = self
            .hub
            .history_snapshot(&self.app.id, self.history.keys().map(String::as_str));
        self.probe.dirty = false;
        if self.connection.send_probe() {
            self.probe.next_id += 1;
            self.probe.outstanding = Some((self.probe.next_id, snapshot));
        } else {
            // The queue is busy: try again later rather than add to it.
            self.probe_soon(ctx);
        }
    }

    /// The marker reached the front of the queue: everything of the
    /// snapshot was written before it, ask the client to echo it.
    fn send_probe(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some((id, _)) = &self.probe.outstanding {
            ctx.ping(&id.to_be_bytes());
        }
    }

    /// A pong: when it answers the outstanding probe, its snapshot is confirmed.
    fn probe_answered(&mut self, ctx: &mut ws::WebsocketContext<Self>, payload: &[u8]) {
        let answers =
            matches!(&self.probe.outstanding, Some((id, _)) if payload == id.to_be_bytes());
        if !answers {
            return;
        }
        if let (Some((_, mut snapshot)), Some(user)) = (self.probe.outstanding.take(), &self.user) {
            // A channel unsubscribed since the snapshot had its position
            // forgotten: confirming it would bring it back.
            snapshot.retain(|(channel, _)| self.history.contains_key(channel));
            self.hub
                .confirm_positions(&self.app, &user.id, &self.connection.socket_id, &snapshot);
        }
        if self.probe.dirty {
            self.probe_soon(ctx);
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(parent: &self.span, "connected");
        ctx.text(frames::connection_established(
            &self.connection.socket_id,
            self.settings.activity_timeout.as_secs(),
        ));
        if let Some(receiver) = self.receiver.take() {
            ctx.add_stream(ReceiverStream::new(receiver.outgoing));
        }
        // The hub asks for a close (slow client, shutdown, terminate) from
        // any thread; it arrives as a message, costing nothing until then.
        let session = ctx.address().downgrade();
        self.connection.on_close_request(Box::new(move |code| {
            if let Some(session) = session.upgrade() {
                session.do_send(CloseRequest(code));
            }
        }));
        self.schedule_keepalive(ctx, self.settings.activity_timeout);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(parent: &self.span, channels = self.channels.len(), "disconnected");
        // Nobody reads the queue any more: make further sends return Closed at once.
        self.connection
            .request_close(ErrorCode::ServerShuttingDown.code());
        let (hub, connection) = (self.hub.clone(), self.connection.clone());
        let channels = self.channels.drain().map(|(channel, _)| channel).collect();
        let user = self.user.take();
        let mut parking = None;
        if let Some(delivery) = self.delivery.as_mut() {
            // Mirrored ids no longer pending are forgotten with the parking.
            let gone: Vec<Arc<str>> = delivery
                .mirror
                .take()
                .map(|mirror| mirror.written)
                .unwrap_or_default()
                .into_iter()
                .filter(|id| !delivery.pending.contains(id))
                .collect();
            let entries = delivery.pending.drain();
            match &user {
                Some(user) if !entries.is_empty() || !gone.is_empty() => {
                    parking = Some((user.id.clone(), entries, gone));
                }
                _ => self.hub.delivery_expired(Expiry::Closed, entries.len()),
            }
        }
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

/// Messages claimed for this connection (see [`Session::claim_parked`]).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct ClaimedDeliveries {
    claimed: Claimed,
    /// The channels claimed.
    channels: Vec<String>,
    retried: bool,
}

impl Handler<ClaimedDeliveries> for Session {
    type Result = ();

    fn handle(&mut self, message: ClaimedDeliveries, ctx: &mut Self::Context) {
        let ClaimedDeliveries {
            claimed,
            channels,
            retried,
        } = message;
        if !claimed.entries.is_empty() {
            self.resend_claimed(ctx, claimed.entries);
        }
        // Another connection's node looked alive: if it died, its messages
        // are free once its heartbeat is old enough. One later claim.
        if let (Some(wait), false) = (claimed.retry_after, retried) {
            ctx.run_later(wait, move |session, ctx| {
                let still: Vec<String> = channels
                    .into_iter()
                    .filter(|channel| session.channels.contains_key(channel))
                    .collect();
                session.claim_parked(ctx, still, true);
            });
        }
    }
}

/// The hub asked this connection to close with a code.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct CloseRequest(u16);

impl Handler<CloseRequest> for Session {
    type Result = ();

    fn handle(&mut self, request: CloseRequest, ctx: &mut Self::Context) {
        self.close(ctx, request.0);
    }
}

/// Frames published to this connection, already encoded.
impl StreamHandler<ByteString> for Session {
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
        ctx.text(frame);
        if confirm {
            self.probe_soon(ctx);
        }
    }

    // The queue ends only when the hub forgot the connection: nothing to do.
    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Frames from the client.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, message: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let message = match message {
            Ok(message) => message,
            Err(ws::ProtocolError::Overflow) => {
                tracing::debug!(parent: &self.span, "frame over the size limit");
                self.error(ctx, None, "Frame is larger than the server accepts");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some("frame too large".into()),
                }));
                return ctx.stop();
            }
            Err(error) => {
                tracing::debug!(parent: &self.span, %error, "protocol error");
                ctx.close(Some(ws::CloseCode::Protocol.into()));
                return ctx.stop();
            }
        };
        self.saw_activity();
        match message {
            ws::Message::Text(text) => self.handle_text(ctx, &text),
            ws::Message::Ping(bytes) => ctx.pong(&bytes),
            ws::Message::Pong(payload) => self.probe_answered(ctx, &payload),
            ws::Message::Binary(_) => {
                self.error(ctx, None, "Binary frames are not supported; send JSON text")
            }
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(_) | ws::Message::Nop => {}
        }
    }
}
