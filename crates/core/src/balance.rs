//! Choosing a member for a new client, over the members of whatever table
//! is current that take new clients: the healthy ones that are not
//! draining (see `RoutingTable::rotation` for when every healthy member
//! drains).
//!
//! Two policies: round robin (the default), and least request by the power
//! of two random choices: two members drawn at random, the one with fewer
//! requests in flight wins. Both honour slow start: a ramping member
//! offered a turn takes it with its weight's probability (see
//! `slow_start`). Each pick is O(1) in the common case, takes no lock and
//! allocates nothing: the state is two atomics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::slow_start::{self, FULL};
use crate::table::RoutingTable;

/// How new clients are spread over the rotation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Each member in turn.
    #[default]
    RoundRobin,
    /// Power of two random choices by requests in flight.
    LeastRequest,
}

impl Policy {
    /// The config spelling: `"round_robin"` or `"least_request"`.
    pub fn parse(raw: &str) -> Option<Policy> {
        match raw {
            "round_robin" => Some(Policy::RoundRobin),
            "least_request" => Some(Policy::LeastRequest),
            _ => None,
        }
    }
}

/// A round-robin cursor and a source of random draws that outlive routing
/// tables, so a health change does not send the next requests back to the
/// first member.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
    draws: Draws,
}

/// Uniform 64-bit draws without a lock: SplitMix64 over an atomic counter.
/// Spreads load; not for anything an attacker must not predict.
#[derive(Debug, Default)]
struct Draws {
    state: AtomicU64,
}

impl Draws {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    fn next(&self) -> u64 {
        // Relaxed: concurrent callers get distinct counter values, which is
        // all the mix needs.
        let mut z = self
            .state
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next position in the table's rotation, or `None` when none is
    /// healthy.
    pub fn pick<T>(&self, table: &RoutingTable<T>) -> Option<usize> {
        self.pick_available(table, |_| true)
    }

    /// The next member of the rotation for which `available` holds (the
    /// proxy uses it to pass over locally ejected members). When it holds
    /// for none, the plain round-robin choice: a healthy member is better
    /// than no answer. Costs one step when the next member is available.
    pub fn pick_available<T>(
        &self,
        table: &RoutingTable<T>,
        available: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.pick_weighted(table, available, |_| FULL)
    }

    /// Like `pick_available`, with slow start: a member of `weight` below
    /// [`FULL`] takes the turn offered to it with that probability, and a
    /// turn it declines goes on to the next member. When every member
    /// declines, the first available one offered: a ramping member is
    /// better than no answer.
    pub fn pick_weighted<T>(
        &self,
        table: &RoutingTable<T>,
        available: impl Fn(usize) -> bool,
        weight: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        let rotation = table.rotation();
        if rotation.is_empty() {
            return None;
        }
        // Relaxed is enough: the counter only spreads load, it orders nothing.
        // An unavailable member costs another step of the shared cursor, so
        // its turns spread over the others instead of all going to the
        // member after it.
        let len = rotation.len();
        let mut fallback = None;
        let mut choice = rotation[self.next.fetch_add(1, Ordering::Relaxed) % len];
        for step in 1..=len {
            if available(choice) {
                if self.admits(weight(choice)) {
                    return Some(choice);
                }
                fallback.get_or_insert(choice);
            }
            if step < len {
                choice = rotation[self.next.fetch_add(1, Ordering::Relaxed) % len];
            }
        }
        Some(fallback.unwrap_or(choice))
    }

    /// Least request by the power of two random choices: of two distinct
    /// members of the rotation drawn at random, the one with fewer requests
    /// `in_flight` (a tie: the first drawn). Slow start thins the winner: a
    /// ramping winner takes the request with its `weight`'s probability,
    /// else the other does. When either is not `available`, round robin
    /// (`pick_weighted`) picks instead: ejections are rare, and it passes
    /// over them.
    pub fn least_request<T>(
        &self,
        table: &RoutingTable<T>,
        available: impl Fn(usize) -> bool,
        weight: impl Fn(usize) -> u32,
        in_flight: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        let rotation = table.rotation();
        let len = rotation.len();
        if len < 2 {
            return rotation.first().copied();
        }
        let draw = self.draws.next();
        // Two independent halves of one draw; the modulo bias is below
        // 2^-32 of a share for any pool size that fits in memory.
        let a = (draw as u32 as usize) % len;
        let b = (a + 1 + ((draw >> 32) as usize) % (len - 1)) % len;
        let (a, b) = (rotation[a], rotation[b]);
        debug_assert_ne!(a, b);
        if !available(a) || !available(b) {
            return self.pick_weighted(table, available, weight);
        }
        let (winner, other) = if in_flight(b) < in_flight(a) {
            (b, a)
        } else {
            (a, b)
        };
        if self.admits(weight(winner)) {
            Some(winner)
        } else {
            Some(other)
        }
    }

    /// A ramping member's coin: drawn only below [`FULL`], so a pool without
    /// slow start never touches the draws.
    fn admits(&self, weight: u32) -> bool {
        weight >= FULL || slow_start::admits(weight, self.draws.next())
    }

    /// Like `pick`, but never `avoid` (a position in this `table`; `None`
    /// when the member to avoid is no longer in it). Used to retry a failed
    /// attempt somewhere else; `None` when no other member is healthy. A
    /// draining member is tried only when no other member of the rotation
    /// is left: the request has to go somewhere.
    pub fn pick_other<T>(&self, table: &RoutingTable<T>, avoid: Option<usize>) -> Option<usize> {
        let other = |i: &usize| Some(*i) != avoid;
        let mut pool = table.rotation();
        let mut candidates = pool.iter().filter(|i| other(i)).count();
        if candidates == 0 {
            pool = table.healthy();
            candidates = pool.iter().filter(|i| other(i)).count();
        }
        if candidates == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % candidates;
        pool.iter().copied().filter(other).nth(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Member;
    use proptest::prelude::*;

    fn table(health: &[bool]) -> RoutingTable<()> {
        draining_table(health, &[])
    }

    fn draining_table(health: &[bool], draining: &[bool]) -> RoutingTable<()> {
        let members = health
            .iter()
            .enumerate()
            .map(|(i, &healthy)| Member {
                name: format!("t{i}"),
                url: format!("http://t{i}:80"),
                healthy,
                data: (),
            })
            .collect();
        RoutingTable::with_draining(None, members, draining.to_vec())
    }

    #[test]
    fn draining_members_get_no_new_clients() {
        let rr = RoundRobin::new();
        let t = draining_table(&[true, true, true], &[false, true, false]);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&t).expect("healthy")).collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
        for _ in 0..6 {
            assert_ne!(rr.pick_available(&t, |i| i != 0), Some(1));
        }
    }

    #[test]
    fn draining_and_unhealthy_gets_nothing() {
        let rr = RoundRobin::new();
        let t = draining_table(&[true, false], &[false, true]);
        for _ in 0..4 {
            assert_eq!(rr.pick(&t), Some(0));
            assert_eq!(rr.pick_other(&t, Some(0)), None);
        }
        let t = draining_table(&[false, false], &[true, true]);
        assert_eq!(rr.pick(&t), None);
    }

    #[test]
    fn when_every_healthy_member_drains_round_robin_uses_them() {
        let rr = RoundRobin::new();
        let t = draining_table(&[true, true, false], &[true, true, false]);
        let picks: Vec<_> = (0..4).map(|_| rr.pick(&t).expect("an answer")).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn a_retry_prefers_members_that_do_not_drain() {
        let rr = RoundRobin::new();
        let t = draining_table(&[true, true, true], &[false, true, false]);
        for _ in 0..6 {
            assert_eq!(rr.pick_other(&t, Some(0)), Some(2));
        }
        // Only a draining member is left: the retry goes there.
        let t = draining_table(&[true, true], &[false, true]);
        assert_eq!(rr.pick_other(&t, Some(0)), Some(1));
    }

    #[test]
    fn cycles_through_healthy_members() {
        let rr = RoundRobin::new();
        let t = table(&[true, false, true, true]);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&t).expect("healthy")).collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
    }

    #[test]
    fn none_when_nothing_is_healthy() {
        let rr = RoundRobin::new();
        assert_eq!(rr.pick(&table(&[false, false])), None);
        assert_eq!(rr.pick(&table(&[])), None);
    }

    #[test]
    fn pick_available_passes_over_unavailable_members() {
        let rr = RoundRobin::new();
        let t = table(&[true, true, true]);
        for _ in 0..9 {
            assert_ne!(rr.pick_available(&t, |i| i != 1), Some(1));
        }
        // Nothing available: still an answer.
        assert!(rr.pick_available(&t, |_| false).is_some());
    }

    #[test]
    fn pick_other_avoids_the_failed_member() {
        let rr = RoundRobin::new();
        let t = table(&[true, true, true]);
        for _ in 0..10 {
            assert_ne!(rr.pick_other(&t, Some(1)), Some(1));
        }
        assert_eq!(rr.pick_other(&table(&[true, false]), Some(0)), None);
        assert_eq!(rr.pick_other(&table(&[true, false]), None), Some(0));
    }

    #[test]
    fn policies_parse_by_their_config_names() {
        assert_eq!(Policy::parse("round_robin"), Some(Policy::RoundRobin));
        assert_eq!(Policy::parse("least_request"), Some(Policy::LeastRequest));
        assert_eq!(Policy::parse("leastconn"), None);
        assert_eq!(Policy::default(), Policy::RoundRobin);
    }

    fn shares(n: usize, members: usize, mut pick: impl FnMut() -> Option<usize>) -> Vec<usize> {
        let mut counts = vec![0; members];
        for _ in 0..n {
            counts[pick().expect("an answer")] += 1;
        }
        counts
    }

    #[test]
    fn a_ramping_member_takes_its_weights_share_of_its_turns() {
        let rr = RoundRobin::new();
        let t = table(&[true, true, true]);
        // Member 1 at a quarter takes a quarter of the turns offered to it,
        // and the ones it declines go to the others: its share is that of a
        // weight of 1/4 beside two of 1, 1/9.
        let counts = shares(30_000, 3, || {
            rr.pick_weighted(&t, |_| true, |i| if i == 1 { FULL / 4 } else { FULL })
        });
        assert!((3_000..3_700).contains(&counts[1]), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 30_000);
        // Full weight: plain round robin, exactly.
        let counts = shares(30_000, 3, || rr.pick_weighted(&t, |_| true, |_| FULL));
        assert_eq!(counts, [10_000; 3]);
    }

    #[test]
    fn ramping_members_still_answer_when_they_are_all_there_is() {
        let rr = RoundRobin::new();
        let t = table(&[true, true]);
        for _ in 0..100 {
            assert!(rr.pick_weighted(&t, |_| true, |_| 0).is_some());
        }
        // A declined but available member beats an unavailable one.
        for _ in 0..100 {
            assert_eq!(rr.pick_weighted(&t, |i| i == 1, |_| 0), Some(1));
        }
    }

    #[test]
    fn least_request_never_picks_the_busiest_of_three() {
        let rr = RoundRobin::new();
        let t = table(&[true, true, true, false]);
        let busy = [5, 0, 1, 0];
        let counts = shares(3_000, 4, || {
            rr.least_request(&t, |_| true, |_| FULL, |i| busy[i])
        });
        assert_eq!(counts[0], 0, "{counts:?}");
        assert_eq!(counts[3], 0, "an unhealthy member: {counts:?}");
        // Member 1 wins every pair it is in (2 of 3 pairs), member 2 the
        // pair with member 0.
        assert!((1_850..2_150).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn least_request_spreads_evenly_when_loads_are_equal() {
        let rr = RoundRobin::new();
        let t = table(&[true, true, true, true]);
        let counts = shares(40_000, 4, || {
            rr.least_request(&t, |_| true, |_| FULL, |_| 0)
        });
        for c in counts {
            assert!((9_400..10_600).contains(&c), "{c}");
        }
    }

    #[test]
    fn least_request_with_one_member_or_none() {
        let rr = RoundRobin::new();
        let one = |_| 0;
        assert_eq!(
            rr.least_request(&table(&[false, true]), |_| true, |_| FULL, one),
            Some(1)
        );
        assert_eq!(
            rr.least_request(&table(&[false]), |_| true, |_| FULL, one),
            None
        );
    }

    #[test]
    fn least_request_passes_over_unavailable_members() {
        let rr = RoundRobin::new();
        let t = table(&[true, true, true]);
        for _ in 0..300 {
            assert_ne!(
                rr.least_request(&t, |i| i != 0, |_| FULL, |i| 2 - i as u32),
                Some(0)
            );
        }
    }

    #[test]
    fn least_request_thins_a_ramping_winner() {
        let rr = RoundRobin::new();
        let t = table(&[true, true, true]);
        // Member 0 is idle and would win every pair it is in (2 of 3), but
        // ramps at a quarter.
        let counts = shares(30_000, 3, || {
            rr.least_request(
                &t,
                |_| true,
                |i| if i == 0 { FULL / 4 } else { FULL },
                |i| if i == 0 { 0 } else { 3 },
            )
        });
        assert!((4_400..5_600).contains(&counts[0]), "{counts:?}");
    }

    proptest! {
        /// Over any sequence of rounds, each with its own health and drain
        /// pattern, n picks over the k members of the rotation give each
        /// floor(n/k) or ceil(n/k), and nobody else anything.
        #[test]
        fn every_round_is_fair(
            rounds in proptest::collection::vec(
                (proptest::collection::vec((any::<bool>(), any::<bool>()), 1..12), 1usize..200),
                1..20,
            )
        ) {
            let rr = RoundRobin::new();
            for (members, n) in rounds {
                let (health, draining): (Vec<bool>, Vec<bool>) = members.into_iter().unzip();
                let t = draining_table(&health, &draining);
                let k = t.rotation().len();
                let open = health.iter().zip(&draining).filter(|(h, d)| **h && !**d).count();
                prop_assert_eq!(k, if open > 0 { open } else { t.healthy().len() });
                let mut counts = vec![0usize; health.len()];
                for _ in 0..n {
                    match rr.pick(&t) {
                        Some(i) => counts[i] += 1,
                        None => prop_assert_eq!(k, 0),
                    }
                }
                if k == 0 {
                    continue;
                }
                for (i, &c) in counts.iter().enumerate() {
                    if t.rotation().contains(&i) {
                        prop_assert!(c == n / k || c == n.div_ceil(k), "member {} got {} of {} over {}", i, c, n, k);
                    } else {
                        prop_assert_eq!(c, 0);
                    }
                }
            }
        }
    }
}
