//! The immutable routing table: the members, which of them are healthy,
//! which of them take new clients, and an index from a member's name and
//! url to its position.
//!
//! A table is built once, off the request path, and then only read. The
//! proxy attaches its own per-member data (`T`: parsed authority, header
//! values) so the request path never parses or formats what it can borrow.

use std::collections::HashMap;

/// One pool member as the data plane sees it.
#[derive(Clone, Debug)]
pub struct Member<T> {
    pub name: String,
    pub url: String,
    pub healthy: bool,
    pub data: T,
}

#[derive(Debug)]
pub struct RoutingTable<T> {
    version: Option<u64>,
    members: Vec<Member<T>>,
    healthy: Vec<usize>,
    /// One flag per member (empty: none drains).
    draining: Vec<bool>,
    rotation: Vec<usize>,
    index: HashMap<String, usize>,
}

impl<T> Default for RoutingTable<T> {
    fn default() -> Self {
        RoutingTable {
            version: None,
            members: Vec::new(),
            healthy: Vec::new(),
            draining: Vec::new(),
            rotation: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T> RoutingTable<T> {
    /// Builds a table in which no member is draining. Names are unique in a
    /// pool; a url that equals another member's name never shadows that
    /// name.
    pub fn new(version: Option<u64>, members: Vec<Member<T>>) -> Self {
        Self::with_draining(version, members, Vec::new())
    }

    /// Builds a table; `draining[i]` says member `i` is draining (missing
    /// flags: not draining). The flag sits beside the members rather than
    /// in `Member` so that code building members needs no change for it.
    pub fn with_draining(
        version: Option<u64>,
        members: Vec<Member<T>>,
        mut draining: Vec<bool>,
    ) -> Self {
        debug_assert!(draining.len() <= members.len());
        if draining.iter().all(|d| !d) {
            draining.clear();
        }
        let healthy: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.healthy)
            .map(|(i, _)| i)
            .collect();
        let open: Vec<usize> = healthy
            .iter()
            .copied()
            .filter(|&i| !draining.get(i).copied().unwrap_or(false))
            .collect();
        // Draining only steers new clients away while someone else can take
        // them: when every healthy member drains, new clients still get one
        // (round robin over them) rather than a 503 the operator did not ask
        // for. See `rotation`.
        let rotation = if open.is_empty() {
            healthy.clone()
        } else {
            open
        };
        let mut index = HashMap::with_capacity(members.len() * 2);
        for (i, m) in members.iter().enumerate() {
            index.entry(m.url.clone()).or_insert(i);
        }
        for (i, m) in members.iter().enumerate() {
            index.insert(m.name.clone(), i);
        }
        debug_assert!(healthy.iter().all(|&i| i < members.len()));
        debug_assert!(rotation.iter().all(|i| healthy.contains(i)));
        RoutingTable {
            version,
            members,
            healthy,
            draining,
            rotation,
            index,
        }
    }

    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn members(&self) -> &[Member<T>] {
        &self.members
    }

    pub fn member(&self, index: usize) -> Option<&Member<T>> {
        self.members.get(index)
    }

    /// Positions of the healthy members, in pool order.
    pub fn healthy(&self) -> &[usize] {
        &self.healthy
    }

    /// Whether the member at `index` is draining: no new clients, but its
    /// sticky ones stay while it is healthy.
    pub fn is_draining(&self, index: usize) -> bool {
        self.draining.get(index).copied().unwrap_or(false)
    }

    /// Positions of the members that take new clients, in pool order: the
    /// healthy ones that are not draining; when every healthy member is
    /// draining, all healthy ones (a draining member beats no answer). Empty
    /// only when nothing is healthy.
    pub fn rotation(&self) -> &[usize] {
        &self.rotation
    }

    /// The position of the member whose name or url is `key`.
    pub fn lookup(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn member(name: &str, healthy: bool) -> Member<()> {
        Member {
            name: name.to_owned(),
            url: format!("http://{name}.test:80"),
            healthy,
            data: (),
        }
    }

    #[test]
    fn healthy_lists_only_healthy_members_in_order() {
        let t = RoutingTable::new(
            Some(1),
            vec![member("a", true), member("b", false), member("c", true)],
        );
        assert_eq!(t.healthy(), &[0, 2]);
    }

    #[test]
    fn rotation_leaves_out_draining_members() {
        let members = vec![
            member("a", true),
            member("b", true),
            member("c", false),
            member("d", true),
        ];
        let t = RoutingTable::with_draining(Some(1), members, vec![false, true, true]);
        assert_eq!(t.healthy(), &[0, 1, 3]);
        assert_eq!(t.rotation(), &[0, 3]);
        assert!(t.is_draining(1) && t.is_draining(2));
        assert!(!t.is_draining(0) && !t.is_draining(3) && !t.is_draining(9));
    }

    #[test]
    fn when_every_healthy_member_drains_they_all_stay_in_rotation() {
        let members = vec![member("a", true), member("b", true), member("c", false)];
        let t = RoutingTable::with_draining(None, members, vec![true, true, false]);
        assert_eq!(t.rotation(), &[0, 1]);
        let down = vec![member("a", false), member("b", true)];
        let t = RoutingTable::with_draining(None, down, vec![false, true]);
        assert_eq!(
            t.rotation(),
            &[1],
            "a draining healthy member beats a down one"
        );
        let none = vec![member("a", false), member("b", false)];
        let t = RoutingTable::with_draining(None, none, vec![true, false]);
        assert!(t.rotation().is_empty());
    }

    #[test]
    fn without_draining_rotation_is_healthy() {
        let t = RoutingTable::new(None, vec![member("a", true), member("b", false)]);
        assert_eq!(t.rotation(), t.healthy());
        assert!(!t.is_draining(0));
    }

    #[test]
    fn lookup_by_name_and_by_url() {
        let t = RoutingTable::new(None, vec![member("a", true), member("b", true)]);
        assert_eq!(t.lookup("b"), Some(1));
        assert_eq!(t.lookup("http://b.test:80"), Some(1));
        assert_eq!(t.lookup("http://evil.test:80"), None);
    }

    #[test]
    fn a_name_wins_over_another_members_url() {
        let mut odd = member("x", true);
        odd.url = "a".to_owned();
        let t = RoutingTable::new(None, vec![odd, member("a", true)]);
        assert_eq!(t.lookup("a"), Some(1));
    }
}
