//! Half-open connections (accepted, request head not complete yet: what a
//! slowloris attack holds open), capped at accept time.
//!
//! actix-web has a request header timeout (`client_request_timeout`, set
//! from `limits.request_header_timeout_ms`: 408 and close) and a cap on all
//! connections per worker (`max_connections`), but no cap on connections
//! still sending their head. This module adds one: the server's `on_connect`
//! runs for every accepted TCP connection before actix reads a byte; the
//! gate counts it there and, over `max_half_open` (this node) or
//! `max_half_open_per_ip` (one peer address), shuts the socket down at once
//! (the client sees the connection closed, no bytes are read). The
//! [`HalfOpen`] guard it leaves in the connection's data is released by the
//! first request (see [`HalfOpen::request_started`]) or when the connection
//! closes, whichever is first. So at most `max_half_open` sockets at a time
//! wait for a head, each at most the header timeout.

use super::client_ip::{limit_key, TrustedProxies};
use crate::metrics::Metrics;
use crate::throttled_log::ThrottledLog;
use actix_web::dev::Extensions;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::any::Any;
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How stale actix-http's cached clock may be (its date service ticks
/// every 500 ms): a header timeout fires up to this much early.
const ACTIX_CLOCK_STEP: Duration = Duration::from_millis(500);

/// The half-open counts of a node, shared by every worker.
pub struct HalfOpenGate {
    max: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    /// Half-open connections per peer key; an entry goes with its last one,
    /// so the map never holds more than `max` entries.
    per_ip: DashMap<IpAddr, usize>,
    proxies: TrustedProxies,
    header_timeout: Duration,
    metrics: Metrics,
    log: ThrottledLog,
}

/// Why the gate closed a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateRefusal {
    /// `limits.max_half_open` reached.
    Node,
    /// `limits.max_half_open_per_ip` reached for this peer.
    Peer,
}

impl GateRefusal {
    fn label(self) -> &'static str {
        match self {
            GateRefusal::Node => "half_open",
            GateRefusal::Peer => "half_open_ip",
        }
    }
}

impl HalfOpenGate {
    /// Caps of 0 are off; `header_timeout` only tells timeouts apart in the
    /// metric (actix-web enforces it).
    pub fn new(
        max: usize,
        max_per_ip: usize,
        proxies: TrustedProxies,
        header_timeout: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(HalfOpenGate {
            max,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            proxies,
            header_timeout,
            metrics,
            log: ThrottledLog::new(10_000),
        })
    }

    /// For the server's `on_connect` (`serve::OnConnect`): counts the accepted connection `io`
    /// (plain TCP, or TCP under TLS once its handshake is done), or shuts it
    /// down when a cap is reached. Returns whether the connection is served.
    pub fn on_connect(self: &Arc<Self>, io: &dyn Any, data: &mut Extensions) -> bool {
        let Some(stream) = tcp_stream(io) else {
            return true;
        };
        // The peer's address costs a syscall (getpeername) per accepted
        // connection: asked for only when the per-peer cap needs it, or
        // for the log of a refusal.
        let peer = if self.max_per_ip > 0 {
            let Ok(peer) = stream.peer_addr() else {
                return true;
            };
            Some(peer.ip())
        } else {
            None
        };
        match self.enter_from(peer) {
            Ok(guard) => {
                data.insert(guard);
                true
            }
            Err(refusal) => {
                self.metrics.limit_refused(refusal.label());
                if let Some(suppressed) = self.log.ready() {
                    let peer = peer.or_else(|| stream.peer_addr().ok().map(|addr| addr.ip()));
                    let peer = peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
                    tracing::warn!(limit = refusal.label(), %peer, suppressed, "too many connections without a request yet: new ones closed at accept");
                }
                // Closing here ends the connection before actix reads it:
                // its dispatcher reads end-of-stream and drops it.
                let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Both);
                false
            }
        }
    }

    /// Counts a half-open connection from `peer`, or says which cap refuses it.
    pub fn enter(self: &Arc<Self>, peer: IpAddr) -> Result<HalfOpen, GateRefusal> {
        self.enter_from(Some(peer))
    }

    /// [`Self::enter`] for a peer whose address is known only when the
    /// per-peer cap is on (`None`: counted against the node's cap alone).
    fn enter_from(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<HalfOpen, GateRefusal> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if self.max > 0 && open > self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(GateRefusal::Node);
        }
        let key = peer
            .filter(|&peer| self.max_per_ip > 0 && !self.proxies.contains(peer))
            .map(limit_key);
        if let Some(key) = key {
            let mut count = self.per_ip.entry(key).or_insert(0);
            if *count >= self.max_per_ip {
                drop(count);
                self.leave_peer(key);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(GateRefusal::Peer);
            }
            *count += 1;
        }
        self.metrics.half_open_connections.inc();
        Ok(HalfOpen {
            gate: self.clone(),
            key,
            since: Instant::now(),
            pending: AtomicBool::new(true),
        })
    }

    /// Removes the peer's entry if it holds no connection (an entry just
    /// created for a refused one).
    fn leave_peer(&self, key: IpAddr) {
        if let Entry::Occupied(entry) = self.per_ip.entry(key) {
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }

    fn release(&self, key: Option<IpAddr>) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.half_open_connections.dec();
        if let Some(key) = key {
            if let Entry::Occupied(mut entry) = self.per_ip.entry(key) {
                *entry.get_mut() = entry.get().saturating_sub(1);
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
        }
    }

    /// Half-open connections now (tests).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One accepted connection counted as half-open, kept in the connection's
/// data (`HttpRequest::conn_data`) until it ends.
pub struct HalfOpen {
    gate: Arc<HalfOpenGate>,
    key: Option<IpAddr>,
    since: Instant,
    pending: AtomicBool,
}

impl HalfOpen {
    /// The connection's first request head is complete: no longer half-open.
    pub fn request_started(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.gate.release(self.key);
        }
    }
}

impl Drop for HalfOpen {
    fn drop(&mut self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            // Closed without a request: by actix's header timeout if it
            // lived about that long, else by the client. actix reckons the
            // deadline from a clock it updates every 500 ms, so its timer
            // fires up to that much early.
            let gate = &self.gate;
            if !gate.header_timeout.is_zero()
                && self.since.elapsed() + ACTIX_CLOCK_STEP >= gate.header_timeout
            {
                gate.metrics.limit_refused("request_header_timeout");
            }
            gate.release(self.key);
        }
    }
}

/// The TCP stream under what actix-web hands `on_connect`: the stream
/// itself on a plain listener, the stream under rustls on a TLS one (called
/// once its handshake is done: the handshake itself is bounded by
/// `server.tls.handshake_timeout_ms` and `max_handshakes`).
pub fn tcp_stream(io: &dyn Any) -> Option<&actix_web::rt::net::TcpStream> {
    use actix_tls::accept::rustls_0_23::TlsStream;
    use actix_web::rt::net::TcpStream;
    io.downcast_ref::<TcpStream>().or_else(|| {
        io.downcast_ref::<TlsStream<TcpStream>>()
            .map(|tls| tls.get_ref().0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_ip: usize) -> Arc<HalfOpenGate> {
        let proxies = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        HalfOpenGate::new(max, per_ip, proxies, Duration::from_secs(5), Metrics::new())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_peer_cap_then_node_cap_and_a_request_frees_the_slot() {
        let gate = gate(3, 2);
        let a1 = gate.enter(ip("1.1.1.1")).unwrap();
        let _a2 = gate.enter(ip("1.1.1.1")).unwrap();
        assert_eq!(gate.enter(ip("1.1.1.1")).err(), Some(GateRefusal::Peer));
        let _b = gate.enter(ip("2.2.2.2")).unwrap();
        assert_eq!(gate.enter(ip("3.3.3.3")).err(), Some(GateRefusal::Node));
        assert_eq!(gate.open(), 3);
        a1.request_started();
        assert_eq!(gate.open(), 2);
        let _a3 = gate.enter(ip("1.1.1.1")).unwrap();
        // Dropping a released guard releases nothing twice.
        drop(a1);
        assert_eq!(gate.open(), 3);
    }

    #[test]
    fn trusted_proxies_have_no_per_peer_cap_and_entries_go_with_their_last() {
        let gate = gate(0, 1);
        let guards: Vec<_> = (0..5)
            .map(|_| gate.enter(ip("10.0.0.1")).unwrap())
            .collect();
        let one = gate.enter(ip("1.1.1.1")).unwrap();
        assert!(gate.enter(ip("1.1.1.1")).is_err());
        drop(one);
        drop(guards);
        assert_eq!(gate.open(), 0);
        assert!(gate.per_ip.is_empty());
    }
}
