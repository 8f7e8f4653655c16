//! Where health updates come from: checkers over gRPC, or the embedded
//! checker's hub. Both yield the same core `HealthUpdate`s, so the feed has
//! one path for both: one stream per [`Endpoint`].

use std::sync::Arc;
use std::time::Duration;

use log::warn;
use tether_checker::HubHandle;
use tether_core::HealthUpdate;
use tether_daemon::tls::ClientTls;
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tokio::sync::broadcast;
use tonic::transport::Endpoint as GrpcEndpoint;

/// How long connecting and opening a Watch may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on the checker connection, so a dead checker is noticed
/// within about eight seconds even when nothing changes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub enum Source {
    /// Checkers over gRPC, over TLS when `tls` is set (`https://` urls).
    Checkers {
        uris: Vec<http::Uri>,
        tls: Option<ClientTls>,
    },
    Hub(HubHandle),
}

impl Source {
    /// Checkers at `uris`; logs the warnings `tls` has (a private key
    /// others can read) once.
    pub fn checkers(uris: Vec<http::Uri>, tls: Option<ClientTls>) -> Source {
        for warning in tls.iter().flat_map(ClientTls::warnings) {
            warn!(target: "proxy", "{warning}");
        }
        Source::Checkers { uris, tls }
    }

    /// Every place to follow, one stream each, in config order.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        match self {
            Source::Checkers { uris, tls } => uris
                .iter()
                .map(|uri| Endpoint::Checker {
                    uri: uri.clone(),
                    tls: tls.clone(),
                })
                .collect(),
            Source::Hub(hub) => vec![Endpoint::Hub(hub.clone())],
        }
    }
}

/// One checker: a place to open a Watch stream and send reports.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Checker {
        uri: http::Uri,
        tls: Option<ClientTls>,
    },
    Hub(HubHandle),
}

impl Endpoint {
    /// What logs, the status page and metric labels call it: the checker's
    /// url, or `embedded`.
    pub fn label(&self) -> String {
        match self {
            Endpoint::Checker { uri, .. } => uri.to_string().trim_end_matches('/').to_owned(),
            Endpoint::Hub(_) => "embedded".to_owned(),
        }
    }

    /// Opens a subscription.
    pub async fn open(&self) -> Result<Updates, String> {
        match self {
            Endpoint::Checker { uri, tls } => {
                tokio::time::timeout(OPEN_TIMEOUT, open_grpc(uri.clone(), tls.as_ref()))
                    .await
                    .map_err(|_| format!("no answer within {OPEN_TIMEOUT:?}"))?
            }
            Endpoint::Hub(hub) => {
                let sub = hub.subscribe().await.map_err(|e| e.to_string())?;
                Ok(Updates::Hub {
                    first: Some(std::sync::Arc::unwrap_or_clone(sub.snapshot)),
                    changes: sub.changes,
                })
            }
        }
    }
}

/// The endpoint of the checker at `uri`, with TLS when `tls` is set. The
/// files are read here, on every (re)connection, so a rotated certificate
/// or CA is picked up without a restart.
pub fn endpoint(uri: http::Uri, tls: Option<&ClientTls>) -> Result<GrpcEndpoint, String> {
    let endpoint = GrpcEndpoint::from(uri);
    match tls {
        None => Ok(endpoint),
        Some(tls) => {
            let config = tether_checker::tls::client_config(tls).map_err(|e| e.to_string())?;
            endpoint
                .tls_config(config)
                .map_err(|e| format!("{}: {}", tls.section, crate::error::chain(&e)))
        }
    }
}

async fn open_grpc(uri: http::Uri, tls: Option<&ClientTls>) -> Result<Updates, String> {
    let channel = endpoint(uri, tls)?
        .connect_timeout(OPEN_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect: {}", crate::error::chain(&e)))?;
    let stream = HealthServiceClient::new(channel)
        .watch(pb::WatchRequest {})
        .await
        .map_err(|s| format!("watch: {}", s.message()))?
        .into_inner();
    Ok(Updates::Grpc(stream))
}

/// An open subscription.
#[derive(Debug)]
pub enum Updates {
    Grpc(tonic::Streaming<pb::WatchResponse>),
    Hub {
        first: Option<HealthUpdate>,
        changes: broadcast::Receiver<Arc<HealthUpdate>>,
    },
}

impl Updates {
    /// The next update; `Ok(None)` when the source ended the stream
    /// cleanly, `Err` when it broke or sent something unusable.
    pub async fn next(&mut self) -> Result<Option<HealthUpdate>, String> {
        match self {
            Updates::Grpc(stream) => match stream.message().await {
                Ok(Some(msg)) => HealthUpdate::try_from(msg)
                    .map(Some)
                    .map_err(|e| format!("bad message from checker: {e}")),
                Ok(None) => Ok(None),
                Err(status) => Err(format!("stream broke: {}", status.message())),
            },
            Updates::Hub { first, changes } => {
                if let Some(snapshot) = first.take() {
                    return Ok(Some(snapshot));
                }
                match changes.recv().await {
                    Ok(update) => Ok(Some((*update).clone())),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Err(format!("fell {n} changes behind"))
                    }
                    Err(broadcast::error::RecvError::Closed) => Ok(None),
                }
            }
        }
    }
}
