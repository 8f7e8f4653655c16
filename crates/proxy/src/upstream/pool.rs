//! Idle upstream connections: a value its [`Connector`](super::Connector)
//! owns, so two proxies in one process never share one. Within a pool,
//! idle connections are kept per worker thread.
//!
//! A pooled connection is only its socket: no task, no buffer. Each worker
//! thread holds one shard of each pool it has used; a request takes from
//! and gives back to its own thread's shard, which nobody else touches but
//! the pool's sweeper, a few microseconds every idle timeout. The request
//! path only ever *tries* the shard's lock (one compare-and-swap, never a
//! wait): in the rare moment the sweeper holds it, a checkout finds
//! nothing and a checkin closes its connection.
//!
//! The sweeper closes connections idle longer than the idle timeout and
//! those the backend closed, so a burst's connections (and descriptors, at
//! the backend too) go away even when no later request comes to prune
//! them. When the pool goes, so do its idle connections.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::{Connection, PoolKey};

/// Idle connections kept per upstream per worker thread; more are closed.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

struct Idle {
    conn: Connection,
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

/// One thread's idle connections of one pool.
#[derive(Default)]
struct Shard {
    idle: Mutex<PoolMap>,
}

/// What every clone of a [`Pool`] shares.
struct Shared {
    idle_timeout: Duration,
    /// Every thread's shard of this pool, for the sweeper. A thread that
    /// ends leaves a dead `Weak`, dropped at the next sweep.
    shards: Mutex<Vec<Weak<Shard>>>,
}

thread_local! {
    /// This thread's shards, one per pool it has used: nearly always one.
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

/// A thread's shard of one pool. The pool is found by its address: the
/// `Weak` keeps that allocation, so no later pool can take the address
/// while an entry or a connection still points at it.
struct Local {
    pool: Weak<Shared>,
    shard: Arc<Shard>,
}

/// Idle connections, per worker thread; clones share them.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

/// What a connection was opened for and where it goes back to: its key
/// and its pool (which may be gone by then). One allocation per new
/// connection, so that a connection is its socket and one pointer.
#[derive(Debug)]
pub struct Home {
    pub key: PoolKey,
    pool: Weak<Shared>,
}

impl Pool {
    /// A pool whose connections idle longer than `idle_timeout` are not
    /// reused. Its sweeper runs while the pool exists; without a runtime
    /// (unit tests of other parts) nothing is swept.
    pub fn new(idle_timeout: Duration) -> Pool {
        let shared = Arc::new(Shared {
            idle_timeout,
            shards: Mutex::new(Vec::new()),
        });
        start_sweeper(idle_timeout, Arc::downgrade(&shared));
        Pool { shared }
    }

    /// The home of a connection opened for `key`, in this pool.
    pub fn home(&self, key: PoolKey) -> Arc<Home> {
        Arc::new(Home {
            key,
            pool: Arc::downgrade(&self.shared),
        })
    }

    /// The most recently pooled connection under `key` that is younger
    /// than the idle timeout and still usable. Stale ones met on the way
    /// are closed.
    pub fn checkout(&self, key: &PoolKey) -> Option<Connection> {
        let idle_timeout = self.shared.idle_timeout;
        // `try_with`: a thread being torn down has no shards any more.
        LOCAL
            .try_with(|local| {
                let mut local = local.borrow_mut();
                let mut idle = shard(&mut local, Arc::as_ptr(&self.shared), None)?
                    .idle
                    .try_lock()
                    .ok()?;
                let queue = idle.get_mut(key)?;
                while let Some(entry) = queue.pop_back() {
                    if entry.since.elapsed() < idle_timeout && entry.conn.io.is_reusable() {
                        return Some(entry.conn);
                    }
                }
                None
            })
            .ok()
            .flatten()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("idle_timeout", &self.shared.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Keeps `conn`, whose last exchange is complete, in its pool for the next
/// request to its upstream; closes it if the pool is gone.
pub fn checkin(conn: Connection) {
    let _ = LOCAL.try_with(|local| {
        let mut local = local.borrow_mut();
        let Some(shard) = shard(&mut local, conn.home.pool.as_ptr(), Some(&conn.home.pool)) else {
            return;
        };
        let Ok(mut idle) = shard.idle.try_lock() else {
            return;
        };
        let queue = idle.entry(conn.home.key.clone()).or_default();
        if queue.len() >= MAX_IDLE_PER_UPSTREAM {
            queue.pop_front();
        }
        queue.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    });
}

/// This thread's shard of the pool at `pool`, if the pool is still there.
/// A thread without one makes it when given the pool (a checkin) and
/// finds nothing otherwise (a checkout: an empty shard has nothing to
/// give). Found by address, with no reference count touched.
fn shard<'a>(
    local: &'a mut Vec<Local>,
    pool: *const Shared,
    make: Option<&Weak<Shared>>,
) -> Option<&'a Shard> {
    if let Some(i) = local.iter().position(|l| l.pool.as_ptr() == pool) {
        if local[i].pool.strong_count() > 0 {
            return Some(&local[i].shard);
        }
        return None;
    }
    let shared = make?.upgrade()?;
    let shard = Arc::new(Shard::default());
    shared
        .shards
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&shard));
    // Shards of pools that are gone go with this.
    local.retain(|l| l.pool.strong_count() > 0);
    local.push(Local {
        pool: Arc::downgrade(&shared),
        shard,
    });
    local.last().map(|l| &*l.shard)
}

impl Shared {
    /// Every live shard of this pool.
    fn shards(&self) -> Vec<Arc<Shard>> {
        let mut all = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|w| w.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    }

    /// Closes, in every shard, the connections idle for the idle timeout
    /// or closed by their backend.
    fn sweep(&self) {
        for shard in self.shards() {
            // A shard in use right now is swept next time.
            let Ok(mut idle) = shard.idle.try_lock() else {
                continue;
            };
            idle.retain(|_, queue| {
                queue.retain(|e| e.since.elapsed() < self.idle_timeout && e.conn.io.is_reusable());
                !queue.is_empty()
            });
        }
    }
}

impl Drop for Shared {
    /// The pool is gone: its idle connections close now rather than wait
    /// in the threads' shards.
    fn drop(&mut self) {
        for shard in self.shards() {
            shard
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

/// Sweeps every `idle_timeout` while the pool exists.
fn start_sweeper(idle_timeout: Duration, pool: Weak<Shared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(idle_timeout);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            pool.sweep();
        }
    });
}
