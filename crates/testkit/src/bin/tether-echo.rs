//! tether-echo: the demo backend. Answers every request with its name, and
//! `GET /health` with 200 or 503; `POST /_echo/fail` and `POST
//! /_echo/recover` switch its health; `--latency-ms` makes it slow. Runs
//! until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tether_testkit::FakeBackend;

/// Exit code when the listen address cannot be bound.
const EXIT_BIND: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tether-echo",
    about = "A demo backend that answers with its name"
)]
struct Args {
    /// Address to listen on; port 0 lets the system pick one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name sent back in every body and in the `x-backend` header.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Milliseconds every answer but the health path's waits: a slow
    /// member that stays healthy, for the balancing benchmark.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let backend = match FakeBackend::start_on(&args.name, args.listen).await {
        Ok(backend) => backend,
        Err(e) => {
            eprintln!("tether-echo: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(EXIT_BIND);
        }
    };
    backend.set_latency(std::time::Duration::from_millis(args.latency_ms));
    let mut stdout = std::io::stdout().lock();
    // Tests and scripts wait for this exact line, so it must leave at once.
    let _ = writeln!(
        stdout,
        "tether-echo {} listening on {}",
        args.name,
        backend.addr()
    );
    let _ = stdout.flush();
    drop(stdout);

    if let Err(e) = shutdown_signal().await {
        eprintln!("tether-echo: cannot wait for signals: {e}");
        backend.stop().await;
        return ExitCode::FAILURE;
    }
    backend.stop().await;
    ExitCode::SUCCESS
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
