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
pub mod h2;
pub mod headers;
pub mod http1;
pub mod limits;
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
pub mod upstream;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use log::info;
use tokio::net::TcpListener;

pub use config::{HealthSource, ProxyConfig};
pub use error::Error;
pub use tether_daemon::signal::Reload;

/// Ejection reports waiting for the checker; more are dropped (the
/// checker re-probes on the first anyway).
const REPORT_QUEUE: usize = 64;
/// How often the proxy re-reads whether the `access` logger is on.
const ACCESS_LOG_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the proxy until `shutdown` completes, applying `reload`s (SIGHUP)
/// when given.
pub async fn run(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
    reload: Option<Reload>,
) -> Result<(), Error> {
    let listener = bind("proxy.listen", config.listen).await?;
    serve_on(listener, None, config, shutdown, reload).await
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
    serve_on(listener, None, config, shutdown, None).await
}

/// Like `run_on`, with the admin endpoint on a listener the caller bound
/// too (tests that read `/metrics` bind port 0 and keep the address).
pub async fn run_on_with_admin(
    listener: TcpListener,
    admin: TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    serve_on(listener, Some(admin), config, shutdown, None).await
}

async fn serve_on(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
    reload: Option<Reload>,
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
    // Bind everything before serving anything: a port in use is an error
    // at start, not a half-running proxy.
    let acceptor = match &config.tls {
        Some(files) => Some(tls::Acceptor::new(files).map_err(Error::Tls)?),
        None => None,
    };
    let admin = match (admin, config.admin_listen) {
        (Some(bound), _) => Some(bound),
        (None, Some(addr)) => Some(bind("admin.listen", addr).await?),
        (None, None) => None,
    };
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
        HealthSource::Embedded {
            targets,
            grpc_listen,
        } => {
            let checker = tether_checker::Checker::start(targets.clone());
            let hub = checker.handle();
            if let Some(addr) = grpc_listen {
                let grpc = bind("checker.grpc_listen", *addr).await?;
                let local = grpc.local_addr().unwrap_or(*addr);
                let tls = config.embedded_checker_tls.clone();
                let note = tether_checker::tls_note(tls.as_ref());
                info!(target: "grpc", "embedded checker: grpc listening on {local}{note}");
                let hub = hub.clone();
                let drain = drain.clone();
                tokio::spawn(async move {
                    let stop = drain.clone();
                    let served = tether_checker::service::serve_with_tls(
                        grpc,
                        hub,
                        tls.as_ref(),
                        async move { stop.signaled().await },
                    );
                    if let Err(e) = served.await {
                        log::error!(target: "grpc", "embedded checker's gRPC server: {e}");
                    }
                    drain.release();
                });
            }
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
    tokio::select! {
        () = &mut serving => {}
        () = shutdown => {
            trigger.start();
            serving.await;
        }
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

/// Connections the kernel may queue before the proxy accepts them. tokio's
/// `TcpListener::bind` asks for 128: a burst of new clients overflows that,
/// the kernel falls back to SYN cookies, and a client whose final ACK then
/// meets a full queue thinks it is connected while the proxy never sees it
/// (the fault suite's F13 lost 1,500 of 10,000). The kernel caps this at
/// `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listener `key` configures.
async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As TcpListener::bind does: a restarted proxy can bind at once
        // while its old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bound().map_err(|source| Error::Bind { key, addr, source })
}
