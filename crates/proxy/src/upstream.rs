//! Upstream HTTP/1.1 connections: connect, reuse, return.
//!
//! The proxy opens its own connections instead of handing requests to a
//! client library, so that a connect failure leaves the request untouched
//! and it can go to another target, body and all. Idle connections are
//! pooled per worker thread (a `thread_local`): checkout and checkin are
//! synchronous and never cross an `.await`, so the pool needs no lock and
//! sees no contention. A connection checked out on one thread and returned
//! on another simply moves pools.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use log::debug;
use tokio::net::TcpStream;

use crate::body::ProxyBody;

/// A ready-to-use connection to one upstream.
pub type Sender = http1::SendRequest<ProxyBody>;

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

type PoolMap = HashMap<Authority, VecDeque<Idle>, BuildHasherDefault<Fnv>>;

thread_local! {
    static IDLE: RefCell<PoolMap> = RefCell::new(PoolMap::default());
}

/// Why no connection could be had. Nothing was sent.
#[derive(Debug)]
pub struct ConnectError(pub String);

/// Opens and pools upstream connections.
#[derive(Clone, Copy, Debug)]
pub struct Connector {
    idle_timeout: Duration,
}

impl Connector {
    /// `idle_timeout`: pooled connections idle longer are not reused. Keep it
    /// below the backends' keep-alive so we rarely send on a connection the
    /// backend is closing.
    pub fn new(idle_timeout: Duration) -> Connector {
        Connector { idle_timeout }
    }

    /// The most recently used idle connection to `authority` that is still
    /// open and ready, if any. Stale ones met on the way are closed.
    pub fn checkout(&self, authority: &Authority) -> Option<Sender> {
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let queue = idle.get_mut(authority)?;
            while let Some(entry) = queue.pop_back() {
                if entry.since.elapsed() < self.idle_timeout
                    && entry.sender.is_ready()
                    && !entry.sender.is_closed()
                {
                    return Some(entry.sender);
                }
            }
            None
        })
    }

    /// Opens a new connection, giving the TCP connect `timeout` (a setting
    /// a reload can change, so it is not the connector's).
    pub async fn connect(
        &self,
        authority: &Authority,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(authority.as_str()))
            .await
            .map_err(|_| ConnectError(format!("connect timed out after {timeout:?}")))?
            .map_err(|e| ConnectError(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError(format!("handshake: {e}")))?;
        let authority = authority.clone();
        tokio::spawn(async move {
            // Upgrades (WebSocket) take the connection over when asked.
            if let Err(e) = conn.with_upgrades().await {
                debug!(target: "proxy", "upstream connection to {authority}: {e}");
            }
        });
        Ok(sender)
    }
}

/// Puts a connection whose exchange is complete back into this thread's
/// pool. One that is not ready yet (its connection task has not caught up
/// with the end of the response) is returned once it is.
pub fn checkin(authority: Authority, mut sender: Sender) {
    if sender.is_closed() {
        return;
    }
    if sender.is_ready() {
        store(authority, sender);
        return;
    }
    tokio::spawn(async move {
        if sender.ready().await.is_ok() {
            store(authority, sender);
        }
    });
}

fn store(authority: Authority, sender: Sender) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let queue = idle.entry(authority).or_default();
        if queue.len() >= MAX_IDLE_PER_UPSTREAM {
            queue.pop_front();
        }
        queue.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    });
}
