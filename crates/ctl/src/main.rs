//! `tetherctl`: the command line client of a Tether checker.
//!
//! `tetherctl health [NAME] [--json]` prints the pool's health (or one
//! target's) as a table or JSON; `tetherctl watch [--json]` prints the pool
//! and then every change as it happens. Both talk to the checker's
//! `tether.health.v1.HealthService` over gRPC at `--checker URL` (or
//! `TETHER_CHECKER`, default `http://127.0.0.1:50051`).
//!
//! Exit codes: 0 success (and Ctrl-C during `watch`), 1 a failure (checker
//! unreachable, unknown target, stream ended), 2 bad usage.

mod client;
mod cmd;
mod render;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tetherctl",
    version,
    about = "Query and watch the health of a Tether pool over gRPC."
)]
struct Cli {
    /// gRPC address of the checker.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "TETHER_CHECKER",
        default_value = client::DEFAULT_CHECKER
    )]
    checker: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the health of every target, or of the one named.
    Health {
        /// Only this target.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the pool, then each change as it happens, until Ctrl-C.
    Watch {
        /// Print one JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            cmd::warn(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<cmd::StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) if e.is::<client::UsageError>() => {
            cmd::warn(&format!("{e:#}"));
            ExitCode::from(2)
        }
        Err(e) => {
            cmd::warn(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = client::normalize_url(&cli.checker)?;
    match cli.command {
        Command::Health { name, json } => cmd::health(&url, name.as_deref(), json).await,
        Command::Watch { json } => {
            let format = if json {
                watch::Format::Json
            } else {
                watch::Format::Text
            };
            cmd::watch(&url, format).await
        }
    }
}
