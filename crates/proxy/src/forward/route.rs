//! Which member a request goes to: what the table says, read once, and the
//! sticky claim the request carries, decided by core. Kept apart from the
//! head edits because it only reads the request: the claim it looks at
//! (the proxy's cookie) is taken out afterwards, by `rewrite`.
//!
//! No guard on the table outlives a call here, so none is held across an
//! `.await`.

use http::request::Parts;
use log::debug;
use tether_core::{Pick, sticky};

use super::{Attempt, Proxy};
use crate::config::Settings;
use crate::stats::StickyResult;
use crate::sticky::{self as cookie, Read};
use crate::table::{self, Routes};

impl Proxy {
    /// The first target: the member the request's sticky claim names when
    /// core honours it, else round robin over available members. `None`:
    /// nothing to send to (also strict stickiness's answer when the pinned
    /// member is down: to the client that is the same as none).
    pub(super) fn route(&self, s: &Settings, parts: &Parts, now_ms: u64) -> Option<Attempt> {
        let table = self.table.load();
        let read = if s.sticky.enabled {
            cookie::read(&s.sticky.rules(), &parts.headers, now_ms)
        } else {
            Read::Absent
        };
        let claim = match &read {
            Read::Claim(claim) => Some(claim.hint()),
            Read::Rejected(why) => {
                self.stats.sticky(*why);
                None
            }
            Read::Absent => None,
        };
        let pick = sticky::decide_pinned(
            claim.as_ref(),
            now_ms,
            s.sticky.window,
            s.sticky.strict,
            &table,
            &self.rr,
            |i| available(&table, i, now_ms),
        );
        if claim.is_some() {
            self.stats.sticky(match pick {
                Pick::Sticky(_) => StickyResult::Honoured,
                _ => StickyResult::Ignored,
            });
        }
        let member = pick.index().and_then(|i| table.member(i))?;
        debug!(target: "proxy", "{} {} -> {} ({pick:?})", parts.method, parts.uri.path(), member.name);
        Some(Attempt {
            upstream: member.data.clone(),
        })
    }

    /// A healthy, available member other than `avoid`, round robin.
    pub(super) fn other_target(&self, avoid: &table::Upstream, now_ms: u64) -> Option<Attempt> {
        let table = self.table.load();
        let avoid = table::position(&table, avoid);
        let index = self.rr.pick_other(&table, avoid).map(|first| {
            if available(&table, first, now_ms) {
                return first;
            }
            table
                .healthy()
                .iter()
                .copied()
                .find(|&i| Some(i) != avoid && available(&table, i, now_ms))
                .unwrap_or(first)
        })?;
        let member = table.member(index)?;
        Some(Attempt {
            upstream: member.data.clone(),
        })
    }
}

/// Not locally ejected.
pub(super) fn available(table: &Routes, index: usize, now_ms: u64) -> bool {
    table
        .member(index)
        .is_some_and(|m| !m.data.passive.is_ejected(now_ms))
}
