//! The gRPC connection to a checker, with errors worded for a person at a
//! terminal.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tether_core::{CheckerState, HealthUpdate, TargetStatus};
use tether_proto::pb;
use tether_proto::pb::control_service_client::ControlServiceClient;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::render::sanitize;

/// Where `--checker` points when neither the flag nor `TETHER_CHECKER` is
/// set.
pub const DEFAULT_CHECKER: &str = "http://127.0.0.1:50051";

/// How long to wait for the TCP (and HTTP/2) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a query (`List`, `Get`) may take once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on a watch stream, so a checker that vanished without
/// closing the connection is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The standard health question, as errors name it.
const HEALTH_CHECK: &str = "grpc.health.v1.Health/Check";
/// The control calls, as errors name them.
const DRAIN: &str = "tether.health.v1.ControlService/Drain";
const ENABLE: &str = "tether.health.v1.ControlService/Enable";

/// A bad command-line value (exit code 2, like clap's own errors).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for UsageError {}

/// What the connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Short queries, each bounded by the request timeout.
    Query,
    /// One long-lived stream, no request timeout.
    Watch,
}

/// A connected health-service client.
#[derive(Debug)]
pub struct Checker {
    url: String,
    client: HealthServiceClient<Channel>,
    control: ControlServiceClient<Channel>,
}

/// What `Drain` or `Enable` answered.
#[derive(Debug)]
pub struct Drained {
    /// The checker's version after the call.
    pub version: u64,
    /// The target's record after the call.
    pub target: TargetStatus,
    /// False when the target already was (or was not) draining.
    pub changed: bool,
}

/// The stream of a `Watch` call.
#[derive(Debug)]
pub struct WatchStream {
    url: String,
    inner: Streaming<pb::WatchResponse>,
}

/// Where the checker is and how to reach it: its url and, for
/// `https://`, the TLS files (`--ca`, `--cert`, `--key`). Displays as the
/// url. The files are read when connecting, and `Debug` shows only paths.
#[derive(Clone, Debug)]
pub struct Remote {
    pub url: String,
    tls: Option<TlsFiles>,
}

/// `--ca FILE`, and `--cert FILE --key FILE` for mutual TLS.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The client TLS config: the `--ca` as the only trust anchor (no
    /// system roots: a checker decides where traffic goes, so only the
    /// operator's CA may vouch for one) and the client's identity.
    fn client_config(&self) -> anyhow::Result<ClientTlsConfig> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).map_err(|e| anyhow!("cannot read {flag} {}: {e}", path.display()))
        };
        let ca = self
            .ca
            .as_deref()
            .ok_or_else(|| UsageError(NEEDS_CA.into()))?;
        let config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca", ca)?));
        Ok(match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => config.identity(Identity::from_pem(
                read("--cert", cert)?,
                read("--key", key)?,
            )),
            _ => config,
        })
    }
}

const NEEDS_CA: &str = "an https:// checker needs --ca FILE (the CA that signed its certificate)";

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Accepts `host:port` as shorthand (`https://` when `--ca` is given,
/// else `http://`) and rejects what this build cannot talk to: another
/// scheme, `https://` without `--ca`, TLS files for a plain `http://` url
/// (they would be silently unused), `--cert` without `--key`.
pub fn remote(raw: &str, tls: TlsFiles) -> Result<Remote, UsageError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(UsageError(
            "the checker URL is empty (check --checker and TETHER_CHECKER)".into(),
        ));
    }
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(UsageError(
            "--cert and --key go together (the client certificate and its key)".into(),
        ));
    }
    let url = if raw.contains("://") {
        raw.to_owned()
    } else if tls.ca.is_some() {
        format!("https://{raw}")
    } else {
        format!("http://{raw}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| UsageError(format!("invalid checker URL {raw:?}: {}", chain(&e))))?;
    match endpoint.uri().scheme_str() {
        Some("http") if !tls.is_empty() => {
            return Err(UsageError(format!(
                "--ca, --cert and --key need an https:// checker URL, not {raw:?}"
            )));
        }
        Some("https") if tls.ca.is_none() => return Err(UsageError(NEEDS_CA.into())),
        Some("http" | "https") => {}
        Some(other) => {
            return Err(UsageError(format!(
                "invalid checker URL {raw:?}: scheme {other:?} is not supported, use http:// or https://"
            )));
        }
        None => return Err(UsageError(format!("invalid checker URL {raw:?}"))),
    }
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(UsageError(format!("invalid checker URL {raw:?}: no host")));
    }
    let tls = (!tls.is_empty()).then_some(tls);
    Ok(Remote { url, tls })
}

impl Checker {
    /// Connects to the checker at `remote` within the connect timeout.
    pub async fn connect(remote: &Remote, purpose: Use) -> anyhow::Result<Self> {
        let channel = connect_channel(remote, purpose).await?;
        Ok(Checker {
            url: remote.url.clone(),
            client: HealthServiceClient::new(channel.clone()),
            control: ControlServiceClient::new(channel),
        })
    }

    /// The whole pool: its version and every target, in the checker's
    /// order, and what the checker says about itself.
    pub async fn list(&mut self) -> anyhow::Result<(u64, Vec<TargetStatus>, CheckerState)> {
        let reply = self
            .client
            .list(pb::ListRequest {})
            .await
            .map_err(|s| self.rpc_error("List", &s))?
            .into_inner();
        let targets = reply
            .targets
            .into_iter()
            .map(TargetStatus::try_from)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("checker at {} sent an invalid target", self.url))?;
        let checker = tether_proto::convert::checker_from_wire(reply.checker)
            .with_context(|| format!("checker at {} sent an invalid state", self.url))?;
        Ok((reply.version, targets, checker))
    }

    /// One target by name; `None` if the checker has no such target.
    pub async fn get(&mut self, name: &str) -> anyhow::Result<Option<(u64, TargetStatus)>> {
        let request = pb::GetRequest {
            name: name.to_owned(),
        };
        let reply = match self.client.get(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(self.rpc_error("Get", &status)),
        };
        let target = reply
            .target
            .ok_or_else(|| anyhow!("checker at {} answered Get without a target", self.url))?;
        let target = TargetStatus::try_from(target)
            .with_context(|| format!("checker at {} sent an invalid target", self.url))?;
        Ok(Some((reply.version, target)))
    }

    /// Drains the target `name` (`draining = true`) or enables it again;
    /// `None` if the checker has no such target.
    pub async fn set_draining(
        &mut self,
        name: &str,
        draining: bool,
    ) -> anyhow::Result<Option<Drained>> {
        let name = name.to_owned();
        let method = if draining { DRAIN } else { ENABLE };
        // The two replies have the same fields but are distinct messages.
        let answer = if draining {
            self.control
                .drain(pb::DrainRequest { name })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (r.version, r.target, r.changed)
                })
        } else {
            self.control
                .enable(pb::EnableRequest { name })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (r.version, r.target, r.changed)
                })
        };
        let (version, target, changed) = match answer {
            Ok(reply) => reply,
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(self.rpc_error(method, &status)),
        };
        let target = target
            .ok_or_else(|| anyhow!("checker at {} answered {method} without a target", self.url))?;
        let target = TargetStatus::try_from(target)
            .with_context(|| format!("checker at {} sent an invalid target", self.url))?;
        Ok(Some(Drained {
            version,
            target,
            changed,
        }))
    }

    /// Opens a Watch stream. Only the opening is bounded by the request
    /// timeout; the stream itself may stay quiet for as long as nothing
    /// changes.
    pub async fn watch(&mut self) -> anyhow::Result<WatchStream> {
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, self.client.watch(pb::WatchRequest {}))
            .await
            .map_err(|_| {
                anyhow!(
                    "checker at {} did not answer within {}s",
                    self.url,
                    REQUEST_TIMEOUT.as_secs()
                )
            })?;
        let inner = opened
            .map_err(|s| self.rpc_error("Watch", &s))?
            .into_inner();
        Ok(WatchStream {
            url: self.url.clone(),
            inner,
        })
    }

    fn rpc_error(&self, method: &str, status: &Status) -> anyhow::Error {
        status_error(&self.url, method, status)
    }
}

impl WatchStream {
    /// The next update. The end of the stream is an error: a checker never
    /// ends a watch on its own accord.
    pub async fn next(&mut self) -> anyhow::Result<HealthUpdate> {
        match self.inner.message().await {
            Ok(Some(message)) => HealthUpdate::try_from(message)
                .with_context(|| format!("checker at {} sent an invalid update", self.url)),
            Ok(None) => Err(anyhow!("checker at {} ended the watch stream", self.url)),
            Err(status) => match status.code() {
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => {
                    Err(anyhow!(
                        "lost the watch stream from checker at {}: {}",
                        self.url,
                        sanitize(status.message())
                    ))
                }
                _ => Err(status_error(&self.url, "Watch", &status)),
            },
        }
    }
}

/// Opens the HTTP/2 channel to the checker at `remote` within the connect
/// timeout, over TLS for `https://`.
async fn connect_channel(remote: &Remote, purpose: Use) -> anyhow::Result<Channel> {
    let url = &remote.url;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| UsageError(format!("invalid checker URL {url:?}: {}", chain(&e))))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = &remote.tls {
        endpoint = endpoint
            .tls_config(tls.client_config()?)
            .map_err(|e| UsageError(format!("invalid --ca, --cert or --key: {}", chain(&e))))?;
    }
    let endpoint = match purpose {
        Use::Query => endpoint.timeout(REQUEST_TIMEOUT),
        Use::Watch => endpoint
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true),
    };
    match endpoint.connect().await {
        Ok(channel) => Ok(channel),
        Err(e) => {
            let reason = if has_timeout(&e) {
                format!("no connection within {}s", CONNECT_TIMEOUT.as_secs())
            } else {
                root_cause(&e)
            };
            Err(anyhow!("cannot reach checker at {url}: {reason}"))
        }
    }
}

/// Asks the checker at `remote` the standard
/// `grpc.health.v1.Health/Check` question about `service` (`""`: the
/// checker itself; a target's name: that target). `None` if the checker
/// does not know the service.
pub async fn serving_status(
    remote: &Remote,
    service: &str,
) -> anyhow::Result<Option<ServingStatus>> {
    let url = remote.url.as_str();
    let channel = connect_channel(remote, Use::Query).await?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(reply) => Ok(Some(reply.into_inner().status())),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status_error(url, HEALTH_CHECK, &status)),
    }
}

fn status_error(url: &str, method: &str, status: &Status) -> anyhow::Error {
    let message = sanitize(status.message());
    match status.code() {
        Code::Unavailable => anyhow!("cannot reach checker at {url}: {message}"),
        Code::Cancelled if has_timeout(status) => anyhow!(
            "checker at {url} did not answer within {}s",
            REQUEST_TIMEOUT.as_secs()
        ),
        Code::DeadlineExceeded => anyhow!("checker at {url} did not answer in time"),
        Code::Unimplemented => anyhow!(
            "{url} does not serve {} (is it a Tether checker?): {message}",
            qualified(method)
        ),
        code if message.is_empty() => anyhow!("checker at {url} failed {method}: {code}"),
        code => anyhow!("checker at {url} failed {method}: {code}: {message}"),
    }
}

/// The full gRPC name of `method`: bare names are Tether's own methods.
fn qualified(method: &str) -> Cow<'_, str> {
    if method.contains('/') {
        Cow::Borrowed(method)
    } else {
        Cow::Owned(format!("tether.health.v1.HealthService/{method}"))
    }
}

/// Whether the error, or any error under it, is a timeout.
fn has_timeout(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        let text = e.to_string();
        if text.contains("timed out") || text.contains("Timeout expired") {
            return true;
        }
        current = e.source();
    }
    false
}

/// The innermost error's message: the one that says what actually went wrong
/// ("Connection refused (os error 111)") rather than the layer it went
/// wrong in ("transport error").
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut deepest = err;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    let text = deepest.to_string();
    if text.is_empty() {
        chain(err)
    } else {
        sanitize(&text).into_owned()
    }
}

/// Every message in the chain, joined by `: `, repeats left out.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    sanitize(&parts.join(": ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(ca: bool, pair: bool) -> TlsFiles {
        TlsFiles {
            ca: ca.then(|| "ca.crt".into()),
            cert: pair.then(|| "c.crt".into()),
            key: pair.then(|| "c.key".into()),
        }
    }

    #[test]
    fn urls_are_normalized() {
        let url = |raw: &str, files| remote(raw, files).map(|r| r.url);
        assert_eq!(
            url("http://127.0.0.1:50051", tls(false, false)).expect("ok"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            url(" checker.local:50051 ", tls(false, false)).expect("ok"),
            "http://checker.local:50051"
        );
        assert_eq!(
            url("checker.local:50051", tls(true, false)).expect("ok"),
            "https://checker.local:50051"
        );
        assert_eq!(
            url("https://c:1", tls(true, true)).expect("ok"),
            "https://c:1"
        );
        for bad in ["", "https://x:1", "ftp://x", "http://", "http://a b"] {
            assert!(remote(bad, tls(false, false)).is_err(), "{bad:?}");
        }
        // TLS files for a plain url, or half an identity: refused, not ignored.
        assert!(remote("http://c:1", tls(true, false)).is_err());
        let half = TlsFiles {
            key: None,
            ..tls(true, true)
        };
        assert!(remote("https://c:1", half).is_err());
    }

    #[test]
    fn status_errors_are_readable() {
        let url = "http://c:1";
        let e = status_error(url, "List", &Status::unavailable("tcp connect error"));
        assert_eq!(
            e.to_string(),
            "cannot reach checker at http://c:1: tcp connect error"
        );
        let e = status_error(url, "List", &Status::cancelled("Timeout expired"));
        assert_eq!(
            e.to_string(),
            "checker at http://c:1 did not answer within 5s"
        );
        let e = status_error(url, "Get", &Status::unimplemented("x"));
        assert_eq!(
            e.to_string(),
            "http://c:1 does not serve tether.health.v1.HealthService/Get (is it a Tether checker?): x"
        );
        let e = status_error(url, HEALTH_CHECK, &Status::unimplemented("x"));
        assert_eq!(
            e.to_string(),
            "http://c:1 does not serve grpc.health.v1.Health/Check (is it a Tether checker?): x"
        );
        let e = status_error(url, "Get", &Status::internal("boom\nbang"));
        assert_eq!(
            e.to_string(),
            r"checker at http://c:1 failed Get: Internal error: boom\nbang"
        );
    }
}
