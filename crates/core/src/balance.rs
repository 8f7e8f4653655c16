//! Round robin over the members of whatever table is current that take new
//! clients: the healthy ones that are not draining (see
//! `RoutingTable::rotation` for when every healthy member drains).

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
        let rotation = table.rotation();
        if rotation.is_empty() {
            return None;
        }
        // Relaxed is enough: the counter only spreads load, it orders nothing.
        // An unavailable member costs another step of the shared cursor, so
        // its turns spread over the others instead of all going to the
        // member after it.
        let len = rotation.len();
        let mut choice = rotation[self.next.fetch_add(1, Ordering::Relaxed) % len];
        for _ in 1..len {
            if available(choice) {
                return Some(choice);
            }
            choice = rotation[self.next.fetch_add(1, Ordering::Relaxed) % len];
        }
        Some(choice)
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
