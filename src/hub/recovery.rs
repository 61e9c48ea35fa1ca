//! Recovery for signed-in users, with no change to pusher-js: per signed-in
//! user and per history channel, where each of the user's sockets stood, so
//! a new socket of the same user that (re-)subscribes within the app's
//! `recovery_window` gets what was missed, as if it had sent `since`.
//!
//! "Stood" means **confirmed**: the socket's position on a channel is a
//! serial such that the client is known to have received every event of the
//! channel up to it (or never needed them: it joined after). It is set when
//! the socket joins (the channel's latest serial, or the serial its recovery
//! started from) and raised when a WebSocket ping, queued behind the frames
//! of a snapshot of the channels' latest serials, is answered by a pong (TCP
//! keeps order, so the client had read everything queued before the ping).
//! A frame written to a socket that then died silently is never confirmed,
//! so it is replayed: delivery is at least once. Duplicates are limited to
//! events a client received after its last confirmation (at most about one
//! probe interval of them) and, with several sockets of one user, to those a
//! sibling socket confirmed later than the one that died (see [`take`]).
//!
//! Memory: at most `recovery_users` users per app, each at most
//! [`MAX_POSITIONS_PER_USER`] (socket, channel) positions; a closed socket's
//! positions are dropped `recovery_window` after it closed.
//!
//! [`take`]: UserPositions::take

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Positions kept per user at most: (socket, channel) pairs.
pub const MAX_POSITIONS_PER_USER: usize = 256;

/// How long a socket waits after writing an event with a serial before it
/// asks its client to confirm (one WebSocket ping, at most one outstanding):
/// the longer, the fewer pings; the shorter, the fewer duplicates after a cut.
pub const PROBE_DELAY: Duration = Duration::from_millis(500);

/// One socket's confirmed position on one channel.
#[derive(Debug, Clone)]
struct Position {
    socket_id: Arc<str>,
    channel: Arc<str>,
    serial: u64,
    /// When the socket closed; `None` while it is open.
    closed: Option<Instant>,
}

/// Counts for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Users with at least one position.
    pub users: u64,
    /// Positions kept.
    pub positions: u64,
}

/// One app's signed-in users' positions on this node.
#[derive(Debug, Default)]
pub struct UserPositions {
    users: DashMap<Arc<str>, Vec<Position>>,
    positions: AtomicU64,
}

/// Why a position was not kept (counted in `rusher_recovery_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl UserPositions {
    /// Sets where `socket_id` of `user` stands on `channel` (joining,
    /// recovering). `Err` when the app's `max_users` or the user's
    /// [`MAX_POSITIONS_PER_USER`] is reached: that socket then cannot be
    /// recovered from, nothing else changes.
    pub fn set(
        &self,
        user: &str,
        socket_id: &Arc<str>,
        channel: &str,
        serial: u64,
        max_users: usize,
    ) -> Result<(), Refused> {
        self.upsert(
            user,
            socket_id,
            channel,
            max_users,
            |old| {
                *old = serial;
            },
            serial,
        )
    }

    /// Raises the confirmed position of `socket_id` on `channel` (a pong
    /// answered a probe); never lowers it.
    pub fn confirm(
        &self,
        user: &str,
        socket_id: &Arc<str>,
        channel: &str,
        serial: u64,
        max_users: usize,
    ) -> Result<(), Refused> {
        self.upsert(
            user,
            socket_id,
            channel,
            max_users,
            |old| {
                *old = (*old).max(serial);
            },
            serial,
        )
    }

    fn upsert(
        &self,
        user: &str,
        socket_id: &Arc<str>,
        channel: &str,
        max_users: usize,
        update: impl FnOnce(&mut u64),
        serial: u64,
    ) -> Result<(), Refused> {
        let mut positions = match self.users.get_mut(user) {
            Some(found) => found,
            None => {
                if self.users.len() >= max_users {
                    return Err(Refused);
                }
                match self.users.entry(Arc::from(user)) {
                    Entry::Occupied(found) => found.into_ref(),
                    Entry::Vacant(vacant) => vacant.insert(Vec::new()),
                }
            }
        };
        if let Some(found) = positions
            .iter_mut()
            .find(|p| p.socket_id == *socket_id && &*p.channel == channel)
        {
            update(&mut found.serial);
            return Ok(());
        }
        if positions.len() >= MAX_POSITIONS_PER_USER {
            // Room is made only by forgetting a closed socket, oldest first.
            let oldest = positions
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.closed.map(|at| (at, i)))
                .min();
            match oldest {
                Some((_, i)) => {
                    positions.swap_remove(i);
                    self.positions.fetch_sub(1, Ordering::Relaxed);
                }
                None => return Err(Refused),
            }
        }
        positions.push(Position {
            socket_id: socket_id.clone(),
            channel: channel.into(),
            serial,
            closed: None,
        });
        self.positions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Where a new socket of `user` should resume `channel` from: the lowest
    /// position of the user's other sockets on it (open, or closed less than
    /// `window` ago), or `None` when there is none.
    ///
    /// So that a later recovery does not replay again what this one
    /// replayed, one position is used up: the *highest*. With one old socket
    /// that is the one recovered from; with several sockets cut at once (two
    /// tabs), each new socket resumes from the lowest remaining position, so
    /// none of them can miss an event (some get duplicates instead).
    pub fn take(
        &self,
        user: &str,
        socket_id: &str,
        channel: &str,
        window: Duration,
        now: Instant,
    ) -> Option<u64> {
        let mut positions = self.users.get_mut(user)?;
        let usable = |p: &Position| {
            &*p.channel == channel
                && &*p.socket_id != socket_id
                && p.closed.is_none_or(|at| now.duration_since(at) < window)
        };
        let lowest = positions
            .iter()
            .filter(|p| usable(p))
            .map(|p| p.serial)
            .min()?;
        if let Some((i, _)) = positions
            .iter()
            .enumerate()
            .filter(|(_, p)| usable(p))
            .max_by_key(|(_, p)| p.serial)
        {
            positions.swap_remove(i);
            self.positions.fetch_sub(1, Ordering::Relaxed);
        }
        Some(lowest)
    }

    /// The socket left `channel` on purpose (unsubscribe): it is not
    /// recovered from.
    pub fn forget(&self, user: &str, socket_id: &str, channel: &str) {
        if let Some(mut positions) = self.users.get_mut(user) {
            let before = positions.len();
            positions.retain(|p| !(&*p.socket_id == socket_id && &*p.channel == channel));
            self.positions
                .fetch_sub((before - positions.len()) as u64, Ordering::Relaxed);
        }
    }

    /// The socket closed: its positions stay usable for the recovery window.
    pub fn closed(&self, user: &str, socket_id: &str, now: Instant) {
        if let Some(mut positions) = self.users.get_mut(user) {
            for p in positions.iter_mut().filter(|p| &*p.socket_id == socket_id) {
                p.closed = Some(now);
            }
        }
    }

    /// Drops positions of sockets closed `window` ago or more, and users
    /// left with none.
    pub fn sweep(&self, window: Duration, now: Instant) {
        self.users.retain(|_, positions| {
            let before = positions.len();
            positions.retain(|p| p.closed.is_none_or(|at| now.duration_since(at) < window));
            self.positions
                .fetch_sub((before - positions.len()) as u64, Ordering::Relaxed);
            !positions.is_empty()
        });
    }

    /// Users and positions kept.
    pub fn counts(&self) -> Counts {
        Counts {
            users: self.users.len() as u64,
            positions: self.positions.load(Ordering::Relaxed),
        }
    }
}

/// Whether an outgoing frame carries a `"serial"`: history frames end with
/// `,"serial":N}` (see `frames::history_event_frame`; `serial` is the last
/// field). A suffix check of a few bytes, no JSON parse: any other frame
/// ends with a string, `}}` or a value that is not preceded by `"serial":`.
pub fn carries_serial(frame: &str) -> bool {
    let Some(body) = frame.strip_suffix('}') else {
        return false;
    };
    let digits = body.len() - body.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    digits > 0 && body[..body.len() - digits].ends_with(",\"serial\":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn sid(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_new_socket_resumes_from_the_old_sockets_confirmed_position() {
        let p = UserPositions::default();
        let now = Instant::now();
        p.set("u", &sid("1.1"), "c", 5, 10).unwrap();
        p.confirm("u", &sid("1.1"), "c", 9, 10).unwrap();
        p.confirm("u", &sid("1.1"), "c", 7, 10).unwrap();
        p.closed("u", "1.1", now);
        assert_eq!(p.take("u", "2.2", "other", W, now), None);
        assert_eq!(
            p.take("v", "2.2", "c", W, now),
            None,
            "never another user's"
        );
        assert_eq!(
            p.take("u", "2.2", "c", W, now),
            Some(9),
            "a confirm never lowers"
        );
        assert_eq!(p.take("u", "3.3", "c", W, now), None, "used up once");
    }

    #[test]
    fn a_socket_does_not_resume_from_itself_nor_past_the_window() {
        let p = UserPositions::default();
        let now = Instant::now();
        p.set("u", &sid("1.1"), "c", 5, 10).unwrap();
        assert_eq!(p.take("u", "1.1", "c", W, now), None);
        p.closed("u", "1.1", now);
        assert_eq!(p.take("u", "2.2", "c", W, now + W), None);
        p.sweep(W, now + W);
        assert_eq!(p.counts(), Counts::default());
    }

    #[test]
    fn two_sockets_cut_at_once_both_resume_from_the_lowest_position() {
        let p = UserPositions::default();
        let now = Instant::now();
        p.set("u", &sid("a"), "c", 3, 10).unwrap();
        p.set("u", &sid("b"), "c", 8, 10).unwrap();
        p.closed("u", "a", now);
        p.closed("u", "b", now);
        assert_eq!(p.take("u", "a2", "c", W, now), Some(3));
        assert_eq!(p.take("u", "b2", "c", W, now), Some(3));
        assert_eq!(p.take("u", "x", "c", W, now), None);
    }

    #[test]
    fn unsubscribing_forgets_and_limits_refuse_without_growing() {
        let p = UserPositions::default();
        p.set("u", &sid("1.1"), "c", 5, 1).unwrap();
        p.forget("u", "1.1", "c");
        assert_eq!(p.take("u", "2.2", "c", W, Instant::now()), None);
        assert_eq!(
            p.set("v", &sid("2.2"), "c", 1, 1),
            Err(Refused),
            "one user at most"
        );
        for i in 0..MAX_POSITIONS_PER_USER {
            p.set("u", &sid("1.1"), &format!("c{i}"), 1, 1).unwrap();
        }
        assert_eq!(p.set("u", &sid("1.1"), "more", 1, 1), Err(Refused));
        p.closed("u", "1.1", Instant::now());
        assert!(
            p.set("u", &sid("3.3"), "more", 1, 1).is_ok(),
            "a closed one makes room"
        );
        assert_eq!(
            p.counts(),
            Counts {
                users: 1,
                positions: MAX_POSITIONS_PER_USER as u64
            }
        );
    }

    #[test]
    fn only_history_frames_carry_a_serial() {
        assert!(carries_serial(
            r#"{"event":"e","channel":"c","data":"x","serial":42}"#
        ));
        assert!(!carries_serial(r#"{"event":"e","channel":"c","data":"x"}"#));
        assert!(!carries_serial(
            r#"{"event":"client-e","channel":"c","data":5}"#
        ));
        assert!(!carries_serial(
            r#"{"event":"e","channel":"c","data":{"serial":5}}"#
        ));
        assert!(!carries_serial(
            r#"{"event":"e","channel":"c","data":"x","serial":}"#
        ));
        assert!(!carries_serial(""));
    }
}
