//! Upstream connections: connect (over TLS for `https://` members) and
//! reuse. The exchange on them is the client role of the HTTP/1 codec
//! (`crate::http1::client`).
//!
//! Connections are opened in the task of the request, so that a connect
//! failure leaves the request untouched and it can go to another target,
//! body and all, and so that no connection task or channel sits between a
//! request and its backend. Idle connections are kept in a pool the
//! [`Connector`] owns (two proxies in one process have two), per worker
//! thread (`pool`): checkout and checkin are synchronous and never cross an
//! `.await`. A connection checked out on one thread and returned on
//! another simply moves pools.
//!
//! A connection is pooled under everything that was settled when it was
//! opened: the address, and for TLS the name the certificate was verified
//! for. Plain and TLS connections to one `host:port` never mix, nor do two
//! DNS entries' members that resolve to one address.
//!
//! A member given by host name is looked up through the connector's
//! [`DnsCache`] when a new connection is opened, at most once per
//! `dns_refresh`; taking a pooled connection never looks anything up.

mod error;
mod pool;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::uri::Authority;
use rustls_pki_types::ServerName;
use tether_daemon::tls::TargetTrust;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use tether_checker::dns::{Resolve, SystemResolver};

use crate::conn::Stream;
use crate::dns::DnsCache;
#[cfg(test)]
pub(crate) use error::tests::each_kind as error_kinds;
pub use error::{Error, ErrorKind, Tls as TlsError};
pub(crate) use pool::checkin;

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
    /// The same trust offering ALPN `h2` alone (`protocol = "h2"`
    /// targets); built on the first such connect.
    built_h2: OnceLock<Connectors>,
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
                built_h2: OnceLock::new(),
            }),
        }
    }

    /// The connector for a peer whose certificate is for `authority`,
    /// offering ALPN `h2` alone when `h2` (else `http/1.1`).
    fn connector(&self, authority: &str, h2: bool) -> TlsConnector {
        let inner = &*self.inner;
        let cell = if h2 { &inner.built_h2 } else { &inner.built };
        let built = cell.get_or_init(|| {
            let build = |a: &str| {
                let mut config = inner.trust.client_config(a);
                if h2 {
                    config.alpn_protocols = vec![b"h2".to_vec()];
                }
                TlsConnector::from(Arc::new(config))
            };
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
pub(crate) struct PoolKey {
    authority: Authority,
    tls: Option<Arc<TlsPeer>>,
}

/// An open connection to one upstream, plain or TLS, and what it was
/// opened for. It is its socket and nothing else: an exchange brings the
/// buffer it needs (see [`Connection::exchange`]).
#[derive(Debug)]
pub struct Connection {
    pub(crate) io: Stream,
    /// Its key and the pool it goes back to.
    home: Arc<pool::Home>,
    /// Taken from the pool (it served an exchange before), so its errors
    /// say so.
    pub(crate) reused: bool,
}

/// Opens and pools upstream connections.
#[derive(Clone, Debug)]
pub struct Connector {
    dns: DnsCache,
    /// Its idle connections (clones share them).
    pool: pool::Pool,
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
            dns: DnsCache::new(resolver),
            pool: pool::Pool::new(idle_timeout),
        }
    }

    /// The most recently used idle connection to `authority` (over TLS to
    /// `tls`) that is still open, if any. Stale ones met on the way are
    /// closed.
    pub fn checkout(
        &self,
        authority: &Authority,
        tls: Option<&Arc<TlsPeer>>,
    ) -> Option<Connection> {
        let key = PoolKey {
            authority: authority.clone(),
            tls: tls.cloned(),
        };
        let mut conn = self.pool.checkout(&key)?;
        conn.reused = true;
        Some(conn)
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
    ) -> Result<Connection, Error> {
        let io = self
            .open(authority, tls, trust, timeout, dns_refresh, false)
            .await?;
        Ok(Connection {
            io,
            home: self.pool.home(PoolKey {
                authority: authority.clone(),
                tls: tls.cloned(),
            }),
            reused: false,
        })
    }

    /// The socket of [`connect`](Connector::connect), unpooled: HTTP/2
    /// targets (`crate::http2`) keep their own connections. `h2`: offer
    /// ALPN `h2` alone over TLS, and fail when the peer does not take it.
    pub(crate) async fn open(
        &self,
        authority: &Authority,
        tls: Option<&Arc<TlsPeer>>,
        trust: &Trust,
        timeout: Duration,
        dns_refresh: Duration,
        h2: bool,
    ) -> Result<Stream, Error> {
        let opened = async {
            let addrs = self
                .dns
                .addrs(authority, dns_refresh)
                .await
                .map_err(ErrorKind::Dns)?;
            // A slice of addresses: tokio tries them in order and never
            // calls the resolver.
            let stream = TcpStream::connect(&*addrs)
                .await
                .map_err(ErrorKind::Connect)?;
            let _ = stream.set_nodelay(true);
            let Some(peer) = tls else {
                return Ok(Stream::Plain(stream));
            };
            // rustls says why a certificate was refused ("invalid peer
            // certificate: UnknownIssuer").
            let stream = trust
                .connector(&peer.authority, h2)
                .connect(peer.name.clone(), stream)
                .await
                .map_err(ErrorKind::tls)?;
            if h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(ErrorKind::NoH2);
            }
            Ok::<_, ErrorKind>(Stream::Tls(Box::new(stream.into())))
        };
        tokio::time::timeout(timeout, opened)
            .await
            .map_err(|_| Error::connect(ErrorKind::ConnectTimeout(timeout)))?
            .map_err(Error::connect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(5);

    /// Two proxies in one process each have their own idle connections:
    /// one never takes the other's, and a connector that goes closes its.
    #[tokio::test]
    async fn connectors_do_not_share_their_pools() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority: Authority = listener
            .local_addr()
            .expect("addr")
            .to_string()
            .parse()
            .expect("authority");
        let (a, b) = (Connector::new(WAIT), Connector::new(WAIT));
        let trust = Trust::default();
        let (conn, accepted) = tokio::join!(
            a.connect(&authority, None, &trust, WAIT, WAIT),
            listener.accept()
        );
        let (mut backend, _) = accepted.expect("accept");
        checkin(conn.expect("connect"));
        assert!(
            b.checkout(&authority, None).is_none(),
            "b took a's connection"
        );
        let conn = a
            .checkout(&authority, None)
            .expect("a keeps its connection");
        checkin(conn);
        drop(a);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, backend.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the dropped connector's idle connection is still open: {read:?}"
        );
    }
}
