//! The HTTP/1 server under the app: actix-server's workers and listeners,
//! actix-http's HTTP/1 service on each connection (plain or rustls), as
//! actix-web's `HttpServer` builds them, plus one thing it cannot do:
//! handing an upgrade request's connection to [`crate::ws::upgrade`], so
//! that a WebSocket's socket is rusher's (no dispatcher buffers kept for
//! its life, frames written as the session encoded them).
//!
//! Everything else is the same: the app instance per worker, keep-alive,
//! the request-head timeout (408), the 1 s given a closing client,
//! `on_connect` data, TCP_NODELAY, the connection caps, graceful shutdown.
//! The listener's scheme is put in each connection's data ([`Scheme`]);
//! the app's `AppConfig` is the default one (rusher reads nothing from it).

use crate::listen::Scheme;
use crate::ws::upgrade::Upgrade;
use actix_http::body::MessageBody;
use actix_http::{Extensions, HttpService, Request, Response, TlsAcceptorConfig};
use actix_server::{Server, ServerBuilder};
use actix_service::{map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use std::any::Any;
use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// How the server runs (what rusher set on actix-web's `HttpServer`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (each runs an app instance and its connections).
    pub workers: usize,
    /// Open connections per worker; more wait in the backlog.
    pub max_connections_per_worker: usize,
    /// Idle time allowed between two requests on one connection.
    pub keep_alive: Duration,
    /// Time allowed for a new connection's first request head (then 408);
    /// zero turns it off.
    pub request_head_timeout: Duration,
    /// Seconds open connections are given to finish when the server stops.
    pub shutdown_timeout_secs: u64,
    /// With TLS: time allowed for a handshake.
    pub tls_handshake_timeout: Duration,
    /// With TLS: handshakes in progress per worker (the rest wait in the
    /// backlog).
    pub max_tls_handshakes: usize,
}

/// What runs when a connection is accepted, before its first request:
/// it sees the stream (`TcpStream` or rustls' `TlsStream<TcpStream>`) and
/// fills the connection's data, which every request on it can read.
pub type OnConnect = Arc<dyn Fn(&dyn Any, &mut Extensions) + Send + Sync>;

/// One worker's HTTP/1 service for one listener (a macro: the service's
/// type, with the app's, cannot be named in a function's signature).
macro_rules! http_service {
    ($options:expr, $addr:expr, $scheme:expr, $factory:expr, $on_connect:expr, $shutdown:expr) => {{
        let (scheme, on_connect, shutdown) = ($scheme, $on_connect.clone(), $shutdown.clone());
        let mut service = HttpService::build()
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .keep_alive($options.keep_alive)
            .client_request_timeout($options.request_head_timeout)
            // After the last response of a closing connection, the client
            // is given this long to close its side (HttpServer's 1 s; the
            // upgraded socket's linger is the same): closing at once with
            // its input unread would reset the connection and could drop
            // the response in the client's kernel.
            .client_disconnect_timeout(crate::ws::socket::LINGER)
            // A client that closes its side has gone (no HTTP/1.1 client
            // half-closes and waits): end its response at once, so a
            // streamed session (SSE, xhr_streaming) stops when its client
            // leaves, not at its next failed write.
            .h1_allow_half_closed(false)
            // Frames must leave at once, not wait for the client's ACK of
            // the previous ones (Nagle).
            .tcp_nodelay(true)
            .local_addr($addr)
            .on_connect_ext(move |io: &_, data: &mut Extensions| {
                data.insert(scheme);
                on_connect(io as &dyn Any, data);
            });
        if scheme == Scheme::Tls {
            service = service.secure();
        }
        let app = ($factory)()
            .into_factory()
            .map_err(|error| error.into().error_response());
        service
            .upgrade(Upgrade::new(
                ($factory)().into_factory(),
                AppConfig::default(),
            ))
            .finish(map_config(app, |_| AppConfig::default()))
    }};
}

/// A server on `listeners` (each plain or TLS, with `tls` as the rustls
/// config), with `factory` building one app per worker (two: the upgrade
/// service has its own). Signals are left to the caller.
///
/// Errors: a listener actix-server cannot register, or a TLS listener
/// without `tls`.
pub fn server<F, I, S, B>(
    listeners: Vec<(TcpListener, Scheme)>,
    tls: Option<actix_tls::accept::rustls_0_23::reexports::ServerConfig>,
    options: &Options,
    factory: F,
    on_connect: OnConnect,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Future: 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let mut builder = ServerBuilder::default()
        .workers(options.workers)
        .max_concurrent_connections(options.max_connections_per_worker)
        .disable_signals()
        .shutdown_timeout(options.shutdown_timeout_secs);
    if tls.is_some() {
        actix_tls::accept::max_concurrent_tls_connect(options.max_tls_handshakes);
    }
    let shutdown = builder.graceful_shutdown_signal();
    for (listener, scheme) in listeners {
        let addr = listener.local_addr()?;
        let name = format!("rusher-{scheme:?}-{addr}");
        let (options, factory, on_connect) = (options.clone(), factory.clone(), on_connect.clone());
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        builder = match (scheme, tls) {
            (Scheme::Tls, Some(tls)) => builder.listen(name, listener, move || {
                let handshake =
                    TlsAcceptorConfig::default().handshake_timeout(options.tls_handshake_timeout);
                http_service!(options, addr, Scheme::Tls, factory, on_connect, shutdown)
                    .rustls_0_23_with_config(tls.clone(), handshake)
            })?,
            (Scheme::Tls, None) => {
                return Err(std::io::Error::other(format!(
                    "{addr} is a TLS listener but no TLS config was given"
                )))
            }
            (Scheme::Plain, _) => builder.listen(name, listener, move || {
                http_service!(options, addr, Scheme::Plain, factory, on_connect, shutdown).tcp()
            })?,
        };
    }
    Ok(builder.run())
}
