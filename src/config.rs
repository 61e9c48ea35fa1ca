//! Typed configuration: a TOML file, environment overrides, and validation
//! errors that name the offending key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// Why the configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error: part of the message, not a `source`, so that
        /// `{err:#}` does not print it twice.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The path given.
        path: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config value `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `apps[1].key`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener, keep-alive and process settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// How nodes share state: `local` (one process) or `redis` (a cluster).
    #[serde(default)]
    pub adapter: AdapterKind,
    /// The Redis connection, used when `adapter = "redis"`.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Which transports clients may use, and the HTTP transports' limits.
    #[serde(default)]
    pub transports: TransportsConfig,
    /// Offline subscriptions and stored messages.
    #[serde(default)]
    pub store: StoreConfig,
    /// Abuse limits: connection rate per client IP, unfinished requests.
    #[serde(default)]
    pub limits: crate::abuse::settings::LimitsConfig,
    /// Notification handlers: queues, retries, limits, SMTP (`crate::notify`).
    #[serde(default)]
    pub notifications: crate::notify::settings::NotificationsConfig,
    /// pushi's HTTP API under `/pushi/` (sessions).
    #[serde(default)]
    pub pushi_api: crate::pushi_api::settings::PushiApiConfig,
    /// The apps served; one built-in default app when empty.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Where apps beside the config file's come from (`[apps_store]`).
    #[serde(default)]
    pub apps_store: AppsStoreConfig,
    /// The admin API (`[admin]`): off without a token.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The live console at `/console` (`[console]`).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The keys an environment variable set, each with the variable
    /// (`server.port` → `RUSHER_PORT`), so that an error found later names
    /// what the user actually wrote; see [`Config::key_source`].
    #[serde(skip)]
    pub env_overrides: BTreeMap<&'static str, &'static str>,
}

/// Which adapter fans out and keeps shared state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// One process: nothing is shared.
    #[default]
    Local,
    /// Several nodes sharing state and messages through Redis.
    Redis,
}

/// Where the apps managed at runtime (admin API) are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppsBackend {
    /// The config file's apps only; apps created through the admin API live
    /// in this node's memory (lost on restart, unknown to other nodes).
    #[default]
    Config,
    /// A MongoDB collection every node reads and watches.
    Mongodb,
}

/// `[apps_store]`: apps managed at runtime, beside the config file's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppsStoreConfig {
    /// `config` (default) or `mongodb`.
    pub backend: AppsBackend,
    /// MongoDB connection string; unset = `store.url`.
    pub url: Option<String>,
    /// MongoDB database; unset = `store.database`.
    pub database: Option<String>,
    /// Collection of the apps (one document per app, the `[[apps]]` shape).
    pub collection: String,
    /// Milliseconds between two reads of the collection (how fast a change
    /// made elsewhere reaches this node without change streams or Redis).
    pub poll_interval_ms: u64,
}

impl Default for AppsStoreConfig {
    fn default() -> Self {
        AppsStoreConfig {
            backend: AppsBackend::Config,
            url: None,
            database: None,
            collection: "apps".into(),
            poll_interval_ms: 1000,
        }
    }
}

/// `[admin]`: the server-wide admin API token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `Authorization: Bearer <token>` of the admin API (`/admin/apps`);
    /// unset = the admin API is off (env `RUSHER_ADMIN_TOKEN`).
    pub token: Option<String>,
}

/// `[console]`: the live console in the browser (`crate::console`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve `/console` (and redirect `/` there). Default: on without a
    /// config file (the built-in app), off when a config file does not
    /// turn it on (env `RUSHER_CONSOLE_ENABLED`).
    pub enabled: bool,
    /// Key of the session cookies (at least 16 bytes); unset = random per
    /// process (a restart logs consoles out). Nodes behind one load
    /// balancer need the same one (env `RUSHER_CONSOLE_SESSION_SECRET`).
    pub session_secret: Option<String>,
    /// Events the page's log keeps (older ones scroll out), 1..=100000.
    pub max_log_events: usize,
    /// Events queued per open console before new ones are dropped (and
    /// counted) for it, 16..=1000000.
    pub watcher_queue: usize,
    /// Redis adapter: how often a node with a console open renews its lease
    /// on the app's events of the other nodes, in ms, 100..=60000; a lease
    /// not renewed for 3 periods is dropped (a crashed node's console).
    pub lease_ms: u64,
    /// How often each app's connection count is sampled for the page's
    /// sparkline history (the last 60 samples are kept), in ms, 100..=60000.
    pub sample_interval_ms: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: false,
            session_secret: None,
            max_log_events: 500,
            watcher_queue: crate::console::tap::DEFAULT_WATCHER_QUEUE,
            lease_ms: 5_000,
            sample_interval_ms: 10_000,
        }
    }
}

/// Shortest admin token accepted, in bytes (a guessable token would open
/// every app's secrets).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// Where offline subscriptions and messages are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In process memory: lost on restart.
    #[default]
    Memory,
    /// MongoDB: durable.
    Mongodb,
}

/// Persistence settings (offline subscriptions, personal channels).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` or `mongodb`.
    pub backend: StoreBackend,
    /// MongoDB connection string.
    pub url: String,
    /// MongoDB database name.
    pub database: String,
    /// Seconds a stored message is kept.
    pub message_ttl_secs: u64,
    /// Most messages kept per channel.
    pub max_messages_per_channel: usize,
    /// Messages sent in a personal channel's subscription_succeeded.
    pub catch_up_messages: usize,
    /// Messages waiting to be written; beyond it they are dropped and counted.
    pub write_queue: usize,
    /// Milliseconds a MongoDB operation may wait for the server.
    pub timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            url: "mongodb://127.0.0.1:27017".into(),
            database: "rusher".into(),
            message_ttl_secs: 24 * 3600,
            max_messages_per_channel: 1000,
            catch_up_messages: 100,
            write_queue: 10_000,
            timeout_ms: 2_000,
        }
    }
}

/// The transports clients may connect with (all on by default) and the
/// limits of the HTTP ones: pusher-js's `xhr_streaming` / `xhr_polling`
/// fallbacks under `/pusher/app/{key}/...` and Server-Sent Events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportsConfig {
    /// WebSocket at `/app/{key}`.
    pub ws: bool,
    /// pusher-js `xhr_streaming`: one long HTTP response carries the frames.
    pub xhr_streaming: bool,
    /// pusher-js `xhr_polling`: each HTTP request waits for frames.
    pub xhr_polling: bool,
    /// Server-Sent Events, receive only (`/apps/{app_id}/events/stream`).
    pub sse: bool,
    /// Seconds a poll waits for frames before it answers with a heartbeat
    /// (at most half of `server.activity_timeout` is used).
    pub long_poll_timeout: u64,
    /// Most frames in one poll response.
    pub max_batch_size: usize,
    /// Seconds between heartbeats on a streaming response (`h` for
    /// xhr_streaming, a comment for SSE), so that proxies keep it open
    /// (at most half of `server.activity_timeout` is used).
    pub heartbeat: u64,
    /// Most HTTP sessions (xhr and SSE) open at once on this node, whatever the app.
    pub max_sessions: usize,
}

impl Default for TransportsConfig {
    fn default() -> Self {
        TransportsConfig {
            ws: true,
            xhr_streaming: true,
            xhr_polling: true,
            sse: true,
            long_poll_timeout: 30,
            max_batch_size: 100,
            heartbeat: 25,
            max_sessions: 10_000,
        }
    }
}

/// The Redis connection and cluster timing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    pub prefix: String,
    /// Seconds between a node's heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a node is dead and its
    /// members and subscriptions are removed by the others.
    pub node_timeout_secs: u64,
    /// Milliseconds a Redis operation may take before it counts as failed
    /// (the node then answers from its own state).
    pub operation_timeout_ms: u64,
    /// History writes kept while Redis is unreachable, written when it is
    /// back; beyond it the oldest are dropped (counted).
    pub history_retry_queue: usize,
    /// `false`: one redis-server at `url`; `true`: a Redis Cluster whose
    /// seed node is `url`; a list of URLs: a Redis Cluster with these seeds.
    pub cluster: RedisCluster,
    /// Shard groups channels are spread over (hash tags, one bus channel
    /// each; see `adapter::redis::keys`). Must be the same on every node.
    pub shard_groups: u16,
    /// Milliseconds between a node's usage reports to the others (open
    /// connections and admissions, so app and abuse limits hold for the
    /// deployment; see `usage/`). Sent only when something changed.
    pub usage_interval_ms: u64,
}

/// `redis.cluster`: `true`/`false`, or the seed URLs of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedisCluster {
    /// `false`: a single Redis; `true`: a cluster seeded by `redis.url`.
    Enabled(bool),
    /// A cluster seeded by these URLs.
    Seeds(Vec<String>),
}

impl Default for RedisCluster {
    fn default() -> Self {
        RedisCluster::Enabled(false)
    }
}

impl RedisConfig {
    /// The seed URLs when Redis is a cluster, `None` for a single Redis.
    pub fn cluster_seeds(&self) -> Option<Vec<String>> {
        match &self.cluster {
            RedisCluster::Enabled(false) => None,
            RedisCluster::Enabled(true) => Some(vec![self.url.clone()]),
            RedisCluster::Seeds(seeds) => Some(seeds.clone()),
        }
    }
}

/// `RUSHER_REDIS_CLUSTER`: `true`, `false`, or comma-separated seed URLs.
fn parse_redis_cluster(text: &str) -> RedisCluster {
    match text.trim() {
        "true" => RedisCluster::Enabled(true),
        "false" | "" => RedisCluster::Enabled(false),
        list => RedisCluster::Seeds(
            list.split(',')
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
                .collect(),
        ),
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "rusher".into(),
            heartbeat_secs: 2,
            node_timeout_secs: 10,
            operation_timeout_ms: 1000,
            history_retry_queue: 10_000,
            cluster: RedisCluster::default(),
            shard_groups: 16,
            usage_interval_ms: 100,
        }
    }
}

/// Listener, keep-alive and process settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port for WebSocket and HTTP API.
    pub port: u16,
    /// Seconds of silence before the server pings a client (announced to clients).
    pub activity_timeout: u64,
    /// Seconds to wait for any frame after our ping before closing with 4201.
    pub pong_timeout: u64,
    /// Milliseconds an unsigned subscription that the connection's sign-in
    /// (`personal-{id}`, `#server-to-user-{id}`) or presence membership (peer
    /// channels) would authorise waits for it before it is refused; 0 refuses
    /// at once. At most `activity_timeout` is used ([`Self::subscribe_wait`]).
    pub subscribe_wait_ms: u64,
    /// Largest WebSocket frame accepted from a client, in bytes.
    pub max_frame_bytes: usize,
    /// Frames queued for one connection before it is closed with 4100.
    pub outgoing_queue: usize,
    /// Seconds given to close sockets and finish requests on shutdown.
    pub shutdown_grace: u64,
    /// Set `SO_REUSEPORT` on the listening socket, so that a new process can
    /// listen on the port beside this one (zero-gap restarts). Off by default
    /// so that a second process started on the port by mistake fails.
    pub reuse_port: bool,
    /// Milliseconds a single instance (`adapter = "local"`) with open sockets
    /// waits on shutdown, its listener already closed, for a new process to
    /// listen on its port before it sends the 4200s, so pusher-js's immediate
    /// reconnect reaches the new process instead of being refused (which
    /// costs pusher-js 15 s). At most half of `shutdown_grace`; 0 = no wait.
    pub handover_wait_ms: u64,
    /// Worker threads serving connections; 0 = one per CPU core.
    pub workers: usize,
    /// Largest HTTP API request body, in bytes.
    pub max_request_bytes: usize,
    /// Log filter: `trace`, `debug`, `info`, `warn`, `error`,
    /// `off`, or directives such as `info,rusher=debug` (see
    /// [`crate::logging::parse_filter`]); anything else is refused at startup.
    pub log_level: String,
    /// Log as JSON lines instead of human-readable text.
    pub log_json: bool,
    /// Serve Prometheus metrics on `/metrics`.
    pub metrics: bool,
    /// Webhook delivery settings (batching, queue, retries).
    pub webhooks: WebhookSettings,
    /// TLS on the listeners (`wss://`, `https://`); off unless `cert` and `key` are set.
    pub tls: TlsSettings,
}

/// TLS served by rusher itself (`[server.tls]`), with rustls.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Path of the PEM certificate chain (server certificate first, then
    /// intermediates, e.g. certbot's `fullchain.pem`); empty = TLS off.
    pub cert: String,
    /// Path of the PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub key: String,
    /// A second port for TLS, `server.port` then staying plain; absent =
    /// every listener on `server.port` serves TLS.
    pub port: Option<u16>,
    /// Milliseconds a client has to finish its TLS handshake before the
    /// connection is closed.
    pub handshake_timeout_ms: u64,
    /// TLS handshakes in progress at once per worker thread; further
    /// connections wait in the listen backlog (bounds the CPU spent on
    /// handshakes in a reconnect storm).
    pub max_handshakes: usize,
    /// Seconds between checks of the files' modification time and size, a
    /// change reloading the certificate; 0 = reload on SIGHUP only.
    pub reload_check_secs: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert: String::new(),
            key: String::new(),
            port: None,
            handshake_timeout_ms: 5_000,
            max_handshakes: 256,
            reload_check_secs: 5,
        }
    }
}

/// How webhooks are batched, queued and retried (all apps).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Most events in one webhook request.
    pub batch_size: usize,
    /// Milliseconds events are collected before a batch is sent.
    pub batch_ms: u64,
    /// Events waiting to be batched; beyond it new events are dropped and counted.
    pub queue: usize,
    /// Requests in flight at once, retries included.
    pub concurrency: usize,
    /// Milliseconds before a receiver's answer is given up on.
    pub timeout_ms: u64,
    /// Attempts per batch (the first one included) before it is dropped.
    pub max_attempts: u32,
    /// Milliseconds before the first retry; doubled for each further one.
    pub backoff_ms: u64,
    /// Milliseconds `member_removed` is held back; a rejoin within it cancels both events.
    pub member_removed_delay_ms: u64,
    /// Milliseconds `channel_vacated` is held back; the channel occupied
    /// again within it (a page reload) cancels it and that `channel_occupied`.
    pub channel_vacated_delay_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            batch_size: 50,
            batch_ms: 250,
            queue: 10_000,
            concurrency: 16,
            timeout_ms: 5_000,
            max_attempts: 5,
            backoff_ms: 500,
            member_removed_delay_ms: 3_000,
            channel_vacated_delay_ms: 3_000,
        }
    }
}

impl ServerConfig {
    /// The handover wait in use: `handover_wait_ms`, at most half of
    /// `shutdown_grace` (the sockets and webhooks need the rest).
    pub fn handover_wait(&self) -> Duration {
        Duration::from_millis(self.handover_wait_ms)
            .min(Duration::from_secs(self.shutdown_grace) / 2)
    }

    /// The subscription wait in use: `subscribe_wait_ms`, at most
    /// `activity_timeout` (a client silent that long is pinged anyway, and a
    /// lowered keep-alive should not need this option changed too).
    pub fn subscribe_wait(&self) -> Duration {
        Duration::from_millis(self.subscribe_wait_ms)
            .min(Duration::from_secs(self.activity_timeout))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 6001,
            activity_timeout: 120,
            pong_timeout: 30,
            subscribe_wait_ms: 5_000,
            max_frame_bytes: 64 * 1024,
            outgoing_queue: 1024,
            shutdown_grace: 5,
            reuse_port: false,
            handover_wait_ms: 1000,
            workers: 0,
            max_request_bytes: 1024 * 1024,
            log_level: "info".into(),
            log_json: false,
            metrics: true,
            webhooks: WebhookSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// One app: credentials and limits. Also the shape of an app stored in the
/// apps store (`[apps_store]`, serialized as is).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// App id used in HTTP API paths.
    pub id: String,
    /// Other ids this app answers to in HTTP API paths (`/apps/{alias}/...`),
    /// e.g. a numeric id for the PyPI `pusher` SDK, which refuses ids that
    /// are not all digits. Unique across every app's ids and aliases.
    #[serde(default)]
    pub id_aliases: Vec<String>,
    /// A name for people (admin API listings); not used by the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Public key used by clients in the WebSocket URL.
    pub key: String,
    /// Secret used to sign everything.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls (403).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most concurrent connections (per node); 0 means unlimited. With
    /// `authorized_connections`, only authorized connections count.
    #[serde(default)]
    pub max_connections: u64,
    /// Authorized connections (as Pusher's app setting): a connection that
    /// has neither signed in nor subscribed to a channel that needs a
    /// signature within `authorization_timeout` is closed with 4009, and
    /// counts against `max_connections` only once authorized.
    #[serde(default)]
    pub authorized_connections: bool,
    /// Seconds (fractions allowed, e.g. `0.5`) a connection of an app with
    /// `authorized_connections` has to authorize itself.
    #[serde(default = "d_authorization_timeout")]
    pub authorization_timeout: f64,
    /// Most connections of an app with `authorized_connections` open and
    /// not yet authorized at once (per node); the next one is refused with
    /// 4100. 0 means as many as `max_connections` (unlimited when that is 0).
    #[serde(default)]
    pub max_unauthorized_connections: u64,
    /// Whether clients may send `client-*` events.
    #[serde(default = "yes")]
    pub client_events: bool,
    /// Largest event `data`, in bytes.
    #[serde(default = "d_max_event_data_bytes")]
    pub max_event_data_bytes: usize,
    /// Longest event name.
    #[serde(default = "d_max_event_name_length")]
    pub max_event_name_length: usize,
    /// Most channels one trigger may name.
    #[serde(default = "d_max_channels_per_event")]
    pub max_channels_per_event: usize,
    /// Longest channel name.
    #[serde(default = "d_max_channel_name_length")]
    pub max_channel_name_length: usize,
    /// Most events in one batch trigger.
    #[serde(default = "d_max_batch_events")]
    pub max_batch_events: usize,
    /// Most channels one connection may be subscribed to.
    #[serde(default = "d_max_channels_per_connection")]
    pub max_channels_per_connection: usize,
    /// Most members on one presence channel.
    #[serde(default = "d_max_presence_members")]
    pub max_presence_members: usize,
    /// Largest presence `user_info`, in bytes.
    #[serde(default = "d_max_presence_user_info_bytes")]
    pub max_presence_user_info_bytes: usize,
    /// Client events one connection may send per second.
    #[serde(default = "d_client_event_rate")]
    pub client_event_rate: u32,
    /// Seconds a cache channel remembers its last event.
    #[serde(default = "d_cache_ttl")]
    pub cache_ttl: u64,
    /// HTTP API requests per second before answering 429; 0 means unlimited.
    #[serde(default)]
    pub max_api_requests_per_second: u32,
    /// New connections a second to this app (every transport) before
    /// answering 429; 0 means unlimited.
    #[serde(default)]
    pub connection_rate: u32,
    /// New connections the app takes at once before `connection_rate` applies.
    #[serde(default = "d_connection_burst")]
    pub connection_burst: u32,
    /// `pusher:subscribe` and `pusher:unsubscribe` frames one connection
    /// may send per second (over it: `pusher:error` 4301); 0 means
    /// unlimited. Unset: [`AppConfig::subscription_rate`]'s default, which
    /// follows `max_channels_per_connection` (so raising that one alone
    /// never makes a config invalid).
    #[serde(default)]
    pub subscription_rate: Option<u32>,
    /// Where this app's webhooks go.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Per-channel history with serials and connection recovery (`since`
    /// on subscribe); off by default. In memory on one node, in Redis Streams
    /// with `adapter = "redis"` (README "History and recovery").
    #[serde(default)]
    pub history: bool,
    /// Channel-name prefixes with history; empty = every channel except
    /// `#server-to-user-*` and `personal-*` (they have their own store).
    #[serde(default)]
    pub history_channels: Vec<String>,
    /// Events kept per channel (at most `server.outgoing_queue / 2`, so a
    /// full replay fits in a connection's queue beside live traffic).
    #[serde(default = "d_history_size")]
    pub history_size: usize,
    /// Seconds an event stays in a channel's history.
    #[serde(default = "d_history_ttl")]
    pub history_ttl: u64,
    /// Seconds every history event is also kept in MongoDB (long retention,
    /// README "Long retention in MongoDB"); 0 = off. Needs `history = true`
    /// and `store.backend = "mongodb"`, and at least `history_ttl`.
    #[serde(default)]
    pub history_retention: u64,
    /// Seconds a publish's `idempotency_key` is remembered: a repeat within
    /// it is answered like the first and not delivered again. 0 turns
    /// idempotent publish off (the key is then still checked, and ignored).
    #[serde(default = "d_idempotency_window")]
    pub idempotency_window: u64,
    /// Most keys one node remembers per app; past it the oldest is evicted
    /// (counted in `rusher_idempotency_evictions_total`).
    #[serde(default = "d_idempotency_max_keys")]
    pub idempotency_max_keys: usize,
    /// Seconds a closed socket of a signed-in user can be recovered from
    /// (README "History and recovery"); unset = `history_ttl`.
    #[serde(default)]
    pub recovery_window: Option<u64>,
    /// Signed-in users whose positions are kept at most (per app, per
    /// node); beyond it new users are not recovered by sign-in.
    #[serde(default = "d_recovery_users")]
    pub recovery_users: usize,
    /// Acknowledged delivery (`[apps.delivery]`, extension): message ids,
    /// `pusher:ack`, resends; off by default.
    #[serde(default)]
    pub delivery: crate::delivery::settings::DeliveryConfig,
    /// Subscription counting (Pusher's "subscription count" app setting):
    /// subscribers of non-presence channels get
    /// `pusher_internal:subscription_count` when the count changes; off by default.
    #[serde(default)]
    pub subscription_count: bool,
    /// Milliseconds between two `pusher_internal:subscription_count` of one
    /// channel at least (changes in between are coalesced, the last one sent).
    #[serde(default = "d_subscription_count_interval_ms")]
    pub subscription_count_interval_ms: u64,
    /// When each notification handler sends (`[apps.notifications]`,
    /// README "Notifications"): `off`, `offline` or `always` per handler.
    #[serde(default)]
    pub notifications: crate::notify::settings::AppNotifications,
    /// VAPID private key for Web Push (RFC 8292): PEM EC key or the raw
    /// 32-byte P-256 scalar in base64url (as pushi's `vapid_key`). Without
    /// it the app sends no Web Push.
    #[serde(default)]
    pub vapid_private_key: Option<String>,
    /// VAPID `sub`: a `mailto:` or `https:` contact (a bare address gets
    /// `mailto:`). Required with `vapid_private_key`.
    #[serde(default)]
    pub vapid_subject: Option<String>,
    /// Seconds a push service keeps an undelivered Web Push message (`TTL`).
    #[serde(default = "d_web_push_ttl_secs")]
    pub web_push_ttl_secs: u32,
}

/// One webhook endpoint of an app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver's URL (http or https).
    pub url: String,
    /// Event types sent; empty means all of them.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Only channels whose name starts with this.
    #[serde(default)]
    pub filter_prefix: Option<String>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The webhook event types rusher sends.
pub const WEBHOOK_EVENT_TYPES: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

fn yes() -> bool {
    true
}
fn d_web_push_ttl_secs() -> u32 {
    crate::notify::web_push::DEFAULT_TTL_SECS
}
fn d_authorization_timeout() -> f64 {
    30.0
}
fn d_max_event_data_bytes() -> usize {
    10 * 1024
}
fn d_max_event_name_length() -> usize {
    200
}
fn d_max_channels_per_event() -> usize {
    100
}
fn d_max_channel_name_length() -> usize {
    crate::protocol::channel::MAX_CHANNEL_NAME_LENGTH
}
fn d_max_batch_events() -> usize {
    10
}
fn d_max_channels_per_connection() -> usize {
    100
}
fn d_max_presence_members() -> usize {
    100
}
fn d_max_presence_user_info_bytes() -> usize {
    1024
}
fn d_client_event_rate() -> u32 {
    10
}
fn d_subscription_count_interval_ms() -> u64 {
    1000
}

fn d_connection_burst() -> u32 {
    100
}
/// The least default `subscription_rate`.
const DEFAULT_SUBSCRIPTION_RATE: u32 = 200;
fn d_cache_ttl() -> u64 {
    30 * 60
}
fn d_history_size() -> usize {
    100
}
fn d_history_ttl() -> u64 {
    300
}
fn d_idempotency_window() -> u64 {
    120
}
fn d_idempotency_max_keys() -> usize {
    100_000
}
fn d_recovery_users() -> usize {
    10_000
}

impl AppConfig {
    /// `pusher:subscribe`/`pusher:unsubscribe` frames a connection may send
    /// per second (0 = unlimited): `subscription_rate` when set, else the
    /// larger of 200 and `max_channels_per_connection`.
    pub fn subscription_rate(&self) -> u32 {
        self.subscription_rate.unwrap_or_else(|| {
            let channels = u32::try_from(self.max_channels_per_connection).unwrap_or(u32::MAX);
            DEFAULT_SUBSCRIPTION_RATE.max(channels)
        })
    }

    /// An app with the given credentials and every default limit.
    pub fn with_credentials(id: &str, key: &str, secret: &str) -> Self {
        AppConfig {
            id: id.into(),
            id_aliases: Vec::new(),
            name: None,
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            max_connections: 0,
            authorized_connections: false,
            authorization_timeout: d_authorization_timeout(),
            max_unauthorized_connections: 0,
            client_events: true,
            max_event_data_bytes: d_max_event_data_bytes(),
            max_event_name_length: d_max_event_name_length(),
            max_channels_per_event: d_max_channels_per_event(),
            max_channel_name_length: d_max_channel_name_length(),
            max_batch_events: d_max_batch_events(),
            max_channels_per_connection: d_max_channels_per_connection(),
            max_presence_members: d_max_presence_members(),
            max_presence_user_info_bytes: d_max_presence_user_info_bytes(),
            client_event_rate: d_client_event_rate(),
            cache_ttl: d_cache_ttl(),
            max_api_requests_per_second: 0,
            connection_rate: 0,
            connection_burst: d_connection_burst(),
            subscription_rate: None,
            webhooks: Vec::new(),
            history: false,
            history_channels: Vec::new(),
            history_size: d_history_size(),
            history_ttl: d_history_ttl(),
            history_retention: 0,
            idempotency_window: d_idempotency_window(),
            idempotency_max_keys: d_idempotency_max_keys(),
            recovery_window: None,
            recovery_users: d_recovery_users(),
            delivery: Default::default(),
            subscription_count: false,
            subscription_count_interval_ms: d_subscription_count_interval_ms(),
            notifications: Default::default(),
            vapid_private_key: None,
            vapid_subject: None,
            web_push_ttl_secs: d_web_push_ttl_secs(),
        }
    }

    /// How long a connection has to authorize itself when the app has
    /// `authorized_connections` (validated finite and positive).
    pub fn authorization_timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.authorization_timeout)
            .unwrap_or(std::time::Duration::from_secs(MAX_DURATION_SECS))
    }

    /// Most unauthorized connections open at once on this node (0 =
    /// unlimited): `max_unauthorized_connections`, else `max_connections`.
    pub fn unauthorized_cap(&self) -> u64 {
        match self.max_unauthorized_connections {
            0 => self.max_connections,
            cap => cap,
        }
    }

    /// How long a closed socket of a signed-in user can be recovered from:
    /// `recovery_window`, else `history_ttl` (older events are gone anyway).
    pub fn recovery_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.recovery_window.unwrap_or(self.history_ttl))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            adapter: AdapterKind::default(),
            redis: RedisConfig::default(),
            transports: TransportsConfig::default(),
            store: StoreConfig::default(),
            limits: Default::default(),
            notifications: Default::default(),
            pushi_api: Default::default(),
            apps: vec![AppConfig {
                // The PyPI SDK only accepts digits: the built-in app answers
                // to `1` as well, so both official SDKs work without a config.
                id_aliases: vec!["1".into()],
                ..AppConfig::with_credentials("app-id", "app-key", "app-secret")
            }],
            apps_store: AppsStoreConfig::default(),
            admin: AdminConfig::default(),
            // On for a first run without a config file.
            console: ConsoleConfig {
                enabled: true,
                ..ConsoleConfig::default()
            },
            env_overrides: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Reads `path` (or the defaults), applies environment overrides, validates.
    ///
    /// `env` looks up a variable; it is a parameter so tests need not touch the
    /// process environment.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: shown.clone(),
            error,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses TOML text; the error message names the bad key.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.apps.is_empty() {
            config.apps = Config::default().apps;
        }
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(host) = env("RUSHER_HOST") {
            self.server.host = host;
            self.env_overrides
                .insert("server.host", "server.host via RUSHER_HOST");
        }
        if let Some(port) = env("RUSHER_PORT") {
            self.server.port = port
                .parse()
                .map_err(|_| invalid("RUSHER_PORT", format!("`{port}` is not a port number")))?;
            self.env_overrides
                .insert("server.port", "server.port via RUSHER_PORT");
        }
        if let Some(cert) = env("RUSHER_TLS_CERT") {
            self.server.tls.cert = cert;
            self.env_overrides
                .insert("server.tls.cert", "server.tls.cert via RUSHER_TLS_CERT");
        }
        if let Some(key) = env("RUSHER_TLS_KEY") {
            self.server.tls.key = key;
            self.env_overrides
                .insert("server.tls.key", "server.tls.key via RUSHER_TLS_KEY");
        }
        if let Some(port) = env("RUSHER_TLS_PORT").filter(|p| !p.is_empty()) {
            self.server.tls.port = Some(port.parse().map_err(|_| {
                invalid("RUSHER_TLS_PORT", format!("`{port}` is not a port number"))
            })?);
            self.env_overrides
                .insert("server.tls.port", "server.tls.port via RUSHER_TLS_PORT");
        }
        if let Some(workers) = env("RUSHER_WORKERS") {
            self.server.workers = workers.parse().map_err(|_| {
                invalid(
                    "RUSHER_WORKERS",
                    format!("`{workers}` is not a number of threads"),
                )
            })?;
        }
        if let Some(level) = env("RUSHER_LOG_LEVEL") {
            self.server.log_level = level;
            self.env_overrides
                .insert("server.log_level", "server.log_level via RUSHER_LOG_LEVEL");
        }
        // RUST_LOG, the Rust convention, replaces the configured filter when
        // set; empty counts as unset, as `RUST_LOG=` usually means.
        if let Some(filter) = env("RUST_LOG").filter(|f| !f.trim().is_empty()) {
            self.server.log_level = filter;
            self.env_overrides
                .insert("server.log_level", "server.log_level via RUST_LOG");
        }
        if let Some(adapter) = env("RUSHER_ADAPTER") {
            self.adapter = match adapter.as_str() {
                "local" => AdapterKind::Local,
                "redis" => AdapterKind::Redis,
                other => {
                    return Err(invalid(
                        "RUSHER_ADAPTER",
                        format!("`{other}` is not `local` or `redis`"),
                    ))
                }
            };
        }
        if let Some(backend) = env("RUSHER_STORE_BACKEND") {
            self.store.backend = match backend.as_str() {
                "memory" => StoreBackend::Memory,
                "mongodb" => StoreBackend::Mongodb,
                other => {
                    return Err(invalid(
                        "RUSHER_STORE_BACKEND",
                        format!("`{other}` is not `memory` or `mongodb`"),
                    ))
                }
            };
        }
        if let Some(url) = env("RUSHER_MONGODB_URL") {
            self.store.url = url;
            self.env_overrides
                .insert("store.url", "store.url via RUSHER_MONGODB_URL");
        }
        if let Some(database) = env("RUSHER_MONGODB_DATABASE") {
            self.store.database = database;
            self.env_overrides.insert(
                "store.database",
                "store.database via RUSHER_MONGODB_DATABASE",
            );
        }
        if let Some(url) = env("RUSHER_REDIS_URL") {
            self.redis.url = url;
            self.env_overrides
                .insert("redis.url", "redis.url via RUSHER_REDIS_URL");
        }
        if let Some(prefix) = env("RUSHER_REDIS_PREFIX") {
            self.redis.prefix = prefix;
            self.env_overrides
                .insert("redis.prefix", "redis.prefix via RUSHER_REDIS_PREFIX");
        }
        if let Some(cluster) = env("RUSHER_REDIS_CLUSTER") {
            self.redis.cluster = parse_redis_cluster(&cluster);
            self.env_overrides
                .insert("redis.cluster", "redis.cluster via RUSHER_REDIS_CLUSTER");
        }
        if let Some(token) = env("RUSHER_ADMIN_TOKEN").filter(|t| !t.is_empty()) {
            self.admin.token = Some(token);
            self.env_overrides
                .insert("admin.token", "admin.token via RUSHER_ADMIN_TOKEN");
        }
        if let Some(enabled) = env("RUSHER_CONSOLE_ENABLED") {
            self.console.enabled = enabled.parse().map_err(|_| {
                invalid(
                    "RUSHER_CONSOLE_ENABLED",
                    format!("`{enabled}` is not true or false"),
                )
            })?;
            self.env_overrides.insert(
                "console.enabled",
                "console.enabled via RUSHER_CONSOLE_ENABLED",
            );
        }
        if let Some(secret) = env("RUSHER_CONSOLE_SESSION_SECRET").filter(|s| !s.is_empty()) {
            self.console.session_secret = Some(secret);
            self.env_overrides.insert(
                "console.session_secret",
                "console.session_secret via RUSHER_CONSOLE_SESSION_SECRET",
            );
        }
        // The credential overrides apply to the first (default) app.
        if let Some(app) = self.apps.first_mut() {
            if let Some(id) = env("RUSHER_APP_ID") {
                app.id = id;
                self.env_overrides
                    .insert("apps[0].id", "apps[0].id via RUSHER_APP_ID");
            }
            if let Some(key) = env("RUSHER_APP_KEY") {
                app.key = key;
                self.env_overrides
                    .insert("apps[0].key", "apps[0].key via RUSHER_APP_KEY");
            }
            if let Some(secret) = env("RUSHER_APP_SECRET") {
                app.secret = secret;
                self.env_overrides
                    .insert("apps[0].secret", "apps[0].secret via RUSHER_APP_SECRET");
            }
        }
        Ok(())
    }

    /// One line saying what this config serves, for `rusher --check-config`:
    /// `config OK: listen {host}:{port}, adapter {..}, store {..}, apps: {id} (key {key}), ...`.
    pub fn summary(&self) -> String {
        let apps: Vec<String> = self
            .apps
            .iter()
            .map(|app| {
                let aliases: Vec<&str> = app
                    .id_aliases
                    .iter()
                    .filter(|alias| **alias != app.id)
                    .map(String::as_str)
                    .collect();
                if aliases.is_empty() {
                    format!("{} (key {})", app.id, app.key)
                } else {
                    format!(
                        "{} (key {}; also id {})",
                        app.id,
                        app.key,
                        aliases.join(", ")
                    )
                }
            })
            .collect();
        let tls = match self.server.tls.port {
            _ if !self.server.tls.enabled() => String::new(),
            None => " (TLS)".into(),
            Some(port) => format!(", TLS on port {port}"),
        };
        format!(
            "config OK: listen {}:{}{tls}, adapter {}, store {}, apps: {}",
            self.server.host,
            self.server.port,
            match self.adapter {
                AdapterKind::Local => "local",
                AdapterKind::Redis => "redis",
            },
            match self.store.backend {
                StoreBackend::Memory => "memory",
                StoreBackend::Mongodb => "mongodb",
            },
            apps.join(", ")
        )
    }

    /// The name to show for `key`: the key itself, with the environment
    /// variable that set it if one did (`server.port`, or
    /// `server.port via RUSHER_PORT`).
    pub fn key_source(&self, key: &'static str) -> &'static str {
        self.env_overrides.get(key).copied().unwrap_or(key)
    }

    /// Checks ranges and uniqueness; the error names the key (or the
    /// variable that set it).
    ///
    /// Every section is checked whether or not the adapter and store in use
    /// read it, so a mistake does not wait to surface until the day the
    /// adapter or backend is switched; [`Config::unused_settings`] tells
    /// what is set but unused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        crate::logging::parse_filter(&s.log_level)
            .map_err(|e| invalid(self.key_source("server.log_level"), e.to_string()))?;
        if s.host.trim().is_empty() {
            return Err(invalid(self.key_source("server.host"), "must not be empty"));
        }
        let positive = [
            ("server.activity_timeout", s.activity_timeout as usize),
            ("server.pong_timeout", s.pong_timeout as usize),
            ("server.max_frame_bytes", s.max_frame_bytes),
            ("server.outgoing_queue", s.outgoing_queue),
            ("server.max_request_bytes", s.max_request_bytes),
            ("server.webhooks.batch_size", s.webhooks.batch_size),
            ("server.webhooks.queue", s.webhooks.queue),
            ("server.webhooks.concurrency", s.webhooks.concurrency),
            ("server.webhooks.timeout_ms", s.webhooks.timeout_ms as usize),
            (
                "server.webhooks.max_attempts",
                s.webhooks.max_attempts as usize,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        self.validate_server_durations()?;
        self.validate_transports()?;
        self.limits
            .validate()
            .map_err(|(key, reason)| invalid(format!("limits.{key}"), reason))?;
        self.notifications
            .validate()
            .map_err(|(key, reason)| invalid(format!("notifications.{key}"), reason))?;
        self.validate_redis()?;
        self.pushi_api
            .validate()
            .map_err(|(key, reason)| invalid(format!("pushi_api.{key}"), reason))?;
        let st = &self.store;
        for (key, value) in [
            ("store.message_ttl_secs", st.message_ttl_secs as usize),
            (
                "store.max_messages_per_channel",
                st.max_messages_per_channel,
            ),
            ("store.write_queue", st.write_queue),
            ("store.timeout_ms", st.timeout_ms as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if !(st.url.starts_with("mongodb://") || st.url.starts_with("mongodb+srv://")) {
            return Err(invalid(
                self.key_source("store.url"),
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if st.database.trim().is_empty() {
            return Err(invalid(
                self.key_source("store.database"),
                "must not be empty",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = |field: &str| {
                let key = format!("apps[{i}].{field}");
                match self.env_overrides.get(key.as_str()) {
                    Some(shown) => (*shown).to_owned(),
                    None => key,
                }
            };
            for (field, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
                if value.trim().is_empty() {
                    return Err(invalid(at(field), "must not be empty"));
                }
            }
            if app.id.contains('/') {
                return Err(invalid(at("id"), "must not contain `/`"));
            }
            if !ids.insert(app.id.as_str()) {
                return Err(invalid(at("id"), format!("`{}` is used twice", app.id)));
            }
            for (j, alias) in app.id_aliases.iter().enumerate() {
                // `RUSHER_APP_ID=1` on the built-in app makes its alias its id.
                if *alias == app.id {
                    continue;
                }
                let key = at(&format!("id_aliases[{j}]"));
                if alias.trim().is_empty() || alias.contains('/') {
                    return Err(invalid(key, "must not be empty or contain `/`"));
                }
                if !ids.insert(alias.as_str()) {
                    return Err(invalid(
                        key,
                        format!("`{alias}` is used twice as an app id"),
                    ));
                }
            }
            if !keys.insert(app.key.as_str()) {
                return Err(invalid(at("key"), format!("`{}` is used twice", app.key)));
            }
            self.validate_app(app, &at)?;
        }
        self.validate_apps_store()?;
        self.validate_console()?;
        // Last: it reads the files.
        self.validate_tls()
    }

    /// The checks of one app's options, except the uniqueness of ids and
    /// keys: the same for an `[[apps]]` entry and for an app of the apps
    /// store or the admin API. `at` names a field as the user wrote it.
    pub fn validate_app(
        &self,
        app: &AppConfig,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        for (field, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
            if value.trim().is_empty() {
                return Err(invalid(at(field), "must not be empty"));
            }
        }
        if app.id.contains('/') {
            return Err(invalid(at("id"), "must not contain `/`"));
        }
        let limits = [
            ("max_event_data_bytes", app.max_event_data_bytes),
            ("max_event_name_length", app.max_event_name_length),
            ("max_channels_per_event", app.max_channels_per_event),
            ("max_channel_name_length", app.max_channel_name_length),
            ("max_batch_events", app.max_batch_events),
            (
                "max_channels_per_connection",
                app.max_channels_per_connection,
            ),
            ("max_presence_members", app.max_presence_members),
            (
                "max_presence_user_info_bytes",
                app.max_presence_user_info_bytes,
            ),
            ("client_event_rate", app.client_event_rate as usize),
            ("cache_ttl", app.cache_ttl as usize),
            ("history_size", app.history_size),
            ("history_ttl", app.history_ttl as usize),
            ("idempotency_max_keys", app.idempotency_max_keys),
            ("recovery_window", app.recovery_window.unwrap_or(1) as usize),
            ("recovery_users", app.recovery_users),
            (
                "subscription_count_interval_ms",
                app.subscription_count_interval_ms as usize,
            ),
        ];
        for (field, value) in limits {
            if value == 0 {
                return Err(invalid(at(field), "must be greater than 0"));
            }
        }
        for (w, webhook) in app.webhooks.iter().enumerate() {
            let at = |field: &str| at(&format!("webhooks[{w}].{field}"));
            if !(webhook.url.starts_with("http://") || webhook.url.starts_with("https://")) {
                return Err(invalid(at("url"), "must be an http:// or https:// URL"));
            }
            for kind in &webhook.event_types {
                if !WEBHOOK_EVENT_TYPES.contains(&kind.as_str()) {
                    return Err(invalid(
                        at("event_types"),
                        format!(
                            "unknown event type `{kind}`; known: {}",
                            WEBHOOK_EVENT_TYPES.join(", ")
                        ),
                    ));
                }
            }
        }
        let timeout = app.authorization_timeout;
        if !(timeout.is_finite() && timeout >= 0.001 && timeout <= MAX_DURATION_SECS as f64) {
            return Err(invalid(
                at("authorization_timeout"),
                "must be a number of seconds from 0.001 to 10 years",
            ));
        }
        if app.connection_rate > 0 && app.connection_burst == 0 {
            return Err(invalid(
                at("connection_burst"),
                "must be at least 1 when connection_rate is set",
            ));
        }
        if app
            .subscription_rate
            .is_some_and(|rate| rate > 0 && (rate as usize) < app.max_channels_per_connection)
        {
            return Err(invalid(
                at("subscription_rate"),
                format!(
                    "must be at least max_channels_per_connection ({}): pusher-js subscribes to all its channels at once when it reconnects",
                    app.max_channels_per_connection
                ),
            ));
        }
        self.validate_history(app, at)?;
        validate_web_push(app, at)?;
        validate_durations(app, at)?;
        app.delivery
            .validate(self.adapter == AdapterKind::Redis)
            .map_err(|(key, reason)| invalid(at(&format!("delivery.{key}")), reason))?;
        if app.max_channel_name_length > crate::protocol::channel::MAX_CHANNEL_NAME_LENGTH {
            return Err(invalid(
                at("max_channel_name_length"),
                "must be at most 164 (the protocol's limit)",
            ));
        }
        Ok(())
    }

    /// `[console]`.
    fn validate_console(&self) -> Result<(), ConfigError> {
        let c = &self.console;
        if let Some(secret) = &c.session_secret {
            if secret.len() < MIN_ADMIN_TOKEN_BYTES {
                return Err(invalid(
                    self.key_source("console.session_secret"),
                    format!(
                        "must be at least {MIN_ADMIN_TOKEN_BYTES} bytes (it signs console logins)"
                    ),
                ));
            }
        }
        if !(1..=100_000).contains(&c.max_log_events) {
            return Err(invalid(
                "console.max_log_events",
                "must be from 1 to 100000",
            ));
        }
        if !(16..=1_000_000).contains(&c.watcher_queue) {
            return Err(invalid(
                "console.watcher_queue",
                "must be from 16 to 1000000",
            ));
        }
        if !(100..=60_000).contains(&c.lease_ms) {
            return Err(invalid("console.lease_ms", "must be from 100 to 60000"));
        }
        if !(100..=60_000).contains(&c.sample_interval_ms) {
            return Err(invalid(
                "console.sample_interval_ms",
                "must be from 100 to 60000",
            ));
        }
        Ok(())
    }

    /// `[apps_store]` and `[admin]`.
    fn validate_apps_store(&self) -> Result<(), ConfigError> {
        let st = &self.apps_store;
        if st.poll_interval_ms == 0 || st.poll_interval_ms > MAX_DURATION_SECS * 1000 {
            return Err(invalid(
                "apps_store.poll_interval_ms",
                "must be from 1 to 10 years in milliseconds",
            ));
        }
        if let Some(url) = &st.url {
            if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
                return Err(invalid(
                    "apps_store.url",
                    "must start with mongodb:// or mongodb+srv://",
                ));
            }
        }
        if st.database.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return Err(invalid("apps_store.database", "must not be empty"));
        }
        if st.collection.trim().is_empty() {
            return Err(invalid("apps_store.collection", "must not be empty"));
        }
        if let Some(token) = &self.admin.token {
            let key = self.key_source("admin.token");
            if token.len() < MIN_ADMIN_TOKEN_BYTES {
                return Err(invalid(
                    key,
                    format!("must be at least {MIN_ADMIN_TOKEN_BYTES} bytes (it opens every app's secrets)"),
                ));
            }
            if self.apps.iter().any(|app| app.secret == *token) {
                return Err(invalid(key, "must not be an app secret"));
            }
        }
        Ok(())
    }

    /// `[server.tls]`: both files or neither, sane limits, and the files
    /// themselves read and checked ([`crate::tls::load`]), so a bad file
    /// stops `--check-config` and the startup with the key and the path.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.server.tls;
        if !tls.enabled() {
            return Ok(());
        }
        let (missing, set) = match (tls.cert.is_empty(), tls.key.is_empty()) {
            (false, true) => ("server.tls.key", "server.tls.cert"),
            (true, false) => ("server.tls.cert", "server.tls.key"),
            _ => ("", ""),
        };
        if !missing.is_empty() {
            return Err(invalid(
                self.key_source(missing),
                format!(
                    "must be set too, since {} is: TLS needs the certificate and its private key",
                    self.key_source(set)
                ),
            ));
        }
        if tls.port == Some(self.server.port) {
            return Err(invalid(
                self.key_source("server.tls.port"),
                "must differ from server.port (leave it out to serve TLS on server.port)",
            ));
        }
        if tls.handshake_timeout_ms == 0 {
            return Err(invalid(
                "server.tls.handshake_timeout_ms",
                "must be greater than 0",
            ));
        }
        if tls.max_handshakes == 0 {
            return Err(invalid(
                "server.tls.max_handshakes",
                "must be greater than 0",
            ));
        }
        first_too_long(
            [
                (
                    "server.tls.handshake_timeout_ms",
                    tls.handshake_timeout_ms,
                    MAX_DURATION_SECS.saturating_mul(1000),
                ),
                (
                    "server.tls.reload_check_secs",
                    tls.reload_check_secs,
                    MAX_DURATION_SECS,
                ),
            ],
            |key| key.to_owned(),
        )?;
        crate::tls::load(tls)
            .map(drop)
            .map_err(|error| invalid(self.key_source(error.file.key()), error.reason))
    }

    /// An app's history settings: sizes fit the outgoing queue.
    fn validate_history(
        &self,
        app: &AppConfig,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        let most = self.server.outgoing_queue / 2;
        // Only with history on: the default size must not refuse a small
        // queue on an app that keeps no history.
        if app.history && app.history_size > most {
            return Err(invalid(
                at("history_size"),
                format!(
                    "must be at most server.outgoing_queue / 2 = {most}, so a full replay \
                     fits in a connection's queue beside live events"
                ),
            ));
        }
        if app.history_retention > 0 {
            let refuse = |why: String| Err(invalid(at("history_retention"), why));
            if !app.history {
                return refuse("needs history = true (it keeps the history longer)".into());
            }
            if self.store.backend != StoreBackend::Mongodb {
                return refuse(
                    "needs store.backend = \"mongodb\" (long retention is kept in MongoDB); \
                     set it, or history_retention = 0"
                        .into(),
                );
            }
            if app.history_retention < app.history_ttl {
                return refuse(format!(
                    "must be 0 or at least history_ttl ({} s): it keeps events longer than the buffer",
                    app.history_ttl
                ));
            }
        }
        for (p, prefix) in app.history_channels.iter().enumerate() {
            if prefix.is_empty() {
                return Err(invalid(
                    at(&format!("history_channels[{p}]")),
                    "must not be empty (leave the list empty for every channel)",
                ));
            }
        }
        Ok(())
    }

    /// `[redis]`, checked whatever the adapter.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        let r = &self.redis;
        if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
            return Err(invalid(
                self.key_source("redis.url"),
                "must start with redis:// or rediss://",
            ));
        }
        if r.prefix.is_empty() {
            return Err(invalid(
                self.key_source("redis.prefix"),
                "must not be empty",
            ));
        }
        // The prefix goes inside the `{...}` hash tags of the keys.
        if r.prefix.contains(['{', '}']) {
            return Err(invalid(
                self.key_source("redis.prefix"),
                "must not contain `{` or `}`",
            ));
        }
        if let RedisCluster::Seeds(seeds) = &r.cluster {
            if seeds.is_empty() {
                return Err(invalid(
                    self.key_source("redis.cluster"),
                    "must be true, false or a non-empty list of seed URLs",
                ));
            }
            if let Some(bad) = seeds
                .iter()
                .find(|url| !(url.starts_with("redis://") || url.starts_with("rediss://")))
            {
                return Err(invalid(
                    self.key_source("redis.cluster"),
                    format!("seed `{bad}` must start with redis:// or rediss://"),
                ));
            }
        }
        if !(1..=1024).contains(&r.shard_groups) {
            return Err(invalid("redis.shard_groups", "must be between 1 and 1024"));
        }
        for (key, value) in [
            ("redis.heartbeat_secs", r.heartbeat_secs),
            ("redis.operation_timeout_ms", r.operation_timeout_ms),
            ("redis.usage_interval_ms", r.usage_interval_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if r.node_timeout_secs <= r.heartbeat_secs {
            return Err(invalid(
                "redis.node_timeout_secs",
                "must be longer than redis.heartbeat_secs",
            ));
        }
        Ok(())
    }

    /// Apps that keep the well-known built-in secret (`app-secret`) while the
    /// server listens beyond loopback, one sentence each, for a warning at
    /// startup: anyone who reads the README could sign for them.
    pub fn default_secret_warnings(&self) -> Vec<String> {
        let host = self.server.host.trim_matches(|c| c == '[' || c == ']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            return Vec::new();
        }
        self.apps
            .iter()
            .filter(|app| app.secret == "app-secret")
            .map(|app| {
                format!(
                    "app `{}` uses the built-in secret `app-secret` and the server listens on {}: \
                     set your own key and secret ([[apps]] or RUSHER_APP_KEY / RUSHER_APP_SECRET) \
                     before anyone else can reach it",
                    app.id, self.server.host
                )
            })
            .collect()
    }

    /// Settings that differ from their defaults but that nothing reads with
    /// this configuration, one sentence each, for a warning at startup
    /// (`[redis]` with `adapter = "local"`, MongoDB settings with the memory
    /// store, `[server.webhooks]` when no app has a webhook).
    pub fn unused_settings(&self) -> Vec<String> {
        let mut unused = Vec::new();
        if self.adapter == AdapterKind::Local && self.redis != RedisConfig::default() {
            unused.push(
                "[redis] is set but not used: it applies only with adapter = \"redis\"".to_string(),
            );
        }
        if self.store.backend == StoreBackend::Memory {
            let default = StoreConfig::default();
            let set: Vec<&str> = [
                ("store.url", self.store.url != default.url),
                ("store.database", self.store.database != default.database),
                (
                    "store.timeout_ms",
                    self.store.timeout_ms != default.timeout_ms,
                ),
            ]
            .into_iter()
            .filter_map(|(key, set)| set.then_some(key))
            .collect();
            if !set.is_empty() {
                unused.push(format!(
                    "{} set but not used: they apply only with store.backend = \"mongodb\"",
                    set.join(", ")
                ));
            }
        }
        if self.apps.iter().all(|app| app.webhooks.is_empty())
            && self.server.webhooks != WebhookSettings::default()
        {
            unused.push(
                "[server.webhooks] is set but not used: no app has [[apps.webhooks]]".to_string(),
            );
        }
        if !self.server.tls.enabled() && self.server.tls != TlsSettings::default() {
            unused.push(
                "[server.tls] is set but not used: TLS is on only with cert and key".to_string(),
            );
        }
        unused
    }
}

/// An app's Web Push settings: a key that parses with a subject, a subject
/// only with a key, a TTL push services keep.
fn validate_web_push(app: &AppConfig, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    use crate::notify::vapid::{Vapid, VapidError};
    if app.vapid_private_key.is_none() && app.vapid_subject.is_some() {
        return Err(invalid(
            at("vapid_subject"),
            "is set without vapid_private_key (set both to send Web Push)",
        ));
    }
    if app.web_push_ttl_secs > crate::notify::web_push::MAX_TTL_SECS {
        return Err(invalid(
            at("web_push_ttl_secs"),
            "must be at most 2419200 (28 days, what push services keep)",
        ));
    }
    match Vapid::from_app(app) {
        Ok(_) => Ok(()),
        Err(VapidError::BadKey(reason)) => Err(invalid(at("vapid_private_key"), reason)),
        Err(VapidError::BadSubject(reason)) => Err(invalid(at("vapid_subject"), reason)),
    }
}

/// Longest time an app setting may name (10 years): times are added to
/// the clock's `Instant`s, and an addition past its range panics.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// The first of `times` (name, value, most allowed) above its most, as the
/// error naming it (`key` turns the name into the key said).
fn first_too_long<K>(
    times: impl IntoIterator<Item = (K, u64, u64)>,
    key: impl Fn(K) -> String,
) -> Result<(), ConfigError> {
    match times.into_iter().find(|(_, value, most)| value > most) {
        Some((name, _, most)) => Err(invalid(
            key(name),
            format!("must be at most {most} (10 years)"),
        )),
        None => Ok(()),
    }
}

impl Config {
    /// The transports' limits: positive, and one transport at least.
    fn validate_transports(&self) -> Result<(), ConfigError> {
        let t = &self.transports;
        for (key, value) in [
            ("transports.long_poll_timeout", t.long_poll_timeout as usize),
            ("transports.max_batch_size", t.max_batch_size),
            ("transports.heartbeat", t.heartbeat as usize),
            ("transports.max_sessions", t.max_sessions),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if !(t.ws || t.xhr_streaming || t.xhr_polling || t.sse) {
            return Err(invalid(
                "transports",
                "turns every transport off: no client could connect",
            ));
        }
        Ok(())
    }

    /// Server-wide times: at most 10 years, like an app's ([`validate_durations`]),
    /// so no `Instant + Duration` or timer arithmetic can overflow at run time.
    fn validate_server_durations(&self) -> Result<(), ConfigError> {
        let (s, w) = (&self.server, &self.server.webhooks);
        let (secs, ms) = (MAX_DURATION_SECS, MAX_DURATION_SECS.saturating_mul(1000));
        let times = [
            ("server.activity_timeout", s.activity_timeout, secs),
            ("server.pong_timeout", s.pong_timeout, secs),
            ("server.subscribe_wait_ms", s.subscribe_wait_ms, ms),
            ("server.shutdown_grace", s.shutdown_grace, secs),
            ("server.handover_wait_ms", s.handover_wait_ms, ms),
            ("server.webhooks.batch_ms", w.batch_ms, ms),
            ("server.webhooks.timeout_ms", w.timeout_ms, ms),
            ("server.webhooks.backoff_ms", w.backoff_ms, ms),
            (
                "server.webhooks.member_removed_delay_ms",
                w.member_removed_delay_ms,
                ms,
            ),
            (
                "server.webhooks.channel_vacated_delay_ms",
                w.channel_vacated_delay_ms,
                ms,
            ),
            ("store.message_ttl_secs", self.store.message_ttl_secs, secs),
            ("store.timeout_ms", self.store.timeout_ms, ms),
            ("redis.heartbeat_secs", self.redis.heartbeat_secs, secs),
            (
                "redis.node_timeout_secs",
                self.redis.node_timeout_secs,
                secs,
            ),
            (
                "redis.operation_timeout_ms",
                self.redis.operation_timeout_ms,
                ms,
            ),
            ("redis.usage_interval_ms", self.redis.usage_interval_ms, ms),
        ];
        first_too_long(times, |key| self.key_source(key).to_owned())
    }
}

/// An app's times (seconds, or milliseconds where named) are at most
/// [`MAX_DURATION_SECS`]: a value near `u64::MAX` would otherwise be
/// accepted and panic the first publish that uses it.
fn validate_durations(app: &AppConfig, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let most_ms = MAX_DURATION_SECS.saturating_mul(1000);
    let times = [
        ("history_ttl", app.history_ttl, MAX_DURATION_SECS),
        (
            "idempotency_window",
            app.idempotency_window,
            MAX_DURATION_SECS,
        ),
        (
            "recovery_window",
            app.recovery_window.unwrap_or(1),
            MAX_DURATION_SECS,
        ),
        ("cache_ttl", app.cache_ttl, MAX_DURATION_SECS),
        (
            "subscription_count_interval_ms",
            app.subscription_count_interval_ms,
            most_ms,
        ),
        (
            "history_retention",
            app.history_retention,
            MAX_DURATION_SECS,
        ),
        (
            "delivery.message_ttl",
            app.delivery.message_ttl,
            MAX_DURATION_SECS,
        ),
        (
            "delivery.ack_timeout_ms",
            app.delivery.ack_timeout_ms,
            most_ms,
        ),
    ];
    first_too_long(times, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_serve_the_builtin_app_on_6001() {
        let config = Config::load(None, no_env).unwrap();
        assert_eq!(config.server.port, 6001);
        assert_eq!(config.apps.len(), 1);
        assert_eq!(config.apps[0].key, "app-key");
        assert_eq!(config.apps[0].max_event_data_bytes, 10240);
        assert_eq!(config.apps[0].id, "app-id");
        assert_eq!(config.apps[0].id_aliases, ["1"]);
    }

    #[test]
    fn a_numeric_app_id_from_the_environment_may_equal_the_builtin_alias() {
        let env = |name: &str| (name == "RUSHER_APP_ID").then(|| "1".to_string());
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.apps[0].id, "1");
    }

    #[test]
    fn the_builtin_secret_is_warned_about_beyond_loopback_only() {
        let mut config = Config::default();
        assert_eq!(config.default_secret_warnings().len(), 1, "0.0.0.0");
        config.server.host = "127.0.0.1".into();
        assert!(config.default_secret_warnings().is_empty());
        config.server.host = "::1".into();
        assert!(config.default_secret_warnings().is_empty());
    }

    #[test]
    fn an_empty_app_credential_from_the_environment_names_the_variable() {
        for var in ["RUSHER_APP_ID", "RUSHER_APP_KEY", "RUSHER_APP_SECRET"] {
            let env = |name: &str| (name == var).then(String::new);
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.contains(&format!("via {var}")), "{err}");
        }
    }

    #[test]
    fn an_alias_used_as_another_apps_id_is_refused() {
        let mut config = Config::default();
        config
            .apps
            .push(AppConfig::with_credentials("1", "k2", "s2"));
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("apps[1].id"), "{error}");
    }

    #[test]
    fn environment_overrides_port_and_credentials() {
        let env = |name: &str| match name {
            "RUSHER_PORT" => Some("7000".to_string()),
            "RUSHER_APP_KEY" => Some("k2".to_string()),
            "RUSHER_WORKERS" => Some("3".to_string()),
            _ => None,
        };
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.server.port, 7000);
        assert_eq!(config.apps[0].key, "k2");
        assert_eq!(config.server.workers, 3);
    }

    #[test]
    fn the_documented_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let config = Config::load(Some(&path), no_env).unwrap();
        assert_eq!(config.server.workers, 0);
        // "Running with this file changes nothing": same listener, adapter,
        // store and app (id, aliases, key) as running without a file.
        assert_eq!(
            config.summary(),
            Config::load(None, no_env).unwrap().summary()
        );
    }

    fn tls_fixture(name: &str) -> String {
        format!("{}/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn tls_files_come_from_the_file_or_the_environment_and_are_checked() {
        let env = |name: &str| match name {
            "RUSHER_TLS_CERT" => Some(tls_fixture("cert.pem")),
            "RUSHER_TLS_KEY" => Some(tls_fixture("key.pem")),
            "RUSHER_TLS_PORT" => Some("6443".to_string()),
            _ => None,
        };
        let config = Config::load(None, env).unwrap();
        assert!(config.server.tls.enabled());
        assert!(
            config.summary().contains("6001, TLS on port 6443"),
            "{}",
            config.summary()
        );
        let env = |name: &str| match name {
            "RUSHER_TLS_CERT" => Some(tls_fixture("cert.pem")),
            "RUSHER_TLS_KEY" => Some(tls_fixture("other-key.pem")),
            _ => None,
        };
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "invalid config value `server.tls.key via RUSHER_TLS_KEY`: the private key in "
            ),
            "{err}"
        );
        let env =
            |name: &str| (name == "RUSHER_TLS_CERT").then(|| "/nonexistent/cert.pem".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("`server.tls.key`: must be set too"), "{err}");
    }

    #[test]
    fn a_missing_tls_file_names_the_key_and_the_path() {
        let text = format!(
            "[server.tls]\ncert = '/nonexistent/cert.pem'\nkey = '{}'\n",
            tls_fixture("key.pem")
        );
        let err = Config::from_toml(&text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid config value `server.tls.cert`: cannot read /nonexistent/cert.pem: "
            ),
            "{err}"
        );
        let text = format!(
            "[server]\nport = 7000\n[server.tls]\ncert = '{}'\nkey = '{}'\nport = 7000\n",
            tls_fixture("cert.pem"),
            tls_fixture("key.pem")
        );
        let err = Config::from_toml(&text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.tls.port`: must differ"), "{err}");
    }

    #[test]
    fn bad_worker_count_in_environment_names_the_variable() {
        let env = |name: &str| (name == "RUSHER_WORKERS").then(|| "many".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("RUSHER_WORKERS"), "{err}");
    }

    #[test]
    fn bad_port_in_environment_names_the_variable() {
        let env = |name: &str| (name == "RUSHER_PORT").then(|| "x".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("RUSHER_PORT"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[server]\nprot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn duplicate_app_key_is_named() {
        let mut config = Config::default();
        let mut second = config.apps[0].clone();
        second.id = "other".into();
        second.id_aliases.clear();
        config.apps.push(second);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("apps[1].key"), "{err}");
    }

    #[test]
    fn web_push_settings_are_checked_and_named() {
        let app = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\n";
        let key = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
        let check = |extra: &str| {
            Config::from_toml(&format!("{app}{extra}"))
                .and_then(|c| c.validate().map(|_| c).map_err(|e| e.to_string()))
        };
        let ok = check(&format!(
            "vapid_private_key='{key}'\nvapid_subject='mailto:ops@example.com'\n"
        ))
        .unwrap();
        assert_eq!(ok.apps[0].web_push_ttl_secs, 86_400);
        let cases = [
            (
                "vapid_private_key='nope'\nvapid_subject='mailto:a@b'\n",
                "apps[0].vapid_private_key",
            ),
            (
                &format!("vapid_private_key='{key}'\n"),
                "apps[0].vapid_subject",
            ),
            (
                &format!("vapid_private_key='{key}'\nvapid_subject='ops'\n"),
                "apps[0].vapid_subject",
            ),
            ("vapid_subject='mailto:a@b'\n", "apps[0].vapid_subject"),
            ("web_push_ttl_secs=99999999\n", "apps[0].web_push_ttl_secs"),
        ];
        for (extra, key) in cases {
            let err = check(extra).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn webhook_with_unknown_event_type_is_named() {
        let text = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\n[[apps.webhooks]]\nurl='http://x'\nevent_types=['nope']\n";
        let err = Config::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("apps[0].webhooks[0].event_types"), "{err}");
    }

    #[test]
    fn an_unknown_log_level_is_named_with_the_valid_levels() {
        let config = Config::from_toml("[server]\nlog_level = 'verbose'\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`server.log_level`"), "{err}");
        assert!(err.contains(crate::logging::LEVELS), "{err}");
    }

    #[test]
    fn a_log_level_from_the_environment_names_its_variable() {
        let env = |name: &str| (name == "RUSHER_LOG_LEVEL").then(|| "verbose".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(
            err.contains("server.log_level via RUSHER_LOG_LEVEL"),
            "{err}"
        );
        let env = |name: &str| (name == "RUSHER_LOG_LEVEL").then(|| "warning".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(
            err.contains("server.log_level via RUSHER_LOG_LEVEL"),
            "{err}"
        );
    }

    #[test]
    fn rust_log_replaces_the_level_and_is_named_when_bad() {
        let env = |name: &str| match name {
            "RUSHER_LOG_LEVEL" => Some("warn".to_string()),
            "RUST_LOG" => Some("info,rusher=debug".to_string()),
            _ => None,
        };
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.server.log_level, "info,rusher=debug");
        let env = |name: &str| (name == "RUST_LOG").then(|| "loud".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("server.log_level via RUST_LOG"), "{err}");
        // `RUST_LOG=` means unset.
        let env = |name: &str| (name == "RUST_LOG").then(String::new);
        assert_eq!(Config::load(None, env).unwrap().server.log_level, "info");
    }

    #[test]
    fn redis_cluster_is_false_true_or_seed_urls_from_the_file_or_the_environment() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.redis.cluster_seeds(), None);
        assert_eq!(config.redis.shard_groups, 16);
        let config = Config::from_toml("[redis]\nurl = 'redis://h:1'\ncluster = true\n").unwrap();
        assert_eq!(
            config.redis.cluster_seeds(),
            Some(vec!["redis://h:1".into()])
        );
        let config =
            Config::from_toml("[redis]\ncluster = ['redis://a:1', 'redis://b:2']\n").unwrap();
        assert_eq!(
            config.redis.cluster_seeds(),
            Some(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert!(Config::from_toml("[redis]\ncluster = 'yes'\n").is_err());
        let env = |name: &str| {
            (name == "RUSHER_REDIS_CLUSTER").then(|| "redis://a:1, redis://b:2".to_string())
        };
        let config = Config::load(None, env).unwrap();
        assert_eq!(
            config.redis.cluster_seeds(),
            Some(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        let env = |name: &str| (name == "RUSHER_REDIS_CLUSTER").then(|| "true".to_string());
        assert_eq!(
            Config::load(None, env).unwrap().redis.cluster,
            RedisCluster::Enabled(true)
        );
        let env = |name: &str| (name == "RUSHER_REDIS_CLUSTER").then(|| "maybe".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(
            err.contains("redis.cluster via RUSHER_REDIS_CLUSTER"),
            "{err}"
        );
    }

    #[test]
    fn redis_settings_are_checked_with_the_local_adapter_too() {
        for (text, key) in [
            ("[redis]\nheartbeat_secs = 0\n", "redis.heartbeat_secs"),
            (
                "[redis]\nusage_interval_ms = 0\n",
                "redis.usage_interval_ms",
            ),
            (
                "[redis]\noperation_timeout_ms = 0\n",
                "redis.operation_timeout_ms",
            ),
            ("[redis]\nheartbeat_secs = 20\n", "redis.node_timeout_secs"),
            ("[redis]\nurl = 'localhost:6379'\n", "redis.url"),
            ("[redis]\nprefix = ''\n", "redis.prefix"),
            ("[redis]\nprefix = 'a{b}'\n", "redis.prefix"),
            ("[redis]\ncluster = []\n", "redis.cluster"),
            ("[redis]\ncluster = ['127.0.0.1:7000']\n", "redis.cluster"),
            ("[redis]\nshard_groups = 0\n", "redis.shard_groups"),
        ] {
            let config = Config::from_toml(text).unwrap();
            assert_eq!(config.adapter, AdapterKind::Local);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
    }

    #[test]
    fn mongodb_settings_are_checked_with_the_memory_store_too() {
        let config = Config::from_toml("[store]\nurl = 'localhost:27017'\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`store.url`"), "{err}");
        let env = |name: &str| (name == "RUSHER_MONGODB_URL").then(|| "localhost".to_string());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("store.url via RUSHER_MONGODB_URL"), "{err}");
    }

    #[test]
    fn settings_nothing_reads_are_reported() {
        let config = Config::from_toml(
            "[server.webhooks]\nbatch_ms = 10\n[redis]\nheartbeat_secs = 3\n[store]\ndatabase = 'x'\n",
        )
        .unwrap();
        config.validate().unwrap();
        let unused = config.unused_settings().join("\n");
        assert!(unused.contains("[redis]"), "{unused}");
        assert!(unused.contains("store.database"), "{unused}");
        assert!(unused.contains("[server.webhooks]"), "{unused}");
        assert!(Config::default().unused_settings().is_empty());
        let tls = Config::from_toml("[server.tls]\nport = 6443\n").unwrap();
        assert!(tls.unused_settings().join("\n").contains("[server.tls]"));
        let mut redis = config.clone();
        redis.adapter = AdapterKind::Redis;
        assert!(!redis.unused_settings().join("\n").contains("[redis]"));
    }

    #[test]
    fn zero_limit_is_named() {
        let text = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\nmax_batch_events=0\n";
        let config = Config::from_toml(text).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("apps[0].max_batch_events"), "{err}");
    }

    #[test]
    fn authorization_timeout_takes_fractions_of_seconds_and_refuses_nonsense() {
        let app = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\nauthorized_connections=true\n";
        let config = Config::from_toml(app).unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(
            config.apps[0].authorization_timeout(),
            Duration::from_secs(30)
        );
        assert_eq!(config.apps[0].unauthorized_cap(), 0);
        let text = format!("{app}authorization_timeout=0.25\nmax_connections=7\n");
        let config = Config::from_toml(&text).unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(
            config.apps[0].authorization_timeout(),
            Duration::from_millis(250)
        );
        assert_eq!(
            config.apps[0].unauthorized_cap(),
            7,
            "defaults to max_connections"
        );
        let text = format!("{app}authorization_timeout=2\nmax_unauthorized_connections=3\n");
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(
            config.apps[0].authorization_timeout(),
            Duration::from_secs(2)
        );
        assert_eq!(config.apps[0].unauthorized_cap(), 3);
        for bad in ["0", "-1", "nan", "inf", "1e12"] {
            let text = format!("{app}authorization_timeout={bad}\n");
            let config = Config::from_toml(&text).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("apps[0].authorization_timeout"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn subscribe_wait_is_bounded_by_the_activity_timeout() {
        let text = "[server]\nactivity_timeout = 3\n";
        let config = Config::from_toml(text).unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(config.server.subscribe_wait(), Duration::from_secs(3));
        let text = "[server]\nsubscribe_wait_ms = 1500\n";
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.server.subscribe_wait(), Duration::from_millis(1500));
    }

    #[test]
    fn history_is_accepted_with_redis_and_its_retry_queue_is_read() {
        let text = "adapter = 'redis'\n[redis]\nhistory_retry_queue = 5\n[[apps]]\nid='a'\nkey='b'\nsecret='c'\nhistory=true\n";
        let config = Config::from_toml(text).unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(config.redis.history_retry_queue, 5);
        assert_eq!(RedisConfig::default().history_retry_queue, 10_000);
    }

    #[test]
    fn delivery_errors_name_the_key_under_the_app() {
        let app = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\n[apps.delivery]\nenabled=true\n";
        let config = Config::from_toml(&format!("{app}store='redis'\n")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("apps[0].delivery.store"), "{err}");
        assert!(err.contains("adapter = \"redis\""), "{err}");
        let config = Config::from_toml(&format!("{app}retry_backoff=0.0\n")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("apps[0].delivery.retry_backoff"), "{err}");
        let config = Config::from_toml(&format!("{app}acks=1\n"));
        assert!(config.is_err(), "unknown keys are refused");
    }

    #[test]
    fn times_past_ten_years_are_refused_not_panicked_on() {
        // i64::MAX seconds was accepted, then `Instant + ttl` panicked the
        // worker of the first publish (history, idempotency, delivery).
        let app = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\nhistory=true\n";
        let huge = i64::MAX;
        for (key, table) in [
            ("history_ttl", ""),
            ("idempotency_window", ""),
            ("recovery_window", ""),
            ("cache_ttl", ""),
            ("message_ttl", "[apps.delivery]\nenabled=true\n"),
            ("ack_timeout_ms", "[apps.delivery]\nenabled=true\n"),
        ] {
            let text = format!("{app}{table}{key}={huge}\n");
            let err = Config::from_toml(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("at most"), "{err}");
        }
        for (table, key) in [
            ("server", "shutdown_grace"),
            ("server", "activity_timeout"),
            ("server.webhooks", "member_removed_delay_ms"),
            ("server.webhooks", "channel_vacated_delay_ms"),
            ("store", "message_ttl_secs"),
            ("redis", "operation_timeout_ms"),
        ] {
            let text = format!("[{table}]\n{key}={huge}\n{app}");
            let err = Config::from_toml(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{table}.{key}")) && err.contains("at most"),
                "{err}"
            );
        }
        let text = format!("{app}history_ttl={MAX_DURATION_SECS}\n");
        assert!(Config::from_toml(&text).unwrap().validate().is_ok());
    }

    #[test]
    fn history_retention_needs_history_and_the_mongodb_store() {
        let app = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\n";
        let mongo = "[store]\nbackend='mongodb'\n";
        let check = |text: String| Config::from_toml(&text).unwrap().validate();
        let err = check(format!("{app}history=true\nhistory_retention=3600\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apps[0].history_retention") && err.contains("mongodb"),
            "{err}"
        );
        let err = check(format!("{mongo}{app}history_retention=3600\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("history = true"), "{err}");
        let err = check(format!("{mongo}{app}history=true\nhistory_retention=10\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("history_ttl"), "{err}");
        assert!(check(format!(
            "{mongo}{app}history=true\nhistory_retention=3600\n"
        ))
        .is_ok());
        assert!(
            check(format!("{app}history=true\n")).is_ok(),
            "off by default"
        );
    }

    #[test]
    fn abuse_limits_are_checked_and_name_their_key() {
        let app = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\n";
        let check = |text: String| Config::from_toml(&text).unwrap().validate();
        let err = check(format!("{app}subscription_rate=50\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apps[0].subscription_rate")
                && err.contains("max_channels_per_connection (100)"),
            "{err}"
        );
        assert!(
            check(format!("{app}subscription_rate=0\n")).is_ok(),
            "0 = unlimited"
        );
        let err = check(format!("{app}connection_rate=5\nconnection_burst=0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("apps[0].connection_burst"), "{err}");
        let err = check(format!("[limits]\ntrusted_proxies=['10.0.0.0/33']\n{app}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.trusted_proxies") && err.contains("10.0.0.0/33"),
            "{err}"
        );
        let defaults = Config::from_toml(app).unwrap();
        assert_eq!(defaults.limits.connection_rate_per_ip, 0, "off by default");
        assert_eq!(defaults.apps[0].subscription_rate(), 200);
        // Unset, it follows max_channels_per_connection: raising that alone
        // keeps a config valid (pusher-js resubscribes everything at once).
        let many =
            Config::from_toml(&format!("{app}max_channels_per_connection = 1000\n")).unwrap();
        assert!(many.validate().is_ok());
        assert_eq!(many.apps[0].subscription_rate(), 1000);
    }

    #[test]
    fn history_sizes_are_checked() {
        let app = "[[apps]]\nid='a'\nkey='b'\nsecret='c'\nhistory=true\n";
        let config = Config::from_toml(&format!("{app}history_size=0\n")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("apps[0].history_size"), "{err}");
        let text = format!("[server]\noutgoing_queue=100\n{app}history_size=51\n");
        let err = Config::from_toml(&text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apps[0].history_size") && err.contains("50"),
            "{err}"
        );
        let config = Config::from_toml(&format!("{app}history_ttl=0\n")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("apps[0].history_ttl"), "{err}");
        for key in ["recovery_window", "recovery_users"] {
            let config = Config::from_toml(&format!("{app}{key}=0\n")).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("apps[0].{key}")), "{err}");
        }
        let config = Config::from_toml(&format!("{app}history_ttl=60\n")).unwrap();
        assert_eq!(config.apps[0].recovery_window(), Duration::from_secs(60));
        let config = Config::from_toml(&format!("{app}history_channels=['']\n")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("apps[0].history_channels[0]"), "{err}");
        let off = "[server]\noutgoing_queue=64\n[[apps]]\nid='a'\nkey='b'\nsecret='c'\n";
        assert!(
            Config::from_toml(off).unwrap().validate().is_ok(),
            "history off: no size rule"
        );
        let defaults = Config::from_toml(app).unwrap();
        assert_eq!(
            (defaults.apps[0].history_size, defaults.apps[0].history_ttl),
            (100, 300)
        );
    }

    #[test]
    fn the_console_is_on_without_a_config_file_and_off_in_one_that_does_not_ask() {
        let none = |_: &str| None;
        assert!(Config::load(None, none).expect("defaults").console.enabled);
        let file = Config::from_toml("[server]\nport = 6001\n").expect("parses");
        assert!(!file.console.enabled);
        let on =
            Config::from_toml("[console]\nenabled = true\nmax_log_events = 50\n").expect("parses");
        assert!(on.console.enabled && on.console.max_log_events == 50);
        let env = |name: &str| (name == "RUSHER_CONSOLE_ENABLED").then(|| "false".to_string());
        assert!(!Config::load(None, env).expect("env").console.enabled);
        let env = |name: &str| (name == "RUSHER_CONSOLE_ENABLED").then(|| "yes".to_string());
        let err = Config::load(None, env).expect_err("not a bool").to_string();
        assert!(err.contains("RUSHER_CONSOLE_ENABLED"), "{err}");
        let env =
            |name: &str| (name == "RUSHER_CONSOLE_SESSION_SECRET").then(|| "short".to_string());
        let err = Config::load(None, env).expect_err("too short").to_string();
        assert!(
            err.contains("console.session_secret via RUSHER_CONSOLE_SESSION_SECRET"),
            "{err}"
        );
        let zero = Config::from_toml("[console]\nmax_log_events = 0\n").expect("parses");
        assert!(zero.validate().is_err());
        for (option, value) in [("lease_ms", 99), ("lease_ms", 60_001)]
            .into_iter()
            .chain([("sample_interval_ms", 0), ("sample_interval_ms", 60_001)])
        {
            let config =
                Config::from_toml(&format!("[console]\n{option} = {value}\n")).expect("parses");
            let err = config.validate().expect_err("out of range").to_string();
            assert!(err.contains(&format!("console.{option}")), "{err}");
        }
        let fast = Config::from_toml("[console]\nlease_ms = 300\nsample_interval_ms = 200\n")
            .expect("parses");
        assert!(fast.validate().is_ok());
        assert_eq!(
            (fast.console.lease_ms, fast.console.sample_interval_ms),
            (300, 200)
        );
    }
}
