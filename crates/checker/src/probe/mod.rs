//! Active probes: one attempt against one target, bounded by its timeout.
//!
//! A [`Prober`] belongs to one target (the hub's scheduler holds it between
//! probes) and keeps what probes can share between them: the HTTP or gRPC
//! connection (see `http.rs`, `grpc.rs`) and the addresses of a target
//! given by host name, looked up again every
//! `[health] dns_refresh` (see [`Prober::with_resolver`]; by default
//! [`DEFAULT_DNS_REFRESH`]) rather than at every probe (10,000 names probed
//! every second would be 10,000 lookups a second against the cluster's
//! DNS).

mod grpc;
mod head;
mod http;
mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tether_core::target::DEFAULT_DNS_REFRESH;
use tether_core::{FailureClass, ProbeKind, ProbeOutcome, Target};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::dns::{Resolve, SystemResolver};

/// Why a probe failed, and which kind of failure that is: an answer (the
/// target is there and says no) or silence (nothing came back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeError {
    class: FailureClass,
    message: String,
}

impl ProbeError {
    fn silence(message: String) -> Self {
        ProbeError {
            class: FailureClass::Silence,
            message,
        }
    }

    /// A failed connect: refused or reset means a host answered; a
    /// timeout, an unreachable network or host, or a local refusal to send
    /// (no route, a firewall) means nothing did.
    fn connect(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let message = format!("connect: {e}");
        match e.kind() {
            TimedOut | HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable
            | PermissionDenied => ProbeError::silence(message),
            _ => ProbeError {
                class: FailureClass::Answer,
                message,
            },
        }
    }
}

/// Anything that is not named silence is an answer: a status, a TLS
/// refusal, a connection closed mid-exchange. Only what is surely silence
/// may count towards impairment.
impl From<String> for ProbeError {
    fn from(message: String) -> Self {
        ProbeError {
            class: FailureClass::Answer,
            message,
        }
    }
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub outcome: ProbeOutcome,
    pub latency: Duration,
    /// Why it failed; `None` on success.
    pub error: Option<String>,
}

/// Everything a probe needs, parsed once from the target, and what probes
/// of the target share: its kept HTTP connection and looked-up addresses.
#[derive(Debug)]
pub struct Prober {
    kind: ProbeKind,
    /// `host:port`, sent as the Host header of HTTP probes: the url's, or
    /// the one [`with_host`](Prober::with_host) set.
    authority: String,
    path: String,
    timeout: Duration,
    /// `https://` targets: how HTTP probes reach them. TCP probes stay a
    /// plain connect.
    tls: Option<Tls>,
    addrs: Addrs,
    /// The HTTP connection kept from the last successful probe.
    conn: Option<http::Conn>,
    /// The same for gRPC probes.
    grpc: Option<grpc::Conn>,
}

/// Where the target is: an IP literal once and for all, or a host name
/// and its last answer.
struct Addrs {
    host: String,
    port: u16,
    /// An IP literal: never looked up.
    fixed: Option<SocketAddr>,
    /// The last answer that had addresses, and when it was asked for.
    looked_up: Option<(Vec<SocketAddr>, Instant)>,
    refresh: Duration,
    resolver: Arc<dyn Resolve>,
}

impl std::fmt::Debug for Addrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Addrs")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("looked_up", &self.looked_up)
            .finish_non_exhaustive()
    }
}

impl Addrs {
    fn new(host: String, port: u16) -> Addrs {
        let fixed = host.parse::<IpAddr>().ok().map(|ip| (ip, port).into());
        Addrs {
            host,
            port,
            fixed,
            looked_up: None,
            refresh: DEFAULT_DNS_REFRESH,
            resolver: Arc::new(SystemResolver),
        }
    }

    /// The addresses to connect to: looked up when the last answer is
    /// older than `refresh`. A failed lookup keeps the last answer (a DNS
    /// blip is not the target's failure), and fails the probe only when
    /// there is none.
    async fn get(&mut self) -> Result<Vec<SocketAddr>, ProbeError> {
        if let Some(addr) = self.fixed {
            return Ok(vec![addr]);
        }
        if let Some((addrs, at)) = &self.looked_up
            && at.elapsed() < self.refresh
        {
            return Ok(addrs.clone());
        }
        let now = Instant::now();
        match self.resolver.resolve(&self.host, self.port).await {
            Ok(addrs) if !addrs.is_empty() => {
                self.looked_up = Some((addrs.clone(), now));
                Ok(addrs)
            }
            result => {
                let why = match result {
                    Err(e) => format!("resolve {}: {e}", self.host),
                    Ok(_) => format!("resolve {}: no address", self.host),
                };
                match &mut self.looked_up {
                    // Ask again at the next refresh, not at every probe.
                    Some((addrs, at)) => {
                        *at = now;
                        Ok(addrs.clone())
                    }
                    // A name that does not resolve is silence.
                    None => Err(ProbeError::silence(why)),
                }
            }
        }
    }
}

/// TLS for HTTP probes of an `https://` target, or why it cannot be had
/// (a CA file gone since the config was read): every probe fails with it.
#[derive(Clone)]
struct Tls {
    connector: Result<TlsConnector, String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("connector", &self.connector.as_ref().map(|_| "ready"))
            .finish()
    }
}

impl Tls {
    /// System roots plus the target's CA files (read now: a prober is
    /// made once per member, not per probe). gRPC probes offer only
    /// `h2` by ALPN.
    fn new(tls_ca: &[PathBuf], kind: ProbeKind) -> Tls {
        let pems: Result<Vec<Vec<u8>>, String> = tls_ca
            .iter()
            .map(|path| {
                tether_daemon::tls::read_ca("tls_ca", path).map_err(|e| format!("TLS: {e}"))
            })
            .collect();
        let connector = pems.map(|pems| {
            let mut config =
                tether_daemon::tls::target_client_config(pems.iter().map(Vec::as_slice));
            if kind == ProbeKind::Grpc {
                config.alpn_protocols = vec![b"h2".to_vec()];
            }
            TlsConnector::from(Arc::new(config))
        });
        Tls { connector }
    }
}

impl Prober {
    /// `target.url` was validated by config as `http://host:port` or
    /// `https://host:port`.
    pub fn new(target: &Target) -> Self {
        let authority = target.authority().unwrap_or(&target.url).to_owned();
        let default_port = if target.is_tls() { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default_port)),
            None => (authority.clone(), default_port),
        };
        // A bracketed IPv6 literal connects without its brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map_or(host.clone(), str::to_owned);
        let kind = target.probe.kind;
        let tls =
            (target.is_tls() && kind != ProbeKind::Tcp).then(|| Tls::new(&target.tls_ca, kind));
        Prober {
            kind: target.probe.kind,
            authority,
            path: target.probe.path.clone(),
            timeout: target.probe.timeout,
            tls,
            addrs: Addrs::new(host, port),
            conn: None,
            grpc: None,
        }
    }

    /// Looks host names up with `resolver` (the checker's, so tests decide
    /// the answers), again every `refresh`.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>, refresh: Duration) -> Self {
        self.addrs.resolver = resolver;
        self.addrs.refresh = refresh;
        self
    }

    /// Sends `host` as the Host header of HTTP probes instead of the url's
    /// `host:port`, and over TLS verifies the certificate for its host: a
    /// DNS member is probed at its address under its entry's host, as the
    /// proxy will send its requests. The connection still goes to the
    /// url's host and port.
    pub fn with_host(mut self, host: &str) -> Self {
        host.clone_into(&mut self.authority);
        self
    }

    /// The name an HTTP probe over TLS sends as SNI and verifies: the
    /// Host's host, without port or IPv6 brackets.
    fn server_name(&self) -> Result<ServerName<'static>, String> {
        let host = match self.authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.authority.as_str(),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        ServerName::try_from(host.to_owned())
            .map_err(|e| format!("TLS: {host:?} is not a server name: {e}"))
    }

    /// Runs one probe. Never takes much longer than the timeout. A failed
    /// or timed-out probe drops the kept connection.
    pub async fn probe(&mut self) -> ProbeResult {
        let start = Instant::now();
        // Taken out for the attempt: a timeout drops it with the attempt.
        let mut kept = self.conn.take();
        let mut kept_grpc = self.grpc.take();
        let timeout = self.timeout;
        let name = self.tls.as_ref().map(|_| self.server_name());
        let Prober {
            kind,
            authority,
            path,
            tls,
            addrs,
            ..
        } = self;
        // Each kind's future is boxed: held inline, the largest (a TLS or
        // HTTP/2 handshake) would size every probe's task, and at start-up
        // all 10,000 of a large pool may be in flight at once.
        let attempt = async {
            match (*kind, tls, name) {
                (ProbeKind::Tcp, ..) => Box::pin(tcp::probe(&addrs.get().await?)).await,
                (ProbeKind::Http, Some(tls), Some(name)) => {
                    let connector = tls.connector.as_ref().map_err(Clone::clone)?;
                    let tls = Some((connector, name?));
                    Box::pin(http::probe(&mut kept, addrs, authority, path, tls)).await
                }
                (ProbeKind::Http, ..) => {
                    Box::pin(http::probe(&mut kept, addrs, authority, path, None)).await
                }
                (ProbeKind::Grpc, Some(tls), Some(name)) => {
                    let connector = tls.connector.as_ref().map_err(Clone::clone)?;
                    let tls = Some((connector, name?));
                    Box::pin(grpc::probe(&mut kept_grpc, addrs, authority, path, tls)).await
                }
                (ProbeKind::Grpc, ..) => {
                    Box::pin(grpc::probe(&mut kept_grpc, addrs, authority, path, None)).await
                }
            }
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::silence(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))),
        };
        if result.is_ok() {
            self.conn = kept;
            self.grpc = kept_grpc;
        }
        let latency = start.elapsed();
        match result {
            Ok(()) => ProbeResult {
                outcome: ProbeOutcome::Success,
                latency,
                error: None,
            },
            Err(e) => ProbeResult {
                outcome: ProbeOutcome::Failure(e.class),
                latency,
                error: Some(e.message),
            },
        }
    }
}
