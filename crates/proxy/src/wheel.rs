//! Deadlines of client connections waiting for a request head (the whole
//! head, and the keep-alive gap before it), and the drain's wake-up of the
//! idle ones.
//!
//! Every idle connection waits, so what a wait holds is what an idle
//! connection costs: a tokio `Sleep` (112 bytes) and a `watch::Changed`
//! (120) in each connection's future were most of it. Here a waiting
//! connection holds a [`Timer`] of 16 bytes; its entry (a waker, a tick and
//! two links, 32 bytes) lives in a wheel with one slot per tick. Each thread
//! has its own wheel, so a connection arms and disarms on its own thread's
//! lock, which nothing else takes but that wheel's driver (one task per
//! wheel, asleep until the next non-empty slot: one tokio timer per thread,
//! not one per connection) and, once, the drain. tokio's own timer took a
//! lock per `Sleep` as well, and the `Changed` another.
//!
//! Resolution: [`TICK`] (100 ms). A deadline is rounded up to a whole tick
//! and an entry fires only once its tick has passed, so a wait never ends
//! before its deadline and ends at most one tick (plus tokio's own
//! millisecond) after it. A wheel spans [`SLOTS`] ticks (102.4 s); a longer
//! deadline waits in its slot for as many turns as it needs.
//!
//! The drain: [`wake_idle`] wakes every entry armed as idle, on every
//! thread's wheel; each connection then reads the drain flag itself. A
//! connection arms before it reads the flag and the drain sets the flag
//! before it wakes, both under the wheel's lock, so an idle connection
//! either sees the flag or is woken.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The wheel's resolution: how late a deadline may fire, at most.
pub const TICK: Duration = Duration::from_millis(100);
/// Slots per wheel (a power of two): one turn is 102.4 s.
pub const SLOTS: usize = 1024;
const NIL: u32 = u32::MAX;

/// Every thread's wheel, for the drain. Taken when a thread makes its
/// wheel and when the drain starts, never on a request.
static WHEELS: Mutex<Vec<Weak<Shard>>> = Mutex::new(Vec::new());
/// Where ticks count from: the first wheel's birth.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

thread_local! {
    static LOCAL: Arc<Shard> = Shard::new();
}

/// One thread's wheel and the signal that wakes its driver.
struct Shard {
    wheel: Mutex<Wheel>,
    /// An earlier deadline than the driver sleeps for, or the first one.
    sooner: Notify,
}

impl Shard {
    fn new() -> Arc<Shard> {
        let shard = Arc::new(Shard {
            wheel: Mutex::new(Wheel::new(now_tick())),
            sooner: Notify::new(),
        });
        let mut all = WHEELS.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&shard));
        shard
    }

    fn lock(&self) -> MutexGuard<'_, Wheel> {
        // A panic under this lock cannot leave the lists half-linked (no
        // step in between calls out), so a poisoned lock is still sound.
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An armed deadline, disarmed when dropped.
#[derive(Debug)]
pub struct Timer {
    shard: Arc<Shard>,
    key: u32,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

/// What a wait learns from its timer.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    Waiting,
    /// The deadline has passed.
    Due,
}

impl Timer {
    /// Arms a deadline on this thread's wheel: `waker` is woken once it has
    /// passed, and, if `idle`, when the drain starts.
    pub fn arm(deadline: Instant, idle: bool, waker: &Waker) -> (Timer, State) {
        let shard = LOCAL.with(Arc::clone);
        let tick = tick_of(deadline);
        let (key, state, wake) = shard.lock().arm(tick, idle, waker);
        match wake {
            Driver::Asleep => {}
            Driver::Sooner => shard.sooner.notify_one(),
            // Spawned outside the lock: a task dropped at once (its runtime
            // shutting down) takes the lock as it goes.
            Driver::Start => drop(tokio::spawn(drive(shard.clone()))),
        }
        (Timer { shard, key }, state)
    }

    /// On a later poll of the same wait: the waker to wake now, whether the
    /// wait is idle now, and whether the deadline has passed.
    pub fn update(&self, idle: bool, waker: &Waker) -> State {
        self.shard.lock().update(self.key, idle, waker)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.shard.lock().free(self.key);
    }
}

/// Wakes every connection waiting idle, on every thread: the drain has
/// started.
pub fn wake_idle() {
    let shards: Vec<Arc<Shard>> = WHEELS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let mut wakers = Vec::new();
    for shard in shards {
        shard.lock().idle_wakers(&mut wakers);
        for w in wakers.drain(..) {
            w.wake();
        }
    }
}

fn origin() -> Instant {
    *ORIGIN.get_or_init(Instant::now)
}

/// The tick at or after `at`: an entry fires once this tick has passed.
fn tick_of(at: Instant) -> u32 {
    let since = at.saturating_duration_since(origin()).as_millis();
    u32::try_from(since.div_ceil(TICK.as_millis())).unwrap_or(u32::MAX)
}

/// The last whole tick before now.
fn now_tick() -> u32 {
    let since = Instant::now()
        .saturating_duration_since(origin())
        .as_millis();
    u32::try_from(since / TICK.as_millis()).unwrap_or(u32::MAX)
}

fn instant_of(tick: u32) -> Instant {
    origin() + TICK * tick
}

/// What arming asks of the wheel's driver.
#[derive(Debug, PartialEq, Eq)]
enum Driver {
    Asleep,
    /// Wake sooner than planned.
    Sooner,
    /// There is none: start one.
    Start,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    Armed,
    Fired,
}

/// One deadline: in its slot's list while armed, in the free list after.
#[derive(Debug)]
struct Entry {
    waker: Option<Waker>,
    tick: u32,
    prev: u32,
    next: u32,
    slot: Slot,
    idle: bool,
}

#[derive(Debug)]
struct Wheel {
    entries: Vec<Entry>,
    /// The free list's first entry (linked through `next`).
    free: u32,
    /// Each slot's first entry.
    heads: Box<[u32]>,
    /// Which slots have entries, a bit each.
    occupied: Box<[u64]>,
    /// Ticks up to this one have fired.
    cursor: u32,
    /// When the driver wakes next: `None` when it waits for an entry.
    wake_at: Option<u32>,
    /// A driver task runs for this wheel.
    driven: bool,
}

impl Wheel {
    fn new(cursor: u32) -> Wheel {
        Wheel {
            entries: Vec::new(),
            free: NIL,
            heads: vec![NIL; SLOTS].into_boxed_slice(),
            occupied: vec![0; SLOTS / 64].into_boxed_slice(),
            cursor,
            wake_at: None,
            driven: false,
        }
    }

    /// Arms a new entry; also says what the driver must do.
    fn arm(&mut self, tick: u32, idle: bool, waker: &Waker) -> (u32, State, Driver) {
        let entry = Entry {
            waker: None,
            tick,
            prev: NIL,
            next: NIL,
            slot: Slot::Fired,
            idle,
        };
        let key = if self.free == NIL {
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        } else {
            let key = self.free;
            self.free = self.entries[key as usize].next;
            self.entries[key as usize] = entry;
            key
        };
        if tick <= self.cursor {
            return (key, State::Due, Driver::Asleep);
        }
        self.entries[key as usize].waker = Some(waker.clone());
        self.link(key);
        let sooner = self.wake_at.is_none_or(|at| tick < at);
        if sooner {
            self.wake_at = Some(tick);
        }
        let driver = if !self.driven {
            self.driven = true;
            Driver::Start
        } else if sooner {
            Driver::Sooner
        } else {
            Driver::Asleep
        };
        (key, State::Waiting, driver)
    }

    fn update(&mut self, key: u32, idle: bool, waker: &Waker) -> State {
        let e = &mut self.entries[key as usize];
        e.idle = idle;
        if e.slot != Slot::Armed {
            return State::Due;
        }
        match &mut e.waker {
            Some(w) if w.will_wake(waker) => {}
            w => *w = Some(waker.clone()),
        }
        State::Waiting
    }

    fn free(&mut self, key: u32) {
        if self.entries[key as usize].slot == Slot::Armed {
            self.unlink(key);
        }
        let e = &mut self.entries[key as usize];
        e.slot = Slot::Free;
        e.waker = None;
        e.next = self.free;
        self.free = key;
    }

    fn link(&mut self, key: u32) {
        let slot = self.entries[key as usize].tick as usize % SLOTS;
        let head = self.heads[slot];
        if head != NIL {
            self.entries[head as usize].prev = key;
        }
        let e = &mut self.entries[key as usize];
        e.prev = NIL;
        e.next = head;
        e.slot = Slot::Armed;
        self.heads[slot] = key;
        self.occupied[slot / 64] |= 1 << (slot % 64);
    }

    fn unlink(&mut self, key: u32) {
        let (prev, next, tick) = {
            let e = &self.entries[key as usize];
            (e.prev, e.next, e.tick)
        };
        let slot = tick as usize % SLOTS;
        if prev == NIL {
            self.heads[slot] = next;
            if next == NIL {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        self.entries[key as usize].slot = Slot::Fired;
    }

    /// Fires every entry whose tick is at or before `now`, handing its
    /// waker to `due`.
    fn fire(&mut self, now: u32, due: &mut Vec<Waker>) {
        if now <= self.cursor {
            return;
        }
        // Past a whole turn every slot is visited once.
        let from = self
            .cursor
            .saturating_add(1)
            .max(now.saturating_sub(SLOTS as u32 - 1));
        for tick in from..=now {
            let slot = tick as usize % SLOTS;
            let mut key = self.heads[slot];
            while key != NIL {
                let e = &self.entries[key as usize];
                let next = e.next;
                if e.tick <= now {
                    self.unlink(key);
                    if let Some(w) = self.entries[key as usize].waker.take() {
                        due.push(w);
                    }
                }
                key = next;
            }
        }
        self.cursor = now;
    }

    /// The next tick after the cursor whose slot has entries (which may
    /// be due only in a later turn: the driver then looks again).
    fn next_tick(&self) -> Option<u32> {
        let start = (self.cursor as usize + 1) % SLOTS;
        let words = self.occupied.len();
        // The words from the start's, round to it again (its low bits on
        // the second visit).
        for i in 0..=words {
            let w = (start / 64 + i) % words;
            let mut bits = self.occupied[w];
            if i == 0 {
                bits &= u64::MAX << (start % 64);
            }
            if bits != 0 {
                let slot = w * 64 + bits.trailing_zeros() as usize;
                let ahead = (slot + SLOTS - start) % SLOTS;
                return Some(self.cursor.saturating_add(1 + ahead as u32));
            }
        }
        None
    }

    fn idle_wakers(&self, out: &mut Vec<Waker>) {
        out.extend(
            self.entries
                .iter()
                .filter(|e| e.slot == Slot::Armed && e.idle)
                .filter_map(|e| e.waker.clone()),
        );
    }
}

/// A wheel's driver: fires what is due, then sleeps until the next
/// non-empty slot or an earlier deadline.
async fn drive(shard: Arc<Shard>) {
    /// Marks the wheel undriven when the task ends (its runtime shut
    /// down), so the next deadline armed starts another.
    struct Driving<'a>(&'a Shard);
    impl Drop for Driving<'_> {
        fn drop(&mut self) {
            let mut wheel = self.0.lock();
            wheel.driven = false;
            wheel.wake_at = None;
        }
    }
    let _driving = Driving(&shard);
    let mut due = Vec::new();
    loop {
        let next = {
            let mut wheel = shard.lock();
            wheel.fire(now_tick(), &mut due);
            wheel.wake_at = wheel.next_tick();
            wheel.wake_at
        };
        for w in due.drain(..) {
            w.wake();
        }
        match next {
            Some(tick) => {
                tokio::select! {
                    () = tokio::time::sleep_until(instant_of(tick)) => {}
                    () = shard.sooner.notified() => {}
                }
            }
            None => shard.sooner.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn entries_fire_at_their_tick_not_before() {
        let mut w = Wheel::new(10);
        let (c, waker) = counter();
        let mut due = Vec::new();
        let (a, state, _) = w.arm(15, false, &waker);
        assert_eq!(state, State::Waiting);
        let (b, _, _) = w.arm(15 + SLOTS as u32, false, &waker);
        assert_eq!(w.next_tick(), Some(15));
        w.fire(14, &mut due);
        assert!(due.is_empty());
        w.fire(15, &mut due);
        assert_eq!(due.len(), 1, "only the entry of this turn");
        due.drain(..).for_each(Waker::wake);
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_eq!(w.update(a, false, &waker), State::Due);
        assert_eq!(w.update(b, false, &waker), State::Waiting);
        assert_eq!(w.next_tick(), Some(15 + SLOTS as u32));
        w.fire(14 + SLOTS as u32, &mut due);
        assert!(due.is_empty());
        w.fire(100 + SLOTS as u32, &mut due);
        assert_eq!(due.len(), 1);
        w.free(a);
        w.free(b);
        assert_eq!(w.next_tick(), None);
        assert!(w.occupied.iter().all(|&bits| bits == 0));
    }

    #[test]
    fn a_passed_deadline_is_due_at_once_and_freed_entries_are_reused() {
        let mut w = Wheel::new(50);
        let (_, waker) = counter();
        let (a, state, _) = w.arm(50, true, &waker);
        assert_eq!(state, State::Due);
        w.free(a);
        let (b, state, _) = w.arm(60, true, &waker);
        assert_eq!((b, state), (a, State::Waiting));
        let (c, _, _) = w.arm(60, false, &waker);
        let mut idle = Vec::new();
        w.idle_wakers(&mut idle);
        assert_eq!(idle.len(), 1, "only the idle one");
        w.free(b);
        w.free(c);
        assert_eq!(w.entries.len(), 2);
    }

    /// Waits on a timer until it is due (`true`) or, when `idle`, until
    /// woken with `drained` set (`false`).
    async fn wait(deadline: Instant, idle: bool, drained: Arc<AtomicBool>) -> bool {
        let mut timer = None;
        std::future::poll_fn(|cx| {
            let state = match &timer {
                None => {
                    let (t, state) = Timer::arm(deadline, idle, cx.waker());
                    timer = Some(t);
                    state
                }
                Some(t) => t.update(idle, cx.waker()),
            };
            if state == State::Due {
                return std::task::Poll::Ready(true);
            }
            if drained.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(false);
            }
            std::task::Poll::Pending
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_wakes_its_task_after_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(250);
        assert!(wait(deadline, false, Arc::default()).await);
        let now = Instant::now();
        assert!(now >= deadline, "not early");
        assert!(
            now <= deadline + TICK + Duration::from_millis(1),
            "{:?} late",
            now - deadline
        );
    }

    /// Tasks move between a multi-thread runtime's workers: a timer armed on
    /// one thread's wheel still fires, and the drain reaches every wheel.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timers_fire_and_drain_across_threads() {
        let deadline = Instant::now() + Duration::from_millis(200);
        let waits: Vec<_> = (0..8)
            .map(|_| tokio::spawn(wait(deadline, false, Arc::default())))
            .collect();
        for w in waits {
            assert!(w.await.expect("joined"));
        }
        assert!(Instant::now() >= deadline);

        let drained = Arc::new(AtomicBool::new(false));
        let far = Instant::now() + Duration::from_secs(3600);
        let idle: Vec<_> = (0..8)
            .map(|_| tokio::spawn(wait(far, true, drained.clone())))
            .collect();
        // A task that arms after this reads the flag after arming; one
        // that armed before is woken.
        drained.store(true, Ordering::SeqCst);
        wake_idle();
        let all = async {
            for w in idle {
                assert!(!w.await.expect("joined"), "woken by the drain");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("the drain wakes idle waiters at once");
    }
}
