//! The probe tasks: one per member, probing on its own schedule (jittered
//! phase, never in lockstep) and sending each result to the hub, plus the
//! short bursts a report asks for. A task decides nothing: the hub counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tether_core::ProbeOutcome;
use tether_core::target::DEFAULT_DNS_REFRESH;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::membership::Wanted;
use crate::dns::Resolve;
use crate::probe::{ProbeResult, Prober};

/// The first probes of a fresh checker are spread over this much time.
const FIRST_PROBE_SPREAD: Duration = Duration::from_secs(1);
/// The pause between two probes of a report burst.
pub const BURST_GAP: Duration = Duration::from_millis(50);

/// What a probe task sends the hub: one probe's result.
#[derive(Debug)]
pub(super) struct Probed {
    /// The member's generation id.
    pub(super) id: u64,
    pub(super) result: ProbeResult,
    /// The last probe of a report burst: the target may be woken again.
    pub(super) ends_burst: bool,
    /// When the probe started: one that started before the checker
    /// recovered is no fresh look (see `impaired.rs`).
    pub(super) started: Instant,
}

/// Probes one target forever. The first probe comes at a random offset
/// within the first second (or the interval, if shorter): soon enough that
/// a fresh checker knows its pool quickly even with long intervals, spread
/// enough that a large pool is never probed in lockstep; later probes keep
/// that phase. A report burst (`trigger` says how many probes at most)
/// runs between two ticks and restarts the interval after it.
///
/// A checker runs one of these per member, 10,000 of them idle at almost
/// any time, so what one keeps while it waits is memory times 10,000: the
/// probe itself runs boxed (its future, hyper's and the timer's state,
/// is a few KiB), and the member's record is let go of once the prober is
/// made.
pub(super) async fn probe_loop(
    id: u64,
    member: Wanted,
    results: mpsc::Sender<Probed>,
    trigger: Arc<Trigger>,
    resolver: Arc<dyn Resolve>,
) {
    let (mut prober, interval) = {
        let Wanted {
            target,
            host,
            lookup,
        } = member;
        let refresh = lookup.unwrap_or(DEFAULT_DNS_REFRESH);
        let prober = Prober::new(&target).with_resolver(resolver, refresh);
        let prober = match &host {
            Some(host) => prober.with_host(host),
            None => prober,
        };
        (prober, target.probe.interval)
    };
    let offset = interval.min(FIRST_PROBE_SPREAD).mul_f64(fastrand::f64());
    let mut ticker = tokio::time::interval_at(Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let started = Instant::now();
                let result = Box::pin(prober.probe()).await;
                let probed = Probed { id, result, ends_burst: false, started };
                if results.send(probed).await.is_err() {
                    return;
                }
            }
            () = trigger.notify.notified() => {
                let probes = trigger.probes.load(Ordering::Acquire);
                if !Box::pin(burst(id, &mut prober, probes, &results)).await {
                    return;
                }
                ticker.reset();
            }
        }
    }
}

/// Up to `probes` (at least one) probes [`BURST_GAP`] apart, ending at the
/// first success; the last result says it ends the burst. False when the
/// hub is gone.
async fn burst(id: u64, prober: &mut Prober, probes: u32, results: &mpsc::Sender<Probed>) -> bool {
    let probes = probes.max(1);
    for n in 1..=probes {
        let started = Instant::now();
        let result = prober.probe().await;
        let ends_burst = n == probes || result.outcome == ProbeOutcome::Success;
        let probed = Probed {
            id,
            result,
            ends_burst,
            started,
        };
        if results.send(probed).await.is_err() {
            return false;
        }
        if ends_burst {
            break;
        }
        tokio::time::sleep(BURST_GAP).await;
    }
    true
}

/// Wakes a probe task for a report burst of at most `probes` probes. One
/// per member: a tokio channel would do, but its state is cache-padded,
/// ~700 bytes a member.
#[derive(Debug, Default)]
pub(super) struct Trigger {
    probes: AtomicU32,
    notify: Notify,
}

impl Trigger {
    pub(super) fn burst(&self, probes: u32) {
        self.probes.store(probes, Ordering::Release);
        // Kept as a permit if the task is busy probing: it bursts next.
        self.notify.notify_one();
    }
}
