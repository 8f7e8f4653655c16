//! The request path: pick a target, forward, stream the answer back.
//!
//! Per request: one table load, at most one hash lookup (the sticky hint)
//! and one round-robin step; no lock, and nothing shared is held across an
//! `.await`. Connect failures are retried on another healthy target when the
//! request can be sent again (it has no body).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use log::{debug, info, warn};
use tether_core::{RoundRobin, StickyHint, sticky};

use crate::body::ProxyBody;
use crate::config::{ProxyConfig, StickyConfig};
use crate::headers::{self, X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};
use crate::table::{TableCell, Upstream};

/// Pooled upstream connections idle longer than this are closed by us
/// first: below the 5 s keep-alive of common backend servers, so we rarely
/// send on a connection the backend is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static RETRY_AFTER_1: HeaderValue = HeaderValue::from_static("1");

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<TableCell>,
    rr: RoundRobin,
    client: Client<HttpConnector, ProxyBody>,
    sticky: StickyConfig,
    preserve_host: bool,
    retries: u32,
    response_timeout: Duration,
    /// Whether the `access` logger is on, checked once at start so the
    /// request path pays nothing when it is off.
    access_log: bool,
}

/// Why an attempt produced no response.
enum Failure {
    /// Nothing reached the target: safe to try another one.
    Connect(String),
    /// The response head did not come in time.
    Timeout,
    /// Anything after the request was (perhaps partly) sent.
    Upstream(String),
}

impl Proxy {
    pub fn new(config: &ProxyConfig, table: Arc<TableCell>) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Proxy {
            table,
            rr: RoundRobin::new(),
            client,
            sticky: config.sticky,
            preserve_host: config.preserve_host,
            retries: config.retries,
            response_timeout: config.response_timeout,
            access_log: log::log_enabled!(target: "access", log::Level::Info),
        }
    }

    /// Serves one request. Never fails: every problem becomes a response.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = self.access_log.then(Instant::now);
        let method = self.access_log.then(|| req.method().clone());
        let path = self
            .access_log
            .then(|| req.uri().path_and_query().map(|p| p.as_str().to_owned()));
        let res = self.forward(req, peer).await;
        if let Some(started) = started {
            let target = res
                .headers()
                .get(&X_TARGET_SERVER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            info!(
                target: "access",
                "{peer} \"{} {}\" {} {} {}us",
                method.unwrap_or_default(),
                path.flatten().unwrap_or_default(),
                res.status().as_u16(),
                target,
                started.elapsed().as_micros()
            );
        }
        Ok(res)
    }

    async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            // A reverse proxy does not open tunnels to arbitrary authorities.
            return error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported");
        }
        let now_ms = epoch_ms();
        let (mut parts, body) = req.into_parts();

        // Choose the first target. The guard is dropped before any await.
        let (mut index, mut upstream, healthy_count) = {
            let table = self.table.load();
            let hint = if self.sticky.enabled {
                StickyHint::parse(
                    header_str(&parts.headers, &X_TARGET_SERVER),
                    header_str(&parts.headers, &X_TARGET_SERVER_LAST_USE),
                )
            } else {
                None
            };
            let pick = sticky::decide(hint.as_ref(), now_ms, self.sticky.window, &table, &self.rr);
            let Some(i) = pick.index() else {
                return no_healthy_targets();
            };
            let Some(member) = table.member(i) else {
                return no_healthy_targets();
            };
            debug!(target: "proxy", "{} {} -> {} ({pick:?})", parts.method, parts.uri.path(), member.name);
            (i, member.data.clone(), table.healthy().len())
        };

        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::add_forwarding(&mut parts.headers, peer, client_host.clone());
        if self.preserve_host
            && let Some(host) = &client_host
        {
            parts.headers.insert(header::HOST, host.clone());
        }

        // A request without a body can be sent again; keep what that needs
        // only when a retry is possible at all.
        let replay = (self.retries > 0 && body.is_end_stream() && healthy_count > 1)
            .then(|| (parts.method.clone(), parts.headers.clone()));

        let mut request = Some(Request::from_parts(parts, ProxyBody::Stream(body)));
        let mut attempt = 0;
        loop {
            let mut req = match request.take() {
                Some(r) => r,
                None => match &replay {
                    Some((method, headers)) => rebuild(method, headers),
                    None => return error_response(StatusCode::BAD_GATEWAY, "Bad gateway"),
                },
            };
            match self.send(&mut req, &upstream, &path).await {
                Ok(res) => return self.finish(res, &upstream, now_ms),
                Err(Failure::Connect(e)) => {
                    warn!(target: "proxy", "connect to {} failed: {e}", upstream.authority);
                    if attempt >= self.retries || replay.is_none() {
                        return error_response(StatusCode::BAD_GATEWAY, "Bad gateway");
                    }
                    attempt += 1;
                    let table = self.table.load();
                    let Some(next) = self.rr.pick_other(&table, index) else {
                        return error_response(StatusCode::BAD_GATEWAY, "Bad gateway");
                    };
                    let Some(member) = table.member(next) else {
                        return error_response(StatusCode::BAD_GATEWAY, "Bad gateway");
                    };
                    index = next;
                    upstream = member.data.clone();
                }
                Err(Failure::Timeout) => {
                    warn!(target: "proxy", "{} gave no response head within {:?}", upstream.authority, self.response_timeout);
                    return error_response(StatusCode::GATEWAY_TIMEOUT, "Gateway timeout");
                }
                Err(Failure::Upstream(e)) => {
                    warn!(target: "proxy", "{} failed: {e}", upstream.authority);
                    return error_response(StatusCode::BAD_GATEWAY, "Bad gateway");
                }
            }
        }
    }

    async fn send(
        &self,
        req: &mut Request<ProxyBody>,
        upstream: &Upstream,
        path: &PathAndQuery,
    ) -> Result<Response<Incoming>, Failure> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(upstream.authority.clone());
        uri.path_and_query = Some(path.clone());
        *req.uri_mut() = Uri::from_parts(uri).map_err(|e| Failure::Upstream(e.to_string()))?;
        *req.version_mut() = Version::HTTP_11;
        if !self.preserve_host || !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, upstream.host_header.clone());
        }
        let taken = std::mem::replace(req, Request::new(ProxyBody::empty()));
        match tokio::time::timeout(self.response_timeout, self.client.request(taken)).await {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(Failure::Upstream(error_chain(&e))),
            Err(_) => Err(Failure::Timeout),
        }
    }

    fn finish(
        &self,
        res: Response<Incoming>,
        upstream: &Upstream,
        now_ms: u64,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = res.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(X_TARGET_SERVER.clone(), upstream.name_header.clone());
        parts
            .headers
            .insert(X_TARGET_SERVER_LAST_USE.clone(), HeaderValue::from(now_ms));
        Response::from_parts(parts, ProxyBody::Stream(body))
    }
}

fn rebuild(method: &Method, headers: &HeaderMap) -> Request<ProxyBody> {
    let mut req = Request::new(ProxyBody::empty());
    *req.method_mut() = method.clone();
    *req.headers_mut() = headers.clone();
    req
}

fn header_str<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// `503` with `Retry-After: 1` and the JSON body DESIGN fixes.
pub fn no_healthy_targets() -> Response<ProxyBody> {
    let mut res = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "No healthy servers available",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, RETRY_AFTER_1.clone());
    res
}

/// A short JSON error. The message is fixed text: it never carries an
/// upstream address (those go to the `proxy` log).
pub fn error_response(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let body = Bytes::from(format!("{{\"error\":\"{message}\"}}"));
    let mut res = Response::new(ProxyBody::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, JSON.clone());
    res
}
