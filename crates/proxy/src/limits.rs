//! Per-client limits (`[limits]`): concurrent connections and a request
//! rate per client, where the client is the peer's address (an IPv4
//! address, or an IPv6 address's /64: one host or one subscriber's
//! network usually holds a whole /64, and keying by /128 would let it open
//! 2^64 buckets). Over a limit the proxy answers `429` with `Retry-After`
//! itself; nothing reaches a backend.
//!
//! The state is a fixed table allocated once, on the first use with a
//! limit on: [`SETS`] sets of [`WAYS`] entries, a client's set chosen by a
//! keyed hash (SipHash with a per-process random key, so a client cannot
//! pick whose set it lands in). Memory is [`CAPACITY`] entries whatever the
//! number of clients: a new client takes a free entry of its set (one whose
//! state has lapsed: no connection open, bucket full again), else the
//! oldest entry (the bucket nearest to full), oldest out. Entries with open
//! connections are never evicted, so a count cannot be lost under a
//! connection; a client whose set holds nothing else is not limited
//! (fail open) rather than refused.
//!
//! Each set has its own `std::sync::Mutex`, held for a scan of eight
//! entries and a few additions: no allocation, no await under it, and two
//! clients contend only when they share a set. A lock-free table would need
//! a packed word per entry plus a key check and eviction that race with
//! each other; the lock is the simpler correct thing at this cost.
//!
//! The rate is a token bucket kept as one number per client (GCRA): the
//! time at which the bucket would be full again. `client_rate` tokens a
//! second refill it, `client_burst` is its capacity (0: one second's worth,
//! `client_rate`). A request takes a token or is answered `429` with
//! `Retry-After` set to the whole seconds until the next token.
//!
//! Behind another proxy, `client_header` from `trusted_proxies` names the
//! client of each request's rate (see `client_ip`). Connections are counted
//! at accept, before any header, so always by the peer's address.
//!
//! Connections are counted at accept. A connection over `client_connections`
//! is not cut: its requests are answered `429` with `Retry-After: 1` and
//! (HTTP/1) `Connection: close`, which a client can read and act on, where
//! a reset says nothing. It holds no place in the count.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use tether_daemon::config::{ConfigError, RawLimits};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::client_ip::ClientIdentity;
use crate::headers::Peer;
use crate::stats::ProxyStats;

/// Entries per set: a lookup scans this many.
pub const WAYS: usize = 8;
/// Sets in the table.
pub const SETS: usize = 4096;
/// Clients the table holds at most (32 Ki entries of 32 bytes: 1 MiB).
pub const CAPACITY: usize = SETS * WAYS;
/// The highest `client_rate`: one token per microsecond.
pub const MAX_RATE: u32 = 1_000_000;

const NANOS_PER_SEC: u64 = 1_000_000_000;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static CLOSE: HeaderValue = HeaderValue::from_static("close");
static ONE: HeaderValue = HeaderValue::from_static("1");
const BODY: &[u8] = b"{\"error\":\"Too many requests\"}";

/// Which limit refused a client; the `limit` label of
/// `tether_limited_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Connections,
    Rate,
}

impl Limit {
    pub const ALL: [Limit; 2] = [Limit::Connections, Limit::Rate];

    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::Rate => "rate",
        }
    }
}

// === config ===

/// `[limits]`, validated. `None`: that limit is off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientLimits {
    pub connections: Option<NonZeroU32>,
    pub rate: Option<Rate>,
    /// Whose bucket a request's rate takes from.
    pub identity: ClientIdentity,
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    /// Time between two tokens.
    fn interval_ns(self) -> u64 {
        NANOS_PER_SEC / u64::from(self.per_second.get())
    }
}

impl ClientLimits {
    pub fn from_raw(raw: &RawLimits) -> Result<ClientLimits, ConfigError> {
        let rate = raw.client_rate.unwrap_or(0);
        let burst = raw.client_burst.unwrap_or(0);
        if rate > MAX_RATE {
            return Err(ConfigError::new(
                "limits.client_rate",
                format!("{rate} is more than {MAX_RATE} requests per second"),
            ));
        }
        let rate = match NonZeroU32::new(rate) {
            Some(per_second) => Some(Rate {
                per_second,
                burst: NonZeroU32::new(burst).unwrap_or(per_second),
            }),
            None if burst > 0 => {
                return Err(ConfigError::new(
                    "limits.client_burst",
                    "only applies with limits.client_rate",
                ));
            }
            None => None,
        };
        Ok(ClientLimits {
            connections: raw.client_connections.and_then(NonZeroU32::new),
            rate,
            identity: ClientIdentity::from_raw(raw)?,
        })
    }

    pub fn is_off(&self) -> bool {
        self.connections.is_none() && self.rate.is_none()
    }
}

// === keys ===

/// The client a peer address counts as: IPv4 addresses (also when they
/// arrive IPv4-mapped) as themselves, IPv6 addresses by their /64. The two
/// never meet: a mapped IPv4 key has `ffff` in bits 32-47, a /64 has zeros
/// below bit 64.
pub fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

// === impl Clients ===

/// The per-client state of one proxy, and its answers.
#[derive(Debug)]
pub struct Clients {
    table: OnceLock<Arc<Table>>,
    stats: Arc<ProxyStats>,
}

impl Clients {
    pub fn new(stats: Arc<ProxyStats>) -> Clients {
        Clients {
            table: OnceLock::new(),
            stats,
        }
    }

    fn table(&self) -> &Arc<Table> {
        self.table
            .get_or_init(|| Arc::new(Table::new(self.stats.clone())))
    }

    /// A new connection from `ip`: counted while the returned value lives,
    /// or refused when `ip` has `limits.connections` open already.
    pub fn connect(&self, ip: IpAddr, limits: &ClientLimits) -> Admission {
        let Some(max) = limits.connections else {
            return Admission::default();
        };
        let table = self.table();
        match table.connect(client_key(ip), max.get(), table.now()) {
            Ok(slot) => Admission {
                slot: slot.map(|key| ConnSlot {
                    table: table.clone(),
                    key,
                }),
                refused: false,
            },
            Err(()) => {
                self.stats.limited[Limit::Connections as usize].inc();
                Admission {
                    slot: None,
                    refused: true,
                }
            }
        }
    }

    /// The answer to a request that is over a limit, or `None` to serve
    /// it. Takes a token when the rate is limited, from the bucket of the
    /// client `headers` name if `limits.identity` believes them.
    pub fn check(
        &self,
        peer: &Peer,
        headers: &HeaderMap,
        limits: &ClientLimits,
    ) -> Option<Response<ProxyBody>> {
        if peer.over_connection_limit {
            return Some(too_many(ONE.clone(), true));
        }
        let rate = limits.rate?;
        let table = self.table();
        let wait_ns = table
            .take(
                client_key(limits.identity.client(peer.addr.ip(), headers)),
                rate,
                table.now(),
            )
            .err()?;
        self.stats.limited[Limit::Rate as usize].inc();
        let secs = wait_ns.div_ceil(NANOS_PER_SEC).max(1);
        Some(too_many(HeaderValue::from(secs), false))
    }
}

/// What became of a new connection under `client_connections`.
#[derive(Debug, Default)]
pub struct Admission {
    /// Its place in its client's count; `None` when not counted (the limit
    /// is off, or the table had no room for the client).
    pub slot: Option<ConnSlot>,
    /// Over the limit: every request on it is answered `429`.
    pub refused: bool,
}

/// A counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    table: Arc<Table>,
    key: u128,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.table.disconnect(self.key, self.table.now());
    }
}

/// `429` with `retry_after` and the JSON error body.
fn too_many(retry_after: HeaderValue, close: bool) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(Bytes::from_static(BODY)));
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, JSON.clone());
    h.insert(header::RETRY_AFTER, retry_after);
    if close {
        h.insert(header::CONNECTION, CLOSE.clone());
    }
    // The proxy's own answer: a gRPC call gets it as RESOURCE_EXHAUSTED.
    res.extensions_mut().insert(crate::http2::grpc::Local);
    res.extensions_mut()
        .insert(crate::http2::grpc::Message("Too many requests"));
    res
}

// === impl Table ===

/// One client's state.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: u128,
    /// When the bucket is full again (ns since the table's epoch); the
    /// bucket is empty at `tat - burst * interval`.
    tat: u64,
    conns: u32,
    used: bool,
}

impl Entry {
    /// Nothing worth keeping: no connection, a full bucket.
    fn lapsed(&self, now: u64) -> bool {
        self.conns == 0 && self.tat <= now
    }
}

/// The fixed table (see the module's note).
#[derive(Debug)]
struct Table {
    sets: Box<[Mutex<[Entry; WAYS]>]>,
    hasher: RandomState,
    epoch: Instant,
    stats: Arc<ProxyStats>,
}

impl Table {
    fn new(stats: Arc<ProxyStats>) -> Table {
        Table {
            sets: (0..SETS)
                .map(|_| Mutex::new([Entry::default(); WAYS]))
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            stats,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn set(&self, key: u128) -> std::sync::MutexGuard<'_, [Entry; WAYS]> {
        let i = (self.hasher.hash_one(key) as usize) % SETS;
        // A panic under the lock cannot leave an entry half written (the
        // writes are plain stores), so a poisoned set is still good.
        self.sets[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The index of `key`'s entry in `set`, taking one for it if need be
    /// (a free one, else the oldest without connections); `None` when
    /// every entry has connections open.
    fn entry(&self, set: &mut [Entry; WAYS], key: u128, now: u64) -> Option<usize> {
        if let Some(i) = set.iter().position(|e| e.used && e.key == key) {
            return Some(i);
        }
        for e in set.iter_mut().filter(|e| e.used && e.lapsed(now)) {
            e.used = false;
            self.stats.limit_clients.dec();
        }
        let i = match set.iter().position(|e| !e.used) {
            Some(free) => {
                self.stats.limit_clients.inc();
                free
            }
            None => {
                set.iter()
                    .enumerate()
                    .filter(|(_, e)| e.conns == 0)
                    .min_by_key(|(_, e)| e.tat)?
                    .0
            }
        };
        set[i] = Entry {
            key,
            used: true,
            ..Entry::default()
        };
        Some(i)
    }

    /// Counts a connection of `key`: `Ok(None)` when the table has no room
    /// for it (not counted), `Err` when it has `max` open already.
    fn connect(&self, key: u128, max: u32, now: u64) -> Result<Option<u128>, ()> {
        let mut set = self.set(key);
        let Some(i) = self.entry(&mut set, key, now) else {
            return Ok(None);
        };
        let e = &mut set[i];
        if e.conns >= max {
            return Err(());
        }
        e.conns += 1;
        Ok(Some(key))
    }

    /// A counted connection of `key` closed.
    fn disconnect(&self, key: u128, now: u64) {
        let mut set = self.set(key);
        // Entries with connections are never evicted, so it is there.
        let Some(e) = set.iter_mut().find(|e| e.used && e.key == key) else {
            debug_assert!(false, "a counted connection's entry is kept");
            return;
        };
        debug_assert!(e.conns > 0);
        e.conns = e.conns.saturating_sub(1);
        if e.lapsed(now) {
            e.used = false;
            self.stats.limit_clients.dec();
        }
    }

    /// Takes a token from `key`'s bucket, or says how many ns until there
    /// is one.
    fn take(&self, key: u128, rate: Rate, now: u64) -> Result<(), u64> {
        let mut set = self.set(key);
        let Some(i) = self.entry(&mut set, key, now) else {
            return Ok(());
        };
        let e = &mut set[i];
        let interval = rate.interval_ns();
        let tat = e.tat.max(now).saturating_add(interval);
        let capacity = u64::from(rate.burst.get()) * interval;
        let ahead = tat - now;
        if ahead > capacity {
            return Err(ahead - capacity);
        }
        e.tat = tat;
        Ok(())
    }

    /// Entries in use (tests; `/metrics` reads the gauge).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|s| s.lock().expect("set").iter().filter(|e| e.used).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(Arc::new(ProxyStats::default()))
    }

    fn v4(n: u32) -> u128 {
        client_key(IpAddr::from(n.to_be_bytes()))
    }

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).expect("rate"),
            burst: NonZeroU32::new(burst).expect("burst"),
        }
    }

    const SEC: u64 = NANOS_PER_SEC;

    #[test]
    fn the_table_holds_its_capacity_whatever_the_number_of_clients() {
        let t = table();
        assert!(std::mem::size_of::<Entry>() <= 32);
        let r = rate(1, 1);
        // Eight times the capacity, all at once: every client keeps state
        // (an empty bucket), so each new one evicts the oldest of its set.
        for n in 0..(8 * CAPACITY as u32) {
            assert_eq!(t.take(v4(n), r, 1), Ok(()));
        }
        assert_eq!(t.len(), CAPACITY);
        assert_eq!(t.stats.limit_clients.get(), CAPACITY as u64);
        assert_eq!(t.sets.len(), SETS, "nothing grows");
        // Lapsed entries are released as their sets are visited.
        for n in 0..(8 * CAPACITY as u32) {
            let _ = t.take(v4(n), r, 10 * SEC);
        }
        assert_eq!(t.stats.limit_clients.get(), t.len() as u64);
    }

    #[test]
    fn a_bucket_gives_its_burst_then_one_token_per_interval() {
        let t = table();
        let (a, b) = (v4(1), v4(2));
        let r = rate(2, 3);
        for _ in 0..3 {
            assert_eq!(t.take(a, r, SEC), Ok(()));
        }
        assert_eq!(t.take(a, r, SEC), Err(SEC / 2), "the next token in 0.5 s");
        // Another client is untouched.
        assert_eq!(t.take(b, r, SEC), Ok(()));
        assert_eq!(t.take(a, r, SEC + SEC / 2 - 1), Err(1));
        assert_eq!(t.take(a, r, SEC + SEC / 2), Ok(()));
        assert!(t.take(a, r, SEC + SEC / 2).is_err());
        // Idle for long: the bucket is full again, never fuller.
        for _ in 0..3 {
            assert_eq!(t.take(a, r, 100 * SEC), Ok(()));
        }
        assert!(t.take(a, r, 100 * SEC).is_err());
    }

    #[test]
    fn connections_are_counted_until_they_close() {
        let t = table();
        let a = v4(7);
        assert_eq!(t.connect(a, 2, 0), Ok(Some(a)));
        assert_eq!(t.connect(a, 2, 0), Ok(Some(a)));
        assert_eq!(t.connect(a, 2, 0), Err(()));
        assert_eq!(t.connect(v4(8), 2, 0), Ok(Some(v4(8))));
        t.disconnect(a, 0);
        assert_eq!(t.connect(a, 2, 0), Ok(Some(a)));
        t.disconnect(a, 0);
        t.disconnect(a, 0);
        t.disconnect(v4(8), 0);
        assert_eq!(t.len(), 0, "no connection, no rate: nothing kept");
        assert_eq!(t.stats.limit_clients.get(), 0);
    }

    #[test]
    fn an_entry_with_open_connections_is_never_evicted() {
        let t = table();
        let a = v4(1);
        assert_eq!(t.connect(a, 1, 0), Ok(Some(a)));
        let r = rate(1, 1);
        for n in 2..(8 * CAPACITY as u32) {
            let _ = t.take(v4(n), r, 1);
        }
        assert_eq!(t.connect(a, 1, 1), Err(()), "still counted");
    }

    #[test]
    fn ipv6_clients_are_their_slash_64() {
        let ip = |s: &str| client_key(s.parse().expect("ip"));
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_ne!(ip("10.0.0.1"), ip("10.0.0.2"));
        assert_ne!(ip("0.0.0.0"), ip("::"));
    }

    #[test]
    fn config_defaults_off_burst_defaults_to_rate_and_errors_name_the_key() {
        let raw = |c, r, b| RawLimits {
            client_connections: c,
            client_rate: r,
            client_burst: b,
            ..RawLimits::default()
        };
        let off = ClientLimits::from_raw(&RawLimits::default()).expect("valid");
        assert!(off.is_off());
        assert!(
            ClientLimits::from_raw(&raw(Some(0), Some(0), Some(0)))
                .expect("valid")
                .is_off()
        );
        let l = ClientLimits::from_raw(&raw(Some(4), Some(10), None)).expect("valid");
        assert_eq!(l.connections, NonZeroU32::new(4));
        assert_eq!(l.rate, Some(rate(10, 10)));
        let l = ClientLimits::from_raw(&raw(None, Some(10), Some(50))).expect("valid");
        assert_eq!(l.rate, Some(rate(10, 50)));
        let key = |r: RawLimits| ClientLimits::from_raw(&r).expect_err("invalid").key;
        assert_eq!(key(raw(None, None, Some(5))), "limits.client_burst");
        assert_eq!(
            key(raw(None, Some(MAX_RATE + 1), None)),
            "limits.client_rate"
        );
    }
}
