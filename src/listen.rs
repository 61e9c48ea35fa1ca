//! The listening sockets: `server.host` resolved, each address bound with
//! the options rusher needs, and errors that name the address and the key
//! (or the environment variable) that chose it.

use crate::config::Config;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use thiserror::Error;

/// Connections waiting to be accepted per listening socket (actix-web's default).
const BACKLOG: i32 = 1024;

/// Why rusher cannot listen; shown to the user as is.
#[derive(Debug, Error)]
pub enum ListenError {
    /// `server.host` does not resolve to any address.
    #[error("cannot listen on {host}:{port} ({key}): cannot resolve the host: {reason}")]
    Resolve {
        /// The host as written.
        host: String,
        /// The port.
        port: u16,
        /// `server.host` or `RUSHER_HOST`.
        key: &'static str,
        /// What the resolver said.
        reason: String,
    },
    /// An address could not be bound.
    #[error("cannot listen on {addr} ({key}): {reason}")]
    Bind {
        /// The resolved address.
        addr: SocketAddr,
        /// The key that most likely needs changing (port in use → the port).
        key: &'static str,
        /// What went wrong, in words.
        reason: String,
    },
}

/// What one listening socket serves. `serve.rs` also puts it in each
/// connection's data (`HttpRequest::conn_data`), for what depends on it
/// (the console's login cookie is `Secure` over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP and WebSocket (`http://`, `ws://`).
    Plain,
    /// TLS (`https://`, `wss://`), with `[server.tls]`'s certificate.
    Tls,
}

/// The listening sockets of the configured ports: `server.port`, plain or
/// TLS (`[server.tls]` without a port), and `server.tls.port` (TLS, when
/// set), each bound as [`bind`] says. Errors name the port's key.
pub fn bind_all(config: &Config) -> Result<Vec<(TcpListener, Scheme)>, ListenError> {
    let tls = &config.server.tls;
    let main = match (tls.enabled(), tls.port) {
        (true, None) => Scheme::Tls,
        _ => Scheme::Plain,
    };
    let mut listeners: Vec<(TcpListener, Scheme)> = bind(config)?
        .into_iter()
        .map(|listener| (listener, main))
        .collect();
    if let (true, Some(port)) = (tls.enabled(), tls.port) {
        let extra = bind_port(config, port, "server.tls.port")?;
        listeners.extend(extra.into_iter().map(|listener| (listener, Scheme::Tls)));
    }
    Ok(listeners)
}

/// Binds every address `server.host` resolves to on `server.port`, with
/// `SO_REUSEADDR` (as std and actix-web do, so a restart is not refused
/// while old connections linger in TIME_WAIT) and, when
/// `server.reuse_port` is set, `SO_REUSEPORT` (several processes then share
/// the port and the kernel spreads new connections among them).
///
/// An address of a family this machine lacks (`localhost` → `::1` without
/// IPv6) is skipped when another one could be bound; any other failure is
/// an error.
pub fn bind(config: &Config) -> Result<Vec<TcpListener>, ListenError> {
    bind_port(config, config.server.port, "server.port")
}

/// [`bind`] on `port`, which `port_key` sets.
fn bind_port(
    config: &Config,
    port: u16,
    port_key: &'static str,
) -> Result<Vec<TcpListener>, ListenError> {
    let server = &config.server;
    let resolve_error = |reason: String| ListenError::Resolve {
        host: server.host.clone(),
        port,
        key: config.key_source("server.host"),
        reason,
    };
    let addrs: Vec<SocketAddr> = (server.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| resolve_error(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(resolve_error("no address found".into()));
    }
    let mut listeners = Vec::new();
    let mut first_error = None;
    for addr in addrs {
        match bind_one(addr, server.reuse_port) {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                let skippable = matches!(
                    error.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
                );
                let error = describe(config, addr, &error, port_key);
                if !skippable {
                    return Err(error);
                }
                tracing::debug!(%error, "address skipped");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if listeners.is_empty() => Err(error),
        _ => Ok(listeners),
    }
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
))]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
)))]
fn set_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT (server.reuse_port) is not available on this platform",
    ))
}

/// The bind error in words, with the key the user most likely has to change:
/// the host when the address is not this machine's, else the port.
fn describe(
    config: &Config,
    addr: SocketAddr,
    error: &io::Error,
    port_key: &'static str,
) -> ListenError {
    let (key, reason) = match error.kind() {
        io::ErrorKind::AddrInUse => (
            port_key,
            "address already in use (another process listens on it; \
             server.reuse_port = true on both shares it on purpose)"
                .to_string(),
        ),
        io::ErrorKind::AddrNotAvailable => (
            "server.host",
            "address not available (not an address of this machine)".to_string(),
        ),
        io::ErrorKind::PermissionDenied => (
            port_key,
            "permission denied (ports below 1024 need privileges)".to_string(),
        ),
        _ => (port_key, error.to_string()),
    };
    ListenError::Bind {
        addr,
        key: config.key_source(key),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_on(port: u16, reuse_port: bool) -> Config {
        let mut config = Config::default();
        config.server.host = "127.0.0.1".into();
        config.server.port = port;
        config.server.reuse_port = reuse_port;
        config
    }

    #[test]
    fn a_port_in_use_names_the_address_and_the_key() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind(&config_on(port, false)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot listen on 127.0.0.1:{port} (server.port): address already in use"
            )),
            "{err}"
        );
        let mut from_env = config_on(port, false);
        from_env.env_overrides.insert("server.port", "RUSHER_PORT");
        let err = bind(&from_env).unwrap_err().to_string();
        assert!(err.contains("(RUSHER_PORT)"), "{err}");
    }

    #[test]
    fn tls_on_a_second_port_binds_both_and_names_its_key() {
        let mut config = config_on(0, false);
        config.server.tls.cert = "cert.pem".into();
        config.server.tls.key = "key.pem".into();
        let same = bind_all(&config).unwrap();
        assert!(same.iter().all(|(_, scheme)| *scheme == Scheme::Tls));
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        config.server.tls.port = Some(port);
        let err = bind_all(&config).unwrap_err().to_string();
        assert!(err.contains("(server.tls.port)"), "{err}");
        drop(taken);
        let both = bind_all(&config).unwrap();
        let schemes: Vec<Scheme> = both.iter().map(|(_, scheme)| *scheme).collect();
        assert_eq!(schemes, [Scheme::Plain, Scheme::Tls]);
    }

    #[test]
    fn with_reuse_port_two_listeners_share_a_port() {
        let first = bind(&config_on(0, true)).unwrap();
        let port = first[0].local_addr().unwrap().port();
        let second = bind(&config_on(port, true)).unwrap();
        assert_eq!(second[0].local_addr().unwrap().port(), port);
    }

    #[test]
    fn an_address_not_of_this_machine_names_the_host() {
        let mut config = config_on(0, false);
        // TEST-NET-1 (RFC 5737): never assigned to a local interface.
        config.server.host = "192.0.2.1".into();
        let err = bind(&config).unwrap_err().to_string();
        assert!(err.contains("(server.host)"), "{err}");
    }
}
