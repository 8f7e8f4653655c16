//! Fuzz check: `StickyHint::parse` on the two header values, then
//! `sticky::decide_pinned` against a small table. Whatever the headers say,
//! the pick is a member of the table or none, and each kind of pick has
//! the reason its documentation gives.
//!
//! Input: 8 bytes of table and clock, then `<x-target-server>\n<last-use>`.
//! - byte 0: bits 0-2 member count (0-4), bit 3 strict, bit 4 no target
//!   header, bit 5 no last-use header;
//! - bytes 1, 2, 3: one bit per member: healthy, draining, available;
//! - bytes 4-5: window in seconds (LE), bytes 6-7: clock offset from
//!   `NOW` in seconds (LE, signed).
//!
//! Shared by `fuzz/fuzz_targets/sticky_hint.rs` and
//! `crates/core/tests/fuzz_corpus.rs`.

use std::time::Duration;

use tether_core::sticky::decide_pinned;
use tether_core::{Member, Pick, RoundRobin, RoutingTable, StickyHint};

/// The clock the seeds are written against (2023-11-14).
pub const NOW: u64 = 1_700_000_000_000;
const MEMBERS: usize = 4;

pub fn run(data: &[u8]) {
    let (head, rest) = data.split_at(data.len().min(8));
    let mut h = [0u8; 8];
    h[..head.len()].copy_from_slice(head);
    let count = usize::from(h[0] & 0x7).min(MEMBERS);
    let strict = h[0] & 0x08 != 0;
    let window = Duration::from_secs(u64::from(u16::from_le_bytes([h[4], h[5]])));
    let offset_ms = i64::from(i16::from_le_bytes([h[6], h[7]])) * 1000;
    let now_ms = NOW.saturating_add_signed(offset_ms);
    let bit = |byte: u8, i: usize| byte >> i & 1 == 1;

    let text = String::from_utf8_lossy(rest);
    let (target, last_use) = text.split_once('\n').unwrap_or((&text, ""));
    let target = (h[0] & 0x10 == 0).then_some(target);
    let last_use = (h[0] & 0x20 == 0).then_some(last_use);
    let hint = StickyHint::parse(target, last_use);
    if let Some(hint) = &hint {
        // Only ever the trimmed header text, and only a decimal time.
        assert!(!hint.target.is_empty());
        assert_eq!(Some(hint.target), target.map(str::trim));
        let digits = last_use.map(str::trim).unwrap_or_default();
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(digits.parse::<u64>().ok(), Some(hint.last_use_ms));
    }

    // Member 3's url is member 0's name: a name is never shadowed.
    let members: Vec<Member<()>> = (0..count)
        .map(|i| Member {
            name: format!("app-{i}"),
            url: if i == 3 {
                "app-0".to_owned()
            } else {
                format!("http://10.0.0.{i}:80")
            },
            healthy: bit(h[1], i),
            data: (),
        })
        .collect();
    let draining = (0..count).map(|i| bit(h[2], i)).collect();
    let table = RoutingTable::with_draining(Some(1), members, draining);
    for (i, m) in table.members().iter().enumerate() {
        assert_eq!(table.lookup(&m.name), Some(i), "{}", m.name);
    }
    let available = |i: usize| bit(h[3], i);
    let rr = RoundRobin::new();
    // Enough picks to go round the rotation twice.
    for _ in 0..2 * MEMBERS {
        let pick = decide_pinned(
            hint.as_ref(),
            now_ms,
            window,
            strict,
            &table,
            &rr,
            available,
        );
        check_pick(
            pick,
            hint.as_ref(),
            now_ms,
            window,
            strict,
            &table,
            available,
        );
    }
}

fn check_pick(
    pick: Pick,
    hint: Option<&StickyHint<'_>>,
    now_ms: u64,
    window: Duration,
    strict: bool,
    table: &RoutingTable<()>,
    available: impl Fn(usize) -> bool,
) {
    if let Some(i) = pick.index() {
        assert!(i < table.members().len(), "{pick:?} outside the table");
    }
    let pinned = hint
        .filter(|h| h.is_fresh(now_ms, window))
        .and_then(|h| table.lookup(h.target));
    let up = |i: usize| table.member(i).is_some_and(|m| m.healthy) && available(i);
    match pick {
        Pick::Sticky(i) => {
            assert_eq!(pinned, Some(i), "sticky without a fresh hint naming it");
            assert!(up(i), "sticky to a member that is down");
        }
        Pick::PinnedDown => {
            assert!(strict, "PinnedDown without strict");
            assert!(
                pinned.is_some_and(|i| !up(i)),
                "PinnedDown without a down pin"
            );
        }
        Pick::Balanced(i) => {
            assert!(
                pinned.is_none_or(|p| !up(p) && !strict),
                "a live pin was moved"
            );
            assert!(
                table.rotation().contains(&i),
                "balanced outside the rotation"
            );
            let any_available = table.rotation().iter().any(|&j| available(j));
            assert!(!any_available || available(i), "passed over by round robin");
        }
        Pick::NoneHealthy => {
            assert!(table.rotation().is_empty(), "none healthy with a rotation");
            assert!(table.healthy().is_empty());
        }
    }
}
