//! tether-proxy: the data plane. Accepts client HTTP, picks a healthy
//! target (sticky hint first, then round robin), forwards the request and
//! streams the answer back.
//!
//! Pool and health come from checkers over gRPC, or from the checker
//! library running in-process ("embedded") when none is configured; either
//! way one feed task publishes an immutable routing table that requests
//! read without locks. Nothing depends on this crate.

pub mod body;
pub mod config;
pub mod error;
pub mod feed;
pub mod forward;
pub mod headers;
pub mod passive;
pub mod report;
pub mod respond;
pub mod server;
pub mod source;
pub mod table;
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

/// Ejection reports waiting for the checker; more are dropped (the
/// checker re-probes on the first anyway).
const REPORT_QUEUE: usize = 64;

/// Runs the proxy until `shutdown` completes.
pub async fn run(config: ProxyConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let listener = bind(config.listen).await?;
    run_on(listener, config, shutdown).await
}

/// Like `run`, on a listener the caller bound (tests bind port 0).
pub async fn run_on(
    listener: TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let table = table::TableCell::new();
    // The embedded checker (and its optional gRPC listener) live exactly as
    // long as this function.
    let mut embedded = None;
    let mut grpc_task = None;
    let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let source = match &config.source {
        HealthSource::Checkers(uris) => source::Source::Checkers(uris.clone()),
        HealthSource::Embedded {
            targets,
            grpc_listen,
        } => {
            let checker = tether_checker::Checker::start(targets.clone());
            let hub = checker.handle();
            if let Some(addr) = grpc_listen {
                let grpc = bind(*addr).await?;
                let local = grpc.local_addr().unwrap_or(*addr);
                info!(target: "grpc", "embedded checker: grpc listening on {local}");
                let hub = hub.clone();
                grpc_task = Some(tokio::spawn(tether_checker::service::serve(
                    grpc,
                    hub,
                    async move {
                        let _ = grpc_stopped.await;
                    },
                )));
            }
            embedded = Some(checker);
            source::Source::Hub(hub)
        }
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    let (report_tx, report_rx) = tokio::sync::mpsc::channel(REPORT_QUEUE);
    let reporter = tokio::spawn(report::run(source.clone(), report_rx, addr.to_string()));
    let feed = tokio::spawn(feed::run(source, table.clone()));
    let proxy = Arc::new(forward::Proxy::new(&config, table, Some(report_tx)));
    info!(target: "proxy", "http listening on {addr}");
    server::serve(listener, proxy, &config, shutdown).await;
    feed.abort();
    reporter.abort();
    let _ = grpc_stop.send(());
    if let Some(task) = grpc_task {
        let _ = task.await;
    }
    drop(embedded);
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}
