//! `tether-proxy --config FILE`: the Tether data plane.

use std::process::ExitCode;

use clap::Parser;
use tether_checker::process::ServiceArgs;
use tether_proxy::HealthSource;
use tether_proxy::config::ProxyFile;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tether-proxy",
    version,
    about = "Tether reverse proxy and load balancer"
)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse().service;
    let file: Result<ProxyFile, _> = tether_checker::config::load(args.config.as_deref());
    let config = match file.and_then(|f| f.validate()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether-proxy: {e}");
            return ExitCode::from(tether_checker::process::EXIT_CONFIG);
        }
    };
    if args.check_config {
        let source = match &config.source {
            HealthSource::Checkers(c) => format!("{} checker(s)", c.len()),
            HealthSource::Embedded { targets, .. } => {
                format!("embedded checker, {} targets", targets.len())
            }
        };
        println!(
            "tether-proxy: config ok: listen {}, health from {source}",
            config.listen
        );
        return ExitCode::SUCCESS;
    }
    let log = config.log.clone();
    tether_checker::process::serve("tether-proxy", "proxy", &log, || {
        tether_proxy::run(config, tether_checker::signal::shutdown())
    })
}
