//! The sticky decision: send a client back to the member it used last, if
//! that was recent and the member is still healthy; otherwise the balancer
//! (round robin unless the caller brings another, see `decide_with`).
//!
//! A draining member keeps its sticky clients (that is what draining is
//! for: they finish their sessions there) but gets no new ones, so a pin
//! to it is honoured while round robin passes over it. Strict mode too
//! honours such a pin: the member is still up.
//!
//! The hint comes from request headers. It is only ever matched against pool
//! members (by name or url), so a header value can never become an address.

use std::time::Duration;

use crate::balance::RoundRobin;
use crate::table::RoutingTable;

/// Default time a client stays pinned to the member it used last.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// A last-use further in the future than this is invalid (clock skew is
/// tolerated up to here; beyond it the value is forged or broken).
pub const MAX_FUTURE_SKEW_MS: u64 = 5_000;

/// A client's claim of which member it used and when, as parsed from
/// `x-target-server` and `x-target-server-last-use`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StickyHint<'a> {
    pub target: &'a str,
    pub last_use_ms: u64,
}

impl<'a> StickyHint<'a> {
    /// Both values must be present and the last-use must be a plain decimal
    /// epoch in milliseconds; anything else yields no hint.
    pub fn parse(target: Option<&'a str>, last_use: Option<&str>) -> Option<Self> {
        let target = target?.trim();
        let last_use = last_use?.trim();
        if target.is_empty() || last_use.is_empty() || !last_use.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(StickyHint {
            target,
            last_use_ms: last_use.parse().ok()?,
        })
    }

    /// True when the last use lies within `window` before `now_ms` and not
    /// more than `MAX_FUTURE_SKEW_MS` after it.
    pub fn is_fresh(&self, now_ms: u64, window: Duration) -> bool {
        if self.last_use_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
            return false;
        }
        let age = now_ms.saturating_sub(self.last_use_ms);
        u128::from(age) <= window.as_millis()
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The hinted member: fresh hint, member healthy (draining or not).
    Sticky(usize),
    /// The next member of the table's rotation (healthy, not draining) in
    /// round-robin order.
    Balanced(usize),
    /// Strict stickiness: the hint is fresh and names a member, but that
    /// member is down (unhealthy or unavailable); the client is refused
    /// rather than moved.
    PinnedDown,
    /// Nothing is healthy.
    NoneHealthy,
}

impl Pick {
    pub fn index(self) -> Option<usize> {
        match self {
            Pick::Sticky(i) | Pick::Balanced(i) => Some(i),
            Pick::PinnedDown | Pick::NoneHealthy => None,
        }
    }
}

/// Decides where a request goes. O(1) in the pool size: one hash lookup and
/// at most one round-robin step.
pub fn decide<T>(
    hint: Option<&StickyHint<'_>>,
    now_ms: u64,
    window: Duration,
    table: &RoutingTable<T>,
    rr: &RoundRobin,
) -> Pick {
    decide_available(hint, now_ms, window, table, rr, |_| true)
}

/// Like `decide`, also passing over members for which `available` does not
/// hold (locally ejected ones): a pinned client is re-balanced, round robin
/// skips them.
pub fn decide_available<T>(
    hint: Option<&StickyHint<'_>>,
    now_ms: u64,
    window: Duration,
    table: &RoutingTable<T>,
    rr: &RoundRobin,
    available: impl Fn(usize) -> bool,
) -> Pick {
    decide_pinned(hint, now_ms, window, false, table, rr, available)
}

/// Like `decide_available`; with `strict`, a fresh hint naming a member
/// that is down gives `Pick::PinnedDown` instead of round robin. A stale
/// hint, or one naming no member, still falls back to round robin: only a
/// live pin is kept at the price of an error.
pub fn decide_pinned<T>(
    hint: Option<&StickyHint<'_>>,
    now_ms: u64,
    window: Duration,
    strict: bool,
    table: &RoutingTable<T>,
    rr: &RoundRobin,
    available: impl Fn(usize) -> bool,
) -> Pick {
    decide_with(hint, now_ms, window, strict, table, &available, || {
        rr.pick_available(table, &available)
    })
}

/// Like `decide_pinned`, with the balancer's choice for a request that is
/// not pinned left to `balance` (round robin or least request, with slow
/// start): stickiness comes first whatever the policy.
pub fn decide_with<T>(
    hint: Option<&StickyHint<'_>>,
    now_ms: u64,
    window: Duration,
    strict: bool,
    table: &RoutingTable<T>,
    available: impl Fn(usize) -> bool,
    balance: impl FnOnce() -> Option<usize>,
) -> Pick {
    if let Some(hint) = hint
        && hint.is_fresh(now_ms, window)
        && let Some(i) = table.lookup(hint.target)
    {
        if table.member(i).is_some_and(|m| m.healthy) && available(i) {
            return Pick::Sticky(i);
        }
        if strict {
            return Pick::PinnedDown;
        }
    }
    match balance() {
        Some(i) => Pick::Balanced(i),
        None => Pick::NoneHealthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Member;

    const NOW: u64 = 1_700_000_000_000;
    const W: Duration = DEFAULT_WINDOW;

    fn table(health: &[bool]) -> RoutingTable<()> {
        draining_table(health, &[])
    }

    fn draining_table(health: &[bool], draining: &[bool]) -> RoutingTable<()> {
        let members = health
            .iter()
            .enumerate()
            .map(|(i, &healthy)| Member {
                name: format!("app-{i}"),
                url: format!("http://127.0.0.1:500{i}"),
                healthy,
                data: (),
            })
            .collect();
        RoutingTable::with_draining(Some(1), members, draining.to_vec())
    }

    #[test]
    fn a_live_pin_comes_before_any_balancer() {
        let t = table(&[true, true, true]);
        let pinned = hint("app-2", NOW - 1000);
        let never = || -> Option<usize> { panic!("a pinned request asked the balancer") };
        assert_eq!(
            decide_with(Some(&pinned), NOW, W, false, &t, |_| true, never),
            Pick::Sticky(2)
        );
        // Unpinned, stale, or pinned to a member that is down: the
        // balancer's choice.
        let stale = hint("app-2", NOW - 31_000);
        for h in [None, Some(&stale)] {
            assert_eq!(
                decide_with(h, NOW, W, false, &t, |_| true, || Some(0)),
                Pick::Balanced(0)
            );
        }
        assert_eq!(
            decide_with(Some(&pinned), NOW, W, false, &t, |i| i != 2, || Some(1)),
            Pick::Balanced(1)
        );
        assert_eq!(
            decide_with(None, NOW, W, false, &t, |_| true, || None),
            Pick::NoneHealthy
        );
    }

    #[test]
    fn a_draining_member_keeps_its_sticky_clients_and_gets_no_new_ones() {
        let t = draining_table(&[true, true, true], &[false, false, true]);
        let rr = RoundRobin::new();
        let pinned = hint("app-2", NOW - 1000);
        for _ in 0..6 {
            assert_eq!(decide(Some(&pinned), NOW, W, &t, &rr), Pick::Sticky(2));
            assert_ne!(decide(None, NOW, W, &t, &rr), Pick::Balanced(2));
            // A stale pin is a new client.
            let stale = hint("app-2", NOW - 31_000);
            assert_ne!(decide(Some(&stale), NOW, W, &t, &rr), Pick::Balanced(2));
        }
        // Strict: the draining member is up, so the pin holds.
        assert_eq!(
            decide_pinned(Some(&pinned), NOW, W, true, &t, &rr, |_| true),
            Pick::Sticky(2)
        );
    }

    #[test]
    fn a_draining_member_that_is_down_gets_nothing() {
        let t = draining_table(&[true, false], &[false, true]);
        let rr = RoundRobin::new();
        let pinned = hint("app-1", NOW);
        for _ in 0..4 {
            assert_eq!(decide(Some(&pinned), NOW, W, &t, &rr), Pick::Balanced(0));
            assert_eq!(decide(None, NOW, W, &t, &rr), Pick::Balanced(0));
        }
        assert_eq!(
            decide_pinned(Some(&pinned), NOW, W, true, &t, &rr, |_| true),
            Pick::PinnedDown
        );
        let none = draining_table(&[false, false], &[true, false]);
        assert_eq!(decide(Some(&pinned), NOW, W, &none, &rr), Pick::NoneHealthy);
    }

    #[test]
    fn when_every_healthy_member_drains_new_clients_still_get_one() {
        let t = draining_table(&[true, true], &[true, true]);
        let rr = RoundRobin::new();
        let picks: Vec<_> = (0..4).map(|_| decide(None, NOW, W, &t, &rr)).collect();
        assert_eq!(
            picks,
            [
                Pick::Balanced(0),
                Pick::Balanced(1),
                Pick::Balanced(0),
                Pick::Balanced(1)
            ]
        );
    }

    fn hint(target: &str, last_use_ms: u64) -> StickyHint<'_> {
        StickyHint {
            target,
            last_use_ms,
        }
    }

    #[test]
    fn parse_needs_both_headers_and_a_decimal_epoch() {
        assert_eq!(
            StickyHint::parse(Some("a"), Some("123")),
            Some(hint("a", 123))
        );
        assert_eq!(StickyHint::parse(Some("a"), None), None);
        assert_eq!(StickyHint::parse(None, Some("123")), None);
        assert_eq!(StickyHint::parse(Some("a"), Some("-5")), None);
        assert_eq!(StickyHint::parse(Some("a"), Some("12.5")), None);
        assert_eq!(StickyHint::parse(Some("a"), Some("soon")), None);
        assert_eq!(StickyHint::parse(Some(""), Some("1")), None);
        assert_eq!(
            StickyHint::parse(Some("a"), Some("99999999999999999999999")),
            None,
            "overflow is unparsable, not a panic"
        );
    }

    #[test]
    fn freshness_window_and_future_skew() {
        assert!(hint("a", NOW).is_fresh(NOW, W));
        assert!(hint("a", NOW - 30_000).is_fresh(NOW, W));
        assert!(!hint("a", NOW - 30_001).is_fresh(NOW, W));
        assert!(hint("a", NOW + 5_000).is_fresh(NOW, W));
        assert!(!hint("a", NOW + 5_001).is_fresh(NOW, W));
        assert!(!hint("a", u64::MAX).is_fresh(NOW, W));
        assert!(!hint("a", 0).is_fresh(NOW, W));
    }

    #[test]
    fn fresh_hint_by_name_or_url_sticks() {
        let t = table(&[true, true, true]);
        let rr = RoundRobin::new();
        for _ in 0..5 {
            let by_name = hint("app-2", NOW - 1000);
            assert_eq!(decide(Some(&by_name), NOW, W, &t, &rr), Pick::Sticky(2));
            let by_url = hint("http://127.0.0.1:5001", NOW);
            assert_eq!(decide(Some(&by_url), NOW, W, &t, &rr), Pick::Sticky(1));
        }
    }

    #[test]
    fn stale_future_or_unknown_hints_fall_back_to_round_robin() {
        let t = table(&[true, true]);
        let rr = RoundRobin::new();
        let cases = [
            hint("app-1", NOW - 31_000),
            hint("app-1", NOW + 60_000),
            hint("http://10.0.0.1:80", NOW),
            hint("app-9", NOW),
        ];
        for h in cases {
            assert!(matches!(
                decide(Some(&h), NOW, W, &t, &rr),
                Pick::Balanced(_)
            ));
        }
    }

    #[test]
    fn unhealthy_pinned_member_is_rebalanced() {
        let t = table(&[true, false]);
        let rr = RoundRobin::new();
        let h = hint("app-1", NOW);
        assert_eq!(decide(Some(&h), NOW, W, &t, &rr), Pick::Balanced(0));
    }

    #[test]
    fn unavailable_pinned_member_is_rebalanced() {
        let t = table(&[true, true]);
        let rr = RoundRobin::new();
        let h = hint("app-1", NOW);
        for _ in 0..4 {
            assert_eq!(
                decide_available(Some(&h), NOW, W, &t, &rr, |i| i != 1),
                Pick::Balanced(0)
            );
        }
    }

    #[test]
    fn strict_refuses_a_live_pin_to_a_down_member() {
        let t = table(&[true, false, true]);
        let rr = RoundRobin::new();
        let down = hint("app-1", NOW);
        let pinned = |h: &StickyHint<'_>, avail: fn(usize) -> bool| {
            decide_pinned(Some(h), NOW, W, true, &t, &rr, avail)
        };
        assert_eq!(pinned(&down, |_| true), Pick::PinnedDown);
        assert_eq!(pinned(&hint("app-2", NOW), |i| i != 2), Pick::PinnedDown);
        assert_eq!(pinned(&hint("app-2", NOW), |_| true), Pick::Sticky(2));
        // Stale or unknown pins are no pins: round robin as usual.
        assert!(matches!(
            pinned(&hint("app-1", NOW - 31_000), |_| true),
            Pick::Balanced(_)
        ));
        assert!(matches!(
            pinned(&hint("app-9", NOW), |_| true),
            Pick::Balanced(_)
        ));
        assert_eq!(Pick::PinnedDown.index(), None);
    }

    #[test]
    fn nothing_healthy() {
        let t = table(&[false, false]);
        let rr = RoundRobin::new();
        assert_eq!(
            decide(Some(&hint("app-0", NOW)), NOW, W, &t, &rr),
            Pick::NoneHealthy
        );
        assert_eq!(decide(None, NOW, W, &t, &rr), Pick::NoneHealthy);
    }

    #[test]
    fn no_hint_is_round_robin() {
        let t = table(&[true, true, true]);
        let rr = RoundRobin::new();
        let picks: Vec<_> = (0..3)
            .map(|_| decide(None, NOW, W, &t, &rr).index())
            .collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2)]);
    }
}
