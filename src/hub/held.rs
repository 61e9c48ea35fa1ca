//! Subscriptions that wait for what would authorise them.
//!
//! pusher-js sends `pusher:subscribe` for every channel as soon as it
//! connects (and again after each reconnect), while `pusher.signin()` and
//! presence authorisation still wait on HTTP calls to the app's backend. An
//! unsigned `personal-{id}` or `#server-to-user-{id}` is authorised by the
//! connection's sign-in, and an unsigned peer channel by the connection's
//! membership of its presence channel: refusing them because they came
//! first would refuse them every time. So the transport holds them here, at
//! most [`MAX_HELD`] per connection and each for a bounded time, and asks the
//! hub again when the sign-in or membership arrives. A held subscription has
//! no state in the hub: dropping it (unsubscribe, disconnect) leaks nothing.
//!
//! Pure bookkeeping, no I/O and no clock: each transport keeps its own timer
//! per held subscription (`T`, e.g. a timer handle to cancel).

use super::authorize::SubscriptionError;
use super::peer::parse_peer_channel;
use crate::apps::App;
use crate::protocol::channel::{channel_type, validate_channel_name, ChannelKind};
use crate::protocol::frames::SubscribeRequest;

/// Most subscriptions one connection may have waiting at once; beyond it a
/// subscription is refused at once, as without the wait.
pub const MAX_HELD: usize = 10;

/// What a held subscription waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaiting {
    /// The connection's `pusher:signin`.
    SignIn,
    /// The connection's membership of this presence channel.
    Membership(String),
}

/// What, if anything, could still authorise `request` on a connection that
/// is signed in as `signed_in` and subscribed to the channels `is_subscribed`
/// says: `None` when nothing would change the answer (the request is signed,
/// the socket already signed in, the name is invalid...).
pub fn awaiting(
    app: &App,
    request: &SubscribeRequest,
    signed_in: Option<&str>,
    is_subscribed: impl Fn(&str) -> bool,
) -> Option<Awaiting> {
    let channel = request.channel.as_str();
    let unsigned = request.auth.as_deref().is_none_or(str::is_empty);
    if !unsigned || validate_channel_name(channel, app.max_channel_name_length).is_err() {
        return None;
    }
    match channel_type(channel).kind {
        ChannelKind::Personal | ChannelKind::ServerToUser if signed_in.is_none() => {
            Some(Awaiting::SignIn)
        }
        ChannelKind::Peer => {
            let (presence, _, _) = parse_peer_channel(channel)?;
            (!is_subscribed(&presence)).then_some(Awaiting::Membership(presence))
        }
        _ => None,
    }
}

/// One held subscription.
#[derive(Debug)]
pub struct Held<T> {
    /// The request as the client sent it, asked again when released.
    pub request: SubscribeRequest,
    /// What it waits for.
    pub awaiting: Awaiting,
    /// The answer it got before waiting, sent if the wait ends without it.
    pub refusal: SubscriptionError,
    /// The transport's timer for the end of the wait.
    pub timer: T,
}

/// One connection's held subscriptions, oldest first.
#[derive(Debug)]
pub struct HeldSubscriptions<T> {
    held: Vec<Held<T>>,
}

impl<T> Default for HeldSubscriptions<T> {
    fn default() -> Self {
        HeldSubscriptions { held: Vec::new() }
    }
}

impl<T> HeldSubscriptions<T> {
    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether a subscription to `channel` is waiting.
    pub fn contains(&self, channel: &str) -> bool {
        self.held.iter().any(|h| h.request.channel == channel)
    }

    /// Whether one more may wait.
    pub fn has_room(&self) -> bool {
        self.held.len() < MAX_HELD
    }

    /// Holds a subscription; the caller checked [`Self::has_room`] and that
    /// the channel is not held already.
    pub fn hold(&mut self, held: Held<T>) {
        self.held.push(held);
    }

    /// Removes the subscription to `channel` (unsubscribed, or its wait ended).
    pub fn take(&mut self, channel: &str) -> Option<Held<T>> {
        let index = self
            .held
            .iter()
            .position(|h| h.request.channel == channel)?;
        Some(self.held.remove(index))
    }

    /// Removes every subscription waiting for `what`, oldest first.
    pub fn release(&mut self, what: &Awaiting) -> Vec<Held<T>> {
        let (released, kept) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.awaiting == *what);
        self.held = kept;
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    fn request(channel: &str, auth: Option<&str>) -> SubscribeRequest {
        SubscribeRequest {
            channel: channel.into(),
            auth: auth.map(Into::into),
            channel_data: None,
            since: None,
        }
    }

    fn app() -> App {
        AppConfig::with_credentials("id", "key", "secret")
    }

    #[test]
    fn unsigned_personal_and_user_channels_wait_for_sign_in_only_before_it() {
        let none = |_: &str| false;
        for channel in ["personal-u1", "#server-to-user-u1"] {
            let unsigned = request(channel, None);
            assert_eq!(
                awaiting(&app(), &unsigned, None, none),
                Some(Awaiting::SignIn)
            );
            // pusher-js sends an empty auth for channels it does not sign.
            let empty = request(channel, Some(""));
            assert_eq!(awaiting(&app(), &empty, None, none), Some(Awaiting::SignIn));
            // Signed in already (as anyone): the answer cannot change.
            assert_eq!(awaiting(&app(), &unsigned, Some("u2"), none), None);
            // A signed request does not depend on the sign-in.
            assert_eq!(
                awaiting(&app(), &request(channel, Some("k:s")), None, none),
                None
            );
        }
        for channel in ["news", "private-a", "presence-a", "bad name"] {
            assert_eq!(awaiting(&app(), &request(channel, None), None, none), None);
        }
    }

    #[test]
    fn unsigned_peer_channels_wait_for_membership_of_their_presence_channel() {
        let peer = request("peer-room:a&b", None);
        assert_eq!(
            awaiting(&app(), &peer, None, |_| false),
            Some(Awaiting::Membership("presence-room".into()))
        );
        // Already a member: refused for another reason, nothing to wait for.
        assert_eq!(
            awaiting(&app(), &peer, None, |c| c == "presence-room"),
            None
        );
        assert_eq!(
            awaiting(&app(), &request("peer-room", None), None, |_| false),
            None
        );
    }

    #[test]
    fn release_takes_what_waited_for_it_in_order_and_keeps_the_rest() {
        let mut held = HeldSubscriptions::default();
        let refusal = SubscriptionError {
            kind: "AuthError",
            message: "no".into(),
            status: 401,
        };
        for (channel, awaiting, timer) in [
            ("personal-u1", Awaiting::SignIn, 1),
            ("peer-r:a&b", Awaiting::Membership("presence-r".into()), 2),
            ("#server-to-user-u1", Awaiting::SignIn, 3),
        ] {
            assert!(held.has_room() && !held.contains(channel));
            held.hold(Held {
                request: request(channel, None),
                awaiting,
                refusal: refusal.clone(),
                timer,
            });
        }
        let released: Vec<i32> = held
            .release(&Awaiting::SignIn)
            .iter()
            .map(|h| h.timer)
            .collect();
        assert_eq!(released, vec![1, 3]);
        assert_eq!(held.len(), 1);
        assert!(held.take("peer-r:a&b").is_some());
        assert!(held.take("peer-r:a&b").is_none());
        assert!(held.is_empty());
    }

    #[test]
    fn room_is_bounded() {
        let mut held = HeldSubscriptions::default();
        for i in 0..MAX_HELD {
            assert!(held.has_room());
            held.hold(Held {
                request: request(&format!("personal-u{i}"), None),
                awaiting: Awaiting::SignIn,
                refusal: SubscriptionError::member_limit(1),
                timer: (),
            });
        }
        assert!(!held.has_room());
    }
}
