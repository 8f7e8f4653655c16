//! One checker's follower: opens its stream, applies what comes in order,
//! asks again on a gap, reconnects with backoff, and tells the merger its
//! whole view after every change.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use tether_core::{Applied, CheckerView, HealthUpdate};
use tokio::sync::mpsc;

use super::Event;
use crate::source::{Endpoint, Updates};
use crate::stats::ProxyStats;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// At most this long between two attempts on one checker, so a checker
/// that comes back is followed within about a second (one connect and a
/// Watch per proxy per second is nothing to a checker).
const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// Follows one checker for as long as the merger listens.
pub(super) async fn follow(
    id: usize,
    endpoint: Endpoint,
    tx: mpsc::Sender<Event>,
    stats: Arc<ProxyStats>,
) {
    let label = endpoint.label();
    let mut follower = Follower {
        id,
        view: CheckerView::new(),
        tx,
    };
    let mut subscriptions = 0u64;
    let mut failures = 0u32;
    loop {
        let end = match endpoint.open().await {
            Ok(updates) => {
                info!(target: "proxy", "health feed: subscribed to {label}");
                if subscriptions > 0 {
                    stats.health_stream_reconnects.inc();
                }
                subscriptions += 1;
                follower.follow(updates).await
            }
            Err(e) => End::Failed {
                synced: false,
                reason: e,
            },
        };
        match end {
            End::Gap { have, got } => {
                warn!(target: "proxy", "health feed: version gap from {label} (have {have:?}, got v{got}); asking again");
                continue;
            }
            End::MergerGone => return,
            End::Failed { synced, reason } => {
                // "keeping the last table" is what tests and the fault suite
                // wait for; with other live checkers their merge rules.
                warn!(target: "proxy", "health feed: {label}: {reason}; its view no longer counts (keeping the last table while no checker is live)");
                if follower.view.stream_up {
                    follower.view.stream_up = false;
                    if !follower.send().await {
                        return;
                    }
                }
                if synced {
                    // This checker worked: start the backoff afresh.
                    failures = 0;
                }
            }
        }
        let wait = backoff(failures);
        failures = failures.saturating_add(1);
        debug!(target: "proxy", "health feed: retrying {label} in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// Full-jitter exponential backoff: a random wait in [d/2, d] where d
/// doubles per failed attempt up to the cap.
fn backoff(failures: u32) -> Duration {
    let d = BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_CAP);
    d.mul_f64(0.5 + fastrand::f64() / 2.0)
}

enum End {
    Gap { have: Option<u64>, got: u64 },
    Failed { synced: bool, reason: String },
    MergerGone,
}

struct Follower {
    id: usize,
    view: CheckerView,
    tx: mpsc::Sender<Event>,
}

impl Follower {
    pub(super) async fn follow(&mut self, mut updates: Updates) -> End {
        let mut synced = false;
        loop {
            let update = match updates.next().await {
                Ok(Some(u)) => u,
                Ok(None) => {
                    return End::Failed {
                        synced,
                        reason: "stream ended".to_owned(),
                    };
                }
                Err(reason) => return End::Failed { synced, reason },
            };
            let is_snapshot = matches!(update.kind, tether_core::UpdateKind::Snapshot { .. });
            if !synced && !is_snapshot {
                // A subscription must start with a snapshot.
                return End::Gap {
                    have: self.view.pool.version(),
                    got: update.version,
                };
            }
            synced = true;
            match self.apply(update) {
                Ok(false) => {}
                Ok(true) => {
                    if !self.send().await {
                        return End::MergerGone;
                    }
                }
                Err(gap) => return gap,
            }
        }
    }

    /// Applies one update; `Ok(true)` when the view changed (a stream that
    /// just came up is a change even if its snapshot is the one it had).
    fn apply(&mut self, update: HealthUpdate) -> Result<bool, End> {
        let came_up = !self.view.stream_up;
        self.view.stream_up = true;
        // The pool view also keeps what the checker says of itself: a
        // snapshot's checker state, or a versioned `UpdateKind::Checker`
        // (impaired or recovered), which changes whether it is live.
        match self.view.pool.apply(update) {
            Ok(Applied::Changed) => Ok(true),
            Ok(Applied::Stale) => Ok(came_up),
            Err(gap) => Err(End::Gap {
                have: gap.have,
                got: gap.got,
            }),
        }
    }

    /// Tells the merger; `false` when it is gone.
    async fn send(&self) -> bool {
        let event = Event::View {
            id: self.id,
            view: Arc::new(self.view.clone()),
        };
        self.tx.send(event).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for round in 0..40 {
            let d = backoff(round);
            assert!(d <= BACKOFF_CAP, "{d:?}");
            assert!(d >= BACKOFF_BASE / 2, "{d:?}");
        }
        assert!(backoff(20) >= BACKOFF_CAP / 2);
    }
}
