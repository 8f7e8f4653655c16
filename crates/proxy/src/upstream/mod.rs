//! Upstream HTTP/1.1 connections: connect (over TLS for `https://`
//! members), reuse, return.
//!
//! The proxy opens its own connections instead of handing requests to a
//! client library, so that a connect failure leaves the request untouched
//! and it can go to another target, body and all. Idle connections are
//! pooled per worker thread (a `thread_local`): checkout and checkin are
//! synchronous and never cross an `.await`, so the pool needs no lock and
//! sees no contention. A connection checked out on one thread and returned
//! on another simply moves pools.
//!
//! A connection is pooled under everything that was settled when it was
//! opened: the address, and for TLS the name the certificate was verified
//! for. Plain and TLS connections to one `host:port` never mix, nor do two
//! DNS entries' members that resolve to one address.
//!
//! A member given by host name is looked up through the connector's
//! [`DnsCache`] when a new connection is opened, at most once per
//! `dns_refresh`; taking a pooled connection never looks anything up.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use hyper_util::rt::TokioIo;
use log::debug;
use rustls_pki_types::ServerName;
use tether_daemon::tls::TargetTrust;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use tether_checker::dns::{Resolve, SystemResolver};

use crate::body::ProxyBody;
use crate::dns::DnsCache;

/// Who a TLS upstream must prove to be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsPeer {
    /// The `host:port` its certificate is for: the member url's, or a DNS
    /// member's entry host (not its address). Picks the target's own
    /// `tls_ca`.
    pub authority: String,
    /// Sent as SNI and verified: `authority`'s host.
    pub name: ServerName<'static>,
}

impl TlsPeer {
    /// The peer behind `authority` (`host:port`, an IPv6 literal in
    /// brackets); `None` when its host is no server name.
    pub fn new(authority: &str) -> Option<TlsPeer> {
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_owned()).ok()?;
        Some(TlsPeer {
            authority: authority.to_owned(),
            name,
        })
    }
}

/// Whom TLS upstreams are verified against: the system roots,
/// `[upstream_tls] ca` and each target's own `tls_ca`. The client configs
/// are built on the first TLS connect, so a proxy without `https://`
/// members never reads the system store. Equal when the CA files read
/// were equal, so a reload that changed their contents is applied.
#[derive(Clone, Default)]
pub struct Trust {
    inner: Arc<TrustInner>,
}

#[derive(Default)]
struct TrustInner {
    trust: TargetTrust,
    built: OnceLock<Connectors>,
}

struct Connectors {
    shared: TlsConnector,
    own: HashMap<String, TlsConnector>,
}

impl Trust {
    /// One line for `--check-config`: which CA files are set.
    pub fn summary(&self) -> String {
        self.inner.trust.summary()
    }

    pub fn new(trust: TargetTrust) -> Trust {
        Trust {
            inner: Arc::new(TrustInner {
                trust,
                built: OnceLock::new(),
            }),
        }
    }

    /// The connector for a peer whose certificate is for `authority`.
    fn connector(&self, authority: &str) -> TlsConnector {
        let inner = &*self.inner;
        let built = inner.built.get_or_init(|| {
            let build = |a: &str| TlsConnector::from(Arc::new(inner.trust.client_config(a)));
            Connectors {
                // No target's own CA matches "": the shared trust only.
                shared: build(""),
                own: inner
                    .trust
                    .targets
                    .keys()
                    .map(|a| (a.clone(), build(a)))
                    .collect(),
            }
        });
        built.own.get(authority).unwrap_or(&built.shared).clone()
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.trust.fmt(f)
    }
}

impl PartialEq for Trust {
    fn eq(&self, other: &Trust) -> bool {
        self.inner.trust == other.inner.trust
    }
}

impl Eq for Trust {}

/// What a pooled connection is shared by: its address, and over TLS the
/// peer it verified. (`Arc`: a checkout hashes and compares, never clones
/// the name.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    authority: Authority,
    tls: Option<Arc<TlsPeer>>,
}

/// A ready-to-use connection to one upstream, plain or TLS (the I/O lives
/// in the connection's task), and what it was opened for.
#[derive(Debug)]
pub struct Sender {
    inner: http1::SendRequest<ProxyBody>,
    key: PoolKey,
    /// Shared with the connection's task, which closes the connection once
    /// it has sat in a pool longer than the idle timeout.
    idle: Arc<IdleMark>,
}

/// When a connection went into a pool: milliseconds since the process's
/// first mark, plus one; 0 while it is in use.
#[derive(Debug, Default)]
struct IdleMark(AtomicU64);

impl IdleMark {
    fn now() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn pooled(&self) {
        self.0.store(Self::now(), Ordering::Relaxed);
    }

    fn in_use(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// How long it has been idle in a pool; zero while in use.
    fn idle_for(&self) -> Duration {
        match self.0.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(Self::now().saturating_sub(since)),
        }
    }
}

impl Sender {
    /// Sends `req`; see hyper's `try_send_request`: a request that was not
    /// written comes back in the error.
    pub fn try_send_request(
        &mut self,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, TrySendError<Request<ProxyBody>>>> + use<>
    {
        self.inner.try_send_request(req)
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// Idle connections kept per upstream per worker thread; more are closed.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// FNV-1a: the pool is keyed by a handful of upstream authorities the
/// proxy itself chose, so a DoS-resistant hash buys nothing here and
/// SipHash showed in profiles.
#[derive(Clone, Copy, Debug, Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type PoolMap = HashMap<PoolKey, VecDeque<Idle>, BuildHasherDefault<Fnv>>;

thread_local! {
    static IDLE: RefCell<PoolMap> = RefCell::new(PoolMap::default());
}

/// Why no connection could be had. Nothing was sent.
#[derive(Debug)]
pub struct ConnectError(pub String);

/// Opens and pools upstream connections.
#[derive(Clone, Debug)]
pub struct Connector {
    idle_timeout: Duration,
    dns: DnsCache,
}

impl Connector {
    /// `idle_timeout`: pooled connections idle longer are not reused. Keep it
    /// below the backends' keep-alive so we rarely send on a connection the
    /// backend is closing. Host names go to the system resolver.
    pub fn new(idle_timeout: Duration) -> Connector {
        Connector::with_resolver(idle_timeout, Arc::new(SystemResolver))
    }

    /// Like [`new`](Connector::new), looking host names up with `resolver`
    /// (tests decide the answers and count the lookups).
    pub fn with_resolver(idle_timeout: Duration, resolver: Arc<dyn Resolve>) -> Connector {
        Connector {
            idle_timeout,
            dns: DnsCache::new(resolver),
        }
    }

    /// The most recently used idle connection to `authority` (over TLS to
    /// `tls`) that is still open and ready, if any. Stale ones met on the
    /// way are closed.
    pub fn checkout(&self, authority: &Authority, tls: Option<&Arc<TlsPeer>>) -> Option<Sender> {
        let key = PoolKey {
            authority: authority.clone(),
            tls: tls.cloned(),
        };
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let queue = idle.get_mut(&key)?;
            while let Some(entry) = queue.pop_back() {
                if entry.since.elapsed() < self.idle_timeout
                    && entry.sender.is_ready()
                    && !entry.sender.is_closed()
                {
                    entry.sender.idle.in_use();
                    return Some(entry.sender);
                }
            }
            None
        })
    }

    /// Opens a new connection: the authority's addresses (a host name's
    /// from the cache, looked up again when older than `dns_refresh`), TCP
    /// to each in turn until one accepts, then for `tls` a TLS handshake
    /// verified against `trust`, all within the connect `timeout`
    /// (`timeout` and `dns_refresh` are settings a reload can change, so
    /// they are not the connector's). A refused certificate is a connect
    /// failure: nothing was sent.
    pub async fn connect(
        &self,
        authority: &Authority,
        tls: Option<&Arc<TlsPeer>>,
        trust: &Trust,
        timeout: Duration,
        dns_refresh: Duration,
    ) -> Result<Sender, ConnectError> {
        let idle = Arc::new(IdleMark::default());
        let opened = async {
            let addrs = self
                .dns
                .addrs(authority, dns_refresh)
                .await
                .map_err(|e| ConnectError(format!("resolve: {e}")))?;
            // A slice of addresses: tokio tries them in order and never
            // calls the resolver.
            let stream = TcpStream::connect(&*addrs)
                .await
                .map_err(|e| ConnectError(format!("connect: {e}")))?;
            let _ = stream.set_nodelay(true);
            let Some(peer) = tls else {
                return handshake(authority, stream, idle.clone(), self.idle_timeout).await;
            };
            // rustls says why a certificate was refused ("invalid peer
            // certificate: UnknownIssuer").
            let stream = trust
                .connector(&peer.authority)
                .connect(peer.name.clone(), stream)
                .await
                .map_err(|e| ConnectError(format!("TLS: {e}")))?;
            handshake(authority, stream, idle.clone(), self.idle_timeout).await
        };
        let inner = tokio::time::timeout(timeout, opened)
            .await
            .map_err(|_| ConnectError(format!("connect timed out after {timeout:?}")))??;
        Ok(Sender {
            inner,
            key: PoolKey {
                authority: authority.clone(),
                tls: tls.cloned(),
            },
            idle,
        })
    }
}

/// HTTP/1.1 over `io`, its connection driven by a task of its own. The
/// task also closes the connection once it has been idle in a pool for
/// `idle_timeout`: pools are only pruned when a request takes from them,
/// so without this a burst would leave its connections (and descriptors,
/// at the backend too) open for as long as traffic stays away.
async fn handshake<T>(
    authority: &Authority,
    io: T,
    idle: Arc<IdleMark>,
    idle_timeout: Duration,
) -> Result<http1::SendRequest<ProxyBody>, ConnectError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError(format!("handshake: {e}")))?;
    let authority = authority.clone();
    tokio::spawn(async move {
        // Upgrades (WebSocket) take the connection over when asked, TLS
        // or not.
        let conn = conn.with_upgrades();
        tokio::pin!(conn);
        let mut sweep = tokio::time::interval(idle_timeout);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                done = &mut conn => {
                    if let Err(e) = done {
                        debug!(target: "proxy", "upstream connection to {authority}: {e}");
                    }
                    return;
                }
                _ = sweep.tick() => {
                    if idle.idle_for() >= idle_timeout {
                        debug!(target: "proxy", "closing idle upstream connection to {authority}");
                        return;
                    }
                }
            }
        }
    });
    Ok(sender)
}

/// Puts a connection whose exchange is complete back into this thread's
/// pool, under the key it was opened with (`authority`, the caller's
/// name for the upstream, is part of it). One that is not ready yet (its
/// connection task has not caught up with the end of the response) is
/// returned once it is.
pub fn checkin(authority: Authority, mut sender: Sender) {
    debug_assert_eq!(authority, sender.key.authority);
    if sender.is_closed() {
        return;
    }
    if sender.is_ready() {
        store(sender);
        return;
    }
    tokio::spawn(async move {
        if sender.inner.ready().await.is_ok() {
            store(sender);
        }
    });
}

fn store(sender: Sender) {
    sender.idle.pooled();
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let queue = idle.entry(sender.key.clone()).or_default();
        if queue.len() >= MAX_IDLE_PER_UPSTREAM {
            queue.pop_front();
        }
        queue.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    });
}
