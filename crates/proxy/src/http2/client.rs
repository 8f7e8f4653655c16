//! The HTTP/2 client role toward `h2` and `h2c` targets: a few
//! multiplexed connections per target, shared by every request.
//!
//! Per target (its address, and over TLS the name it was verified for) a
//! request takes the connection with the fewest streams open; a new one is
//! opened only when every connection has [`STREAMS_PER_CONNECTION`] open
//! (the least RFC 9113 recommends a server allows), up to
//! [`MAX_CONNECTIONS`]; past that, requests share the least busy and h2
//! queues them until the target's `max_concurrent_streams` lets them in.
//! One request opens a connection at a time, per target: a burst of first
//! requests waits for it rather than opening one each.
//!
//! Each connection runs in its own task, sends a PING every
//! [`PING_INTERVAL`] while it has streams and is closed when one is not
//! answered within [`PING_TIMEOUT`] (a dead target or path is found
//! without waiting for TCP), and is closed after the pool's idle timeout
//! without streams, as the HTTP/1 pool drops its idle connections. A
//! connection the target ended (GOAWAY, a close) is passed over.
//!
//! Failures are sorted as the HTTP/1 client sorts them (`Failed`), so the
//! retry policy (`crate::forward::retry`) decides alike: a stream the
//! target did not process (`REFUSED_STREAM`, or above a GOAWAY's last
//! stream id) is a request not sent, and goes elsewhere whole (see
//! [`super::body`]).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use log::debug;
use tokio::time::Instant;

use super::Protocol;
use super::body::{Outgoing, ResponseBody};
use crate::body::ProxyBody;
use crate::cancel::Reached;
use crate::config::Settings;
use crate::http1::client::Failed;
use crate::table::Upstream;
use crate::upstream::{Connector, Error, ErrorKind, TlsPeer};

/// Streams on one connection before another is opened.
pub const STREAMS_PER_CONNECTION: usize = 100;
/// Connections per target at most.
pub const MAX_CONNECTIONS: usize = 4;
/// A connection with streams open sends a PING this often...
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// ...and is closed when the answer takes longer than this.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

static TE_TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Connections to one target.
#[derive(Default)]
struct Target {
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held by the one request opening a connection.
    opening: tokio::sync::Mutex<()>,
    /// When the last open failed, and why, for the requests that waited
    /// for it: they fail at once rather than each waiting its own connect
    /// timeout.
    failed: Mutex<Option<(Instant, String)>>,
}

/// One multiplexed connection.
struct Conn {
    send: SendRequest<Outgoing>,
    streams: AtomicUsize,
    /// Milliseconds after the client's start when the last stream ended.
    idle_since: AtomicU64,
    closed: AtomicBool,
    /// It has served a stream (its errors say "reused").
    used: AtomicBool,
}

/// A stream's place on its connection: counted while the answer lives.
#[derive(Debug)]
pub struct Slot {
    conn: Arc<Conn>,
    start: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("streams", &self.streams.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.conn.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn
                .idle_since
                .store(millis(self.start), Ordering::Relaxed);
        }
    }
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    authority: Authority,
    tls: Option<Arc<TlsPeer>>,
}

/// The HTTP/2 connections of one proxy.
pub struct Client {
    targets: Mutex<HashMap<Key, Arc<Target>>>,
    idle_timeout: Duration,
    start: Instant,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("http2::Client").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a request does for a connection.
enum Pick {
    Use(Arc<Conn>),
    Open,
}

impl Client {
    /// `idle_timeout`: a connection without streams this long is closed.
    pub fn new(idle_timeout: Duration) -> Client {
        Client {
            targets: Mutex::default(),
            idle_timeout,
            start: Instant::now(),
        }
    }

    fn target(&self, key: &Key) -> Arc<Target> {
        let mut targets = lock(&self.targets);
        if let Some(t) = targets.get(key) {
            return t.clone();
        }
        targets.retain(|_, t| Arc::strong_count(t) > 1 || !lock(&t.conns).is_empty());
        targets.entry(key.clone()).or_default().clone()
    }

    fn pick(&self, target: &Target) -> Pick {
        let mut conns = lock(&target.conns);
        let now = millis(self.start);
        let idle = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        conns.retain(|c| {
            let idle_for = now.saturating_sub(c.idle_since.load(Ordering::Relaxed));
            let stale = c.streams.load(Ordering::Acquire) == 0 && idle_for >= idle;
            !(c.closed.load(Ordering::Relaxed) || c.send.is_closed() || stale)
        });
        let best = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed));
        match best {
            Some(c)
                if c.streams.load(Ordering::Relaxed) < STREAMS_PER_CONNECTION
                    || conns.len() >= MAX_CONNECTIONS =>
            {
                Pick::Use(c.clone())
            }
            _ => Pick::Open,
        }
    }

    /// Sends `req` to `upstream` and waits up to `wait` for the response
    /// head. `fresh_only`: on a new connection (a reused one died under
    /// the request). `grpc`: the request is a gRPC call. A connection
    /// found closing before it took the request is passed over for another
    /// (as a dead pooled HTTP/1 connection is): not the target's fault.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        &self,
        connector: &Connector,
        s: &Settings,
        mut req: Request<ProxyBody>,
        upstream: &Upstream,
        protocol: Protocol,
        fresh_only: bool,
        grpc: bool,
        wait: Duration,
    ) -> Result<(Response<ResponseBody>, Reached), Failed> {
        let deadline = Instant::now() + wait;
        let key = Key {
            authority: upstream.authority.clone(),
            tls: upstream.tls.clone(),
        };
        let target = self.target(&key);

        // Absolute form: h2 takes :scheme and :authority from the target.
        let host = req.headers_mut().remove(header::HOST);
        let authority = host
            .as_ref()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| upstream.authority.clone());
        let scheme = if upstream.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build();
        let Ok(uri) = uri else {
            if let Some(host) = host {
                req.headers_mut().insert(header::HOST, host);
            }
            let kind = ErrorKind::NotSent(io::Error::other("no HTTP/2 request uri"));
            return Err(Failed::NotSent(Box::new(req), Error::new(kind, false)));
        };
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        // gRPC needs it (hop-by-hop rules took the client's).
        if grpc {
            req.headers_mut().insert(header::TE, TE_TRAILERS.clone());
        }
        // Kept to send the request elsewhere should the target not
        // process it (hyper gives back only a request it never sent).
        let head = Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            host,
        };
        let (parts, body) = req.into_parts();
        let outgoing = Outgoing::new(body);
        let mut req = Request::from_parts(parts, outgoing.clone());
        // Nothing was sent: the request goes back whole.
        let not_sent = |e: Error| match outgoing.take_back() {
            Some(body) => Failed::NotSent(Box::new(head.clone().request(body)), e),
            None => Failed::Sent {
                error: e,
                head: None,
            },
        };

        let mut fresh = fresh_only;
        let mut passed_over = 0;
        loop {
            let conn = match self
                .connection(connector, s, &key, &target, protocol, fresh, deadline)
                .await
            {
                Ok(c) => c,
                Err(Some(e)) => return Err(not_sent(e)),
                Err(None) => {
                    // The wait ran out while connecting.
                    let e = Error::new(ErrorKind::Timeout(wait), false);
                    return Err(Failed::Timeout(e));
                }
            };
            let reused = conn.used.swap(true, Ordering::Relaxed);
            conn.streams.fetch_add(1, Ordering::AcqRel);
            let slot = Slot {
                conn: conn.clone(),
                start: self.start,
            };
            let mut reached = Reached::new(&upstream.stats);
            let mut send = conn.send.clone();
            let sent = tokio::time::timeout_at(deadline, send.try_send_request(req)).await;
            let mut e = match sent {
                Ok(Ok(res)) => {
                    outgoing.answered();
                    let res = res.map(|b| ResponseBody::new(b, grpc, slot));
                    return Ok((res, reached));
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    // Dropping the send reset the stream (CANCEL).
                    reached.done();
                    let e = Error::new(ErrorKind::Timeout(wait), reused);
                    return Err(Failed::Timeout(e));
                }
            };
            reached.done();
            if let Some(back) = e.take_message() {
                // Never handed to the connection: it was closing.
                conn.closed.store(true, Ordering::Relaxed);
                passed_over += 1;
                if passed_over <= MAX_CONNECTIONS {
                    req = back;
                    fresh = false;
                    continue;
                }
                let kind = ErrorKind::NotSent(io::Error::other(e.into_error()));
                drop(back);
                return Err(not_sent(Error::new(kind, reused)));
            }
            let e = e.into_error();
            if let Some(body) = outgoing.failed() {
                return Err(Failed::Body(body));
            }
            if let Some(reason) = unprocessed(&e) {
                debug!(target: "proxy", "{}: HTTP/2 stream not processed: {e}", upstream.authority);
                return Err(not_sent(Error::new(ErrorKind::Refused(reason), reused)));
            }
            return Err(Failed::Sent {
                error: Error::new(ErrorKind::Http2(e), reused),
                head: None,
            });
        }
    }

    /// A connection for the next stream to `key`: the least busy, or a new
    /// one (see the module doc). `Err(None)`: `deadline` passed.
    #[allow(clippy::too_many_arguments)]
    async fn connection(
        &self,
        connector: &Connector,
        s: &Settings,
        key: &Key,
        target: &Target,
        protocol: Protocol,
        fresh: bool,
        deadline: Instant,
    ) -> Result<Arc<Conn>, Option<Error>> {
        if !fresh && let Pick::Use(c) = self.pick(target) {
            return Ok(c);
        }
        let asked = Instant::now();
        let _opening = tokio::time::timeout_at(deadline, target.opening.lock())
            .await
            .map_err(|_| None)?;
        if !fresh && let Pick::Use(c) = self.pick(target) {
            return Ok(c);
        }
        let recent = lock(&target.failed)
            .as_ref()
            .filter(|(at, _)| *at >= asked)
            .map(|(_, why)| why.clone());
        if let Some(why) = recent {
            // The open this request waited for failed: so does this one,
            // at once, rather than each waiter its own connect timeout.
            let e = ErrorKind::Connect(io::Error::other(why));
            return Err(Some(Error::new(e, false)));
        }
        let opened = tokio::time::timeout_at(deadline, self.open(connector, s, key, protocol))
            .await
            .map_err(|_| None)?;
        match opened {
            Ok(c) => {
                lock(&target.conns).push(c.clone());
                Ok(c)
            }
            Err(e) => {
                *lock(&target.failed) = Some((Instant::now(), e.to_string()));
                Err(Some(e))
            }
        }
    }

    /// A new connection to `key`, its task running.
    async fn open(
        &self,
        connector: &Connector,
        s: &Settings,
        key: &Key,
        protocol: Protocol,
    ) -> Result<Arc<Conn>, Error> {
        let io = connector
            .open(
                &key.authority,
                key.tls.as_ref(),
                &s.upstream_tls,
                s.connect_timeout,
                s.dns_refresh,
                protocol == Protocol::H2,
            )
            .await?;
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(false)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::new(ErrorKind::NotSent(io::Error::other(e)), false))?;
        let conn_state = Arc::new(Conn {
            send,
            streams: AtomicUsize::new(0),
            idle_since: AtomicU64::new(millis(self.start)),
            closed: AtomicBool::new(false),
            used: AtomicBool::new(false),
        });
        let watched = Arc::downgrade(&conn_state);
        let idle = self.idle_timeout;
        let authority = key.authority.clone();
        let start = self.start;
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            loop {
                tokio::select! {
                    ended = &mut conn => {
                        if let Err(e) = ended {
                            debug!(target: "proxy", "HTTP/2 connection to {authority} ended: {e}");
                        }
                        break;
                    }
                    () = tokio::time::sleep(idle) => {
                        // Closed when idle for the pool's idle timeout, or
                        // when no request can reach it any more.
                        let Some(c) = watched.upgrade() else { break };
                        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
                        let idle_for = millis(start).saturating_sub(c.idle_since.load(Ordering::Relaxed));
                        if c.streams.load(Ordering::Acquire) == 0 && idle_for >= idle_ms {
                            c.closed.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            if let Some(c) = watched.upgrade() {
                c.closed.store(true, Ordering::Relaxed);
            }
        });
        Ok(conn_state)
    }
}

/// A request's head as it was sent, to send it again elsewhere.
#[derive(Clone)]
struct Head {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
    /// The Host it had before the attempt made it `:authority`.
    host: Option<HeaderValue>,
}

impl Head {
    /// The request as the next attempt expects it: HTTP/1.1 with its Host
    /// (`forward` points it at the next target).
    fn request(self, body: ProxyBody) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req.headers_mut().remove(header::TE);
        if let Some(host) = self.host {
            req.headers_mut().insert(header::HOST, host);
        }
        req
    }
}

/// Whether the target certainly did not process the stream, and why: it
/// refused it (`REFUSED_STREAM`, RFC 9113 section 8.7), or its graceful
/// GOAWAY (`NO_ERROR`) had a last stream id below it (h2 ends exactly
/// those streams with the remote GOAWAY). A GOAWAY with an error code is
/// not taken as proof: h2 ends every stream still open with it when the
/// connection closes, processed or not.
fn unprocessed(e: &hyper::Error) -> Option<h2::Reason> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            let reason = h2.reason()?;
            let refused = h2.is_reset() && reason == h2::Reason::REFUSED_STREAM;
            let above_goaway = h2.is_go_away() && h2.is_remote() && reason == h2::Reason::NO_ERROR;
            return (refused || above_goaway).then_some(reason);
        }
        cur = err.source();
    }
    None
}
