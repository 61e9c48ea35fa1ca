//! The `rusher` binary: parse flags, load the config, run, exit code.
//!
//! A configuration or startup error is the user's to fix: it is printed as
//! one `Error: ...` line on stderr (never with a backtrace, whatever
//! `RUST_BACKTRACE` says) and the exit code is 1.

use clap::Parser;
use rusher::{Config, Server};
use std::path::PathBuf;
use std::process::ExitCode;

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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), |name| std::env::var(name).ok())?;
    if cli.check_config {
        for unused in config.unused_settings() {
            eprintln!("warning: {unused}");
        }
        println!("{}", config.summary());
        return Ok(());
    }
    rusher::logging::init(&config.server.log_level, config.server.log_json).map_err(|e| {
        anyhow::anyhow!(
            "invalid config value `{}`: {e}",
            config.key_source("server.log_level")
        )
    })?;
    for unused in config.unused_settings() {
        tracing::warn!("{unused}");
    }
    actix_web::rt::System::new().block_on(Server::new(config).run())?;
    tracing::info!("stopped");
    Ok(())
}
