//! tether-proxy: the data plane. Accepts client HTTP, picks a healthy
//! target (sticky hint first, then round robin), forwards the request and
//! streams the answer back.
//!
//! Pool and health come from checkers over gRPC, or from the checker
//! library running in-process ("embedded") when none is configured; either
//! way one feed task publishes an immutable routing table that requests
//! read without locks. Nothing depends on this crate.

pub mod admin;
pub mod body;
pub mod cancel;
pub mod client_ip;
pub mod config;
pub mod conn;
pub mod dns;
pub mod error;
pub mod feed;
pub mod forward;
pub mod guard;
pub mod h2;
pub mod headers;
pub mod http1;
pub mod http2;
pub mod ip_text;
pub mod limits;
pub mod listeners;
pub mod passive;
pub mod reload;
pub mod report;
pub mod respond;
pub mod server;
pub mod source;
pub mod stats;
pub mod sticky;
pub mod table;
pub mod tls;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;
pub mod validate;
pub mod wheel;

use std::future::Future;
use std::sync::Arc;

use log::info;
use tokio::net::TcpListener;

use listeners::Listeners;

pub use config::{HealthSource, ProxyConfig};
pub use error::Error;
pub use tether_daemon::signal::Reload;

/// Ejection reports waiting for the checker; more are dropped (the
/// checker re-probes on the first anyway).
const REPORT_QUEUE: usize = 64;
/// How often the proxy re-reads whether the `access` logger is on.
const ACCESS_LOG_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the proxy until `shutdown` completes, applying `reload`s (SIGHUP)
/// when given. `upgrading` (`--upgrade`): take the listening sockets over
/// from the proxy at `proxy.upgrade_socket` instead of binding them.
pub async fn run(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
    reload: Option<Reload>,
    upgrading: bool,
) -> Result<(), Error> {
    let mut plan = upgrade::Plan::start(&config, upgrading).await?;
    let listeners = Listeners::acquire(&config, plan.inherited()).await?;
    plan.log_untaken();
    serve_on(listeners, config, shutdown, reload, plan).await
}

/// Like `run`, on a listener the caller bound (tests bind port 0).
///
/// Every server and task gets a clone of one drain handle; when `shutdown`
/// completes the drain starts, each stops taking new work and finishes
/// what it has, and this returns once all of them have let go.
pub async fn run_on(
    listener: TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let listeners = Listeners::around(listener, None, &config).await?;
    serve_on(listeners, config, shutdown, None, upgrade::Plan::none()).await
}

/// Like `run_on`, with the admin endpoint on a listener the caller bound
/// too (tests that read `/metrics` bind port 0 and keep the address).
pub async fn run_on_with_admin(
    listener: TcpListener,
    admin: TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let listeners = Listeners::around(listener, Some(admin), &config).await?;
    serve_on(listeners, config, shutdown, None, upgrade::Plan::none()).await
}

async fn serve_on(
    listeners: Listeners,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
    reload: Option<Reload>,
    plan: upgrade::Plan,
) -> Result<(), Error> {
    let table = table::TableCell::new();
    let stats = Arc::new(stats::ProxyStats::default());
    let config_state = reload.as_ref().map(Reload::state).unwrap_or_default();
    if let Some(files) = &config.tls {
        config_state.certificate_file("proxy.tls", &files.cert);
    }
    if let Some(identity) = config
        .health_source_tls
        .as_ref()
        .and_then(|t| t.identity.as_ref())
    {
        config_state.certificate_file("health_source.tls", &identity.cert);
    }
    let (trigger, drain) = tether_daemon::drain::channel();
    let acceptor = match &config.tls {
        Some(files) => Some(tls::Acceptor::new(files).map_err(Error::Tls)?),
        None => None,
    };
    // Copies for the process that may replace this one, taken before the
    // servers own the sockets.
    let offer = if plan.offers() {
        listeners.offer()
    } else {
        Ok(Vec::new())
    };
    let Listeners {
        proxy: listener,
        admin,
        grpc,
    } = listeners;
    // The embedded checker (and its optional gRPC listener) live exactly as
    // long as this function.
    let mut embedded = None;
    let mut hub_handle = None;
    let source = match &config.source {
        HealthSource::Checkers(uris) => source::Source::checkers(
            uris.clone(),
            config.health_source_tls.clone(),
            config.checker_dns.clone(),
        ),
        HealthSource::Embedded { targets, .. } => {
            let checker = tether_checker::Checker::start(targets.clone());
            let hub = checker.handle();
            embedded = Some(checker);
            hub_handle = Some(hub.clone());
            source::Source::Hub(hub)
        }
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    let (report_tx, report_rx) = tokio::sync::mpsc::channel(REPORT_QUEUE);
    let checkers = feed::cell();
    spawn_until_drained(
        &drain,
        report::run(checkers.clone(), report_rx, addr.to_string()),
    );
    spawn_until_drained(
        &drain,
        feed::run(source, checkers.clone(), table.clone(), stats.clone()),
    );
    // In an upgrade nothing accepts before the table can route; the old
    // process serves meanwhile.
    plan.until_ready(&table, &stats).await?;
    if let (Some(grpc), Some(hub)) = (grpc, &hub_handle) {
        serve_grpc(grpc, hub.clone(), &config, &drain);
    }
    if let Some(admin) = admin {
        let status = Arc::new(admin::ProxyStatus {
            table: table.clone(),
            stats: stats.clone(),
            checkers,
            config: config_state,
        });
        tokio::spawn(tether_daemon::admin::serve(
            admin,
            status,
            drain.clone(),
            "proxy",
        ));
    }
    let proxy = Arc::new(forward::Proxy::new(&config, table, stats, Some(report_tx)));
    // The access logger's level can change under the proxy (a log4rs file's
    // refresh_rate); the request path reads a flag this keeps current.
    let watched = proxy.clone();
    spawn_until_drained(&drain, async move {
        let mut every = tokio::time::interval(ACCESS_LOG_CHECK);
        loop {
            every.tick().await;
            watched.refresh_access_log();
        }
    });
    if let Some(reload) = reload {
        spawn_until_drained(
            &drain,
            reload::run(
                reload,
                config.clone(),
                proxy.clone(),
                hub_handle,
                acceptor.clone(),
            ),
        );
    }
    if acceptor.is_some() {
        info!(target: "proxy", "https listening on {addr} (TLS; ALPN h2 and http/1.1)");
    } else {
        info!(target: "proxy", "http listening on {addr} (HTTP/1.1, and HTTP/2 with prior knowledge)");
    }
    let serving = server::serve(listener, proxy, &config, acceptor, drain.clone());
    tokio::pin!(serving);
    let ended = {
        // Dropped before the drain: it holds copies of the listening
        // sockets, which must close with the servers'.
        let upgraded = plan.serve(offer);
        tokio::pin!(upgraded);
        tokio::select! {
            // The accept loop first: it is running before the old process
            // hears that this one serves.
            biased;
            () = &mut serving => None,
            () = shutdown => Some(None),
            pid = &mut upgraded => Some(Some(pid)),
        }
    };
    if let Some(upgraded) = ended {
        if let Some(pid) = upgraded {
            info!(target: "proxy", "upgrade: pid {pid} serves; this process stops accepting");
        }
        trigger.start();
        serving.await;
    }
    drop(drain);
    trigger.drained().await;
    drop(embedded);
    Ok(())
}

/// Runs `task` until it ends or the drain starts, whichever is first.
fn spawn_until_drained(
    drain: &tether_daemon::Drain,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let drain = drain.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            () = drain.signaled() => {}
        }
        drain.release();
    });
}

/// The embedded checker's gRPC API on `grpc`, until the drain.
fn serve_grpc(
    grpc: TcpListener,
    hub: tether_checker::HubHandle,
    config: &ProxyConfig,
    drain: &tether_daemon::Drain,
) {
    let local = grpc
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let tls = config.embedded_checker_tls.clone();
    let note = tether_checker::tls_note(tls.as_ref());
    info!(target: "grpc", "embedded checker: grpc listening on {local}{note}");
    let drain = drain.clone();
    tokio::spawn(async move {
        let stop = drain.clone();
        let served = tether_checker::service::serve_with_tls(grpc, hub, tls.as_ref(), async move {
            stop.signaled().await
        });
        if let Err(e) = served.await {
            log::error!(target: "grpc", "embedded checker's gRPC server: {e}");
        }
        drain.release();
    });
}
