//! Handing open sockets over to the process that replaces this one.
//!
//! pusher-js reconnects at once after close code 4200, and when that attempt
//! is refused it waits out its whole connection timeout before trying again
//! (15 s in pusher-js 8: its `SequentialStrategy` is not fail-fast). So a
//! single instance restarted on the same port would cost every client ~15 s.
//! On shutdown, having closed its listener, a single instance therefore waits
//! a bounded time until a new process listens on its port, and only then
//! sends the 4200s: the immediate reconnect lands on the new process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// How often the port is probed while waiting.
const PROBE_EVERY: Duration = Duration::from_millis(25);

/// The addresses to probe for a successor: each listener's address, with an
/// unspecified IP (`0.0.0.0`, `::`) replaced by the loopback of its family.
pub fn probe_addrs<'a>(listeners: impl IntoIterator<Item = &'a TcpListener>) -> Vec<SocketAddr> {
    listeners
        .into_iter()
        .filter_map(|listener| listener.local_addr().ok())
        .map(|mut addr| {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            addr
        })
        .collect()
}

/// Waits until something accepts TCP connections on one of `addrs` (this
/// process no longer listens, so that is a new process), at most `within`.
/// Returns whether a successor was found. Each probe connection is closed at
/// once; the new process sees a connection that sends nothing.
pub async fn wait_for_successor(addrs: &[SocketAddr], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        // The first probe too comes after a pause: the listener of this
        // process is closed by another thread, shortly after the stop.
        tokio::time::sleep(PROBE_EVERY).await;
        for addr in addrs {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_stream)) = tokio::time::timeout(PROBE_EVERY, connect).await {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_probed_on_loopback() {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            probe_addrs(&[listener]),
            vec![SocketAddr::from(([127, 0, 0, 1], port))]
        );
    }

    #[tokio::test]
    async fn a_listener_on_the_port_is_found_and_a_closed_port_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = probe_addrs(std::slice::from_ref(&listener));
        assert!(wait_for_successor(&addrs, Duration::from_secs(2)).await);
        drop(listener);
        assert!(!wait_for_successor(&addrs, Duration::from_millis(200)).await);
    }
}
