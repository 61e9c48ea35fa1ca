//! The `rusher` binary: parse flags, load the config, run, exit code.

use anyhow::Context;
use clap::Parser;
use rusher::{Config, Server};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// A Pusher-protocol-compatible real-time server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Path of a TOML config file (see config.example.toml).
    #[arg(long, env = "RUSHER_CONFIG")]
    config: Option<PathBuf>,
    /// Load and validate the config (file and environment), print a summary
    /// and exit: 0 when it is valid, 1 with the error naming the key. Nothing
    /// is connected to (Redis, MongoDB) and no port is bound.
    #[arg(long)]
    check_config: bool,
}

fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    // RUST_LOG, when set, refines the configured level.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .with_context(|| format!("invalid log level `{level}`"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), |name| std::env::var(name).ok())?;
    if cli.check_config {
        println!("{}", config.summary());
        return Ok(());
    }
    init_logging(&config.server.log_level, config.server.log_json)?;
    actix_web::rt::System::new()
        .block_on(Server::new(config).run())
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
