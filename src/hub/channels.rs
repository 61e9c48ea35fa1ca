//! This node's subscriptions for one app: channel → subscribers (and presence
//! members), in a sharded concurrent map so no global lock sits on the hot path.

use super::connection::{Connection, Delivery, SocketId};
use crate::protocol::frames::presence_data;
use crate::protocol::pushi::{self, Dialect};
use bytestring::ByteString;
use dashmap::DashMap;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Frames queued.
    pub queued: u64,
    /// Recipients whose queue overflowed (asked to close with 4100).
    pub overflowed: u64,
}

impl FanOut {
    /// Adds it to `rusher_frames_sent_total` and
    /// `rusher_slow_client_disconnects_total`: every fan-out path counts the
    /// same way.
    pub fn record(self, metrics: &crate::metrics::Metrics) {
        metrics.frames_sent.inc_by(self.queued);
        metrics.slow_client_disconnects.inc_by(self.overflowed);
    }
}

/// A presence member: one user, however many sockets.
#[derive(Debug)]
struct Member {
    info: Option<Box<RawValue>>,
    sockets: usize,
    peer: bool,
}

/// A subscriber's connection and, on presence channels, its user.
#[derive(Debug)]
struct Subscriber {
    connection: Arc<Connection>,
    user_id: Option<Arc<str>>,
}

/// One channel's subscribers and presence members.
#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<SocketId, Subscriber>,
    members: HashMap<Arc<str>, Member>,
}

/// A presence member joining with a socket.
#[derive(Debug)]
pub struct Joining {
    /// The user id from `channel_data`.
    pub user_id: Arc<str>,
    /// The user info from `channel_data`.
    pub user_info: Option<Box<RawValue>>,
    /// Most members the channel may hold.
    pub max_members: usize,
    /// Whether the member wants peer channels.
    pub peer: bool,
}

/// The result of a subscription on this node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Subscribed {
    /// Whether the socket was not subscribed before.
    pub new_socket: bool,
    /// Subscribers after the change.
    pub subscribers: usize,
    /// For presence: whether this socket is its user's first (announce it).
    pub member_added: bool,
    /// For presence: the `subscription_succeeded` data with every member.
    pub presence_data: Option<String>,
}

/// The result of leaving a channel on this node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unsubscribed {
    /// Whether the socket was subscribed.
    pub removed: bool,
    /// Subscribers left.
    pub subscribers: usize,
    /// For presence: the user whose last socket left (announce it).
    pub member_removed: Option<Arc<str>>,
}

/// One channel's state on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// Channel name.
    pub channel: String,
    /// Subscribed sockets.
    pub subscribers: usize,
    /// Presence members: user id and user info JSON.
    pub members: Vec<(String, Option<String>)>,
    /// The presence members that asked for peer channels.
    pub peers: Vec<String>,
}

/// The presence member limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLimitReached(pub usize);

/// One app's channels and connections on this node.
#[derive(Debug, Default)]
pub struct AppChannels {
    channels: DashMap<String, Channel>,
    connections: DashMap<SocketId, Arc<Connection>>,
    /// Authorized connections: what `max_connections` limits.
    authorized_count: AtomicU64,
    /// Connections of an app with `authorized_connections` not authorized
    /// yet: they do not count against `max_connections` (as Pusher), but
    /// against their own cap.
    unauthorized_count: AtomicU64,
}

/// Authorizing the connection would pass `max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota;

/// Takes one of `max` (0 = unlimited) places in `count`; false when full.
fn take_place(count: &AtomicU64, max: u64) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (max == 0 || n < max).then_some(n + 1)
        })
        .is_ok()
}

impl AppChannels {
    /// Registers a connection unless `max` (0 = unlimited) is reached: the
    /// authorized connections' limit for an authorized connection, the
    /// unauthorized ones' for one that is not (see [`Connection::is_authorized`]).
    pub fn add_connection(&self, connection: Arc<Connection>, max: u64) -> bool {
        let count = if connection.is_authorized() {
            &self.authorized_count
        } else {
            &self.unauthorized_count
        };
        if !take_place(count, max) {
            return false;
        }
        self.connections
            .insert(connection.socket_id.clone(), connection);
        true
    }

    /// Authorizes a registered connection: it moves to the authorized
    /// count unless that reached `max` (0 = unlimited). `Ok(true)` when it
    /// was not authorized before; `Ok(false)` when it was, or is no longer
    /// registered.
    pub fn authorize(&self, connection: &Connection, max: u64) -> Result<bool, OverQuota> {
        if connection.is_authorized() || !self.connections.contains_key(&connection.socket_id) {
            return Ok(false);
        }
        if !take_place(&self.authorized_count, max) {
            return Err(OverQuota);
        }
        if connection.authorize() {
            self.unauthorized_count.fetch_sub(1, Ordering::AcqRel);
            Ok(true)
        } else {
            // Authorized meanwhile by another caller: give the place back.
            self.authorized_count.fetch_sub(1, Ordering::AcqRel);
            Ok(false)
        }
    }

    /// Forgets a connection (its channels are left by the caller); whether
    /// it was authorized, `None` when it was not registered.
    pub fn remove_connection(&self, socket_id: &str) -> Option<bool> {
        let (_, connection) = self.connections.remove(socket_id)?;
        let authorized = connection.is_authorized();
        let count = if authorized {
            &self.authorized_count
        } else {
            &self.unauthorized_count
        };
        count.fetch_sub(1, Ordering::AcqRel);
        Some(authorized)
    }

    /// Connections of this app on this node, authorized or not.
    pub fn connection_count(&self) -> u64 {
        self.authorized_count.load(Ordering::Acquire)
            + self.unauthorized_count.load(Ordering::Acquire)
    }

    /// Connections of this app on this node not authorized yet.
    pub fn unauthorized_count(&self) -> u64 {
        self.unauthorized_count.load(Ordering::Acquire)
    }

    /// Every connection, e.g. to close them all on shutdown.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }

    /// Adds a subscriber (with its presence member, on presence channels).
    pub fn subscribe(
        &self,
        channel: &str,
        connection: &Arc<Connection>,
        joining: Option<Joining>,
    ) -> Result<Subscribed, MemberLimitReached> {
        let mut entry = self.channels.entry(channel.to_owned()).or_default();
        let state = entry.value_mut();
        let mut result = Subscribed::default();
        if let Some(existing) = state.subscribers.get(&connection.socket_id) {
            result.subscribers = state.subscribers.len();
            if existing.user_id.is_some() {
                result.presence_data = Some(state.presence_data());
            }
            return Ok(result);
        }
        let user_id = match joining {
            Some(joining) => {
                let known = state.members.contains_key(&joining.user_id);
                if !known && state.members.len() >= joining.max_members {
                    drop(entry);
                    // The entry may have been created just now: do not leave it empty.
                    self.channels
                        .remove_if(channel, |_, state| state.subscribers.is_empty());
                    return Err(MemberLimitReached(joining.max_members));
                }
                let member = state
                    .members
                    .entry(joining.user_id.clone())
                    .or_insert(Member {
                        info: joining.user_info,
                        sockets: 0,
                        peer: joining.peer,
                    });
                member.sockets += 1;
                result.member_added = member.sockets == 1;
                Some(joining.user_id)
            }
            None => None,
        };
        let is_presence = user_id.is_some();
        state.subscribers.insert(
            connection.socket_id.clone(),
            Subscriber {
                connection: connection.clone(),
                user_id,
            },
        );
        result.new_socket = true;
        result.subscribers = state.subscribers.len();
        if is_presence {
            result.presence_data = Some(state.presence_data());
        }
        Ok(result)
    }

    /// Removes a subscriber and, with its user's last socket, the member.
    pub fn unsubscribe(&self, channel: &str, socket_id: &str) -> Unsubscribed {
        let mut result = Unsubscribed::default();
        // Remove the entry atomically when its last subscriber leaves, so
        // empty channels never accumulate.
        self.channels.remove_if_mut(channel, |_, state| {
            if let Some(subscriber) = state.subscribers.remove(socket_id) {
                result.removed = true;
                if let Some(user_id) = subscriber.user_id {
                    if let Some(member) = state.members.get_mut(&user_id) {
                        member.sockets -= 1;
                        if member.sockets == 0 {
                            state.members.remove(&user_id);
                            result.member_removed = Some(user_id);
                        }
                    }
                }
            }
            result.subscribers = state.subscribers.len();
            state.subscribers.is_empty()
        });
        result
    }

    /// Queues the same encoded frame to every subscriber but `except`;
    /// pushi.js subscribers get its pushi form
    /// ([`pushi::fan_out_frame`](crate::protocol::pushi::fan_out_frame)),
    /// built at most once per call and only when one of them is there.
    pub fn deliver(&self, channel: &str, frame: &ByteString, except: Option<&str>) -> FanOut {
        let mut report = FanOut::default();
        let Some(state) = self.channels.get(channel) else {
            return report;
        };
        // None until a pushi subscriber is met; then its frame (or the
        // Pusher one, for frames pushi sends unchanged).
        let mut pushi: Option<ByteString> = None;
        for (socket_id, subscriber) in state.subscribers.iter() {
            if except == Some(&**socket_id) {
                continue;
            }
            let out = match subscriber.connection.dialect() {
                // Cloning a ByteString bumps a reference count: no copy, no JSON work.
                Dialect::Pusher => frame.clone(),
                Dialect::Pushi => pushi
                    .get_or_insert_with(|| {
                        pushi::fan_out_frame(frame).unwrap_or_else(|| frame.clone())
                    })
                    .clone(),
            };
            match subscriber.connection.send(out) {
                Delivery::Queued => report.queued += 1,
                Delivery::Overflowed => report.overflowed += 1,
                Delivery::Closed => {}
            }
        }
        report
    }

    /// Subscribers of `channel` on this node.
    pub fn subscription_count(&self, channel: &str) -> usize {
        self.channels
            .get(channel)
            .map_or(0, |s| s.subscribers.len())
    }

    /// Distinct presence members of `channel` on this node.
    pub fn user_count(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, |s| s.members.len())
    }

    /// The user ids of a presence channel's members.
    pub fn member_ids(&self, channel: &str) -> Vec<String> {
        self.channels.get(channel).map_or_else(Vec::new, |s| {
            s.members.keys().map(|id| id.to_string()).collect()
        })
    }

    /// Whether `user_id` is a member of `channel` that asked for peer channels.
    pub fn is_peer_member(&self, channel: &str, user_id: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|s| s.members.get(user_id).is_some_and(|m| m.peer))
    }

    /// The other peer members of a presence channel.
    pub fn peer_members(&self, channel: &str, except_user: &str) -> Vec<String> {
        self.channels.get(channel).map_or_else(Vec::new, |s| {
            s.members
                .iter()
                .filter(|(id, m)| m.peer && &***id != except_user)
                .map(|(id, _)| id.to_string())
                .collect()
        })
    }

    /// Sockets of `user_id` on `channel`.
    pub fn user_sockets(&self, channel: &str, user_id: &str) -> Vec<Arc<Connection>> {
        self.channels.get(channel).map_or_else(Vec::new, |s| {
            s.subscribers
                .values()
                .filter(|sub| sub.user_id.as_deref() == Some(user_id))
                .map(|sub| sub.connection.clone())
                .collect()
        })
    }

    /// Every socket that is a presence member as `user_id` on any of this
    /// app's channels here (what `terminate_connections` closes besides
    /// signed-in sockets). Scans the channels: an API call, not a hot path.
    pub fn member_connections(&self, user_id: &str) -> Vec<Arc<Connection>> {
        let mut found = Vec::new();
        for entry in self.channels.iter() {
            let state = entry.value();
            if !state.members.contains_key(user_id) {
                continue;
            }
            found.extend(
                state
                    .subscribers
                    .values()
                    .filter(|sub| sub.user_id.as_deref() == Some(user_id))
                    .map(|sub| sub.connection.clone()),
            );
        }
        found
    }

    /// Removes every subscriber of a channel (a peer channel that ended).
    pub fn close_channel(&self, channel: &str) -> usize {
        self.channels
            .remove(channel)
            .map_or(0, |(_, state)| state.subscribers.len())
    }

    /// Whether `socket_id` is subscribed to `channel`, and as which user.
    pub fn subscriber_user(&self, channel: &str, socket_id: &str) -> Option<Option<Arc<str>>> {
        let state = self.channels.get(channel)?;
        state.subscribers.get(socket_id).map(|s| s.user_id.clone())
    }

    /// Every channel with its subscriber count and members (id, info JSON),
    /// so a cluster adapter can re-announce this node's share of the state.
    pub fn snapshot(&self) -> Vec<ChannelSnapshot> {
        self.channels
            .iter()
            .map(|entry| ChannelSnapshot {
                channel: entry.key().clone(),
                subscribers: entry.value().subscribers.len(),
                members: entry
                    .value()
                    .members
                    .iter()
                    .map(|(id, m)| (id.to_string(), m.info.as_ref().map(|i| i.get().to_owned())))
                    .collect(),
                peers: entry
                    .value()
                    .members
                    .iter()
                    .filter(|(_, m)| m.peer)
                    .map(|(id, _)| id.to_string())
                    .collect(),
            })
            .collect()
    }

    /// Occupied channels with their subscriber and member counts.
    pub fn occupied(&self) -> Vec<(String, usize, usize)> {
        self.channels
            .iter()
            .map(|entry| {
                let state = entry.value();
                (
                    entry.key().clone(),
                    state.subscribers.len(),
                    state.members.len(),
                )
            })
            .collect()
    }
}

impl Channel {
    fn presence_data(&self) -> String {
        presence_data(
            self.members
                .iter()
                .map(|(id, member)| (&**id, member.info.as_deref())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::connection::ConnectionReceiver;
    use super::*;

    fn connection(id: &str) -> (Arc<Connection>, ConnectionReceiver) {
        Connection::new(id.into(), "app".into(), 8)
    }

    fn joining(user: &str, max_members: usize) -> Option<Joining> {
        Some(Joining {
            user_id: user.into(),
            user_info: None,
            max_members,
            peer: false,
        })
    }

    #[tokio::test]
    async fn deliver_skips_the_excluded_socket_and_shares_bytes() {
        let channels = AppChannels::default();
        let (a, mut ra) = connection("1.1");
        let (b, mut rb) = connection("1.2");
        channels.subscribe("c", &a, None).unwrap();
        channels.subscribe("c", &b, None).unwrap();
        let frame = ByteString::from("hello");
        let report = channels.deliver("c", &frame, Some("1.1"));
        assert_eq!(
            report,
            FanOut {
                queued: 1,
                overflowed: 0
            }
        );
        let got = rb.outgoing.recv().await.unwrap();
        assert_eq!(got.as_bytes().as_ptr(), frame.as_bytes().as_ptr());
        assert!(ra.outgoing.try_recv().is_none());
    }

    #[test]
    fn channel_disappears_with_its_last_subscriber() {
        let channels = AppChannels::default();
        let (a, _ra) = connection("1.1");
        let first = channels.subscribe("c", &a, None).unwrap();
        assert!(first.new_socket && first.subscribers == 1);
        assert!(!channels.subscribe("c", &a, None).unwrap().new_socket);
        assert_eq!(channels.occupied().len(), 1);
        assert!(channels.unsubscribe("c", "1.1").removed);
        assert!(!channels.unsubscribe("c", "1.1").removed);
        assert!(channels.occupied().is_empty());
    }

    #[test]
    fn a_user_on_two_sockets_is_one_member() {
        let channels = AppChannels::default();
        let (a, _ra) = connection("1.1");
        let (b, _rb) = connection("1.2");
        let first = channels
            .subscribe("presence-r", &a, joining("u1", 10))
            .unwrap();
        assert!(first.member_added);
        let second = channels
            .subscribe("presence-r", &b, joining("u1", 10))
            .unwrap();
        assert!(!second.member_added);
        assert_eq!(channels.user_count("presence-r"), 1);
        assert_eq!(channels.subscription_count("presence-r"), 2);
        assert_eq!(
            channels.unsubscribe("presence-r", "1.1").member_removed,
            None
        );
        assert_eq!(
            channels
                .unsubscribe("presence-r", "1.2")
                .member_removed
                .as_deref(),
            Some("u1")
        );
        assert_eq!(channels.user_count("presence-r"), 0);
    }

    #[test]
    fn member_limit_refuses_new_users_only() {
        let channels = AppChannels::default();
        let (a, _ra) = connection("1.1");
        let (b, _rb) = connection("1.2");
        let (c, _rc) = connection("1.3");
        channels
            .subscribe("presence-r", &a, joining("u1", 1))
            .unwrap();
        assert_eq!(
            channels.subscribe("presence-r", &b, joining("u2", 1)),
            Err(MemberLimitReached(1))
        );
        assert!(channels
            .subscribe("presence-r", &c, joining("u1", 1))
            .is_ok());
        let (d, _rd) = connection("1.4");
        assert!(channels
            .subscribe("presence-empty", &d, joining("u1", 0))
            .is_err());
        assert_eq!(channels.occupied().len(), 1, "no empty channel left behind");
    }

    #[test]
    fn connection_quota_is_enforced() {
        let channels = AppChannels::default();
        let (a, _ra) = connection("1.1");
        let (b, _rb) = connection("1.2");
        assert!(channels.add_connection(a, 1));
        assert!(!channels.add_connection(b.clone(), 1));
        channels.remove_connection("1.1");
        assert!(channels.add_connection(b, 1));
        assert_eq!(channels.connection_count(), 1);
    }

    #[test]
    fn unauthorized_connections_count_apart_until_authorized() {
        let channels = AppChannels::default();
        let (signed, _rs) = connection("1.1");
        assert!(channels.add_connection(signed.clone(), 1));
        let (a, _ra) = connection("1.2");
        let (b, _rb) = connection("1.3");
        a.set_unauthorized();
        b.set_unauthorized();
        assert!(
            channels.add_connection(a.clone(), 2),
            "max_connections is full, a is not counted"
        );
        assert!(channels.add_connection(b.clone(), 2));
        let (c, _rc) = connection("1.4");
        c.set_unauthorized();
        assert!(!channels.add_connection(c, 2), "the unauthorized cap");
        assert_eq!(
            (channels.connection_count(), channels.unauthorized_count()),
            (3, 2)
        );
        assert_eq!(
            channels.authorize(&a, 1),
            Err(OverQuota),
            "max_connections reached"
        );
        assert!(!a.is_authorized());
        assert_eq!(channels.remove_connection("1.1"), Some(true));
        assert_eq!(channels.authorize(&a, 1), Ok(true));
        assert_eq!(channels.authorize(&a, 1), Ok(false), "once");
        assert_eq!(
            (channels.connection_count(), channels.unauthorized_count()),
            (2, 1)
        );
        assert_eq!(channels.remove_connection("1.3"), Some(false));
        assert_eq!(channels.remove_connection("1.3"), None);
        assert_eq!(
            channels.authorize(&b, 0),
            Ok(false),
            "gone: not counted again"
        );
        assert_eq!(
            (channels.connection_count(), channels.unauthorized_count()),
            (1, 0)
        );
    }

    #[test]
    fn member_connections_finds_a_users_sockets_on_every_presence_channel() {
        let channels = AppChannels::default();
        let (a, _ra) = connection("1.1");
        let (b, _rb) = connection("1.2");
        let (c, _rc) = connection("1.3");
        channels.subscribe("public", &a, None).unwrap();
        channels
            .subscribe("presence-x", &a, joining("u1", 10))
            .unwrap();
        channels
            .subscribe("presence-y", &b, joining("u1", 10))
            .unwrap();
        channels
            .subscribe("presence-y", &c, joining("u2", 10))
            .unwrap();
        let mut found: Vec<String> = channels
            .member_connections("u1")
            .iter()
            .map(|c| c.socket_id.to_string())
            .collect();
        found.sort();
        assert_eq!(found, ["1.1", "1.2"]);
        assert!(channels.member_connections("u3").is_empty());
    }
}
