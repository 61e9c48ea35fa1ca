//! Acknowledged delivery on one session (apps with `[apps.delivery]` on):
//! frames with a `message_id` stay pending until `pusher:ack`, are resent
//! on a timer, mirrored to a shared store for a signed-in user, parked on
//! close and claimed by the user's next connection (`delivery/`).

use super::{Session, Transport};
use crate::apps::App;
use crate::delivery::pending::{Due, Entry, Expiry, Pending, Policy, Recorded};
use crate::delivery::store::Claimed;
use crate::delivery::MAX_MESSAGE_ID_LEN;
use crate::hub::rate::{Admission, RateWindow};
use crate::protocol::error::ErrorCode;
use crate::protocol::frames;
use crate::protocol::presence::SignedInUser;
use actix::{AsyncContext, Handler, SpawnHandle};
use bytestring::ByteString;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Acknowledged delivery on one connection (apps with `[apps.delivery]` on):
/// its pending messages, the one timer armed for the earliest due, and the
/// ack rate window.
pub(super) struct AckedDelivery {
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

impl AckedDelivery {
    pub(super) fn new(app: &App) -> Self {
        AckedDelivery {
            policy: app.delivery.policy(),
            pending: Pending::default(),
            timer: None,
            acks: RateWindow::new(Instant::now()),
            mirror: None,
        }
    }
}

/// What a closing signed-in connection leaves for the user's next one:
/// the user id, the pending messages, and mirrored ids no longer pending.
pub(super) type Parking = (String, Vec<Entry>, Vec<Arc<str>>);

impl<T: Transport> Session<T> {
    /// The socket left `channel`: its pending messages go with it.
    pub(super) fn drop_pending(&mut self, ctx: &mut T::Context, channel: &str) {
        if let Some(delivery) = self.delivery.as_mut() {
            let dropped = delivery.pending.drop_channel(channel);
            self.hub.delivery_expired(Expiry::Closed, dropped);
            if dropped > 0 {
                self.schedule_mirror(ctx);
            }
        }
    }

    /// Signed in: with a shared store, pending messages are mirrored there.
    pub(super) fn start_mirror(&mut self, ctx: &mut T::Context) {
        if let Some(delivery) = self.delivery.as_mut() {
            if self.hub.mirrors_deliveries(&self.app) {
                delivery.mirror = Some(Mirror::default());
                self.schedule_mirror(ctx);
            }
        }
    }

    /// The connection closes: a signed-in user's pending messages are
    /// parked for the next connection; an anonymous socket's expire.
    pub(super) fn take_parking(&mut self, user: Option<&SignedInUser>) -> Option<Parking> {
        let delivery = self.delivery.as_mut()?;
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
        match user {
            Some(user) if !entries.is_empty() || !gone.is_empty() => {
                Some((user.id.clone(), entries, gone))
            }
            _ => {
                self.hub.delivery_expired(Expiry::Closed, entries.len());
                None
            }
        }
    }

    /// A frame with a `message_id` was written: pending until acknowledged.
    pub(super) fn record_delivery(&mut self, ctx: &mut T::Context, frame: &ByteString) {
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

    pub(super) fn count_recorded(&self, recorded: Recorded) {
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
    pub(super) fn arm_delivery_timer(&mut self, ctx: &mut T::Context) {
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
    pub(super) fn resend_due(&mut self, ctx: &mut T::Context) {
        let Some(delivery) = self.delivery.as_mut() else {
            return;
        };
        let due = delivery.pending.take_due(&delivery.policy, Instant::now());
        let mut expired = false;
        for item in due {
            match item {
                Due::Resend(frame) => {
                    self.hub.metrics().delivery_retried.inc();
                    self.send(ctx, frame);
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
    pub(super) fn schedule_mirror(&mut self, ctx: &mut T::Context) {
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
    pub(super) fn flush_mirror(&mut self) {
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
    pub(super) fn claim_parked(
        &mut self,
        ctx: &mut T::Context,
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
    pub(super) fn resend_claimed(&mut self, ctx: &mut T::Context, entries: Vec<Entry>) {
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
                    self.send(ctx, frame);
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
    pub(super) fn ack_allowed(&mut self, ctx: &mut T::Context) -> bool {
        let limit = self.app.delivery.ack_rate;
        let Some(delivery) = self.delivery.as_mut() else {
            return true;
        };
        if delivery.acks.admit(limit, Instant::now()) != Admission::Allowed {
            self.error(
                ctx,
                Some(ErrorCode::ClientEventRateLimit.code()),
                "pusher:ack rejected: rate limit exceeded (batch ids with message_ids)",
            );
            return false;
        }
        true
    }

    /// `pusher:ack`: forgets the acknowledged messages; names the ids that
    /// are not pending here (`pusher:error` 4302, the connection stays).
    pub(super) fn ack(&mut self, ctx: &mut T::Context, message_ids: &[String]) {
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
}

/// Messages claimed for this connection (see [`Session::claim_parked`]).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct ClaimedDeliveries {
    claimed: Claimed,
    /// The channels claimed.
    channels: Vec<String>,
    retried: bool,
}

impl<T: Transport> Handler<ClaimedDeliveries> for Session<T> {
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
