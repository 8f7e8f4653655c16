//! The immutable routing table: the members, which of them are healthy, and
//! an index from a member's name and url to its position.
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
    index: HashMap<String, usize>,
}

impl<T> Default for RoutingTable<T> {
    fn default() -> Self {
        RoutingTable {
            version: None,
            members: Vec::new(),
            healthy: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T> RoutingTable<T> {
    /// Builds a table. Names are unique in a pool; a url that equals another
    /// member's name never shadows that name.
    pub fn new(version: Option<u64>, members: Vec<Member<T>>) -> Self {
        let healthy: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.healthy)
            .map(|(i, _)| i)
            .collect();
        let mut index = HashMap::with_capacity(members.len() * 2);
        for (i, m) in members.iter().enumerate() {
            index.entry(m.url.clone()).or_insert(i);
        }
        for (i, m) in members.iter().enumerate() {
            index.insert(m.name.clone(), i);
        }
        debug_assert!(healthy.iter().all(|&i| i < members.len()));
        RoutingTable {
            version,
            members,
            healthy,
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
