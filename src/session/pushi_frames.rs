//! The frames only pushi.js sends (see [`crate::protocol::pushi`]):
//! `pusher:latest` and events sent with `echo` and `persist`. Every other
//! frame of a pushi connection takes the Pusher path.

use super::{Session, Transport};
use crate::protocol::pushi::{self, PushiMessage};
use actix::{ActorFutureExt, AsyncContext, WrapFuture};

impl<T: Transport> Session<T> {
    /// Handles `text` if it is a pushi-only frame (true), else leaves it to
    /// the Pusher parser (false).
    pub(super) fn receive_pushi(&mut self, ctx: &mut T::Context, text: &str) -> bool {
        match pushi::parse(text) {
            Ok(None) => false,
            Ok(Some(PushiMessage::Latest {
                channel,
                skip,
                count,
            })) => {
                self.latest(ctx, channel, skip, count);
                true
            }
            Ok(Some(PushiMessage::Event {
                event,
                channel,
                data,
                echo,
                persist: _,
            })) => {
                // `persist`: whether an event is kept follows the channel's
                // history setting, as for every event (README "pushi's
                // WebSocket dialect").
                self.client_event(ctx, &event, &channel, &data, echo);
                true
            }
            Err(reason) => {
                tracing::debug!(parent: &self.span, %reason, "malformed pushi frame");
                self.error(ctx, None, &format!("Invalid frame: {reason}"));
                true
            }
        }
    }

    /// Answers `pusher:latest` with `pusher_internal:latest`: counted
    /// against `subscription_rate` like a subscribe, and only for a channel
    /// the socket is subscribed to (pushi's `validate`).
    fn latest(&mut self, ctx: &mut T::Context, channel: String, skip: u64, count: u64) {
        if !self.subscription_allowed(ctx, &channel) {
            return;
        }
        if !self.channels.contains_key(&channel) {
            return self.error(
                ctx,
                None,
                "pusher:latest on a channel the socket is not subscribed to",
            );
        }
        let (hub, app) = (self.hub.clone(), self.app.clone());
        let reading = async move {
            let events = hub.latest_events(&app, &channel, skip, count).await;
            (channel, events)
        };
        // `wait`: the answer keeps its place among the client's frames.
        ctx.wait(
            reading
                .into_actor(self)
                .map(|(channel, events), session, ctx| match events {
                    Ok(events) => session.send(ctx, pushi::latest(&channel, &events)),
                    Err(reason) => {
                        let message = format!("pusher:latest on {channel} failed: {reason}");
                        session.error(ctx, None, &message);
                    }
                }),
        );
    }
}
