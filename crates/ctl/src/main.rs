//! `tetherctl`: the command line client of a Tether checker.
//!
//! `tetherctl health [NAME] [--json]` prints the pool's health (or one
//! target's) as a table or JSON; `tetherctl watch [--json]` prints the pool
//! and then every change as it happens; `tetherctl drain NAME` stops
//! sending new clients to a target (its sticky clients stay) and
//! `tetherctl enable NAME` undoes that. They talk to the checker's
//! `tether.health.v1` services over gRPC at `--checker URL` (or
//! `TETHER_CHECKER`, default `http://127.0.0.1:50051`). An `https://`
//! checker is reached over TLS trusting only `--ca FILE`; `--cert FILE
//! --key FILE` present a client certificate (mutual TLS).
//!
//! For container health checks, with nothing but this binary:
//! `tetherctl serving [SERVICE]` asks the standard `grpc.health.v1.Health`
//! service (`""`, the default, is the checker itself; a target's name is
//! that target) and `tetherctl ready [URL]` sends one HTTP `GET` to an admin
//! endpoint (default `http://127.0.0.1:9901/readyz`). Both print the answer
//! and succeed only for `SERVING` or `200`.
//!
//! `tetherctl checkers [URL] [--json]` reads a proxy's admin endpoint
//! (default `http://127.0.0.1:9901/status.json`): each checker it follows
//! (stream up or down, impaired, version, members it calls unhealthy) and
//! the merged table it routes on.
//!
//! Exit codes: 0 success (and Ctrl-C during `watch`), 1 a failure (checker
//! unreachable, unknown target, stream ended, not serving, not ready), 2 bad
//! usage.

mod admin;
mod checkers;
mod client;
mod cmd;
mod render;
mod watch;

use std::path::PathBuf;
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

    /// CA certificate (PEM) that signed an https:// checker's certificate;
    /// the only one trusted.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Client certificate (PEM) for a checker that requires one (mutual
    /// TLS); with --key.
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,

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
    /// Drain a target: no new clients, its sticky clients stay until their
    /// window ends. Lasts until `enable` or a checker restart.
    Drain {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Undo `drain`: the target takes new clients again.
    Enable {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Ask the checker's standard gRPC health service; succeed only if
    /// SERVING.
    Serving {
        /// "" (the default): the checker itself; a target's name: that
        /// target.
        #[arg(value_name = "SERVICE", default_value = "")]
        service: String,
    },
    /// GET an admin endpoint (the checker's is on port 9902); succeed only
    /// on 200. Ignores --checker.
    Ready {
        #[arg(value_name = "URL", default_value = admin::DEFAULT_READY_URL)]
        url: String,
    },
    /// Show a proxy's view of each checker it follows and the merged table
    /// it routes on, from the proxy's admin endpoint (a URL without a path
    /// means its /status.json). Ignores --checker.
    Checkers {
        #[arg(value_name = "URL", default_value = admin::DEFAULT_STATUS_URL)]
        url: String,
        /// Print the proxy's JSON as it is.
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
        Err(e) if e.is::<cmd::AnsweredNo>() => ExitCode::FAILURE,
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
    // `ready` talks to an admin endpoint, not the checker: a bad
    // TETHER_CHECKER must not fail it.
    let tls = client::TlsFiles {
        ca: cli.ca,
        cert: cli.cert,
        key: cli.key,
    };
    let checker = || client::remote(&cli.checker, tls.clone());
    match cli.command {
        Command::Health { name, json } => cmd::health(&checker()?, name.as_deref(), json).await,
        Command::Watch { json } => {
            let format = if json {
                watch::Format::Json
            } else {
                watch::Format::Text
            };
            cmd::watch(&checker()?, format).await
        }
        Command::Drain { name } => cmd::drain(&checker()?, &name, true).await,
        Command::Enable { name } => cmd::drain(&checker()?, &name, false).await,
        Command::Serving { service } => cmd::serving(&checker()?, &service).await,
        Command::Ready { url } => cmd::ready(&url).await,
        Command::Checkers { url, json } => cmd::checkers(&url, json).await,
    }
}
