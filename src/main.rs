//! The `rusher` binary: parse flags, load the config, run, exit code.
//!
//! A configuration or startup error is the user's to fix: it is printed as
//! one `Error: ...` line on stderr (never with a backtrace, whatever
//! `RUST_BACKTRACE` says) and the exit code is 1.

use clap::Parser;
use rusher::{Config, Server};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// A Pusher-protocol-compatible real-time server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Path of a TOML config file (see config.example.toml); default: the
    /// RUSHER_CONFIG environment variable when set and not empty.
    #[arg(long)]
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
    // Read by hand, not by clap's `env`: `RUSHER_CONFIG=` (empty) means
    // unset, as for every other variable, not "the flag without a value".
    let path = cli.config.or_else(|| {
        std::env::var_os("RUSHER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let config = Config::load(path.as_deref(), |name| std::env::var(name).ok())?;
    if cli.check_config {
        for warning in config
            .unused_settings()
            .into_iter()
            .chain(config.default_secret_warnings())
        {
            eprintln!("warning: {warning}");
        }
        // A closed stdout (`| head`) must not panic as println! does; the
        // exit code still says whether the config is valid.
        let _ = writeln!(std::io::stdout(), "{}", config.summary());
        return Ok(());
    }
    rusher::logging::init(&config.server.log_level, config.server.log_json).map_err(|e| {
        anyhow::anyhow!(
            "invalid config value `{}`: {e}",
            config.key_source("server.log_level")
        )
    })?;
    for warning in config
        .unused_settings()
        .into_iter()
        .chain(config.default_secret_warnings())
    {
        tracing::warn!("{warning}");
    }
    actix_web::rt::System::new().block_on(Server::new(config).run())?;
    tracing::info!("stopped");
    Ok(())
}
