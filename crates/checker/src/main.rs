//! `tether-checker --config FILE`: probe the pool and serve its health.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tether_checker::config::{self, CheckerFile};

#[derive(Debug, Parser)]
#[command(name = "tether-checker", version, about = "Tether health checker")]
struct Args {
    /// TOML config file; every key can also come from TETHER_* variables.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the config, print the result, and exit 0 (valid) or 2.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
