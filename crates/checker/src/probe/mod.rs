//! Active probes: one attempt against one target, bounded by its timeout.

mod http;
mod tcp;

use std::time::{Duration, Instant};

use tether_core::{ProbeKind, ProbeOutcome, Target};

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
}

impl Prober {
    /// `target.url` was validated by config as `http://host:port`.
    pub fn new(target: &Target) -> Self {
        let authority = target
            .url
            .strip_prefix("http://")
            .unwrap_or(&target.url)
            .to_owned();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(80)),
            None => (authority.clone(), 80),
        };
        // A bracketed IPv6 literal connects without its brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map_or(host.clone(), str::to_owned);
        Prober {
            kind: target.probe.kind,
            host,
            port,
            authority,
            path: target.probe.path.clone(),
            timeout: target.probe.timeout,
        }
    }

    /// Sends `host` as the Host header of HTTP probes instead of the url's
    /// `host:port`: a DNS member is probed at its address under its
    /// entry's host, as the proxy will send its requests. The connection
    /// still goes to the url's host and port.
    pub fn with_host(mut self, host: &str) -> Self {
        host.clone_into(&mut self.authority);
        self
    }

    /// Runs one probe. Never takes much longer than the timeout.
    pub async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let attempt = async {
            match self.kind {
                ProbeKind::Tcp => tcp::probe(&self.host, self.port).await,
                ProbeKind::Http => {
                    http::probe(&self.host, self.port, &self.authority, &self.path).await
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
