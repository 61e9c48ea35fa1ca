//! The HTTP sessions of this node by id (`{key}/{server}/{session}` from
//! the URL pusher-js builds), so every request of a session reaches its
//! actor. A closed session's close line is kept for a short while, so the
//! client's next request learns the close code instead of opening a new
//! session silently (SockJS does the same).
//!
//! A session lives on the node that opened it; with the Redis adapter,
//! requests for it that land on another node are relayed ([`super::relay`]),
//! so a load balancer needs no sticky routing.

use super::transport::Xhr;
use crate::session::Session;
use actix::Addr;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// How long a closed session's close line answers its client's requests.
pub const CLOSED_KEPT: Duration = Duration::from_secs(30);

/// One entry of the registry.
#[derive(Clone)]
pub enum Entry {
    /// An open session.
    Open(Addr<Session<Xhr>>),
    /// A closed one: its `c[...]` line, until the instant given.
    Closed(String, Instant),
}

/// Sessions by id, open or recently closed.
#[derive(Default)]
pub struct Registry {
    sessions: DashMap<String, Entry>,
}

impl Registry {
    /// The session with this id, if it is open or closed recently.
    pub fn get(&self, id: &str) -> Option<Entry> {
        let entry = self.sessions.get(id)?.value().clone();
        match entry {
            Entry::Closed(_, until) if until <= Instant::now() => {
                self.sessions.remove_if(
                    id,
                    |_, entry| matches!(entry, Entry::Closed(_, u) if *u <= Instant::now()),
                );
                None
            }
            entry => Some(entry),
        }
    }

    /// Registers a new open session under `id`, or hands back the session
    /// that holds it already (a concurrent first request of the same id
    /// opened it meanwhile: the caller attaches to that one instead).
    pub fn insert(
        &self,
        id: String,
        session: Addr<Session<Xhr>>,
    ) -> Result<(), Addr<Session<Xhr>>> {
        match self.sessions.entry(id) {
            dashmap::Entry::Occupied(mut occupied) => match occupied.get() {
                Entry::Open(held) => Err(held.clone()),
                Entry::Closed(..) => {
                    occupied.insert(Entry::Open(session));
                    Ok(())
                }
            },
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(Entry::Open(session));
                Ok(())
            }
        }
    }

    /// Forgets `id` if `session` holds it (a session refused after its id
    /// was reserved).
    pub fn forget(&self, id: &str, session: &Addr<Session<Xhr>>) {
        self.sessions.remove_if(
            id,
            |_, entry| matches!(entry, Entry::Open(held) if held == session),
        );
    }

    /// The session `id` (`session`) closed with `line`: kept for
    /// [`CLOSED_KEPT`], while fewer than twice `max_sessions` entries are
    /// held (a flood of short sessions must not grow the registry without
    /// bound). An entry of another session under the same id is left alone:
    /// a session only ever retires its own entry.
    pub fn closed(
        &self,
        id: &str,
        session: &Addr<Session<Xhr>>,
        line: String,
        max_sessions: usize,
    ) {
        let most = max_sessions.saturating_mul(2);
        if self.sessions.len() >= most && self.sweep() >= most {
            self.forget(id, session);
            return;
        }
        if let Some(mut entry) = self.sessions.get_mut(id) {
            if matches!(entry.value(), Entry::Open(held) if held == session) {
                *entry = Entry::Closed(line, Instant::now() + CLOSED_KEPT);
            }
        }
    }

    /// Forgets closed sessions whose time is over; returns how many are left.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        self.sessions
            .retain(|_, entry| !matches!(entry, Entry::Closed(_, until) if *until <= now));
        self.sessions.len()
    }

    /// Entries held (open and closed).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
