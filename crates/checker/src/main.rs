//! `tether-checker --config FILE`: probe the pool and serve its health.

use std::process::ExitCode;

use clap::Parser;
use tether_checker::CheckerConfig;
use tether_daemon::config::{self, Env};
use tether_daemon::process::{self, EXIT_CONFIG, ServiceArgs};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "tether-checker", version, about = "Tether health checker")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse().service;
    let loaded = config::load(args.config.as_deref(), &Env::process());
    let config = match loaded.and_then(|f| CheckerConfig::from_file(&f)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether-checker: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        let admin = config
            .admin_listen
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        println!(
            "tether-checker: config ok: {} targets, grpc on {}, admin {admin}",
            config.targets.len(),
            config.grpc_listen
        );
        // Key files as set/unset only; a key others can read is a warning.
        match &config.tls {
            Some(tls) => {
                println!("tether-checker: {}", tls.summary());
                for warning in tls.warnings() {
                    println!("tether-checker: warning: {warning}");
                }
            }
            None => println!("tether-checker: checker.tls: unset (plain gRPC)"),
        }
        return ExitCode::SUCCESS;
    }
    let log = config.log.clone();
    process::serve("tether-checker", "grpc", &log, |logging| async move {
        let reload = tether_checker::Reload::new(args.config.clone(), logging);
        tether_checker::run(config, tether_daemon::signal::shutdown(), Some(reload)).await
    })
}
