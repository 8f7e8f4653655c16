//! Passive health: what one proxy learns from its own traffic.
//!
//! Consecutive connect failures or gateway errors (no response, response
//! timeout) to a member eject it locally at once, for a time that doubles on
//! each repeat up to a cap. The checker's verdict and the local ejection are
//! ANDed: an ejected member gets no new requests even if the checker still
//! calls it healthy. The ejection is also reported to the checker, which
//! re-probes and, if it confirms, tells every proxy.
//!
//! A member whose ejection ended is back: with slow start on, it ramps from
//! that moment as one that turned healthy does ([`Passive::back_at_ms`]),
//! since an ejected member is as cold as one the checker took out.
//!
//! State is per member, shared by all requests through atomics (no lock);
//! the success path only reads unless a failure streak was running.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::PassiveConfig;

#[derive(Debug, Default)]
pub struct Passive {
    failures: AtomicU32,
    /// Epoch ms until which the member is ejected; 0: never ejected.
    ejected_until_ms: AtomicU64,
    /// Ejections in the current streak; sets the next ejection's length.
    ejections: AtomicU32,
}

impl Passive {
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Epoch ms at which the member's last ejection ends or ended: where its
    /// slow-start ramp begins once it is back. `None`: never ejected.
    pub fn back_at_ms(&self) -> Option<u64> {
        match self.ejected_until_ms.load(Ordering::Relaxed) {
            0 => None,
            until => Some(until),
        }
    }

    /// A request to the member got a response head.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connect failure or gateway error. Returns the ejection time when
    /// this failure ejects the member. `may_eject` is false when the member
    /// is the last usable one: a proxy never ejects its last target.
    pub fn failure(
        &self,
        now_ms: u64,
        config: &PassiveConfig,
        may_eject: bool,
    ) -> Option<Duration> {
        if config.consecutive_failures == 0 {
            return None;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < config.consecutive_failures || !may_eject || self.is_ejected(now_ms) {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        // A member that stayed out of trouble for a whole max ejection since
        // its last one starts a new streak at the base time.
        let last_until = self.ejected_until_ms.load(Ordering::Relaxed);
        let quiet_since = now_ms.saturating_sub(last_until);
        if u128::from(quiet_since) > config.max_ejection.as_millis() {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let repeat = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let ejection = config
            .base_ejection
            .saturating_mul(1u32 << repeat)
            .min(config.max_ejection);
        let until = now_ms.saturating_add(u64::try_from(ejection.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        Some(ejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PassiveConfig {
        PassiveConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
        }
    }

    #[test]
    fn three_consecutive_failures_eject() {
        let p = Passive::default();
        let c = config();
        assert_eq!(p.failure(0, &c, true), None);
        assert_eq!(p.failure(1, &c, true), None);
        assert_eq!(p.failure(2, &c, true), Some(Duration::from_secs(10)));
        assert!(p.is_ejected(3));
        assert!(!p.is_ejected(10_002));
        assert_eq!(
            p.back_at_ms(),
            Some(10_002),
            "its ramp starts when it is back"
        );
    }

    #[test]
    fn a_member_never_ejected_has_no_ramp() {
        let p = Passive::default();
        assert_eq!(p.back_at_ms(), None);
        p.failure(0, &config(), true);
        assert_eq!(p.back_at_ms(), None);
    }

    #[test]
    fn a_success_resets_the_streak() {
        let p = Passive::default();
        let c = config();
        p.failure(0, &c, true);
        p.failure(1, &c, true);
        p.success();
        assert_eq!(p.failure(2, &c, true), None);
    }

    #[test]
    fn repeats_double_up_to_the_cap_and_a_quiet_spell_resets() {
        let p = Passive::default();
        let c = config();
        let eject = |t: u64| {
            p.failure(t, &c, true);
            p.failure(t, &c, true);
            p.failure(t, &c, true)
        };
        assert_eq!(eject(0), Some(Duration::from_secs(10)));
        assert_eq!(eject(10_000), Some(Duration::from_secs(20)));
        assert_eq!(eject(30_000), Some(Duration::from_secs(25)), "capped");
        // Quiet for longer than the max ejection after the last one ended.
        assert_eq!(eject(55_000 + 25_001), Some(Duration::from_secs(10)));
    }

    #[test]
    fn the_last_member_is_never_ejected() {
        let p = Passive::default();
        let c = config();
        for t in 0..10 {
            assert_eq!(p.failure(t, &c, false), None);
        }
        assert!(!p.is_ejected(10));
    }

    #[test]
    fn zero_turns_it_off() {
        let p = Passive::default();
        let c = PassiveConfig {
            consecutive_failures: 0,
            ..config()
        };
        for t in 0..10 {
            assert_eq!(p.failure(t, &c, true), None);
        }
    }
}
