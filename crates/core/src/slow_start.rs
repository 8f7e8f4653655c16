//! Slow start: a member that turns healthy again takes new requests at a
//! share that rises linearly over a window (HAProxy's `slowstart`, Envoy's
//! slow start), so its cold caches, pools and JIT warm up under a trickle
//! rather than under a full share at once.
//!
//! A member's weight is in parts of [`FULL`]: [`weight`] computes it from
//! when the member turned healthy, and a balancer offers a ramping member a
//! turn and lets it take it with that probability ([`admits`], given a
//! uniform draw). A member at `FULL` never costs a draw.

use std::time::Duration;

/// The weight of a member that is not ramping.
pub const FULL: u32 = 1 << 16;

/// The least weight of a ramping member (1/256 of a full share): a healthy
/// member always takes some traffic, even in the first instant.
pub const MIN: u32 = FULL / 256;

/// The weight at `now_ms` of a member that turned healthy at `since_ms`
/// (`None`: not ramping), with a ramp of `window` (`None`: slow start off).
/// Rises linearly from [`MIN`] to [`FULL`]; a clock that went back counts
/// as the start of the ramp.
pub fn weight(since_ms: Option<u64>, now_ms: u64, window: Option<Duration>) -> u32 {
    let (Some(since_ms), Some(window)) = (since_ms, window) else {
        return FULL;
    };
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let elapsed = now_ms.saturating_sub(since_ms);
    if elapsed >= window_ms {
        return FULL;
    }
    // elapsed < window_ms, so the quotient is below FULL.
    let w = u128::from(elapsed) * u128::from(FULL) / u128::from(window_ms);
    let w = u32::try_from(w).unwrap_or(FULL).max(MIN);
    debug_assert!((MIN..=FULL).contains(&w));
    w
}

/// Whether a member of weight `weight` takes a turn, given a uniform
/// `draw`: with probability `weight / FULL` (always at `FULL`).
pub fn admits(weight: u32, draw: u64) -> bool {
    weight >= FULL || ((draw >> 48) as u32) < weight
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Option<Duration> = Some(Duration::from_secs(10));

    #[test]
    fn off_or_not_ramping_is_full() {
        assert_eq!(weight(None, 5_000, W), FULL);
        assert_eq!(weight(Some(1_000), 5_000, None), FULL);
    }

    #[test]
    fn rises_linearly_over_the_window() {
        let at = |elapsed: u64| weight(Some(1_000), 1_000 + elapsed, W);
        assert_eq!(at(0), MIN);
        assert_eq!(at(2_500), FULL / 4);
        assert_eq!(at(5_000), FULL / 2);
        assert_eq!(at(7_500), FULL * 3 / 4);
        assert_eq!(at(10_000), FULL);
        assert_eq!(at(1_000_000), FULL);
        let mut last = 0;
        for e in (0..10_000).step_by(37) {
            let w = at(e);
            assert!(w >= last, "weight fell at {e} ms");
            last = w;
        }
    }

    #[test]
    fn a_clock_that_went_back_starts_the_ramp() {
        assert_eq!(weight(Some(9_000), 1_000, W), MIN);
    }

    #[test]
    fn a_huge_window_neither_overflows_nor_panics() {
        let w = weight(Some(1), u64::MAX, Some(Duration::MAX));
        assert!((MIN..FULL).contains(&w));
    }

    #[test]
    fn admits_with_the_weights_probability() {
        assert!(admits(FULL, u64::MAX));
        // Draws spread over the whole range: the admitted share is the
        // weight's.
        let n = 1u64 << 12;
        let step = u64::MAX / n;
        for w in [MIN, FULL / 4, FULL / 2, FULL - 1] {
            let got = (0..n).filter(|i| admits(w, i * step)).count() as u64;
            let want = n * u64::from(w) / u64::from(FULL);
            assert!(
                got.abs_diff(want) <= 1,
                "weight {w}: {got} of {n}, want {want}"
            );
        }
        assert!(!admits(0, 0));
    }
}
