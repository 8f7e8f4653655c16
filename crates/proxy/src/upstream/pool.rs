//! Idle upstream connections, kept per worker thread.
//!
//! A pooled connection is only its socket: no task, no buffer. Each worker
//! thread owns a shard; a request takes from and gives back to its own
//! thread's shard, which nobody else touches but the sweeper, a few
//! microseconds every idle timeout. The request path only ever *tries*
//! the shard's lock (one compare-and-swap, never a wait): in the rare
//! moment the sweeper holds it, a checkout finds nothing and a checkin
//! closes its connection.
//!
//! The sweeper closes connections idle longer than the idle timeout and
//! those the backend closed, so a burst's connections (and descriptors, at
//! the backend too) go away even when no later request comes to prune
//! them.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, Weak};
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

#[derive(Default)]
struct Shard {
    idle: Mutex<PoolMap>,
}

/// Every thread's shard, for the sweeper. A thread that ends leaves a dead
/// `Weak`, dropped at the next sweep.
static SHARDS: Mutex<Vec<Weak<Shard>>> = Mutex::new(Vec::new());

thread_local! {
    static SHARD: Arc<Shard> = {
        let shard = Arc::new(Shard::default());
        SHARDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::downgrade(&shard));
        shard
    };
}

/// The most recently pooled connection under `key` that is younger than
/// `idle_timeout` and still usable. Stale ones met on the way are closed.
pub fn checkout(key: &PoolKey, idle_timeout: Duration) -> Option<Connection> {
    // `try_with`: a thread being torn down has no pool any more.
    SHARD
        .try_with(|shard| {
            let mut idle = shard.idle.try_lock().ok()?;
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

/// Keeps `conn`, whose last exchange is complete, for the next request to
/// its upstream.
pub fn checkin(conn: Connection) {
    let _ = SHARD.try_with(|shard| {
        let Ok(mut idle) = shard.idle.try_lock() else {
            return;
        };
        let queue = idle.entry(conn.key.clone()).or_default();
        if queue.len() >= MAX_IDLE_PER_UPSTREAM {
            queue.pop_front();
        }
        queue.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    });
}

/// Closes, in every shard, the connections idle for `idle_timeout` or
/// closed by their backend.
fn sweep(idle_timeout: Duration) {
    let shards: Vec<Arc<Shard>> = {
        let mut all = SHARDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|w| w.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    for shard in shards {
        // A shard in use right now is swept next time.
        let Ok(mut idle) = shard.idle.try_lock() else {
            continue;
        };
        idle.retain(|_, queue| {
            queue.retain(|e| e.since.elapsed() < idle_timeout && e.conn.io.is_reusable());
            !queue.is_empty()
        });
    }
}

/// Sweeps every `idle_timeout` while `alive` can be upgraded (the
/// connector that started it exists). Needs a runtime; without one (unit
/// tests of other parts) nothing is swept.
pub fn start_sweeper(idle_timeout: Duration, alive: Weak<()>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(idle_timeout);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 {
                return;
            }
            sweep(idle_timeout);
        }
    });
}
