//! `tether-checker --config FILE`: probe the pool and serve its health.

use std::process::ExitCode;

use clap::Parser;
use tether_checker::config::{self, CheckerFile};
use tether_checker::process::ServiceArgs;

#[derive(Debug, Parser)]
#[command(name = "tether-checker", version, about = "Tether health checker")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse().service;
    let file: Result<CheckerFile, _> = config::load(args.config.as_deref());
    let config = match file.and_then(|f| f.validate()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether-checker: {e}");
            return ExitCode::from(tether_checker::process::EXIT_CONFIG);
        }
    };
    if args.check_config {
        println!(
            "tether-checker: config ok: {} targets, grpc on {}",
            config.targets.len(),
            config.grpc_listen
        );
        return ExitCode::SUCCESS;
    }
    let log = config.log.clone();
    tether_checker::process::serve("tether-checker", "grpc", &log, || {
        tether_checker::run(config, tether_checker::signal::shutdown())
    })
}
