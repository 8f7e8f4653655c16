//! tether-checker: owns the pool. Probes every target over TCP or HTTP on
//! its own schedule, keeps each target's health in one hub task, and serves
//! that health over gRPC as a versioned stream and as queries.
//!
//! Depends on `tether-core`, `tether-proto` and `tether-daemon` (config,
//! logging, admin); never on the proxy (the proxy embeds this library for
//! its embedded checker, not the other way round).

pub mod admin;
pub mod config;
pub mod dns;
pub mod error;
mod frames;
pub mod hub;
pub mod probe;
pub mod reload;
pub mod service;
pub mod tls;
pub mod watch;

use std::future::Future;

use log::info;
use tokio::net::TcpListener;

pub use config::CheckerConfig;
pub use error::Error;
pub use hub::{Checker, HubHandle, Subscription};
pub use tether_daemon::signal::Reload;

/// How the gRPC listener's line describes its TLS.
pub fn tls_note(tls: Option<&tether_daemon::tls::ServerTls>) -> &'static str {
    match tls {
        None => "",
        Some(t) if t.client_ca.is_some() => " (TLS, client certificates required)",
        Some(_) => " (TLS)",
    }
}

/// Runs a checker with its gRPC listener until `shutdown` completes,
/// applying `reload`s (SIGHUP) when given.
pub async fn run(
    config: CheckerConfig,
    shutdown: impl Future<Output = ()>,
    reload: Option<Reload>,
) -> Result<(), Error> {
    let listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| Error::Bind {
            key: "checker.grpc_listen",
            addr: config.grpc_listen,
            source,
        })?;
    serve_on(listener, config, shutdown, reload).await
}

/// Like `run`, on a listener the caller bound (tests bind port 0).
pub async fn run_on(
    listener: TcpListener,
    config: CheckerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    serve_on(listener, config, shutdown, None).await
}

async fn serve_on(
    listener: TcpListener,
    config: CheckerConfig,
    shutdown: impl Future<Output = ()>,
    reload: Option<Reload>,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        key: "checker.grpc_listen",
        addr: config.grpc_listen,
        source,
    })?;
    let admin = match config.admin_listen {
        Some(admin) => Some(
            TcpListener::bind(admin)
                .await
                .map_err(|source| Error::Bind {
                    key: "admin.listen",
                    addr: admin,
                    source,
                })?,
        ),
        None => None,
    };
    let checker = Checker::start_configured(
        config.targets.clone(),
        std::sync::Arc::new(dns::SystemResolver),
        config.impaired_threshold,
    );
    let (trigger, drain) = tether_daemon::drain::channel();
    let config_state = reload.as_ref().map(Reload::state).unwrap_or_default();
    // The listener reads its identity once, at start (a new one takes a
    // restart), so its expiry is the file's now.
    if let Some(tls) = &config.tls {
        config_state.certificate_file(&tls.section, &tls.identity.cert);
    }
    if let Some(reload) = reload {
        let task = reload::run(reload, config.clone(), checker.handle());
        let drain = drain.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                () = drain.signaled() => {}
            }
        });
    }
    if let Some(admin) = admin {
        let status = std::sync::Arc::new(admin::CheckerStatus {
            hub: checker.handle(),
            config: config_state,
        });
        tokio::spawn(tether_daemon::admin::serve(
            admin,
            status,
            drain.clone(),
            "grpc",
        ));
    }
    info!(target: "grpc", "grpc listening on {addr}{}", tls_note(config.tls.as_ref()));
    let stop = drain.clone();
    let tls = config.tls.as_ref();
    let served = service::serve_with_tls(listener, checker.handle(), tls, async move {
        tokio::select! {
            () = shutdown => {}
            () = stop.signaled() => {}
        }
    })
    .await;
    drop(drain);
    // The gRPC server is down; let the admin endpoint go too.
    trigger.drained().await;
    served
}
