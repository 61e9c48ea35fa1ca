//! Confirming what a signed-in client read (`hub::recovery`): after frames
//! with serials, one probe at a time is queued behind them; the
//! transport's proof that the client read up to it confirms the positions.

use super::{Session, Transport};
use crate::hub::recovery::PROBE_DELAY;
use actix::AsyncContext;

/// A signed-in socket confirming what its client read (`hub::recovery`):
/// at most one probe queued or sent at a time.
#[derive(Debug, Default)]
pub(super) struct Probe {
    /// A frame with a serial was written since the last snapshot.
    dirty: bool,
    /// A timer will take the next snapshot.
    scheduled: bool,
    /// The probe queued or sent: its id (the ping payload) and the latest
    /// serials its pong confirms.
    outstanding: Option<(u64, Vec<(String, u64)>)>,
    next_id: u64,
}

impl<T: Transport> Session<T> {
    /// A frame with a serial reached a signed-in client's socket: confirm
    /// it soon (one probe at a time, [`PROBE_DELAY`] after the first frame).
    pub(super) fn probe_soon(&mut self, ctx: &mut T::Context) {
        self.probe.dirty = true;
        if self.probe.scheduled || self.probe.outstanding.is_some() {
            return;
        }
        self.probe.scheduled = true;
        ctx.run_later(PROBE_DELAY, |session, ctx| session.queue_probe(ctx));
    }

    /// Snapshots the latest serials of the socket's history channels, then
    /// queues the probe marker behind every frame up to them.
    pub(super) fn queue_probe(&mut self, ctx: &mut T::Context) {
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
    pub(super) fn send_probe(&mut self, ctx: &mut T::Context) {
        if let Some((id, _)) = &self.probe.outstanding {
            let id = *id;
            self.transport.probe(ctx, id);
        }
    }

    /// The client echoed probe `id` (the transport's proof that it read
    /// everything written before the probe): when it answers the
    /// outstanding probe, its snapshot is confirmed.
    pub fn probe_answered(&mut self, ctx: &mut T::Context, id: u64) {
        let answers =
            matches!(&self.probe.outstanding, Some((outstanding, _)) if *outstanding == id);
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
