//! The HTTP/1 server under the app: worker threads, each accepting on
//! every listener itself, and actix-http's HTTP/1 service on each
//! connection (plain or rustls), as actix-web's `HttpServer` builds it,
//! plus one thing it cannot do: handing an upgrade request's connection to
//! [`crate::ws::upgrade`], so that a WebSocket's socket is rusher's (no
//! dispatcher buffers kept for its life, frames written as the session
//! encoded them).
//!
//! Workers accept for themselves (the listener is in each worker's own
//! event loop) instead of behind actix-server's accept thread: a new
//! connection no longer wakes a second thread that then wakes a worker
//! (two thread switches per connection, with the worker preempted by the
//! accept thread on a busy core): a worker sees a new connection in the
//! same wake as its sockets' events.
//!
//! Everything else is as actix-web's: the app instance per worker,
//! keep-alive, the request-head timeout (408), the 1 s given a closing
//! client, `on_connect` data, TCP_NODELAY, the connection caps, graceful
//! shutdown. The listener's scheme is put in each connection's data
//! ([`Scheme`]), with a [`Closer`] that ends the connection; the app's
//! `AppConfig` is the default one (rusher reads nothing from it).

use crate::listen::Scheme;
use crate::throttled_log::ThrottledLog;
use crate::ws::upgrade::Upgrade;
use actix_http::body::MessageBody;
use actix_http::{Extensions, HttpService, Protocol, Request, Response, TlsAcceptorConfig};
use actix_service::boxed::{BoxService, BoxServiceFactory};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::AppConfig;
use actix_web::rt::net::{TcpListener, TcpStream};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{watch, Notify};

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

/// How long a worker waits after an accept error other than a failed
/// connection (out of file descriptors, mostly) before accepting again
/// (actix-server's back-off).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// One connection's service, as a listener serves it: the accepted stream
/// and its peer's address (from `accept`, so no `getpeername` is needed).
type ConnService = BoxService<(TcpStream, SocketAddr), (), ()>;
type ConnFactory = BoxServiceFactory<(), (TcpStream, SocketAddr), (), (), ()>;
/// Builds a listener's [`ConnFactory`] on the worker's thread (the factory
/// itself is not `Send`).
type MakeFactory = Box<dyn FnOnce() -> ConnFactory + Send>;

/// One worker's HTTP/1 service for one listener (a macro: the service's
/// type, with the app's, cannot be named in a function's signature).
macro_rules! http_service {
    ($options:expr, $addr:expr, $scheme:expr, $factory:expr, $on_connect:expr, $stopping:expr) => {{
        let (scheme, on_connect, stopping) = ($scheme, $on_connect.clone(), $stopping.clone());
        let mut service = HttpService::build()
            // The server stops gracefully: a kept-alive connection closes
            // after the request it runs.
            .graceful_shutdown_signal(move || stopping.clone().graceful())
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
                if let Some(closer) = take_closer() {
                    data.insert(closer);
                }
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
/// service has its own). Signals are left to the caller: it stops through
/// [`Server::handle`].
///
/// Errors: a listener that cannot be shared with every worker, or a TLS
/// listener without `tls`. A worker that cannot start (its app, or its
/// listener's registration) ends the server with that error.
pub fn server<F, I, S, B>(
    listeners: Vec<(std::net::TcpListener, Scheme)>,
    tls: Option<actix_tls::accept::rustls_0_23::reexports::ServerConfig>,
    options: &Options,
    factory: F,
    on_connect: OnConnect,
) -> io::Result<Server>
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
    if tls.is_some() {
        actix_tls::accept::max_concurrent_tls_connect(options.max_tls_handshakes);
    }
    let workers = options.workers.max(1);
    let shared = Arc::new(Shared::new(workers));
    // Every worker gets its own descriptor of each listener (the socket
    // closes once every worker has dropped its own).
    let mut per_worker: Vec<Vec<(std::net::TcpListener, MakeFactory)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (listener, scheme) in listeners {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        if scheme == Scheme::Tls && tls.is_none() {
            return Err(io::Error::other(format!(
                "{addr} is a TLS listener but no TLS config was given"
            )));
        }
        for worker in &mut per_worker {
            let (options, factory, on_connect) =
                (options.clone(), factory.clone(), on_connect.clone());
            let (stopping, tls) = (Stopping(shared.stop.subscribe()), tls.clone());
            let make: MakeFactory = match (scheme, tls) {
                (Scheme::Tls, Some(tls)) => Box::new(move || {
                    let handshake = TlsAcceptorConfig::default()
                        .handshake_timeout(options.tls_handshake_timeout);
                    let service =
                        http_service!(options, addr, Scheme::Tls, factory, on_connect, stopping)
                            .rustls_0_23_with_config(tls, handshake)
                            .map_err(|_| ());
                    // The acceptor's `call` runs at accept, as actix-server
                    // ran it: it counts the handshake then, so the next
                    // `poll_ready` sees it (`max_handshakes` holds in a burst).
                    actix_service::boxed::factory(actix_service::apply_fn_factory(
                        service,
                        |(io, _): (TcpStream, SocketAddr), service| service.call(io),
                    ))
                }),
                _ => Box::new(move || {
                    let service =
                        http_service!(options, addr, Scheme::Plain, factory, on_connect, stopping);
                    // actix-http's `tcp()`, with the peer's address taken
                    // from `accept` instead of asked for again.
                    actix_service::boxed::factory(
                        fn_service(|(io, peer): (TcpStream, SocketAddr)| async move {
                            let _ = io.set_nodelay(true);
                            Ok::<_, ()>((io, Protocol::Http1, Some(peer)))
                        })
                        .and_then(service.map_err(|_| ())),
                    )
                }),
            };
            worker.push((listener.try_clone()?, make));
        }
    }
    for (index, listeners) in per_worker.into_iter().enumerate() {
        let arbiter = actix_rt::Arbiter::new();
        let worker = Worker {
            index,
            listeners,
            max_connections: options.max_connections_per_worker.max(1),
            shutdown_timeout: Duration::from_secs(options.shutdown_timeout_secs),
            gone: Gone {
                index,
                shared: shared.clone(),
                arbiter: arbiter.handle(),
                started: false,
                listening: true,
            },
        };
        // Not run (the thread gone): the worker is dropped, and its guard
        // counts it out with an error.
        arbiter.spawn_fn(move || {
            actix_rt::spawn(worker.run());
        });
    }
    let stopped = none_left(&shared.running);
    let done = shared.clone();
    Ok(Server {
        handle: ServerHandle(shared),
        done: Box::pin(async move {
            stopped.await;
            let error = done.error.lock().map_or(None, |mut error| error.take());
            error.map_or(Ok(()), Err)
        }),
    })
}

/// A running server: resolves once every worker has stopped (after
/// [`ServerHandle::stop`], or at once with the error of a worker that could
/// not start).
pub struct Server {
    handle: ServerHandle,
    done: Pin<Box<dyn Future<Output = io::Result<()>>>>,
}

impl Server {
    /// Stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
}

impl Future for Server {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.done.as_mut().poll(cx)
    }
}

/// Stops a [`Server`] from any thread.
#[derive(Clone)]
pub struct ServerHandle(Arc<Shared>);

impl ServerHandle {
    /// Stops accepting on every listener (each worker closes its descriptor
    /// of it) and, `graceful`, gives open connections up to the shutdown
    /// timeout to end (kept-alive HTTP connections close after their
    /// request) before the workers drop what is left; resolves once every
    /// worker has stopped. A later call can only make the stop forced (a
    /// graceful stop under way is cut short); each waits.
    pub fn stop(&self, graceful: bool) -> impl Future<Output = ()> {
        self.0.force_or_stop(graceful);
        none_left(&self.0.running)
    }

    /// Resolves once no worker listens any more (after [`Self::stop`]): a
    /// new connection is refused by the kernel, or taken by another
    /// process on the port.
    pub fn listeners_closed(&self) -> impl Future<Output = ()> {
        none_left(&self.0.listening)
    }
}

/// Resolves once `workers` (a count of [`Shared`]) is down to 0.
fn none_left(workers: &watch::Sender<usize>) -> impl Future<Output = ()> {
    let mut workers = workers.subscribe();
    async move {
        // A sender gone with `Shared` leaves no worker to wait for either.
        let _ = workers.wait_for(|workers| *workers == 0).await;
    }
}

/// What the handle and the workers share.
struct Shared {
    /// `Some(graceful)` once the server is to stop.
    stop: watch::Sender<Option<bool>>,
    /// Workers still holding their listeners.
    listening: watch::Sender<usize>,
    /// Workers not finished yet.
    running: watch::Sender<usize>,
    /// The first worker's start-up error.
    error: Mutex<Option<io::Error>>,
}

impl Shared {
    fn new(workers: usize) -> Self {
        Shared {
            stop: watch::Sender::new(None),
            listening: watch::Sender::new(workers),
            running: watch::Sender::new(workers),
            error: Mutex::new(None),
        }
    }

    /// Stops the server (`graceful`), or makes a graceful stop under way
    /// a forced one.
    fn force_or_stop(&self, graceful: bool) {
        self.stop.send_if_modified(|stop| {
            let changed = match *stop {
                None => true,
                Some(was) => was && !graceful,
            };
            if changed {
                *stop = Some(graceful);
            }
            changed
        });
    }

    /// A worker could not start or failed: the server stops, with `error`.
    fn fail(&self, error: io::Error) {
        tracing::error!(%error, "a server worker failed; the server stops");
        if let Ok(mut first) = self.error.lock() {
            first.get_or_insert(error);
        }
        self.force_or_stop(false);
    }
}

/// The stop as the HTTP/1 dispatchers see it.
#[derive(Clone)]
struct Stopping(watch::Receiver<Option<bool>>);

impl Stopping {
    /// Resolves when the server stops gracefully (never otherwise: a
    /// forced stop drops the connections).
    async fn graceful(mut self) {
        if self.0.wait_for(|stop| *stop == Some(true)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One worker thread's part of the server.
struct Worker {
    index: usize,
    listeners: Vec<(std::net::TcpListener, MakeFactory)>,
    max_connections: usize,
    shutdown_timeout: Duration,
    /// Counts the worker out however it ends: a panic of the app's
    /// factory, or a thread that never ran it, included (the server's stop
    /// never waits for it in vain).
    gone: Gone,
}

impl Worker {
    /// Serves until the server stops, then ends the worker's thread.
    async fn run(self) {
        let Worker {
            index,
            listeners,
            max_connections,
            shutdown_timeout,
            mut gone,
        } = self;
        gone.started = true;
        let shared = gone.shared.clone();
        let mut stop = shared.stop.subscribe();
        let slots = Rc::new(Slots::new(max_connections));
        let mut served = Vec::new();
        for (listener, make) in listeners {
            let service = match make().new_service(()).await {
                Ok(service) => Rc::new(service),
                Err(()) => {
                    shared.fail(io::Error::other(format!(
                        "worker {index}: the app could not start"
                    )));
                    break;
                }
            };
            match TcpListener::from_std(listener) {
                Ok(listener) => served.push((listener, service)),
                Err(error) => {
                    shared.fail(error);
                    break;
                }
            }
        }
        let mut accepting = actix_rt::spawn(accept(served, slots.clone()));
        // The sender lives as long as the server's handle; gone, the
        // server is over too.
        let stopped = tokio::select! {
            stopped = stop.wait_for(Option::is_some) => stopped.map(|stop| *stop).ok().flatten(),
            ended = &mut accepting => {
                // It runs until aborted: it panicked.
                shared.fail(io::Error::other(format!("worker {index}: accepting failed: {ended:?}")));
                None
            }
        };
        accepting.abort();
        let _ = accepting.await;
        gone.stopped_listening();
        if stopped == Some(true) && slots.open() > 0 {
            tracing::info!(
                worker = index,
                connections = slots.open(),
                "stopping: waiting for open connections"
            );
            // A forced stop meanwhile cuts the wait short.
            tokio::select! {
                _ = tokio::time::timeout(shutdown_timeout, slots.drained()) => {}
                _ = stop.wait_for(|stop| *stop == Some(false)) => {}
            }
        }
    }
}

/// Counts a worker out of [`Shared`] when dropped, and ends its thread's
/// event loop (connections still open are dropped with it, after the
/// worker was counted out).
struct Gone {
    index: usize,
    shared: Arc<Shared>,
    arbiter: actix_rt::ArbiterHandle,
    /// The worker ran on its thread.
    started: bool,
    listening: bool,
}

impl Gone {
    fn stopped_listening(&mut self) {
        if std::mem::take(&mut self.listening) {
            self.shared.listening.send_modify(|workers| *workers -= 1);
        }
    }
}

impl Drop for Gone {
    fn drop(&mut self) {
        let index = self.index;
        if !self.started {
            let error = format!("worker {index}: its thread did not start");
            self.shared.fail(io::Error::other(error));
        } else if std::thread::panicking() {
            let error = format!("worker {index} panicked");
            self.shared.fail(io::Error::other(error));
        }
        self.stopped_listening();
        self.shared.running.send_modify(|workers| *workers -= 1);
        self.arbiter.stop();
    }
}

/// Accepts connections on every listener of a worker (`served`: each with
/// its service) while the worker has room for one more and the listener's
/// service is ready (a TLS listener: its handshakes in progress under
/// `max_handshakes`), each connection served in a task of its own; the
/// listeners take turns. Runs until aborted.
///
/// One task for all listeners, not one each: the room is checked right
/// before each accept, and the TLS acceptors' handshake count (one per
/// thread) wakes only the last task that waited on it.
async fn accept(served: Vec<(TcpListener, Rc<ConnService>)>, slots: Rc<Slots>) {
    let log = ThrottledLog::new(10_000);
    let mut next = 0;
    loop {
        slots.available().await;
        let (turn, accepted) = poll_fn(|cx| {
            for offset in 0..served.len() {
                let turn = (next + offset) % served.len();
                let (listener, service) = &served[turn];
                // An error here (no service of rusher's gives one) is left
                // to the connection's call.
                if service.poll_ready(cx).is_pending() {
                    continue;
                }
                if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                    return Poll::Ready((turn, accepted));
                }
            }
            Poll::Pending
        })
        .await;
        next = turn + 1;
        match accepted {
            Ok(accepted) => {
                let service = &served[turn].1;
                let offered = Rc::new(Cell::new(None));
                let task = actix_rt::spawn(Connection {
                    call: service.call(accepted),
                    offered: Some(offered.clone()),
                    _slot: slots.take(),
                });
                offered.set(Some(Closer(task.abort_handle())));
            }
            // The client gave up before it was accepted: nothing to do.
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                if let Some(suppressed) = log.ready() {
                    let listener = served[turn].0.local_addr().ok();
                    tracing::error!(%error, ?listener, suppressed, "cannot accept a connection; retrying in {ACCEPT_ERROR_BACKOFF:?}");
                }
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
        // Every idle worker is woken for a new connection (one listening
        // socket): yielding after each one lets the others, and this
        // worker's new connections, run between accepts, so a burst is
        // spread over the workers free to take it instead of taken whole
        // by the first awake.
        tokio::task::yield_now().await;
    }
}

/// Closes one accepted connection from outside it: its task ends, which
/// drops the connection (and closes its socket) wherever it was, in its
/// request head, its handler or its response. The connection's data holds
/// it (`HttpRequest::conn_data::<Closer>`), put there before `on_connect`
/// runs; it costs no system call (the alternative, a duplicate of the
/// socket's descriptor to shut it down through, costs two per connection).
#[derive(Clone, Debug)]
pub struct Closer(tokio::task::AbortHandle);

impl Closer {
    /// Ends the connection (at once if its worker is idle, else as soon
    /// as the worker gets to it); nothing happens once it has ended.
    pub fn close(&self) {
        self.0.abort();
    }

    /// A closer ending `task` (tests).
    #[cfg(test)]
    pub fn of<T>(task: &tokio::task::JoinHandle<T>) -> Self {
        Closer(task.abort_handle())
    }
}

thread_local! {
    /// The [`Closer`] of the connection whose task is being polled on this
    /// thread, until its `on_connect` takes it (see [`Connection`]).
    static SETTING_UP: Cell<Option<Closer>> = const { Cell::new(None) };
}

/// The [`Closer`] of the connection being set up on this thread, once (its
/// `on_connect` takes it; `None` anywhere else).
fn take_closer() -> Option<Closer> {
    SETTING_UP.take()
}

/// One accepted connection's task: its service's future, its place in the
/// worker's count, and its [`Closer`], offered to `on_connect` (through
/// [`SETTING_UP`]) during each poll until taken. `on_connect` runs inside a
/// poll of the service's future (after the TLS handshake on a TLS
/// listener), and actix-http passes it nothing of the task's own.
struct Connection {
    call: <ConnService as Service<(TcpStream, SocketAddr)>>::Future,
    /// Holds the closer between polls; `None` once taken.
    offered: Option<Rc<Cell<Option<Closer>>>>,
    _slot: Slot,
}

impl Future for Connection {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(offered) = &this.offered else {
            return this.call.as_mut().poll(cx).map(|_| ());
        };
        SETTING_UP.set(offered.take());
        let poll = this.call.as_mut().poll(cx);
        match SETTING_UP.take() {
            // Not set up yet (a TLS handshake under way): kept for later.
            Some(closer) => offered.set(Some(closer)),
            None => this.offered = None,
        }
        poll.map(|_| ())
    }
}

/// An error of one connection, not of the listener (the accept-loop rule of
/// actix-server and hyper: go on at once).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A worker's open connections, capped at `max_connections_per_worker`.
struct Slots {
    open: Cell<usize>,
    max: usize,
    /// Woken when a connection ends.
    freed: Notify,
}

impl Slots {
    fn new(max: usize) -> Self {
        Slots {
            open: Cell::new(0),
            max,
            freed: Notify::new(),
        }
    }

    fn open(&self) -> usize {
        self.open.get()
    }

    /// Waits until fewer than `max` connections are open.
    async fn available(&self) {
        self.wait_until(|open| open < self.max).await;
    }

    /// Waits until no connection is open.
    async fn drained(&self) {
        self.wait_until(|open| open == 0).await;
    }

    async fn wait_until(&self, done: impl Fn(usize) -> bool) {
        loop {
            // Registered before the check: a release in between is seen.
            let freed = self.freed.notified();
            if done(self.open.get()) {
                return;
            }
            freed.await;
        }
    }

    fn take(self: &Rc<Self>) -> Slot {
        self.open.set(self.open.get() + 1);
        Slot(self.clone())
    }
}

/// One open connection's place in its worker's [`Slots`].
struct Slot(Rc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.0;
        slots.open.set(slots.open.get().saturating_sub(1));
        slots.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{web, App, HttpResponse};
    use std::io::{Read, Write};

    fn options(workers: usize, max_connections_per_worker: usize) -> Options {
        Options {
            workers,
            max_connections_per_worker,
            keep_alive: Duration::from_secs(5),
            request_head_timeout: Duration::from_secs(5),
            shutdown_timeout_secs: 1,
            tls_handshake_timeout: Duration::from_secs(1),
            max_tls_handshakes: 16,
        }
    }

    /// A plain server answering `GET /` with "ok", on a free port.
    fn start(options: &Options) -> (Server, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let factory = || {
            App::new().route(
                "/",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
        };
        let on_connect: OnConnect = Arc::new(|_, _| {});
        let server = server(
            vec![(listener, Scheme::Plain)],
            None,
            options,
            factory,
            on_connect,
        )
        .unwrap();
        (server, addr)
    }

    /// Sends one keep-alive `GET /` on `stream` and reads its answer
    /// (`None`: nothing within `wait`).
    fn get(stream: &mut std::net::TcpStream, wait: Duration) -> Option<String> {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_answer(stream, wait)
    }

    /// Reads an answer ending in "ok" from `stream` (`None`: not within
    /// `wait`, or the connection closed first).
    fn read_answer(stream: &mut std::net::TcpStream, wait: Duration) -> Option<String> {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !answer.ends_with(b"ok") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
        Some(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Runs blocking client code off the worker threads' way.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[actix_rt::test]
    async fn two_workers_serve_and_a_stop_closes_the_listener() {
        let (server, addr) = start(&options(2, 100));
        let handle = server.handle();
        let served = actix_rt::spawn(server);
        let answers = blocking(move || {
            (0..8)
                .map(|_| {
                    let mut stream = std::net::TcpStream::connect(addr).unwrap();
                    get(&mut stream, Duration::from_secs(5))
                })
                .collect::<Vec<_>>()
        })
        .await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 200"))),
            "{answers:?}"
        );
        let stopped = handle.stop(true);
        handle.listeners_closed().await;
        let refused = blocking(move || std::net::TcpStream::connect(addr)).await;
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionRefused)
        );
        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("stopped");
        let result = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("server ended");
        assert!(result.unwrap().is_ok());
    }

    #[actix_rt::test]
    async fn a_full_worker_takes_the_next_connection_once_one_ends() {
        let (server, addr) = start(&options(1, 1));
        let handle = server.handle();
        actix_rt::spawn(server);
        let (first, waited, second) = blocking(move || {
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            let first_answer = get(&mut first, Duration::from_secs(5));
            // The kernel completes the handshake (backlog), but the worker
            // does not accept it while its one connection is open.
            let mut second = std::net::TcpStream::connect(addr).unwrap();
            let waited = get(&mut second, Duration::from_millis(300));
            drop(first);
            let second_answer = read_answer(&mut second, Duration::from_secs(5));
            (first_answer, waited, second_answer)
        })
        .await;
        assert!(first.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
        assert_eq!(waited, None, "served over the cap");
        assert!(
            second
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "{second:?}"
        );
        handle.stop(false).await;
    }

    /// A server whose `GET /` answers "ok" after `delay`, and one client's
    /// request to it, returned once the handler runs.
    async fn slow_request(
        options: &Options,
        delay: Duration,
    ) -> (ServerHandle, actix_rt::task::JoinHandle<Option<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (running, mut started) = tokio::sync::mpsc::channel::<()>(1);
        let factory = move || {
            let running = running.clone();
            App::new().route(
                "/",
                web::get().to(move || {
                    let running = running.clone();
                    async move {
                        let _ = running.send(()).await;
                        tokio::time::sleep(delay).await;
                        HttpResponse::Ok().body("ok")
                    }
                }),
            )
        };
        let on_connect: OnConnect = Arc::new(|_, _| {});
        let listeners = vec![(listener, Scheme::Plain)];
        let server = server(listeners, None, options, factory, on_connect).unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        let client = actix_rt::spawn(blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            get(&mut stream, Duration::from_secs(10))
        }));
        started.recv().await.expect("the request runs");
        (handle, client)
    }

    #[actix_rt::test]
    async fn a_graceful_stop_lets_an_open_request_finish() {
        let (handle, client) = slow_request(&options(1, 10), Duration::from_millis(300)).await;
        handle.stop(true).await;
        let answer = client.await.unwrap();
        assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    }

    #[actix_rt::test]
    async fn a_forced_stop_cuts_a_graceful_one_short() {
        // A request that would hold a graceful stop for its 30 s.
        let options = Options {
            shutdown_timeout_secs: 30,
            ..options(1, 10)
        };
        let (handle, client) = slow_request(&options, Duration::from_secs(60)).await;
        let graceful = actix_rt::spawn(handle.stop(true));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !graceful.is_finished(),
            "a graceful stop waits for the request"
        );
        tokio::time::timeout(Duration::from_secs(5), handle.stop(false))
            .await
            .expect("the forced stop ends it");
        assert_eq!(client.await.unwrap(), None, "the request was cut");
    }

    #[actix_rt::test]
    async fn a_connection_can_be_closed_through_the_closer_in_its_data() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The handler ends its own connection before answering.
        let factory = || {
            App::new().route(
                "/",
                web::get().to(|req: actix_web::HttpRequest| async move {
                    let closer = req.conn_data::<Closer>().cloned();
                    let found = closer.is_some();
                    if let Some(closer) = closer {
                        closer.close();
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    HttpResponse::Ok().body(if found { "not closed" } else { "no closer" })
                }),
            )
        };
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        let on_connect: OnConnect = Arc::new(move |_, data| {
            if data.get::<Closer>().is_some() {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let server = server(
            vec![(listener, Scheme::Plain)],
            None,
            &options(1, 10),
            factory,
            on_connect,
        )
        .unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        let (answer, took) = blocking(move || {
            let began = std::time::Instant::now();
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            (answer, began.elapsed())
        })
        .await;
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
        assert!(
            took < Duration::from_secs(2),
            "closed at once, not by a timeout: {took:?}"
        );
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "on_connect saw the closer"
        );
        handle.stop(false).await;
    }

    /// Takes any server certificate: these tests time handshakes, and the
    /// test certificate (`fixtures/tls`, self-signed) is a CA, which
    /// webpki refuses as a server's own.
    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn tls_client() -> Arc<rustls::ClientConfig> {
        let provider = crate::tls::provider();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(config)
    }

    /// How long a TLS handshake with `addr` took from the connect (an error
    /// if it failed or took over 5 s).
    fn handshake(addr: SocketAddr, client: Arc<rustls::ClientConfig>) -> Result<Duration, String> {
        let began = std::time::Instant::now();
        let mut socket = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let name = "localhost".try_into().unwrap();
        let mut tls = rustls::ClientConnection::new(client, name).map_err(|e| e.to_string())?;
        while tls.is_handshaking() {
            tls.complete_io(&mut socket).map_err(|e| e.to_string())?;
        }
        Ok(began.elapsed())
    }

    #[actix_rt::test]
    async fn the_tls_handshake_cap_holds_in_a_burst_and_on_every_listener() {
        let settings = crate::config::TlsSettings {
            cert: "fixtures/tls/cert.pem".into(),
            key: "fixtures/tls/key.pem".into(),
            ..Default::default()
        };
        let resolver = crate::tls::reload::CertResolver::new(crate::tls::load(&settings).unwrap());
        let tls = crate::tls::server_config(Arc::new(resolver)).unwrap();
        let (first, second) = (
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let (first_addr, second_addr) = (first.local_addr().unwrap(), second.local_addr().unwrap());
        // Two clients that never start their handshake wait in the first
        // listener's backlog before the server starts: one burst.
        let silent = [
            std::net::TcpStream::connect(first_addr).unwrap(),
            std::net::TcpStream::connect(first_addr).unwrap(),
        ];
        let options = Options {
            tls_handshake_timeout: Duration::from_millis(400),
            max_tls_handshakes: 1,
            ..options(1, 100)
        };
        let closers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = closers.clone();
        let on_connect: OnConnect = Arc::new(move |_, data| {
            if data.get::<Closer>().is_some() {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let listeners = vec![(first, Scheme::Tls), (second, Scheme::Tls)];
        let server = server(listeners, Some(tls), &options, App::new, on_connect).unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        let client = tls_client();
        let (on_first, on_second) = blocking(move || {
            let other = client.clone();
            let on_second = std::thread::spawn(move || handshake(second_addr, other));
            let on_first = handshake(first_addr, client);
            (on_first, on_second.join().unwrap())
        })
        .await;
        drop(silent);
        // One handshake at a time: the first silent client's (400 ms), then
        // the second listener's, then the second silent client's (400 ms),
        // then the first listener's next one.
        let on_second = on_second.unwrap();
        let on_first = on_first.unwrap();
        assert!(
            on_second >= Duration::from_millis(350),
            "second listener: {on_second:?}"
        );
        assert!(
            on_first >= Duration::from_millis(750),
            "first listener, behind both silent ones: {on_first:?}"
        );
        // The client is done once it sent its last handshake message; the
        // server's `on_connect` runs once it has read it.
        let seen = || closers.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..100 {
            if seen() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen(), 2, "a closer for each TLS connection");
        handle.stop(false).await;
    }

    #[test]
    fn a_tls_listener_needs_a_tls_config() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let factory = App::new;
        let on_connect: OnConnect = Arc::new(|_, _| {});
        let result = server(
            vec![(listener, Scheme::Tls)],
            None,
            &options(1, 1),
            factory,
            on_connect,
        );
        assert!(result
            .err()
            .is_some_and(|e| e.to_string().contains("no TLS config")));
    }
}
