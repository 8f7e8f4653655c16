//! Where health updates come from: checkers over gRPC, or the embedded
//! checker's hub. Both yield the same core `HealthUpdate`s, so the feed has
//! one path for both: one stream per [`Endpoint`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use log::warn;
use tether_checker::HubHandle;
use tether_checker::dns::{Resolve, SystemResolver};
use tether_core::HealthUpdate;
use tether_daemon::tls::ClientTls;
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tokio::sync::broadcast;
use tonic::transport::Endpoint as GrpcEndpoint;

use crate::config::CheckerDns;

/// How long connecting and opening a Watch may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on the checker connection, so a dead checker is noticed
/// within about eight seconds even when nothing changes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub enum Source {
    /// Checkers over gRPC, over TLS when `tls` is set (`https://` urls);
    /// with `dns`, a url whose host is a name stands for every address it
    /// resolves to.
    Checkers {
        uris: Vec<http::Uri>,
        tls: Option<ClientTls>,
        dns: Option<CheckerDns>,
    },
    Hub(HubHandle),
}

/// One entry of a source, in config order.
#[derive(Clone, Debug)]
pub enum Place {
    /// One stream.
    Fixed(Endpoint),
    /// One stream per address `host` resolves to, on `port`, looked up
    /// again every `dns.refresh`.
    Dns {
        uri: http::Uri,
        host: String,
        port: u16,
        tls: Option<ClientTls>,
        dns: CheckerDns,
    },
}

impl Source {
    /// Checkers at `uris`; logs the warnings `tls` has (a private key
    /// others can read) once.
    pub fn checkers(
        uris: Vec<http::Uri>,
        tls: Option<ClientTls>,
        dns: Option<CheckerDns>,
    ) -> Source {
        for warning in tls.iter().flat_map(ClientTls::warnings) {
            warn!(target: "proxy", "{warning}");
        }
        Source::Checkers { uris, tls, dns }
    }

    /// Every entry to follow, in config order.
    pub fn places(&self) -> Vec<Place> {
        match self {
            Source::Checkers { uris, tls, dns } => uris
                .iter()
                .map(|uri| {
                    let named = uri
                        .host()
                        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                        .filter(|h| h.parse::<IpAddr>().is_err());
                    match (dns, named) {
                        (Some(dns), Some(host)) => Place::Dns {
                            uri: uri.clone(),
                            host: host.to_owned(),
                            port: uri.port_u16().unwrap_or(match uri.scheme_str() {
                                Some("https") => 443,
                                _ => 80,
                            }),
                            tls: tls.clone(),
                            dns: dns.clone(),
                        },
                        _ => Place::Fixed(Endpoint::Checker {
                            uri: uri.clone(),
                            tls: tls.clone(),
                            name: None,
                        }),
                    }
                })
                .collect(),
            Source::Hub(hub) => vec![Place::Fixed(Endpoint::Hub(hub.clone()))],
        }
    }
}

/// One checker: a place to open a Watch stream and send reports.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Checker {
        uri: http::Uri,
        tls: Option<ClientTls>,
        /// For one address of a name (`expand = "dns"`): the url's
        /// `host:port`. TLS verifies the host's name, not the address.
        name: Option<String>,
    },
    Hub(HubHandle),
}

impl Endpoint {
    /// What logs, the status page and metric labels call it: the checker's
    /// url; `host:port@ip:port` for one address of a name (as the checker
    /// names DNS members); `embedded`.
    pub fn label(&self) -> String {
        match self {
            Endpoint::Checker {
                uri, name: None, ..
            } => uri.to_string().trim_end_matches('/').to_owned(),
            Endpoint::Checker {
                uri,
                name: Some(name),
                ..
            } => format!("{name}@{}", uri.authority().map_or("?", |a| a.as_str())),
            Endpoint::Hub(_) => "embedded".to_owned(),
        }
    }

    /// Opens a subscription.
    pub async fn open(&self) -> Result<Updates, String> {
        match self {
            Endpoint::Checker { uri, tls, name } => tokio::time::timeout(
                OPEN_TIMEOUT,
                open_grpc(uri.clone(), tls.as_ref(), server_name(name.as_deref())),
            )
            .await
            .map_err(|_| format!("no answer within {OPEN_TIMEOUT:?}"))?,
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

/// The host of `host:port` (brackets of an IPv6 literal removed).
pub fn server_name(name: Option<&str>) -> Option<&str> {
    let name = name?;
    let host = match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    };
    Some(host.trim_start_matches('[').trim_end_matches(']'))
}

/// The resolver that expands checker names; the system's unless a test
/// puts its own.
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl Default for Resolver {
    fn default() -> Self {
        Resolver(Arc::new(SystemResolver))
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// The endpoint of the checker at `uri`, with TLS when `tls` is set. The
/// files are read here, on every (re)connection, so a rotated certificate
/// or CA is picked up without a restart.
pub fn endpoint(
    uri: http::Uri,
    tls: Option<&ClientTls>,
    server_name: Option<&str>,
) -> Result<GrpcEndpoint, String> {
    let endpoint = GrpcEndpoint::from(uri);
    match tls {
        None => Ok(endpoint),
        Some(tls) => {
            let config = tether_checker::tls::client_config(tls).map_err(|e| e.to_string())?;
            let config = match server_name {
                Some(name) => config.domain_name(name),
                None => config,
            };
            endpoint
                .tls_config(config)
                .map_err(|e| format!("{}: {}", tls.section, crate::error::chain(&e)))
        }
    }
}

async fn open_grpc(
    uri: http::Uri,
    tls: Option<&ClientTls>,
    server_name: Option<&str>,
) -> Result<Updates, String> {
    let channel = endpoint(uri, tls, server_name)?
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
