//! `rusher-bench`: load scenarios against a Pusher-protocol server on
//! 127.0.0.1. Each prints a progress line on stderr and a JSON result on
//! stdout (and to `--json PATH`), and exits non-zero when anything was lost,
//! refused or dropped, or when nothing was delivered.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rusher_bench::scenario::{connect, delivery, frame_fuzz, presence, recovery, soak, Common};
use rusher_bench::transport::Transport;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "rusher-bench",
    version,
    about = "Load generator for Pusher-protocol servers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N subscribers on one channel; events over the HTTP API at a target rate.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value = "bench-fanout")]
        channel: String,
        /// Most events to publish.
        #[arg(long, default_value_t = 200)]
        events: u64,
        /// Events per second; 0 = as fast as the window allows.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Longest publishing phase, in seconds.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Concurrent HTTP publishers.
        #[arg(long, default_value_t = 2)]
        publishers: usize,
        /// With --rate 0: most events not yet fully delivered.
        #[arg(long, default_value_t = 4)]
        window: u64,
        /// Bytes of event data.
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Several server nodes (a cluster), e.g. `7001,7002`: subscribers are
        /// spread round-robin across them, events are published to the first;
        /// also reports local (first node) and remote deliveries. Overrides --port.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
        /// Users that follow the channel (signed POST /apps/{id}/subscribe)
        /// before publishing, so every event is also stored and forwarded.
        #[arg(long, default_value_t = 0)]
        followers: usize,
        /// How subscribers connect: WebSocket, pusher-js's HTTP fallbacks,
        /// or Server-Sent Events.
        #[arg(long, value_enum, default_value_t = Transport::Ws)]
        transport: Transport,
    },
    /// N connections on N channels; events spread across them.
    Channels {
        #[command(flatten)]
        common: Common,
        /// Connections, each on its own channel.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Channels named in each trigger (consecutive ones).
        #[arg(long, default_value_t = 10)]
        channels_per_event: usize,
        #[arg(long, default_value_t = 2000)]
        events: u64,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// With --rate 0: most events not yet fully delivered.
        #[arg(long, default_value_t = 200)]
        window: u64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Open N idle connections; connection rate and server RSS per connection.
    Connect {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Also subscribe each connection to one of this many public channels (0 = no).
        #[arg(long, default_value_t = 0)]
        subscribe_channels: usize,
        /// Seconds to hold the idle connections before reading the server's RSS.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// How the connections are made (sse needs --subscribe-channels ≥ 1).
        #[arg(long, value_enum, default_value_t = Transport::Ws)]
        transport: Transport,
    },
    /// HTTP trigger throughput and latency with K concurrent clients.
    Publish {
        #[command(flatten)]
        common: Common,
        /// Concurrent HTTP clients (keep-alive connections).
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Most requests in all.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Longest run, in seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Requests per second; 0 = as fast as the clients go.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Subscribers of the channel (each event is delivered to them all).
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        #[arg(long, default_value = "bench-publish")]
        channel: String,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Users that follow the channel before publishing (see fanout).
        #[arg(long, default_value_t = 0)]
        followers: usize,
    },
    /// Join/leave churn on presence channels (with auth); member events per second.
    Presence {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10)]
        channels: usize,
        /// Members per channel that stay and count member events.
        #[arg(long, default_value_t = 20)]
        observers: usize,
        /// Connections per channel that join and leave in a loop.
        #[arg(long, default_value_t = 5)]
        churners: usize,
        /// Most joins in all.
        #[arg(long, default_value_t = 20_000)]
        joins: u64,
        /// Longest churn phase, in seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Joins per second in all; 0 = as fast as the churners go.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// N clients on a channel with history miss E events, then all
    /// reconnect at once with `since` (rusher's recovery extension).
    Recovery {
        #[command(flatten)]
        common: Common,
        /// Reconnecting clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Events published while they are away.
        #[arg(long, default_value_t = 1000)]
        events: u64,
        #[arg(long, default_value = "bench-recovery")]
        channel: String,
        /// Bytes of event data.
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Longest wait, in seconds, for every client to recover.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// Connect / subscribe (presence + public) / abrupt close cycles; then
    /// the server must be empty and its RSS back near the baseline.
    Soak {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        cycles: u64,
        /// Cycles in flight at once.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Presence channels the cycles spread over.
        #[arg(long, default_value_t = 10)]
        presence_channels: usize,
        /// Distinct user ids (fewer than --concurrency: a user on several sockets).
        #[arg(long, default_value_t = 20)]
        users: usize,
        /// Cycles before the baseline RSS is read.
        #[arg(long, default_value_t = 500)]
        warmup: u64,
        /// Longest wait, in seconds, for the checks to pass after the cycles.
        #[arg(long, default_value_t = 30.0)]
        deadline: f64,
        /// Allowed RSS growth over the baseline (0.10 = 10 %).
        #[arg(long, default_value_t = 0.10)]
        rss_tolerance: f64,
        /// Seed of the choice of closes (reset, drop, clean).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Black-box fuzzer: random and mutated frames from many connections;
    /// every answer's class is checked, then the server must still serve.
    FrameFuzz {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// Fuzz frames in all.
        #[arg(long, default_value_t = 100_000)]
        frames: u64,
        /// The server's max_frame_bytes.
        #[arg(long, default_value_t = 65_536)]
        max_frame_bytes: usize,
        /// Seed: the same seed replays the same cases on each connection.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Longest wait, in seconds, for one answer.
        #[arg(long, default_value_t = 10.0)]
        answer_timeout: f64,
        /// Allowed growth of the server's peak RSS over the baseline, in MiB.
        #[arg(long, default_value_t = 256.0)]
        rss_growth_mib: f64,
        /// Longest wait, in seconds, for the server to forget the connections.
        #[arg(long, default_value_t = 30.0)]
        deadline: f64,
    },
    /// Render the comparison table from `{dir}/{server}-{label}.json` files.
    Table {
        /// Directory of the JSON results.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Servers, rusher first (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "rusher,sockudo,bare")]
        servers: Vec<String>,
        /// Run labels, in table order (comma-separated).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

async fn run(scenario: Scenario) -> Result<rusher_bench::report::Report> {
    match scenario {
        Scenario::Fanout {
            common,
            subscribers,
            channel,
            events,
            rate,
            duration,
            publishers,
            window,
            payload,
            ports,
            followers,
            transport,
        } => {
            let plan = delivery::Plan {
                scenario: "fanout",
                transport,
                channels: vec![channel],
                subscriber_channel: vec![0; subscribers],
                channels_per_event: 1,
                events,
                duration: secs(duration),
                rate,
                publishers,
                window,
                payload,
                ports,
                followers,
            };
            delivery::run(common, plan).await
        }
        Scenario::Channels {
            common,
            connections,
            channels_per_event,
            events,
            rate,
            duration,
            publishers,
            window,
            payload,
        } => {
            let plan = delivery::Plan {
                scenario: "channels",
                transport: Transport::Ws,
                channels: (0..connections.max(1))
                    .map(|i| format!("bench-ch-{i}"))
                    .collect(),
                subscriber_channel: (0..connections).collect(),
                channels_per_event,
                events,
                duration: secs(duration),
                rate,
                publishers,
                window,
                payload,
                ports: Vec::new(),
                followers: 0,
            };
            delivery::run(common, plan).await
        }
        Scenario::Connect {
            common,
            connections,
            subscribe_channels,
            settle,
            transport,
        } => {
            let plan = connect::Plan {
                transport,
                connections,
                subscribe_channels,
                settle: secs(settle),
            };
            connect::run(common, plan).await
        }
        Scenario::Publish {
            common,
            clients,
            events,
            duration,
            rate,
            subscribers,
            channel,
            payload,
            followers,
        } => {
            let plan = delivery::Plan {
                scenario: "publish",
                transport: Transport::Ws,
                channels: vec![channel],
                subscriber_channel: vec![0; subscribers],
                channels_per_event: 1,
                events,
                duration: secs(duration),
                rate,
                publishers: clients,
                window: 0,
                payload,
                ports: Vec::new(),
                followers,
            };
            delivery::run(common, plan).await
        }
        Scenario::Presence {
            common,
            channels,
            observers,
            churners,
            joins,
            duration,
            rate,
        } => {
            let plan = presence::Plan {
                channels,
                observers,
                churners,
                joins,
                duration: secs(duration),
                rate,
            };
            presence::run(common, plan).await
        }
        Scenario::Recovery {
            common,
            clients,
            events,
            channel,
            payload,
            timeout,
        } => {
            let plan = recovery::Plan {
                clients,
                events,
                channel,
                payload,
                timeout: secs(timeout),
            };
            recovery::run(common, plan).await
        }
        Scenario::Soak {
            common,
            cycles,
            concurrency,
            presence_channels,
            users,
            warmup,
            deadline,
            rss_tolerance,
            seed,
        } => {
            let plan = soak::Plan {
                cycles,
                concurrency,
                presence_channels,
                users,
                warmup,
                deadline: secs(deadline),
                rss_tolerance,
                seed,
            };
            soak::run(common, plan).await
        }
        Scenario::FrameFuzz {
            common,
            connections,
            frames,
            max_frame_bytes,
            seed,
            answer_timeout,
            rss_growth_mib,
            deadline,
        } => {
            let plan = frame_fuzz::Plan {
                connections,
                frames,
                max_frame_bytes,
                seed,
                answer_timeout: secs(answer_timeout),
                rss_growth_mib,
                deadline: secs(deadline),
            };
            frame_fuzz::run(common, plan).await
        }
        Scenario::Table { .. } => unreachable!("handled in main"),
    }
}

fn json_path(scenario: &Scenario) -> Option<std::path::PathBuf> {
    match scenario {
        Scenario::Fanout { common, .. }
        | Scenario::Channels { common, .. }
        | Scenario::Connect { common, .. }
        | Scenario::Publish { common, .. }
        | Scenario::Presence { common, .. }
        | Scenario::Recovery { common, .. }
        | Scenario::Soak { common, .. }
        | Scenario::FrameFuzz { common, .. } => common.json.clone(),
        Scenario::Table { .. } => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Scenario::Table {
        dir,
        servers,
        labels,
    } = &cli.scenario
    {
        print!("{}", rusher_bench::table::render(dir, servers, labels));
        print!("{}", rusher_bench::table::targets(dir, labels));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let path = json_path(&cli.scenario);
    match runtime.block_on(run(cli.scenario)) {
        Ok(report) => {
            if let Err(e) = report.emit(path.as_deref()) {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
            // Connection tasks may still be closing; do not wait for them.
            runtime.shutdown_timeout(Duration::from_millis(100));
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
