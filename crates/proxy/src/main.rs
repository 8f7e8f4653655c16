//! `tether-proxy --config FILE`: the Tether data plane.

use std::process::ExitCode;

use clap::Parser;
use tether_daemon::config::{self, Env};
use tether_daemon::process::{self, EXIT_CONFIG, ServiceArgs};
use tether_proxy::{HealthSource, ProxyConfig};

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
    /// Take the listening sockets over from the proxy running at
    /// `proxy.upgrade_socket`, serve, and let it drain: a binary upgrade
    /// without a refused connection.
    #[arg(long)]
    upgrade: bool,
}

fn main() -> ExitCode {
    let Args {
        service: args,
        upgrade,
    } = Args::parse();
    let loaded = config::load(args.config.as_deref(), &Env::process());
    let config = match loaded.and_then(|f| ProxyConfig::from_file(&f)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether-proxy: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if upgrade && config.upgrade_socket.is_none() {
        eprintln!(
            "tether-proxy: proxy.upgrade_socket: --upgrade needs the running proxy's upgrade socket (unset here)"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if args.check_config {
        let source = match &config.source {
            HealthSource::Checkers(c) => match &config.checker_dns {
                None => format!("{} checker(s), each followed", c.len()),
                Some(dns) => format!(
                    "{} checker(s), each followed, names expanded by DNS every {:?}",
                    c.len(),
                    dns.refresh
                ),
            },
            HealthSource::Embedded { targets, .. } => {
                format!("embedded checker, {} targets", targets.len())
            }
        };
        let admin = config
            .admin_listen
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        println!(
            "tether-proxy: config ok: listen {}, health from {source}, admin {admin}",
            config.listen
        );
        // TLS files as set/unset only; a key others can read is a warning.
        let channel = [
            config
                .health_source_tls
                .as_ref()
                .map(|t| (t.summary(), t.warnings())),
            config
                .embedded_checker_tls
                .as_ref()
                .map(|t| (t.summary(), t.warnings())),
        ];
        for (summary, warnings) in channel.into_iter().flatten() {
            println!("tether-proxy: {summary}");
            for warning in warnings {
                println!("tether-proxy: warning: {warning}");
            }
        }
        let listener = if config.tls.is_some() {
            "cert set, key set"
        } else {
            "unset (plain HTTP)"
        };
        println!("tether-proxy: proxy.tls: {listener}");
        let upgrade = config
            .upgrade_socket
            .as_ref()
            .map_or_else(|| "off".to_owned(), |p| p.display().to_string());
        println!("tether-proxy: proxy.upgrade_socket: {upgrade}");
        println!("tether-proxy: {}", config.upstream_tls.summary());
        // Key ids only: the first 8 hex of each key's SHA-256, never a key.
        let keys = config.sticky.keys.ids();
        if keys.is_empty() {
            println!("tether-proxy: sticky.keys: unset");
        } else {
            println!(
                "tether-proxy: sticky.keys: {} set (ids {})",
                keys.len(),
                keys.join(", ")
            );
        }
        return ExitCode::SUCCESS;
    }
    let log = config.log.clone();
    process::serve("tether-proxy", "proxy", &log, |logging| async move {
        let reload = tether_proxy::Reload::new(args.config.clone(), logging);
        tether_proxy::run(
            config,
            tether_daemon::signal::shutdown(),
            Some(reload),
            upgrade,
        )
        .await
    })
}
