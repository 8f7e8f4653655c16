//! The gRPC face of the hub: `tether.health.v1.HealthService` and
//! `ControlService` (Drain, Enable), the standard
//! `grpc.health.v1.Health` (the checker as `""`, each target by name) and
//! server reflection.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use tether_core::UpdateKind;
use tether_daemon::tls::ServerTls;
use tether_proto::pb;
use tether_proto::pb::control_service_server::{ControlService, ControlServiceServer};
use tether_proto::pb::health_service_server::{HealthService, HealthServiceServer};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::Error;
use crate::hub::{DrainOutcome, HubClosed, HubHandle, ReportOutcome};
use crate::watch::{WatchRoute, Watchers};

/// How often an idle HTTP/2 connection is pinged, and how long the answer
/// may take: a dead peer is noticed within about eight seconds.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves the health API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    hub: HubHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    serve_with_tls(listener, hub, None, shutdown).await
}

/// Like [`serve`], over TLS when `tls` is set (`[checker.tls]`); with a
/// client CA, a client must present a certificate it signed or the
/// handshake fails before any RPC.
pub async fn serve_with_tls(
    listener: TcpListener,
    hub: HubHandle,
    tls: Option<&ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        for warning in tls.warnings() {
            warn!(target: "grpc", "{warning}");
        }
        server = server.tls_config(crate::tls::server_config(tls)?)?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Readiness (Kubernetes, compose): the checker serves once it knows
    // its pool, not merely once it listens.
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let mirror = tokio::spawn(mirror_target_health(hub.clone(), reporter));

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let reflection_v1 = reflection
        .build_v1()
        .map_err(|e| Error::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Reflection(e.to_string()))?;

    let watchers = Watchers {
        hub: hub.clone(),
        stop: stop_rx,
        frames: Arc::default(),
    };
    let api = WatchRoute::new(
        HealthServiceServer::new(HealthApi { hub: hub.clone() }),
        watchers,
    );
    let control = ControlServiceServer::new(HealthApi { hub });
    let result = server
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
        .add_service(api)
        .add_service(control)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            // Open Watch streams would hold the graceful shutdown forever.
            let _ = stop_tx.send(true);
        })
        .await;
    mirror.abort();
    result.map_err(Error::from)
}

/// Keeps `grpc.health.v1` in step with the hub: service `""` turns SERVING
/// when the first probe round is done, each member's own service follows
/// its state, and a member that leaves the pool is no longer known
/// (`NOT_FOUND`, as if never configured).
async fn mirror_target_health(hub: HubHandle, mut reporter: HealthReporter) {
    let first_round = {
        let (hub, reporter) = (hub.clone(), reporter.clone());
        async move {
            if hub.first_round().await.is_ok() {
                reporter
                    .set_service_status("", ServingStatus::Serving)
                    .await;
            }
        }
    };
    tokio::join!(first_round, async {
        let mut known: HashSet<String> = HashSet::new();
        loop {
            let Ok(sub) = hub.subscribe().await else {
                return;
            };
            let (snapshot, mut changes) = (sub.snapshot, sub.changes);
            if let UpdateKind::Snapshot { targets, .. } = &snapshot.kind {
                let now: HashSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                for gone in known.iter().filter(|n| !now.contains(n.as_str())) {
                    reporter.clear_service_status(gone).await;
                }
                known.retain(|n| now.contains(n.as_str()));
                for t in targets {
                    reporter
                        .set_service_status(&t.name, serving(t.state.is_healthy()))
                        .await;
                    known.insert(t.name.clone());
                }
            }
            drop(snapshot);
            loop {
                match changes.recv().await {
                    Ok(update) => match &update.kind {
                        UpdateKind::Change(t) => {
                            reporter
                                .set_service_status(&t.name, serving(t.state.is_healthy()))
                                .await;
                            known.insert(t.name.clone());
                        }
                        UpdateKind::Removed(name) => {
                            reporter.clear_service_status(name).await;
                            known.remove(name);
                        }
                        UpdateKind::Snapshot { .. } | UpdateKind::Checker(_) => {}
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
}

fn serving(healthy: bool) -> ServingStatus {
    if healthy {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

pub(crate) struct HealthApi {
    hub: HubHandle,
}

pub(crate) fn unavailable(_: HubClosed) -> Status {
    Status::unavailable("the checker is shutting down")
}

#[tonic::async_trait]
impl HealthService for HealthApi {
    type WatchStream = tokio_stream::Empty<Result<pb::WatchResponse, Status>>;

    /// Never called: [`WatchRoute`] answers Watch before the generated
    /// server sees it, so that streams share their encoded messages.
    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::internal("Watch is served by WatchRoute"))
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let (version, targets) = self.hub.list().await.map_err(unavailable)?;
        Ok(Response::new(pb::ListResponse {
            version,
            targets: targets.iter().map(pb::TargetHealth::from).collect(),
            checker: None,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let name = request.into_inner().name;
        match self.hub.get(&name).await.map_err(unavailable)? {
            Some((version, status)) => Ok(Response::new(pb::GetResponse {
                version,
                target: Some((&status).into()),
            })),
            None => Err(Status::not_found(format!("no target named {name:?}"))),
        }
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let req = request.into_inner();
        // The hub caps reason and reporter and logs the report.
        let outcome = self
            .hub
            .report_from(&req.name, &req.reason, &req.reporter)
            .await
            .map_err(unavailable)?;
        if outcome == ReportOutcome::UnknownTarget {
            let name = crate::hub::cap(&req.name);
            return Err(Status::not_found(format!("no target named {name:?}")));
        }
        Ok(Response::new(pb::ReportResponse {
            accepted: outcome.accepted(),
        }))
    }
}

#[tonic::async_trait]
impl ControlService for HealthApi {
    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let peer = peer_of(&request);
        let name = request.into_inner().name;
        let done = self.set_draining(&name, true, &peer).await?;
        Ok(Response::new(pb::DrainResponse {
            version: done.version,
            target: Some((&done.status).into()),
            changed: done.changed,
        }))
    }

    async fn enable(
        &self,
        request: Request<pb::EnableRequest>,
    ) -> Result<Response<pb::EnableResponse>, Status> {
        let peer = peer_of(&request);
        let name = request.into_inner().name;
        let done = self.set_draining(&name, false, &peer).await?;
        Ok(Response::new(pb::EnableResponse {
            version: done.version,
            target: Some((&done.status).into()),
            changed: done.changed,
        }))
    }
}

impl HealthApi {
    /// Drain or Enable: the hub publishes the change and logs it on `hc`;
    /// here goes who asked.
    async fn set_draining(
        &self,
        name: &str,
        draining: bool,
        peer: &str,
    ) -> Result<DrainOutcome, Status> {
        let method = if draining { "drain" } else { "enable" };
        let Some(done) = self
            .hub
            .set_draining(name, draining)
            .await
            .map_err(unavailable)?
        else {
            let name = crate::hub::cap(name);
            return Err(Status::not_found(format!("no target named {name:?}")));
        };
        info!(
            target: "grpc",
            "{method} {:?} from {peer}: {} at v{}",
            done.status.name,
            if done.changed { "done" } else { "no change" },
            done.version
        );
        Ok(done)
    }
}

pub(crate) fn peer_of<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown peer".to_owned(), |a| a.to_string())
}
