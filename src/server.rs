//! The running server: builds the hub from the config, serves HTTP and
//! WebSocket on one port (over TLS with `[server.tls]`, or TLS on a second
//! port beside the plain one), and shuts down gracefully on SIGINT/SIGTERM.
//!
//! Shutdown order, so that a restart on the same port costs clients about
//! nothing: the listening socket is closed first (new connections are then
//! refused at TCP level and a new process can bind the port at once), then
//! a single instance waits briefly for that new process (see `handover`),
//! then every socket gets 4200, then pending webhooks and store writes are sent
//! and the node leaves the cluster, all within `server.shutdown_grace`.

use crate::abuse::half_open::HalfOpen;
use crate::abuse::next_head::{NextHead, Watched};
use crate::abuse::{ConnectionRate, HalfOpenGate};
use crate::adapter::local::LocalAdapter;
use crate::adapter::redis::positions::RedisPositions;
use crate::adapter::redis::xhr_relay::RedisXhrRelay;
use crate::adapter::redis::RedisAdapter;
use crate::adapter::Adapter;
use crate::apps::admin::AppsAdmin;
use crate::apps::store::{AppStore, MemoryAppStore, MongoAppStore};
use crate::apps::sync::AppsSync;
use crate::apps::AppRegistry;
use crate::config::{AdapterKind, AppsBackend, Config, StoreBackend};
use crate::delivery::store::ParkedStore;
use crate::handover;
use crate::http::sessions::HttpSessions;
use crate::http::{self, HttpSettings};
use crate::hub::history_store::HistoryStore;
use crate::hub::invalidation::Invalidations;
use crate::hub::node::Node;
use crate::hub::persistence::Persistence;
use crate::hub::recovery_store::PositionStore;
use crate::hub::retention::LongHistory;
use crate::hub::Hub;
use crate::listen::{self, Scheme};
use crate::metrics::Metrics;
use crate::notify::email::EmailSender;
use crate::notify::push::WebPushSender;
use crate::notify::web::WebSender;
use crate::notify::{Notifier, Senders};
use crate::protocol::error::ErrorCode;
use crate::pushi_api::{self, PushiApi};
use crate::serve;
use crate::session::{SessionSettings, TransportSettings};
use crate::sse;
use crate::store::archive::HistoryArchive;
use crate::store::memory::MemoryStore;
use crate::store::mongo::MongoStore;
use crate::store::{Retention, Store};
use crate::tls::{self, reload::Reloader, CertResolver};
use crate::usage::ClusterUsage;
use crate::webhooks::sender::RetryPolicy;
use crate::webhooks::Webhooks;
use crate::ws;
use crate::xhr;
use crate::xhr::relay::{NoRelay, XhrRelay};
use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::{web, App};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A configured server, ready to run.
pub struct Server {
    config: Config,
}

impl Server {
    /// A server for a validated `config`.
    pub fn new(config: Config) -> Self {
        Server { config }
    }

    /// Builds the hub: apps, this node's state, the adapter, metrics, webhooks.
    /// Must run inside the runtime, which the webhook dispatcher joins.
    /// Also gives the relay of HTTP sessions other nodes hold.
    async fn build_hub(&self) -> std::io::Result<(Arc<Hub>, Arc<AppsSync>, Arc<dyn XhrRelay>)> {
        let metrics = Metrics::new();
        let (apps, sync) = self.start_apps(&metrics).await?;
        let node = Arc::new(Node::new(&apps));
        // Changes to what nodes cache from the store (follows, notification
        // registrations, pushi logouts), shared through Redis when clustered.
        let invalidations = Arc::new(Invalidations::default());
        // Apps may come and go at runtime (admin API, apps store): the
        // webhook routes then follow the registry.
        let webhooks = Webhooks::start(
            &apps,
            &self.config.server.webhooks,
            metrics.clone(),
            self.apps_dynamic(),
        );
        // Histories, recovery positions and acknowledged delivery's parked
        // messages (apps with store = "redis") live where the deployment
        // shares state: this node's memory alone, or Redis every node reads.
        let mut redis_adapter = None;
        let mut usage = None;
        type Stores = (
            Arc<dyn Adapter>,
            HistoryStore,
            PositionStore,
            Option<Arc<dyn ParkedStore>>,
        );
        let (adapter, history_store, position_store, parked_store): Stores =
            match self.config.adapter {
                AdapterKind::Local => (
                    Arc::new(LocalAdapter::new(node.clone())),
                    HistoryStore::Memory,
                    PositionStore::Local,
                    None,
                ),
                AdapterKind::Redis => {
                    let redis = RedisAdapter::start(
                        node.clone(),
                        &self.config.redis,
                        webhooks.clone(),
                        metrics.clone(),
                    )
                    .map_err(|e| std::io::Error::other(format!("invalid redis.url: {e}")))?;
                    let positions = Arc::new(RedisPositions::new(redis.clone()));
                    // App and abuse limits count the whole deployment.
                    let shared = Arc::new(ClusterUsage::new(
                        apps.clone(),
                        Duration::from_secs(self.config.redis.node_timeout_secs),
                        metrics.clone(),
                    ));
                    redis.share_usage(shared.clone());
                    usage = Some(shared);
                    redis.share_invalidations(invalidations.clone());
                    redis_adapter = Some(redis.clone());
                    (
                        redis.clone(),
                        HistoryStore::Shared(redis.clone()),
                        PositionStore::Shared(positions),
                        Some(redis),
                    )
                }
            };
        let xhr_relay: Arc<dyn XhrRelay> = match &redis_adapter {
            Some(redis) => Arc::new(RedisXhrRelay(redis.clone())),
            None => Arc::new(NoRelay),
        };
        let persistence = self
            .start_persistence(&apps, &metrics, &invalidations)
            .await?;
        let timeout = Duration::from_millis(self.config.store.timeout_ms);
        let long_history = LongHistory::new(persistence.clone(), timeout);
        if let (Some(redis), Some(_)) = (&redis_adapter, &long_history) {
            // Redis gives the serials; the publishing node archives.
            redis.keep_history_in(persistence.clone());
        }
        if let (Some(long), None) = (&long_history, &redis_adapter) {
            for app in apps.all().filter(|app| app.history_retention > 0) {
                if let Some(state) = node.app(&app.id) {
                    long.raise_floor(&app, &state.history).await.map_err(|e| {
                        std::io::Error::other(format!(
                            "cannot read the history serials of app `{}` from MongoDB (store.url): {e}",
                            app.id
                        ))
                    })?;
                }
            }
        }
        let notifier = self
            .start_notifier(&apps, &persistence, &adapter, &metrics, &invalidations)
            .await?;
        let hub = Hub::new(
            apps,
            node,
            adapter,
            metrics,
            webhooks,
            Some(persistence),
            self.config.server.outgoing_queue,
        )
        .with_notifier(notifier)
        .with_console_queue(self.config.console.watcher_queue)
        .with_invalidations(invalidations)
        .with_history_store(history_store)
        .with_position_store(position_store)
        .with_long_history(long_history);
        let hub = match usage {
            Some(usage) => hub.with_usage(usage),
            None => hub,
        };
        let hub = Arc::new(match parked_store {
            Some(store) => hub.with_parked_store(store),
            None => hub,
        });
        if let Some(redis) = &redis_adapter {
            // Even with the console off here: consoles of other nodes
            // still see this node's events.
            let lease = Duration::from_millis(self.config.console.lease_ms);
            redis.share_console(hub.console().clone(), lease);
        }
        Ok((hub, sync, xhr_relay))
    }

    /// Whether apps can be added or changed at runtime: an admin token is
    /// set, or apps come from MongoDB.
    fn apps_dynamic(&self) -> bool {
        self.config.admin.token.is_some() || self.config.apps_store.backend == AppsBackend::Mongodb
    }

    /// The registry (config apps, then the stored ones, read once before
    /// serving) and its sync with the apps store. A MongoDB apps store
    /// that cannot be read at start stops the start, said clearly.
    async fn start_apps(
        &self,
        metrics: &Metrics,
    ) -> std::io::Result<(Arc<AppRegistry>, Arc<AppsSync>)> {
        let apps = Arc::new(AppRegistry::new(self.config.apps.clone()));
        let settings = &self.config.apps_store;
        let (store, mongo): (Arc<dyn AppStore>, Option<Arc<MongoAppStore>>) = match settings.backend
        {
            AppsBackend::Config => (Arc::new(MemoryAppStore::default()), None),
            AppsBackend::Mongodb => {
                let url = settings.url.as_deref().unwrap_or(&self.config.store.url);
                let database = settings
                    .database
                    .as_deref()
                    .unwrap_or(&self.config.store.database);
                let timeout = Duration::from_millis(self.config.store.timeout_ms);
                let mongo = MongoAppStore::connect(url, database, &settings.collection, timeout)
                    .await
                    .map_err(|e| {
                        std::io::Error::other(format!(
                            "cannot use MongoDB at {url} (apps_store.url) for the apps store: {e}"
                        ))
                    })?;
                let mongo = Arc::new(mongo);
                (mongo.clone(), Some(mongo))
            }
        };
        let sync = Arc::new(AppsSync::new(
            store,
            apps.clone(),
            Arc::new(self.config.clone()),
            metrics.clone(),
        ));
        sync.reload()
            .await
            .map_err(|e| std::io::Error::other(format!("cannot read the apps store: {e}")))?;
        sync.start(mongo);
        Ok((apps, sync))
    }

    /// Starts the notification handlers over the store's registrations:
    /// HTTP callbacks always, e-mail when `[notifications.smtp] host` is set.
    async fn start_notifier(
        &self,
        apps: &Arc<AppRegistry>,
        persistence: &Arc<Persistence>,
        adapter: &Arc<dyn Adapter>,
        metrics: &Metrics,
        invalidations: &Arc<Invalidations>,
    ) -> std::io::Result<Arc<Notifier>> {
        let settings = &self.config.notifications;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let policy = RetryPolicy {
            max_attempts: settings.max_attempts,
            backoff: Duration::from_millis(settings.backoff_ms),
        };
        let web = WebSender::new(timeout, policy).map_err(std::io::Error::other)?;
        let mut senders = Senders {
            web: Some(Arc::new(web)),
            ..Senders::default()
        };
        let web_push = WebPushSender::new(policy).map_err(std::io::Error::other)?;
        senders.web_push = Some(Arc::new(web_push));
        if !settings.smtp.host.is_empty() {
            let email =
                EmailSender::new(&settings.smtp, timeout, policy).map_err(std::io::Error::other)?;
            senders.email = Some(Arc::new(email));
        }
        Notifier::start(
            persistence.store().clone(),
            apps.clone(),
            Some(persistence.clone()),
            adapter.clone(),
            senders,
            settings.clone(),
            metrics.clone(),
            invalidations.clone(),
        )
        .await
        .map_err(|e| std::io::Error::other(format!("cannot load notification registrations: {e}")))
    }

    /// Opens the configured store and loads the follow index; a store that
    /// cannot be reached at start is a configuration error, said clearly.
    async fn start_persistence(
        &self,
        apps: &Arc<AppRegistry>,
        metrics: &Metrics,
        invalidations: &Arc<Invalidations>,
    ) -> std::io::Result<Arc<Persistence>> {
        let settings = &self.config.store;
        let retention = Retention {
            ttl_ms: settings.message_ttl_secs * 1000,
            max_per_channel: settings.max_messages_per_channel,
        };
        let mut archive: Option<Arc<dyn HistoryArchive>> = None;
        let store: Arc<dyn Store> = match settings.backend {
            StoreBackend::Memory => Arc::new(MemoryStore::new(retention)),
            StoreBackend::Mongodb => {
                let timeout = Duration::from_millis(settings.timeout_ms);
                let store =
                    MongoStore::connect(&settings.url, &settings.database, retention, timeout)
                        .await
                        .map_err(|e| {
                            std::io::Error::other(format!(
                                "cannot use MongoDB at {} (store.url): {e}",
                                settings.url
                            ))
                        })?;
                tracing::info!(database = %settings.database, "MongoDB store ready");
                if apps.all().any(|app| app.history_retention > 0) || self.apps_dynamic() {
                    let history = store.history().await.map_err(|e| {
                        std::io::Error::other(format!(
                            "cannot use MongoDB at {} (store.url) for history_retention: {e}",
                            settings.url
                        ))
                    })?;
                    archive = Some(Arc::new(history));
                }
                Arc::new(store)
            }
        };
        Persistence::start(
            store,
            archive,
            apps,
            settings.clone(),
            metrics.clone(),
            invalidations.clone(),
        )
        .await
        .map_err(|e| std::io::Error::other(format!("cannot load offline subscriptions: {e}")))
    }

    /// Serves until SIGINT or SIGTERM, then closes every socket with 4200.
    ///
    /// Errors: the listening address (a [`crate::listen::ListenError`],
    /// naming the key), the adapter or the store at start, all as
    /// `io::Error` whose message is meant for the user.
    pub async fn run(self) -> std::io::Result<()> {
        // Bind before connecting to Redis or MongoDB: a port in use is the
        // most common startup error and should not wait behind them.
        let listeners = listen::bind_all(&self.config).map_err(std::io::Error::other)?;
        let probe_addrs = handover::probe_addrs(listeners.iter().map(|(listener, _)| listener));
        // What clients connect to, as a URL: the bound address (the real
        // port when `server.port = 0`, `[::1]` for IPv6), TLS's when on.
        let (scheme, authority) = listeners
            .iter()
            .find(|(_, scheme)| *scheme == Scheme::Tls)
            .or(listeners.first())
            .and_then(|(listener, scheme)| Some((*scheme, listener.local_addr().ok()?)))
            .map_or_else(
                || {
                    (
                        Scheme::Plain,
                        format!("{}:{}", self.config.server.host, self.config.server.port),
                    )
                },
                |(scheme, addr)| (scheme, addr.to_string()),
            );
        // The certificate is loaded again (validation read it too): the
        // files may have changed since, and the resolver needs it.
        let tls_settings = &self.config.server.tls;
        let tls = if tls_settings.enabled() {
            let certified = tls::load(tls_settings).map_err(|error| {
                std::io::Error::other(format!(
                    "invalid config value `{}`: {error}",
                    self.config.key_source(error.file.key())
                ))
            })?;
            let resolver = Arc::new(CertResolver::new(certified));
            let rustls_config = tls::server_config(resolver.clone())
                .map_err(|e| std::io::Error::other(format!("cannot set up TLS: {e}")))?;
            Some((resolver, rustls_config))
        } else {
            None
        };
        let (hub, apps_sync, xhr_relay) = self.build_hub().await?;
        let server_config = self.config.server.clone();
        let session_settings = SessionSettings {
            activity_timeout: Duration::from_secs(server_config.activity_timeout),
            pong_timeout: Duration::from_secs(server_config.pong_timeout),
            max_frame_bytes: server_config.max_frame_bytes,
            subscribe_wait: server_config.subscribe_wait(),
        };
        let transport_settings =
            TransportSettings::new(&self.config.transports, server_config.activity_timeout);
        let http_settings = HttpSettings {
            max_request_bytes: server_config.max_request_bytes,
            metrics: server_config.metrics,
        };
        // One cap for the whole node, shared by every worker.
        let http_sessions = HttpSessions::new(transport_settings.max_sessions);
        let xhr_registry = Arc::new(xhr::registry::Registry::default());
        xhr_relay.serve(Arc::new(xhr::relay::Host::new(
            xhr_registry.clone(),
            hub.outgoing_queue(),
            session_settings.activity_timeout,
            transport_settings.heartbeat,
            transport_settings.long_poll_timeout,
        )));
        // Abuse limits (see abuse/): connection rate at each transport's
        // connection start, half-open connections at accept.
        let limits = &self.config.limits;
        let proxies = limits.trusted_proxies().map_err(std::io::Error::other)?;
        let connection_rate = Arc::new(
            ConnectionRate::new(limits, proxies.clone(), hub.apps(), hub.metrics().clone())
                .with_usage(hub.usage().cloned()),
        );
        if let Some(usage) = hub.usage() {
            usage.attach_connection_rate(&connection_rate);
        }
        let half_open = HalfOpenGate::new(
            limits.max_half_open,
            limits.max_half_open_per_ip,
            proxies,
            limits.request_header_timeout(),
            hub.metrics().clone(),
        );
        let header_timeout = limits.request_header_timeout();
        let admin_state = Arc::new(http::admin::AdminState::new(
            AppsAdmin::new(apps_sync.clone()),
            self.config.admin.token.clone(),
            hub.metrics().clone(),
        ));
        let apps_rate = connection_rate.clone();
        let pushi_api = web::Data::new(
            PushiApi::new(self.config.pushi_api.clone())
                .with_apps(AppsAdmin::new(apps_sync.clone()))
                .with_invalidations(hub.invalidations()),
        );
        let console = self.config.console.enabled.then(|| {
            web::Data::new(Arc::new(crate::console::ConsoleState::new(
                &self.config.console,
                self.config.admin.token.clone(),
            )))
        });
        if let Some(console) = &console {
            tokio::spawn(crate::console::history::sample(
                console.history.clone(),
                hub.clone(),
            ));
        }
        let watch_metrics = hub.metrics().clone();
        let app_hub = hub.clone();
        let workers = match server_config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let factory = move || {
            let hub = app_hub.clone();
            // The one metric the middleware records.
            let http_requests = hub.metrics().http_requests.clone();
            App::new()
                .app_data(web::Data::new(hub.clone()))
                .app_data(web::Data::new(admin_state.clone()))
                .app_data(web::Data::new(session_settings))
                .app_data(web::Data::new(http_settings))
                .app_data(web::Data::new(transport_settings))
                .app_data(web::Data::new(xhr::XhrState {
                    registry: xhr_registry.clone(),
                    cap: http_sessions.clone(),
                    rate: connection_rate.clone(),
                    relay: xhr_relay.clone(),
                }))
                .app_data(web::Data::new(connection_rate.clone()))
                .app_data(web::Data::new(http_sessions.clone()))
                .wrap_fn(move |req, service| {
                    // The connection has sent a whole request head: no
                    // longer half-open (a no-op after its first request),
                    // and its next-head deadline is off while it runs.
                    if let Some(half_open) = req.request().conn_data::<HalfOpen>() {
                        half_open.request_started();
                    }
                    let next_head = req.request().conn_data::<Arc<NextHead>>().cloned();
                    if let Some(next_head) = &next_head {
                        next_head.request_started();
                    }
                    let http_requests = http_requests.clone();
                    let response = service.call(req);
                    async move {
                        // Dropped without a body on an error: the deadline
                        // is armed then (the error answer is short).
                        let end = next_head.as_ref().map(|watch| watch.response_token());
                        let response = response.await?;
                        let route = response
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        http_requests
                            .with_label_values(&[&route, response.status().as_str()])
                            .inc();
                        // A WebSocket has its own keep-alive; any other
                        // response arms the deadline once sent in full.
                        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                            if let Some(watch) = &next_head {
                                watch.upgraded();
                            }
                        }
                        Ok(response
                            .map_into_boxed_body()
                            .map_body(|_, body| Watched::new(body, end)))
                    }
                })
                .configure(ws::configure)
                .configure(xhr::configure)
                .configure(sse::configure)
                .configure(http::admin::configure)
                .configure(http::configure)
                .configure(ws::configure_pushi)
                .configure(|cfg| pushi_api::configure(cfg, pushi_api.clone()))
                .configure(|cfg| crate::console::configure(cfg, console.clone()))
                .default_service(web::to(http::not_found))
        };
        let on_connect: serve::OnConnect = Arc::new(move |io, data| {
            if !half_open.on_connect(io, data) {
                return;
            }
            let closer = data.get::<serve::Closer>().cloned();
            let watch = closer
                .and_then(|closer| NextHead::watch(closer, header_timeout, watch_metrics.clone()));
            if let Some(watch) = watch {
                data.insert(watch);
            }
        });
        let options = serve::Options {
            workers,
            max_connections_per_worker: self.config.limits.max_connections_per_worker,
            // Idle between requests; then the next head has the header
            // timeout too (abuse/next_head.rs), which actix does not
            // enforce itself.
            keep_alive: crate::abuse::next_head::KEEP_ALIVE,
            // Slowloris: a connection must send its request head in time
            // (actix answers 408 and closes; zero turns the limit off).
            request_head_timeout: self.config.limits.request_header_timeout(),
            shutdown_timeout_secs: server_config.shutdown_grace,
            // A client that opens TCP and never finishes its handshake is
            // dropped after the timeout; handshakes in progress per worker
            // are capped (the rest wait in the backlog) so a reconnect
            // storm cannot spend every core on key exchanges.
            tls_handshake_timeout: tls_settings.handshake_timeout(),
            max_tls_handshakes: tls_settings.max_handshakes,
        };
        if let Some((resolver, _)) = &tls {
            Reloader::new(
                tls_settings.clone(),
                resolver.clone(),
                hub.metrics().clone(),
            )
            .start();
        }
        let rustls_config = tls.map(|(_, rustls_config)| rustls_config);
        let server = serve::server(listeners, rustls_config, &options, factory, on_connect)?;

        for app in hub.apps().all() {
            tracing::info!(
                "rusher listening: connect pusher-js with key `{}` to {}://{}/app/{} (app id `{}`)",
                app.key,
                match scheme {
                    Scheme::Tls => "wss",
                    Scheme::Plain => "ws",
                },
                authority,
                app.key,
                app.id
            );
        }

        hub.start_subscription_counting();
        // Apps added, changed or removed at runtime: disabled and removed
        // apps' connections are closed (4003), removed apps' state dropped.
        let apps_hub = hub.clone();
        let mut app_changes = hub.apps().subscribe();
        actix_web::rt::spawn(async move {
            while app_changes.changed().await.is_ok() {
                apps_hub.apps_changed();
                apps_rate.retain_apps(apps_hub.apps());
            }
        });

        // Cache channels keep one event each; sweep the expired ones so
        // channels nobody reads again do not hold memory forever.
        let sweeper = hub.clone();
        actix_web::rt::spawn(async move {
            let mut every_minute = tokio::time::interval(Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                sweeper.sweep_caches();
            }
        });

        let handle = server.handle();
        let mut serving = actix_web::rt::spawn(server);
        tokio::select! {
            // Signals are ours (serve.rs listens to none), so the server
            // only ends by itself when a worker could not start.
            served = &mut serving => return served.map_err(std::io::Error::other)?,
            () = wait_for_signal() => {}
        }

        let deadline = Instant::now() + Duration::from_secs(server_config.shutdown_grace);
        // Close the listening socket first: every worker drops its
        // descriptor of each listener before the workers are waited for;
        // the workers keep serving open sockets (graceful) for up to
        // shutdown_grace. Clients reconnecting after
        // their 4200 reach a new process on the port (reuse_port, or one
        // started since), or are refused at TCP level; never this process,
        // which would refuse them with 4200 again, and a new process need
        // not wait for this one to exit to bind the port.
        let stopped = handle.stop(true);
        // The 4200s go out only once no worker listens any more (each
        // closes its listeners at once; bounded all the same).
        let _ = tokio::time::timeout_at(deadline.into(), handle.listeners_closed()).await;
        hub.stop_accepting();
        // A single instance hands its sockets over to the process that
        // replaces it (see handover.rs); a cluster has other nodes to take
        // them. A second signal stops the wait.
        let wait = server_config.handover_wait();
        if self.config.adapter == AdapterKind::Local
            && hub.connection_count() > 0
            && !wait.is_zero()
        {
            tracing::info!(
                sockets = hub.connection_count(),
                "stopped listening; waiting up to {wait:?} for a new process on the port before closing the sockets (signal again to skip)"
            );
            tokio::select! {
                found = handover::wait_for_successor(&probe_addrs, wait) => {
                    tracing::info!(found, "handover wait over");
                }
                () = wait_for_signal() => {}
            }
        }
        // Refuse new work (/ready 503 on open connections, a late upgrade
        // 4200) and ask every socket to close.
        let sockets = hub.close_all(ErrorCode::ServerShuttingDown);
        tracing::info!(
            sockets,
            "shutting down: stopped listening, closing every socket with 4200"
        );
        while hub.connection_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The closes above produced vacated/member_removed events: send them.
        hub.webhooks().shutdown(deadline).await;
        if let Some(persistence) = hub.persistence() {
            persistence.flush(deadline).await;
        }
        // Leaving the cluster sends what is still queued for the other
        // nodes; with Redis down that could take long, so it gets what is
        // left of the grace period (at least a second) and no more.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        if tokio::time::timeout(left, hub.close_adapter())
            .await
            .is_err()
        {
            tracing::warn!(
                "left the cluster without sending everything queued for the other nodes"
            );
        }
        // Only now may run() return: the runtime, and every task above,
        // ends with it.
        stopped.await;
        serving.await.map_err(std::io::Error::other)?
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
