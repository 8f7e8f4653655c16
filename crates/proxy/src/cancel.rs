//! Requests their clients abandon after a backend took them. A client that
//! resets HTTP/2 streams as soon as they are sent (a Rapid Reset variant),
//! or leaves in the middle of every answer, costs the backends a full
//! request each; if nothing counts that, the attack is invisible.
//!
//! [`Reached`] is armed when a request is handed to a backend connection
//! and disarmed when its answer has been read to the end, or failed on the
//! backend's side. Dropped armed, the client went away (or was cut for
//! `send_timeout`): `tether_requests_cancelled_total{target}` counts it,
//! and the tally of the connection it came on, when one is in scope
//! ([`tallied`]: HTTP/2, see `h2`), logs it once.
//!
//! The same span is the member's count of requests in flight, which least
//! request balances by: counted in by `new`, out by `done` or by the drop,
//! whichever comes first, so no path (an error, a cancelled client, a
//! tunnel, a panic unwinding) leaves a request counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::stats::MemberStats;

tokio::task_local! {
    /// The client connection's count of cancelled requests, where the
    /// code polling a request set one (`h2`'s stream tasks). Kept here,
    /// not there, so the count needs no import up into the server.
    static TALLY: Arc<AtomicU64>;
}

/// Runs `f` with requests dropped armed inside it also counted in `tally`.
pub fn tallied<R>(tally: &Arc<AtomicU64>, f: impl FnOnce() -> R) -> R {
    TALLY.sync_scope(tally.clone(), f)
}

/// A request a backend has, until its answer is done.
#[derive(Debug)]
pub struct Reached(Option<Arc<MemberStats>>);

impl Reached {
    /// Armed: the request is about to go to the member counted by `stats`.
    pub fn new(stats: &Arc<MemberStats>) -> Reached {
        stats.begin_request();
        Reached(Some(stats.clone()))
    }

    /// The answer is done (read to its end, or failed on the backend's
    /// side): nothing to count.
    pub fn done(&mut self) {
        if let Some(stats) = self.0.take() {
            stats.end_request();
        }
    }

    /// Whether the request still waits for its answer to be done.
    pub fn is_armed(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Reached {
    fn drop(&mut self) {
        if let Some(stats) = self.0.take() {
            stats.end_request();
            stats.cancelled.inc();
            let _ = TALLY.try_with(|t| t.fetch_add(1, Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_left_unfinished_counts() {
        let stats = Arc::new(MemberStats::default());
        drop(Reached::new(&stats));
        assert_eq!(stats.cancelled.get(), 1);
        let mut done = Reached::new(&stats);
        done.done();
        assert!(!done.is_armed());
        drop(done);
        assert_eq!(stats.cancelled.get(), 1);
    }

    #[test]
    fn a_request_is_in_flight_until_its_answer_is_done_or_dropped() {
        let stats = Arc::new(MemberStats::default());
        let mut a = Reached::new(&stats);
        let b = Reached::new(&stats);
        assert_eq!(stats.in_flight(), 2);
        a.done();
        assert_eq!(stats.in_flight(), 1);
        a.done();
        drop(a);
        assert_eq!(stats.in_flight(), 1, "counted out once");
        drop(b);
        assert_eq!(stats.in_flight(), 0);
    }

    #[test]
    fn a_cancel_inside_a_tally_counts_there_too() {
        let stats = Arc::new(MemberStats::default());
        let tally = Arc::new(AtomicU64::new(0));
        tallied(&tally, || drop(Reached::new(&stats)));
        drop(Reached::new(&stats));
        tallied(&tally, || Reached::new(&stats).done());
        assert_eq!(tally.load(Ordering::Relaxed), 1);
        assert_eq!(stats.cancelled.get(), 2);
    }
}
