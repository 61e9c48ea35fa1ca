//! Who the client is, for the per-IP limits: the TCP peer, unless the peer
//! is a configured trusted proxy (`limits.trusted_proxies`); then the first
//! address in `X-Forwarded-For`, read from the right, that is not itself a
//! trusted proxy (the hop the trusted proxies received the request from).
//!
//! Only `X-Forwarded-For` is read, not RFC 7239 `Forwarded`: proxies that
//! append to one usually pass the other through from the client untouched,
//! so reading both would let a client choose its own address.
//!
//! IPv6 clients are counted per /64, the block one subscriber line (or one
//! cloud host) gets: counting single addresses would let one host take
//! 2^64 fresh budgets.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// A `trusted_proxies` entry that is neither an address nor a CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IP address or a CIDR block (e.g. 10.0.0.0/8, ::1)")]
pub struct BadProxy(pub String);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.1`, `::1`) and blocks (`10.0.0.0/8`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadProxy> {
        let nets = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxy(entry.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying the
    /// `forwarded_for` header values (`X-Forwarded-For`, in order).
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // Something that is not an address (`unknown`, garbage): the
            // hop before it cannot be trusted to have written it.
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port
/// (`1.2.3.4:5678`, `[::1]:5678`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    let (host, _port) = hop.rsplit_once(':')?;
    host.parse().ok().map(canonical)
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, how a dual-stack socket
/// shows IPv4 peers) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("9.9.9.9"), ["1.1.1.1"].into_iter()),
            ip("9.9.9.9")
        );
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap();
        assert_eq!(
            proxies.client_ip(ip("9.9.9.9"), ["1.1.1.1"].into_iter()),
            ip("9.9.9.9"),
            "an untrusted peer's header is the client's own word"
        );
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), ["1.1.1.1"].into_iter()),
            ip("1.1.1.1")
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        // The client sent a spoofed first entry; the proxies appended the rest.
        let header = ["6.6.6.6, 2.2.2.2", "10.0.0.7"];
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), header.into_iter()),
            ip("2.2.2.2")
        );
        // Ports and brackets as some proxies write them.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), ["2.2.2.2:443"].into_iter()),
            ip("2.2.2.2")
        );
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), ["[2001:db8::1]:443"].into_iter()),
            ip("2001:db8::1")
        );
        // Garbage stops the walk at the last address a trusted hop wrote.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), ["1.1.1.1, unknown, 10.0.0.9"].into_iter()),
            ip("10.0.0.9")
        );
        // No header: the proxy itself.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), [].into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(limit_key(ip("1.2.3.4")), ip("1.2.3.4"));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8", "proxy.local"]).unwrap_err();
        assert!(err.to_string().contains("proxy.local"), "{err}");
    }
}
