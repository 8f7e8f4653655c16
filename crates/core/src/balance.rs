//! Round robin over the healthy members of whatever table is current.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::table::RoutingTable;

/// A round-robin cursor that outlives routing tables, so a health change
/// does not send the next requests back to the first member.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next healthy member's position, or `None` when none is healthy.
    pub fn pick<T>(&self, table: &RoutingTable<T>) -> Option<usize> {
        self.pick_available(table, |_| true)
    }

    /// The next healthy member for which `available` holds (the proxy uses
    /// it to pass over locally ejected members). When it holds for none, the
    /// plain round-robin choice: a healthy member is better than no answer.
    /// Costs one step when the next member is available.
    pub fn pick_available<T>(
        &self,
        table: &RoutingTable<T>,
        available: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let healthy = table.healthy();
        if healthy.is_empty() {
            return None;
        }
        // Relaxed is enough: the counter only spreads load, it orders nothing.
        // An unavailable member costs another step of the shared cursor, so
        // its turns spread over the others instead of all going to the
        // member after it.
        let len = healthy.len();
        let mut choice = healthy[self.next.fetch_add(1, Ordering::Relaxed) % len];
        for _ in 1..len {
            if available(choice) {
                return Some(choice);
            }
            choice = healthy[self.next.fetch_add(1, Ordering::Relaxed) % len];
        }
        Some(choice)
    }

    /// Like `pick`, but never `avoid` (a position in this `table`; `None`
    /// when the member to avoid is no longer in it). Used to retry a failed
    /// attempt somewhere else; `None` when no other member is healthy.
    pub fn pick_other<T>(&self, table: &RoutingTable<T>, avoid: Option<usize>) -> Option<usize> {
        let healthy = table.healthy();
        let other = |i: &usize| Some(*i) != avoid;
        let candidates = healthy.iter().filter(|i| other(i)).count();
        if candidates == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % candidates;
        healthy.iter().copied().filter(other).nth(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Member;
    use proptest::prelude::*;

    fn table(health: &[bool]) -> RoutingTable<()> {
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
        RoutingTable::new(None, members)
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

    proptest! {
        /// Over any sequence of rounds, each with its own health pattern,
        /// n picks over k healthy members give each floor(n/k) or ceil(n/k).
        #[test]
        fn every_round_is_fair(
            rounds in proptest::collection::vec(
                (proptest::collection::vec(any::<bool>(), 1..12), 1usize..200),
                1..20,
            )
        ) {
            let rr = RoundRobin::new();
            for (health, n) in rounds {
                let t = table(&health);
                let k = t.healthy().len();
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
                    if health[i] {
                        prop_assert!(c == n / k || c == n.div_ceil(k), "member {} got {} of {} over {}", i, c, n, k);
                    } else {
                        prop_assert_eq!(c, 0);
                    }
                }
            }
        }
    }
}
