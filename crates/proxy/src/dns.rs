//! Upstream host names and the addresses they were last looked up at.
//!
//! A member given by host name (`api.internal:8080`) would otherwise cost a
//! system resolver call (on a blocking thread) at every new upstream
//! connection: a DNS query per connection against the cluster's DNS. Here
//! each authority is looked up at most once per `dns_refresh`; an IP
//! literal never reaches the resolver or the cache.
//!
//! Only the first connections to a name wait, all on one lookup. After
//! that a due refresh runs in a task of its own while connections go on
//! using the addresses they have, and a lookup that fails or answers
//! nothing keeps them (stale-if-error: a DNS blip is not the target's
//! failure), logged once per failing streak. A name that never answered
//! fails its connects with the lookup's error until the next refresh.
//!
//! Resolution goes through the checker's [`Resolve`], so tests decide what
//! a name resolves to and count the lookups.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use log::{debug, info, warn};
use tether_checker::dns::Resolve;
use tokio::sync::watch;
use tokio::time::Instant;

/// A lookup taking longer than this counts as failed (glibc's default
/// per-query timeout), so a hung resolver cannot stop refreshes for good.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an authority is, in the order to try.
#[derive(Clone, Debug)]
pub enum Addrs {
    /// The authority is an IP literal.
    Literal(SocketAddr),
    /// The last good answer for a host name.
    Looked(Arc<[SocketAddr]>),
}

impl Deref for Addrs {
    type Target = [SocketAddr];

    fn deref(&self) -> &[SocketAddr] {
        match self {
            Addrs::Literal(addr) => std::slice::from_ref(addr),
            Addrs::Looked(addrs) => addrs,
        }
    }
}

/// The addresses of the host names connections went to, shared by every
/// worker. Cloning shares the cache.
#[derive(Clone)]
pub struct DnsCache {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: Arc<dyn Resolve>,
    /// A std `Mutex`, not `arc_swap`: it is taken only when a new
    /// connection is opened (pooled reuse never gets here), for a hash
    /// lookup and an `Arc` clone, never across an `.await`. Next to the
    /// TCP handshake and task spawn around it an uncontended lock is noise,
    /// and updates (answers, the one-lookup-in-flight mark) stay plain
    /// writes instead of a copy of the whole map per change.
    names: Mutex<HashMap<Authority, Name>>,
}

#[derive(Default)]
struct Name {
    /// The last answer that had addresses.
    addrs: Option<Arc<[SocketAddr]>>,
    /// When the last lookup started: the next is due `dns_refresh` later.
    asked: Option<Instant>,
    /// While a lookup is in flight: closed when it has answered.
    pending: Option<watch::Receiver<()>>,
    /// Why the last lookup failed; `None` after a good answer.
    failure: Option<String>,
}

/// What a look at the cache decided.
enum Step {
    Ready(io::Result<Addrs>),
    /// Wait for the lookup in flight, then look again.
    Wait(watch::Receiver<()>),
}

impl DnsCache {
    pub fn new(resolver: Arc<dyn Resolve>) -> DnsCache {
        DnsCache {
            inner: Arc::new(Inner {
                resolver,
                names: Mutex::default(),
            }),
        }
    }

    /// Where `authority` (`host:port`) is: at once for an IP literal or a
    /// cached name, otherwise after the lookup in flight. A lookup is
    /// started when the last one is `refresh` old (a setting a reload can
    /// change, so it is passed in).
    pub async fn addrs(&self, authority: &Authority, refresh: Duration) -> io::Result<Addrs> {
        let port = authority
            .port_u16()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port"))?;
        let host = authority.host();
        // `Authority::host` keeps an IPv6 literal's brackets.
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Addrs::Literal(SocketAddr::new(ip, port)));
        }
        match self.step(authority, port, refresh, true) {
            Step::Ready(result) => result,
            Step::Wait(mut pending) => {
                // Err: the lookup's task dropped its sender, i.e. answered.
                let _ = pending.changed().await;
                // Look once more without starting another lookup: a
                // waiter waits for one answer, not for a failing DNS.
                match self.step(authority, port, refresh, false) {
                    Step::Ready(result) => result,
                    Step::Wait(_) => Err(io::Error::other("lookup still in progress")),
                }
            }
        }
    }

    fn step(&self, authority: &Authority, port: u16, refresh: Duration, start: bool) -> Step {
        let mut names = self
            .inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !names.contains_key(authority) {
            names.insert(authority.clone(), Name::default());
        }
        let name = names.get_mut(authority).expect("inserted above");
        let now = Instant::now();
        let due = name
            .asked
            .is_none_or(|at| now.saturating_duration_since(at) >= refresh);
        if start && due && name.pending.is_none() {
            name.asked = Some(now);
            name.pending = Some(self.look_up(authority.clone(), port));
        }
        match (&name.addrs, &name.pending) {
            (Some(addrs), _) => Step::Ready(Ok(Addrs::Looked(addrs.clone()))),
            (None, Some(pending)) if start => Step::Wait(pending.clone()),
            (None, _) => Step::Ready(Err(io::Error::other(
                name.failure
                    .clone()
                    .unwrap_or_else(|| "no answer yet".into()),
            ))),
        }
    }

    /// Looks `authority` up in a task of its own, so the answer is kept
    /// even when the connect that asked for it is cancelled. The receiver
    /// sees the sender closed once the answer is in the cache.
    fn look_up(&self, authority: Authority, port: u16) -> watch::Receiver<()> {
        let (done, pending) = watch::channel(());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let lookup = inner.resolver.resolve(authority.host(), port);
            let result = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) if addrs.is_empty() => Err("no address".to_owned()),
                Ok(Ok(addrs)) => Ok(addrs),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
            };
            inner.answer(&authority, result);
            drop(done);
        });
        pending
    }
}

impl Inner {
    /// Records a lookup's result; logs after letting go of the lock.
    fn answer(&self, authority: &Authority, result: Result<Vec<SocketAddr>, String>) {
        let host = authority.host();
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(name) = names.get_mut(authority) else {
            return;
        };
        name.pending = None;
        match result {
            Ok(addrs) => {
                let recovered = name.failure.take().is_some();
                name.addrs = Some(addrs.into());
                drop(names);
                if recovered {
                    info!(target: "proxy", "resolve {host}: answering again");
                }
            }
            Err(why) => {
                let first = name.failure.is_none();
                let keeping = if name.addrs.is_some() {
                    "keeping its last addresses"
                } else {
                    "no addresses to fall back on"
                };
                name.failure = Some(format!("{host}: {why}"));
                drop(names);
                if first {
                    warn!(target: "proxy", "resolve {host}: {why}; {keeping}");
                } else {
                    debug!(target: "proxy", "resolve {host}: {why}; {keeping}");
                }
            }
        }
    }
}

impl fmt::Debug for DnsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsCache").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tether_checker::dns::Lookup;
    use tokio::sync::Semaphore;

    use super::*;

    const REFRESH: Duration = Duration::from_secs(10);

    /// Answers `10.0.0.N:port` for every name, or fails; counts lookups.
    /// Holds each answer until `gate` has a permit.
    struct Fake {
        lookups: AtomicUsize,
        fail: AtomicBool,
        gate: Semaphore,
    }

    impl Fake {
        fn new() -> Arc<Fake> {
            Arc::new(Fake {
                lookups: AtomicUsize::new(0),
                fail: AtomicBool::new(false),
                gate: Semaphore::new(Semaphore::MAX_PERMITS),
            })
        }

        fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    impl Resolve for Fake {
        fn resolve<'a>(&'a self, _host: &'a str, port: u16) -> Lookup<'a> {
            Box::pin(async move {
                let n = self.lookups.fetch_add(1, Ordering::SeqCst) + 1;
                let _permit = self.gate.acquire().await.expect("gate open");
                if self.fail.load(Ordering::SeqCst) {
                    return Err(io::Error::other("SERVFAIL"));
                }
                let n = u8::try_from(n).expect("few lookups");
                Ok(vec![SocketAddr::from(([10, 0, 0, n], port))])
            })
        }
    }

    fn authority(s: &str) -> Authority {
        s.parse().expect("authority")
    }

    async fn first(cache: &DnsCache, a: &str) -> SocketAddr {
        cache.addrs(&authority(a), REFRESH).await.expect("addrs")[0]
    }

    /// Lets `a`'s lookup in flight run to its answer.
    async fn settle(cache: &DnsCache, a: &str) {
        let a = authority(a);
        while cache.inner.names.lock().unwrap()[&a].pending.is_some() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ip_literal_never_reaches_the_resolver() {
        let fake = Fake::new();
        let cache = DnsCache::new(fake.clone());
        assert_eq!(
            first(&cache, "127.0.0.1:80").await,
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            first(&cache, "[::1]:8080").await,
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(fake.lookups(), 0);
        assert!(cache.inner.names.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_looked_up_once_per_refresh() {
        let fake = Fake::new();
        let cache = DnsCache::new(fake.clone());
        for _ in 0..10 {
            assert_eq!(
                first(&cache, "api.internal:8080").await,
                "10.0.0.1:8080".parse().unwrap()
            );
        }
        assert_eq!(fake.lookups(), 1);
        // Another name is its own entry.
        assert_eq!(
            first(&cache, "db.internal:5432").await,
            "10.0.0.2:5432".parse().unwrap()
        );

        tokio::time::advance(REFRESH).await;
        // Due: answered from the cache while the refresh runs...
        assert_eq!(
            first(&cache, "api.internal:8080").await,
            "10.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            first(&cache, "api.internal:8080").await,
            "10.0.0.1:8080".parse().unwrap()
        );
        settle(&cache, "api.internal:8080").await;
        // ...whose answer the next connection uses.
        for _ in 0..10 {
            assert_eq!(
                first(&cache, "api.internal:8080").await,
                "10.0.0.3:8080".parse().unwrap()
            );
        }
        assert_eq!(fake.lookups(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_connections_to_a_name_share_one_lookup() {
        let fake = Fake::new();
        fake.gate.forget_permits(Semaphore::MAX_PERMITS);
        let cache = DnsCache::new(fake.clone());
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { first(&cache, "api.internal:80").await })
            })
            .collect();
        while fake.lookups() == 0 {
            tokio::task::yield_now().await;
        }
        fake.gate.add_permits(1);
        for w in waiters {
            assert_eq!(w.await.unwrap(), "10.0.0.1:80".parse().unwrap());
        }
        assert_eq!(fake.lookups(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_keeps_the_last_addresses() {
        let fake = Fake::new();
        let cache = DnsCache::new(fake.clone());
        let api = authority("api.internal:80");
        assert_eq!(
            first(&cache, "api.internal:80").await,
            "10.0.0.1:80".parse().unwrap()
        );

        fake.fail.store(true, Ordering::SeqCst);
        for round in 2..5 {
            tokio::time::advance(REFRESH).await;
            assert_eq!(
                first(&cache, "api.internal:80").await,
                "10.0.0.1:80".parse().unwrap()
            );
            settle(&cache, "api.internal:80").await;
            assert_eq!(
                first(&cache, "api.internal:80").await,
                "10.0.0.1:80".parse().unwrap()
            );
            let names = cache.inner.names.lock().unwrap();
            let failure = names[&api].failure.as_deref();
            assert_eq!(failure, Some("api.internal: SERVFAIL"), "round {round}");
        }
        assert_eq!(fake.lookups(), 4);

        fake.fail.store(false, Ordering::SeqCst);
        tokio::time::advance(REFRESH).await;
        first(&cache, "api.internal:80").await;
        settle(&cache, "api.internal:80").await;
        assert_eq!(
            first(&cache, "api.internal:80").await,
            "10.0.0.5:80".parse().unwrap()
        );
        assert!(cache.inner.names.lock().unwrap()[&api].failure.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_that_never_answered_fails_until_the_next_refresh() {
        let fake = Fake::new();
        fake.fail.store(true, Ordering::SeqCst);
        let cache = DnsCache::new(fake.clone());
        let api = authority("api.internal:80");
        for _ in 0..3 {
            let e = cache.addrs(&api, REFRESH).await.expect_err("no answer");
            assert_eq!(e.to_string(), "api.internal: SERVFAIL");
        }
        assert_eq!(fake.lookups(), 1);

        fake.fail.store(false, Ordering::SeqCst);
        tokio::time::advance(REFRESH).await;
        assert_eq!(
            first(&cache, "api.internal:80").await,
            "10.0.0.2:80".parse().unwrap()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_lookup_times_out() {
        let fake = Fake::new();
        fake.gate.forget_permits(Semaphore::MAX_PERMITS);
        let cache = DnsCache::new(fake.clone());
        let e = cache
            .addrs(&authority("api.internal:80"), REFRESH)
            .await
            .expect_err("no answer");
        assert!(e.to_string().contains("no answer within"), "{e}");
    }
}
