//! The request path: pick a target, forward, stream the answer back.
//!
//! Per request: one table load, at most one hash lookup (the sticky hint)
//! and one round-robin step; no lock, and nothing shared is held across an
//! `.await`.
//!
//! Failures are retried where that is safe. No connection could be had
//! (refused, connect timeout, a pooled connection found dead before the
//! request was written): the untouched request goes to another healthy
//! target, whatever its method and body. The request was (perhaps partly)
//! sent and then the connection failed: only an idempotent request without
//! a body is sent again (RFC 9112 section 9.3.1). No response head in time:
//! `504`. Nothing left to try: `502`.

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use log::{debug, info, warn};
use tether_core::{Pick, RoundRobin, sticky};
use tether_daemon::clock;
use tokio::sync::mpsc;

use crate::body::{BodyError, ClientBody, Guard, ProxyBody};
use crate::cancel::Reached;
use crate::config::{ProxyConfig, Settings};
use crate::headers::{self, Peer, X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};
use crate::http1::client::{Failed, ResponseBody};
use crate::respond::{error_response, no_healthy_targets, rejection};
use crate::stats::{self, ProxyStats, StickyResult};
use crate::sticky::{self as cookie, Read};
use crate::table::{self, Routes, TableCell, Upstream};
use crate::tunnel;
use crate::upstream::Connector;
use crate::validate::{self, Reject};

/// Pooled upstream connections idle longer than this are not reused: below
/// the 5 s keep-alive of common backend servers, so we rarely send on a
/// connection the backend is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

static UPGRADE_VALUE: HeaderValue = HeaderValue::from_static("upgrade");

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<TableCell>,
    rr: RoundRobin,
    connector: Connector,
    /// The current settings; each connection takes them once (see
    /// [`Settings`]) and a reload swaps in new ones.
    settings: ArcSwap<Settings>,
    /// Open upgraded connections, for the drain at shutdown.
    tunnels: Arc<tunnel::Tracker>,
    /// Names of members this proxy ejected, for the checker to re-probe.
    reports: Option<mpsc::Sender<String>>,
    /// Whether the `access` logger is on: read once per request (a relaxed
    /// load), refreshed when logging is reconfigured.
    access_log: AtomicBool,
    stats: Arc<ProxyStats>,
}

/// Why an attempt produced no response.
enum Failure {
    /// Nothing reached the target; the request comes back untouched
    /// (boxed: failures are rare, and the result stays small).
    NotSent(Box<Request<ProxyBody>>, String),
    /// The request was (perhaps partly) written, then the exchange failed.
    /// `reused`: on a pooled connection, which the backend may have been
    /// closing just as the request went out (the keep-alive race). `head`:
    /// a bodyless request's head, to send again where that is safe.
    Sent {
        reused: bool,
        error: String,
        head: Option<Box<http::request::Parts>>,
    },
    /// The client's request body broke the proxy's rules (not the
    /// target's fault).
    Body(BodyError),
    /// The response head did not come in time.
    Timeout,
}

/// The target of one attempt. Identified by its `Upstream` (name and
/// address), never by a position: the table can change between attempts.
struct Attempt {
    upstream: Arc<Upstream>,
}

impl Proxy {
    pub fn new(
        config: &ProxyConfig,
        table: Arc<TableCell>,
        stats: Arc<ProxyStats>,
        reports: Option<mpsc::Sender<String>>,
    ) -> Proxy {
        Proxy {
            table,
            rr: RoundRobin::new(),
            connector: Connector::new(POOL_IDLE_TIMEOUT),
            settings: ArcSwap::from_pointee(config.settings()),
            reports,
            tunnels: Arc::default(),
            access_log: AtomicBool::new(access_log_enabled()),
            stats,
        }
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// The counters, to keep beside a connection.
    pub fn stats_handle(&self) -> Arc<ProxyStats> {
        self.stats.clone()
    }

    /// The settings new connections get.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Installs reloaded settings for connections accepted from now on.
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    /// Re-reads whether the `access` logger is on (after a logging change).
    pub fn refresh_access_log(&self) {
        self.access_log
            .store(access_log_enabled(), Ordering::Relaxed);
    }

    pub fn tunnels(&self) -> &tunnel::Tracker {
        &self.tunnels
    }

    /// Serves one request. Never fails: every problem becomes a response.
    pub async fn handle(
        &self,
        req: Request<ClientBody>,
        peer: &Peer,
        settings: &Settings,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // One await point, so the future (boxed per request by the HTTP/1
        // loop and by hyper's HTTP/2 server) holds one `forward` state, not
        // two.
        let started = Instant::now();
        let now_ms = clock::now_ms();
        let access = self
            .access_log
            .load(Ordering::Relaxed)
            .then(|| (req.method().clone(), req.uri().clone()));
        let mut served_by = None;
        let res = self
            .forward(req, peer, settings, now_ms, &mut served_by)
            .await;
        self.stats.request_duration.observe(started.elapsed());
        match served_by {
            Some(upstream) => upstream.stats.responded(res.status(), now_ms),
            None => self.stats.local_responses[stats::class(res.status())].inc(),
        }
        if let Some((method, uri)) = access {
            let target = res
                .headers()
                .get(&X_TARGET_SERVER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            info!(
                target: "access",
                "{} \"{method} {}\" {} {target} {}us",
                peer.addr,
                uri.path_and_query().map_or("", |p| p.as_str()),
                res.status().as_u16(),
                started.elapsed().as_micros()
            );
        }
        Ok(res)
    }

    /// Forwards `req`; `served_by` names the member the answer is counted
    /// against (the last one tried), or stays `None` when the proxy
    /// answered alone.
    async fn forward(
        &self,
        req: Request<ClientBody>,
        peer: &Peer,
        s: &Settings,
        now_ms: u64,
        served_by: &mut Option<Arc<Upstream>>,
    ) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            // A reverse proxy does not open tunnels to arbitrary authorities.
            return error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported");
        }
        let (mut parts, body) = req.into_parts();
        if let Err(reject) = validate::request(&parts, &s.limits) {
            return rejection(reject);
        }
        if !self.stats.is_settled() {
            // Startup: until every member has a first verdict, a pool that
            // is half known would send everything to whichever member was
            // probed first.
            return no_healthy_targets();
        }

        // Choose the first target. The guard is dropped before any await.
        let mut attempt = {
            let table = self.table.load();
            let read = if s.sticky.enabled {
                cookie::read(&s.sticky.rules(), &parts.headers, now_ms)
            } else {
                Read::Absent
            };
            let claim = match &read {
                Read::Claim(claim) => Some(claim.hint()),
                Read::Rejected(why) => {
                    self.stats.sticky(*why);
                    None
                }
                Read::Absent => None,
            };
            let pick = sticky::decide_pinned(
                claim.as_ref(),
                now_ms,
                s.sticky.window,
                s.sticky.strict,
                &table,
                &self.rr,
                |i| available(&table, i, now_ms),
            );
            if claim.is_some() {
                self.stats.sticky(match pick {
                    Pick::Sticky(_) => StickyResult::Honoured,
                    _ => StickyResult::Ignored,
                });
            }
            let Some(member) = pick.index().and_then(|i| table.member(i)) else {
                // Also strict stickiness's answer: to the client a pinned
                // member that is down is the same as none.
                return no_healthy_targets();
            };
            *served_by = Some(member.data.clone());
            debug!(target: "proxy", "{} {} -> {} ({pick:?})", parts.method, parts.uri.path(), member.name);
            Attempt {
                upstream: member.data.clone(),
            }
        };
        if s.sticky.enabled && s.sticky.mode.uses_cookie() {
            // The proxy's cookie is the proxy's business (HAProxy's
            // `indirect`): the backend never sees it.
            cookie::strip_cookie(&mut parts.headers, &s.sticky.cookie_name);
        }

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

        // An upgrade (WebSocket) keeps its Upgrade header; h2c upgrades are
        // refused by treating them as plain requests (RFC 9113 section 3.1).
        let upgrade = (parts.version == Version::HTTP_11)
            .then(|| parts.headers.get(header::UPGRADE).cloned())
            .flatten()
            .filter(|u| !u.as_bytes().eq_ignore_ascii_case(b"h2c"));
        let client_upgrade = if upgrade.is_some() {
            tunnel::ClientUpgrade::take(&mut parts.extensions)
        } else {
            None
        };

        headers::strip_hop_by_hop(&mut parts.headers);
        // The proxy answers `Expect: 100-continue` itself (the server sends
        // the 100 when the body is first read, i.e. once an upstream is
        // ready).
        parts.headers.remove(header::EXPECT);
        headers::add_forwarding(&mut parts.headers, peer, client_host.clone());
        if s.preserve_host
            && let Some(host) = &client_host
        {
            parts.headers.insert(header::HOST, host.clone());
        }
        if let Some(upgrade) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, UPGRADE_VALUE.clone());
            parts.headers.insert(header::UPGRADE, upgrade.clone());
        }
        parts.version = Version::HTTP_11;

        // Only idempotent requests without a body are sent again after a
        // failed send (RFC 9112 section 9.3.1); the exchange gives such a
        // request's head back when it fails.
        let replayable = upgrade.is_none() && parts.method.is_idempotent() && body.is_end_stream();
        // One free resend on a fresh connection to the same target when a
        // reused connection died under the request: that is the backend
        // closing an idle connection, not the backend failing.
        let mut fresh_only = false;

        // An HTTP/2 client's answer waits in hyper's send queue; an HTTP/1
        // client's is written at once (see `upstream::Connection::exchange`).
        let copy_out = matches!(body, ClientBody::Hyper(_));
        let guard = Guard::new(s.body_timeout, s.limits.max_body_bytes);
        let mut req = Request::from_parts(parts, ProxyBody::stream(body, guard));
        let mut retries_left = s.retries;
        loop {
            Self::address(s, &mut req, &attempt.upstream, &path);
            let failure = match self
                .exchange(s, req, &attempt.upstream, fresh_only, copy_out)
                .await
            {
                Ok((mut res, mut reached)) => {
                    attempt.upstream.passive.success();
                    if res.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client_upgrade) = client_upgrade
                        && let Some(upstream_upgrade) = res.body_mut().upgrade()
                    {
                        reached.done();
                        let tracked = self.tunnels.track();
                        tokio::spawn(tunnel::run(
                            client_upgrade,
                            upstream_upgrade,
                            tunnel::Timeouts {
                                idle: s.idle_timeout,
                                send: s.send_timeout,
                            },
                            tracked,
                        ));
                        let res = res.map(|_| ProxyBody::empty());
                        return finish(res, &attempt.upstream, s, peer.is_tls(), now_ms);
                    }
                    let guard = Guard::new(s.body_timeout, None);
                    let res = res.map(|b| ProxyBody::upstream(b, guard, reached));
                    return finish(res, &attempt.upstream, s, peer.is_tls(), now_ms);
                }
                Err(f) => f,
            };
            let failure = match failure {
                Failure::Sent {
                    reused: true,
                    error,
                    head: Some(head),
                } if !fresh_only && replayable => {
                    debug!(
                        target: "proxy",
                        "{}: reused connection closed under the request ({error}); resending on a fresh one",
                        attempt.upstream.authority
                    );
                    fresh_only = true;
                    req = Request::from_parts(*head, ProxyBody::empty());
                    continue;
                }
                other => other,
            };
            if !matches!(failure, Failure::Body(_)) {
                self.note_failure(s, &attempt, now_ms);
            }
            let next_req = match failure {
                Failure::NotSent(back, e) => {
                    attempt.upstream.stats.connect_failures.inc();
                    warn!(target: "proxy", "{}: {e}", attempt.upstream.authority);
                    Some(*back)
                }
                Failure::Body(BodyError::TooLarge) => {
                    return rejection(Reject {
                        status: StatusCode::PAYLOAD_TOO_LARGE,
                        message: "Request body too large",
                        close: true,
                    });
                }
                Failure::Body(BodyError::Malformed) => {
                    return rejection(Reject {
                        status: StatusCode::BAD_REQUEST,
                        message: "Invalid request body",
                        close: true,
                    });
                }
                Failure::Body(BodyError::Stalled) => {
                    return rejection(Reject {
                        status: StatusCode::REQUEST_TIMEOUT,
                        message: "Request body timeout",
                        close: true,
                    });
                }
                Failure::Sent { error, head, .. } => {
                    warn!(target: "proxy", "{} failed after the request was sent: {error}", attempt.upstream.authority);
                    head.filter(|_| replayable)
                        .map(|head| Request::from_parts(*head, ProxyBody::empty()))
                }
                Failure::Timeout => {
                    warn!(
                        target: "proxy",
                        "{} gave no response head within {:?}",
                        attempt.upstream.authority, s.response_timeout
                    );
                    return error_response(StatusCode::GATEWAY_TIMEOUT, "Gateway timeout");
                }
            };
            let Some(next_req) = next_req else {
                return error_response(StatusCode::BAD_GATEWAY, "Bad gateway");
            };
            if retries_left == 0 {
                return error_response(StatusCode::BAD_GATEWAY, "Bad gateway");
            }
            retries_left -= 1;
            let Some(next) = self.other_target(&attempt.upstream, now_ms) else {
                return error_response(StatusCode::BAD_GATEWAY, "Bad gateway");
            };
            self.stats.retries.inc();
            *served_by = Some(next.upstream.clone());
            attempt = next;
            req = next_req;
            fresh_only = false;
        }
    }

    /// Points the request at `upstream`: origin-form target (the
    /// connection already goes to the upstream) and its Host.
    fn address(
        s: &Settings,
        req: &mut Request<ProxyBody>,
        upstream: &Upstream,
        path: &PathAndQuery,
    ) {
        *req.uri_mut() = Uri::from(path.clone());
        if !s.preserve_host || !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, upstream.host_header.clone());
        }
    }

    /// Sends on a pooled connection (unless `fresh_only`), or a new one. A
    /// pooled connection that turns out dead before the request was written
    /// is passed over for the next; that is not the target's fault and costs
    /// no retry.
    async fn exchange(
        &self,
        s: &Settings,
        mut req: Request<ProxyBody>,
        upstream: &Upstream,
        fresh_only: bool,
        copy_out: bool,
    ) -> Result<(Response<ResponseBody>, Reached), Failure> {
        let deadline = tokio::time::Instant::now() + s.response_timeout;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                self.connector
                    .checkout(&upstream.authority, upstream.tls.as_ref())
            };
            let (conn, pooled) = match pooled {
                Some(c) => (c, true),
                // Boxed: connecting is the rare path (connections are
                // pooled), and its future would otherwise make every
                // request's future, and every idle connection, larger.
                None => match tokio::time::timeout_at(
                    deadline,
                    Box::pin(self.connector.connect(
                        &upstream.authority,
                        upstream.tls.as_ref(),
                        &s.upstream_tls,
                        s.connect_timeout,
                        s.dns_refresh,
                    )),
                )
                .await
                {
                    Ok(Ok(c)) => (c, false),
                    Ok(Err(e)) => return Err(Failure::NotSent(Box::new(req), e.0)),
                    Err(_) => return Err(Failure::Timeout),
                },
            };
            // From here the backend may have the request: a client that
            // goes away now has cost it one.
            let mut reached = Reached::new(&upstream.stats);
            let exchanged = tokio::time::timeout_at(deadline, conn.exchange(req, copy_out)).await;
            if !matches!(exchanged, Ok(Ok(_))) {
                reached.done();
            }
            match exchanged {
                Ok(Ok(res)) => return Ok((res, reached)),
                Ok(Err(Failed::NotSent(back, e))) if pooled => {
                    debug!(target: "proxy", "pooled connection to {} was dead: {e}", upstream.authority);
                    req = *back;
                }
                Ok(Err(Failed::NotSent(back, e))) => return Err(Failure::NotSent(back, e)),
                Ok(Err(Failed::Body(b))) => return Err(Failure::Body(b)),
                Ok(Err(Failed::Sent { error, head })) => {
                    return Err(Failure::Sent {
                        reused: pooled,
                        error,
                        head,
                    });
                }
                Err(_) => return Err(Failure::Timeout),
            }
        }
    }

    /// Counts a failure against the member; ejects and reports it when the
    /// streak is long enough and another member can take its traffic.
    fn note_failure(&self, s: &Settings, attempt: &Attempt, now_ms: u64) {
        let table = self.table.load();
        let this = table::position(&table, &attempt.upstream);
        let others_usable = table
            .healthy()
            .iter()
            .any(|&i| Some(i) != this && available(&table, i, now_ms));
        let Some(ejection) = attempt
            .upstream
            .passive
            .failure(now_ms, &s.passive, others_usable)
        else {
            return;
        };
        attempt.upstream.stats.ejections.inc();
        let name = attempt.upstream.name.clone();
        warn!(target: "proxy", "ejecting {name} for {ejection:?} after consecutive failures");
        if let Some(reports) = &self.reports {
            // A full queue means reports are already on their way.
            let _ = reports.try_send(name);
        }
    }

    /// A healthy, available member other than `avoid`, round robin.
    fn other_target(&self, avoid: &Upstream, now_ms: u64) -> Option<Attempt> {
        let table = self.table.load();
        let avoid = table::position(&table, avoid);
        let index = self.rr.pick_other(&table, avoid).map(|first| {
            if available(&table, first, now_ms) {
                return first;
            }
            table
                .healthy()
                .iter()
                .copied()
                .find(|&i| Some(i) != avoid && available(&table, i, now_ms))
                .unwrap_or(first)
        })?;
        let member = table.member(index)?;
        Some(Attempt {
            upstream: member.data.clone(),
        })
    }
}

/// The response going back: hop-by-hop headers out, the sticky headers
/// (and, in cookie modes, the cookie) in.
fn finish(
    res: Response<ProxyBody>,
    upstream: &Upstream,
    s: &Settings,
    tls: bool,
    now_ms: u64,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = switching
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_VALUE.clone());
        parts.headers.insert(header::UPGRADE, upgrade);
    }
    parts
        .headers
        .insert(X_TARGET_SERVER.clone(), upstream.name_header.clone());
    let sticky = &s.sticky;
    let last_use = if sticky.sign_headers {
        cookie::signed_last_use(&sticky.keys, &upstream.name, now_ms)
    } else {
        None
    };
    parts.headers.insert(
        X_TARGET_SERVER_LAST_USE.clone(),
        last_use.unwrap_or_else(|| last_use_header(now_ms)),
    );
    if sticky.enabled
        && sticky.mode.uses_cookie()
        && let Some(set) = cookie::set_cookie(
            &sticky.cookie_name,
            &sticky.keys,
            &upstream.name,
            now_ms,
            tls,
        )
    {
        // Appended: the backend's own cookies stay as they were.
        parts.headers.append(header::SET_COOKIE, set);
    }
    Response::from_parts(parts, body)
}

/// Not locally ejected.
fn available(table: &Routes, index: usize, now_ms: u64) -> bool {
    table
        .member(index)
        .is_some_and(|m| !m.data.passive.is_ejected(now_ms))
}

/// `now_ms` as a header value. Formatting allocates, and at tens of
/// thousands of requests a second many share a millisecond, so each worker
/// thread keeps the last one.
fn last_use_header(now_ms: u64) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((0, HeaderValue::from_static("0"))) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != now_ms {
            *last = (now_ms, HeaderValue::from(now_ms));
        }
        last.1.clone()
    })
}

fn access_log_enabled() -> bool {
    log::log_enabled!(target: "access", log::Level::Info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthSource;
    use tether_core::{HealthState, HealthUpdate, PoolView, ProbeKind, TargetStatus};

    fn routes(version: u64, names: &[&str], previous: &Routes) -> Routes {
        let statuses = names
            .iter()
            .map(|name| {
                let mut s = TargetStatus::unknown(
                    *name,
                    format!("http://127.0.0.1:{}", 1000 + u32::from(name.as_bytes()[0])),
                    ProbeKind::Tcp,
                );
                s.state = HealthState::Healthy;
                s
            })
            .collect();
        let mut view = PoolView::new();
        view.apply(HealthUpdate::snapshot(version, statuses))
            .expect("snapshot");
        table::build(view.version(), view.targets(), previous)
    }

    fn proxy() -> (Proxy, Arc<TableCell>, mpsc::Receiver<String>) {
        let cell = TableCell::new();
        let (tx, rx) = mpsc::channel(8);
        let config = ProxyConfig::with_defaults(HealthSource::Checkers(Vec::new()));
        let stats = Arc::new(ProxyStats::default());
        (Proxy::new(&config, cell.clone(), stats, Some(tx)), cell, rx)
    }

    fn attempt_on(cell: &TableCell, name: &str) -> Attempt {
        let table = cell.load();
        let i = table.lookup(name).expect("member");
        Attempt {
            upstream: table.members()[i].data.clone(),
        }
    }

    /// The member that failed is the one charged, even when the table was
    /// swapped under the request and its old position now holds another.
    #[test]
    fn failures_count_against_the_member_not_its_old_position() {
        let (proxy, cell, mut reports) = proxy();
        cell.store(routes(1, &["a", "b", "c"], &Routes::default()));
        let b = attempt_on(&cell, "b");
        // b is removed; position 1 is now c.
        cell.store(routes(2, &["a", "c", "d"], &cell.load()));
        let settings = proxy.settings();
        for _ in 0..settings.passive.consecutive_failures {
            proxy.note_failure(&settings, &b, 1);
        }
        assert_eq!(reports.try_recv().ok().as_deref(), Some("b"));
        let table = cell.load();
        for m in table.members() {
            assert!(!m.data.passive.is_ejected(2), "{} was ejected", m.name);
        }
    }

    #[test]
    fn the_sticky_cookie_is_appended_beside_the_backends_own() {
        let cell = TableCell::new();
        cell.store(routes(1, &["a"], &Routes::default()));
        let upstream = attempt_on(&cell, "a").upstream;
        let mut settings =
            ProxyConfig::with_defaults(HealthSource::Checkers(Vec::new())).settings();
        settings.sticky.mode = cookie::Mode::Both;
        settings.sticky.keys = cookie::Keys::from_bytes([&[7u8; 32][..]]);
        let mut res = Response::new(ProxyBody::empty());
        res.headers_mut()
            .append(header::SET_COOKIE, HeaderValue::from_static("session=1"));
        let res = finish(res, &upstream, &settings, true, 1_700_000_000_000);
        let cookies: Vec<_> = res.headers().get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies.len(), 2);
        assert_eq!(cookies[0], "session=1");
        let ours = cookies[1].to_str().expect("ascii");
        assert!(ours.starts_with("tether_sticky=a.1700000000000."), "{ours}");
        assert!(ours.ends_with("; Secure"), "{ours}");
        assert_eq!(res.headers()[&X_TARGET_SERVER], "a");
        // Header mode: no cookie at all.
        settings.sticky.mode = cookie::Mode::Header;
        let res = finish(
            Response::new(ProxyBody::empty()),
            &upstream,
            &settings,
            false,
            1,
        );
        assert!(res.headers().get(header::SET_COOKIE).is_none());
    }

    #[test]
    fn a_retry_avoids_the_failed_member_wherever_it_moved() {
        let (proxy, cell, _reports) = proxy();
        cell.store(routes(1, &["a", "b", "c"], &Routes::default()));
        let b = attempt_on(&cell, "b");
        cell.store(routes(2, &["c", "a", "b"], &cell.load()));
        for _ in 0..20 {
            let next = proxy.other_target(&b.upstream, 1).expect("another member");
            assert_ne!(next.upstream.name, "b");
        }
    }
}
