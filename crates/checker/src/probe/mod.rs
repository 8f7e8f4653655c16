//! Active probes: one attempt against one target, bounded by its timeout.

mod http;
mod tcp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tether_core::{ProbeKind, ProbeOutcome, Target};
use tokio_rustls::TlsConnector;

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub outcome: ProbeOutcome,
    pub latency: Duration,
    /// Why it failed; `None` on success.
    pub error: Option<String>,
}

/// Everything a probe needs, parsed once from the target.
#[derive(Clone, Debug)]
pub struct Prober {
    kind: ProbeKind,
    host: String,
    port: u16,
    /// `host:port`, sent as the Host header of HTTP probes: the url's, or
    /// the one [`with_host`](Prober::with_host) set.
    authority: String,
    path: String,
    timeout: Duration,
    /// `https://` targets: how HTTP probes reach them. TCP probes stay a
    /// plain connect.
    tls: Option<Tls>,
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
    /// System roots plus the target's CA files (read now: a probe task is
    /// started once per member, not per probe).
    fn new(tls_ca: &[PathBuf]) -> Tls {
        let pems: Result<Vec<Vec<u8>>, String> = tls_ca
            .iter()
            .map(|path| {
                tether_daemon::tls::read_ca("tls_ca", path).map_err(|e| format!("TLS: {e}"))
            })
            .collect();
        let connector = pems.map(|pems| {
            let config = tether_daemon::tls::target_client_config(pems.iter().map(Vec::as_slice));
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
        let tls = (target.is_tls() && target.probe.kind == ProbeKind::Http)
            .then(|| Tls::new(&target.tls_ca));
        Prober {
            kind: target.probe.kind,
            host,
            port,
            authority,
            path: target.probe.path.clone(),
            timeout: target.probe.timeout,
            tls,
        }
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

    /// Runs one probe. Never takes much longer than the timeout.
    pub async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let attempt = async {
            match (self.kind, &self.tls) {
                (ProbeKind::Tcp, _) => tcp::probe(&self.host, self.port).await,
                (ProbeKind::Http, None) => {
                    http::probe(&self.host, self.port, &self.authority, &self.path, None).await
                }
                (ProbeKind::Http, Some(tls)) => {
                    let connector = tls.connector.as_ref().map_err(Clone::clone)?;
                    let name = self.server_name()?;
                    let tls = Some((connector, name));
                    http::probe(&self.host, self.port, &self.authority, &self.path, tls).await
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            )),
        };
        let latency = start.elapsed();
        match result {
            Ok(()) => ProbeResult {
                outcome: ProbeOutcome::Success,
                latency,
                error: None,
            },
            Err(e) => ProbeResult {
                outcome: ProbeOutcome::Failure,
                latency,
                error: Some(e),
            },
        }
    }
}
