//! `bare-server`: the bare broadcast server (see `rusher_bench::bare`).

use clap::Parser;
use std::net::SocketAddr;

#[derive(Debug, Parser)]
#[command(
    name = "bare-server",
    version,
    about = "Bare Pusher-ish broadcast server: the benchmark's limit"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1", env = "BARE_HOST")]
    host: String,
    #[arg(long, default_value_t = 6002, env = "BARE_PORT")]
    port: u16,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
    let addr: SocketAddr = match format!("{}:{}", cli.host, cli.port).parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: bad address {}:{}: {e}", cli.host, cli.port);
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(rusher_bench::bare::serve(addr)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
