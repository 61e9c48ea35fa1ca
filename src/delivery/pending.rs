//! One connection's unacknowledged messages and their retry clock. Pure:
//! the caller passes `now`, sends what [`Pending::take_due`] returns and arms
//! one timer for [`Pending::next_wake`] (the connection actor's own timer:
//! no task per message).
//!
//! Bounded by `max_pending`: recording one more drops the oldest, which the
//! caller counts as expired (`reason="overflow"`); the client's ack for it is
//! then answered as unknown.

use bytestring::ByteString;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How retries are paced (from [`super::settings::DeliveryConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Wait before the first resend.
    pub ack_timeout: Duration,
    /// Factor between one wait and the next.
    pub backoff: f64,
    /// Resends before the message expires.
    pub max_retries: u32,
    /// Longest life of a message from its first delivery.
    pub ttl: Duration,
    /// Most messages pending at once.
    pub max_pending: usize,
}

impl Policy {
    /// The wait after the `resends`-th resend: `ack_timeout × backoff^resends`
    /// (capped at the TTL, so a large exponent cannot overflow).
    pub fn wait(&self, resends: u32) -> Duration {
        let secs = self.ack_timeout.as_secs_f64() * self.backoff.powi(resends as i32);
        Duration::from_secs_f64(secs.min(self.ttl.as_secs_f64()))
    }
}

/// One pending message.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The `message_id` of the frame.
    pub id: Arc<str>,
    /// The channel it was published on.
    pub channel: Arc<str>,
    /// The frame as first sent (resent byte for byte).
    pub frame: ByteString,
    /// Resends so far.
    pub resends: u32,
    /// When it is dropped whatever happens (`message_ttl` after first delivery).
    pub expires: Instant,
}

/// Why a message stopped being pending without an ack (the `reason` label
/// of `rusher_delivery_expired_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `max_retries` resends went unacknowledged.
    Retries,
    /// Older than `message_ttl`.
    Ttl,
    /// Dropped as the oldest of a full pending set (`max_pending`).
    Overflow,
    /// The connection closed and nobody (no signed-in user) can claim it,
    /// or the client unsubscribed from its channel.
    Closed,
}

impl Expiry {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Expiry::Retries => "retries",
            Expiry::Ttl => "ttl",
            Expiry::Overflow => "overflow",
            Expiry::Closed => "closed",
        }
    }
}

/// What a due message needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Write this frame again.
    Resend(ByteString),
    /// Dropped.
    Expired(Expiry),
}

/// The pending set of one connection.
#[derive(Debug, Default)]
pub struct Pending {
    /// By arrival order (the first is the oldest, dropped on overflow).
    entries: BTreeMap<u64, (Entry, Instant)>,
    by_id: HashMap<Arc<str>, u64>,
    /// (next wake, arrival) of every entry.
    due: BTreeSet<(Instant, u64)>,
    next_seq: u64,
}

/// What recording did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Now pending.
    New,
    /// Already pending under this id (e.g. a cache channel's replay): unchanged.
    Duplicate,
    /// Now pending; the oldest was dropped to make room.
    EvictedOldest,
}

impl Pending {
    /// Messages pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a message just written to the client: first resend after
    /// `ack_timeout`, expiry after `ttl`.
    pub fn record(
        &mut self,
        policy: &Policy,
        id: &str,
        channel: &str,
        frame: ByteString,
        now: Instant,
    ) -> Recorded {
        let entry = Entry {
            id: id.into(),
            channel: channel.into(),
            frame,
            resends: 0,
            expires: now + policy.ttl,
        };
        self.restore(policy, entry, now)
    }

    /// Records a message carried over from an earlier connection (its
    /// resends and expiry kept), just written again to the client.
    pub fn restore(&mut self, policy: &Policy, entry: Entry, now: Instant) -> Recorded {
        if self.by_id.contains_key(&entry.id) {
            return Recorded::Duplicate;
        }
        let mut recorded = Recorded::New;
        if self.entries.len() >= policy.max_pending {
            if let Some(oldest) = self.entries.keys().next().copied() {
                self.remove(oldest);
                recorded = Recorded::EvictedOldest;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let wake = (now + policy.wait(entry.resends)).min(entry.expires);
        self.by_id.insert(entry.id.clone(), seq);
        self.due.insert((wake, seq));
        self.entries.insert(seq, (entry, wake));
        recorded
    }

    /// Forgets an acknowledged message; false when it is not pending.
    pub fn ack(&mut self, id: &str) -> bool {
        match self.by_id.get(id).copied() {
            Some(seq) => self.remove(seq).is_some(),
            None => false,
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let (entry, wake) = self.entries.remove(&seq)?;
        self.by_id.remove(&entry.id);
        self.due.remove(&(wake, seq));
        Some(entry)
    }

    /// Everything due at `now`, in due order: resends (the entry waits
    /// `ack_timeout × backoff^resends` for the next) and expiries.
    pub fn take_due(&mut self, policy: &Policy, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(&(wake, seq)) = self.due.first() {
            if wake > now {
                break;
            }
            self.due.remove(&(wake, seq));
            let Some((entry, _)) = self.entries.get_mut(&seq) else {
                continue;
            };
            if now >= entry.expires {
                self.remove_expired(seq);
                out.push(Due::Expired(Expiry::Ttl));
            } else if entry.resends >= policy.max_retries {
                self.remove_expired(seq);
                out.push(Due::Expired(Expiry::Retries));
            } else {
                entry.resends += 1;
                let next = (now + policy.wait(entry.resends)).min(entry.expires);
                out.push(Due::Resend(entry.frame.clone()));
                if let Some(slot) = self.entries.get_mut(&seq) {
                    slot.1 = next;
                }
                self.due.insert((next, seq));
            }
        }
        out
    }

    /// Removes an entry whose due slot was already taken out.
    fn remove_expired(&mut self, seq: u64) {
        if let Some((entry, _)) = self.entries.remove(&seq) {
            self.by_id.remove(&entry.id);
        }
    }

    /// When the next message is due, if any.
    pub fn next_wake(&self) -> Option<Instant> {
        self.due.first().map(|&(wake, _)| wake)
    }

    /// Drops the messages of `channel` (the client unsubscribed); how many.
    pub fn drop_channel(&mut self, channel: &str) -> usize {
        let seqs: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, (entry, _))| &*entry.channel == channel)
            .map(|(&seq, _)| seq)
            .collect();
        seqs.into_iter()
            .filter(|&seq| self.remove(seq).is_some())
            .count()
    }

    /// The pending messages, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|(entry, _)| entry)
    }

    /// Whether `id` is pending.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Takes every pending message, oldest first (the connection closes).
    pub fn drain(&mut self) -> Vec<Entry> {
        self.by_id.clear();
        self.due.clear();
        std::mem::take(&mut self.entries)
            .into_values()
            .map(|(entry, _)| entry)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_pending: usize) -> Policy {
        Policy {
            ack_timeout: Duration::from_secs(1),
            backoff: 2.0,
            max_retries: 3,
            ttl: Duration::from_secs(100),
            max_pending,
        }
    }

    #[test]
    fn unacked_message_is_resent_with_growing_waits_then_expires() {
        let p = policy(10);
        let t0 = Instant::now();
        let mut pending = Pending::default();
        pending.record(&p, "m1", "c", "frame".into(), t0);
        let mut resends = Vec::new();
        let mut t = t0;
        let mut expired = None;
        for _ in 0..10 {
            let Some(wake) = pending.next_wake() else {
                break;
            };
            assert!(pending
                .take_due(&p, wake - Duration::from_millis(1))
                .is_empty());
            t = wake;
            for due in pending.take_due(&p, t) {
                match due {
                    Due::Resend(frame) => {
                        assert_eq!(&*frame, "frame");
                        resends.push((t - t0).as_secs());
                    }
                    Due::Expired(why) => expired = Some(((t - t0).as_secs(), why)),
                }
            }
        }
        // Resent after 1 s, then 2 s and 4 s later; expired 8 s after the last.
        assert_eq!(resends, vec![1, 3, 7]);
        assert_eq!(expired, Some((15, Expiry::Retries)));
        assert!(pending.is_empty() && pending.next_wake().is_none());
        let _ = t;
    }

    #[test]
    fn acked_message_is_never_resent_and_unknown_acks_are_told() {
        let p = policy(10);
        let t0 = Instant::now();
        let mut pending = Pending::default();
        pending.record(&p, "m1", "c", "f".into(), t0);
        assert!(pending.ack("m1"));
        assert!(!pending.ack("m1"));
        assert!(!pending.ack("nope"));
        assert!(pending
            .take_due(&p, t0 + Duration::from_secs(50))
            .is_empty());
    }

    #[test]
    fn a_full_set_drops_the_oldest() {
        let p = policy(2);
        let t0 = Instant::now();
        let mut pending = Pending::default();
        assert_eq!(pending.record(&p, "a", "c", "a".into(), t0), Recorded::New);
        assert_eq!(pending.record(&p, "b", "c", "b".into(), t0), Recorded::New);
        assert_eq!(
            pending.record(&p, "b", "c", "b".into(), t0),
            Recorded::Duplicate
        );
        assert_eq!(
            pending.record(&p, "c", "c", "c".into(), t0),
            Recorded::EvictedOldest
        );
        assert!(!pending.ack("a"));
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn ttl_ends_a_message_before_its_retries() {
        let mut p = policy(10);
        p.ttl = Duration::from_millis(1500);
        let t0 = Instant::now();
        let mut pending = Pending::default();
        pending.record(&p, "a", "c", "a".into(), t0);
        let first = pending.take_due(&p, t0 + Duration::from_secs(1));
        assert_eq!(first, vec![Due::Resend("a".into())]);
        // The next resend would be at 3 s; the TTL wakes it at 1.5 s.
        assert_eq!(pending.next_wake(), Some(t0 + Duration::from_millis(1500)));
        let then = pending.take_due(&p, t0 + Duration::from_millis(1500));
        assert_eq!(then, vec![Due::Expired(Expiry::Ttl)]);
    }

    #[test]
    fn restored_entries_keep_their_resends_and_channels_can_be_dropped() {
        let p = policy(10);
        let t0 = Instant::now();
        let mut pending = Pending::default();
        pending.record(&p, "a", "x", "a".into(), t0);
        pending.record(&p, "b", "y", "b".into(), t0);
        let _ = pending.take_due(&p, t0 + Duration::from_secs(1));
        let drained = pending.drain();
        assert_eq!(
            drained.iter().map(|e| e.resends).collect::<Vec<_>>(),
            [1, 1]
        );
        for entry in drained {
            pending.restore(&p, entry, t0 + Duration::from_secs(2));
        }
        // Next wait after one resend: 2 s.
        assert_eq!(pending.next_wake(), Some(t0 + Duration::from_secs(4)));
        assert_eq!(pending.drop_channel("x"), 1);
        assert_eq!(pending.len(), 1);
        assert!(pending.ack("b"));
    }
}
