//! Which member a request goes to: what the table says, read once, and the
//! sticky claim the request carries, decided by core; an unpinned request
//! goes where the balance policy says (round robin or least request), with
//! slow start weighing members that turned healthy again. Kept apart from the
//! head edits because it only reads the request: the claim it looks at
//! (the proxy's cookie) is taken out afterwards, by `rewrite`.
//!
//! No guard on the table outlives a call here, so none is held across an
//! `.await`.

use std::sync::Arc;

use http::request::Parts;
use log::debug;
use tether_core::{Pick, Policy, slow_start, sticky};

use super::{Attempt, Proxy};
use crate::config::Settings;
use crate::stats::StickyResult;
use crate::sticky::{self as cookie, Read};
use crate::table::{self, Routes};

impl Proxy {
    /// The first target: the member the request's sticky claim names when
    /// core honours it, else the balancer's choice among available members. `None`:
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
        let available = |i| available(&table, i, now_ms);
        let weight = |i| weight(&table, i, now_ms, s);
        let pick = sticky::decide_with(
            claim.as_ref(),
            now_ms,
            s.sticky.window,
            s.sticky.strict,
            &table,
            available,
            || match s.balance {
                Policy::RoundRobin => self.rr.pick_weighted(&table, available, weight),
                Policy::LeastRequest => self
                    .rr
                    .least_request(&table, available, weight, |i| in_flight(&table, i)),
            },
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

    /// A healthy, available member for a retry, round robin: one this
    /// request has not tried yet while there is one, else any but the one
    /// that just failed (the last of `tried`). Without the first rule a
    /// request could go A, B, A and spend its retries on members already
    /// known to turn it away while a third waits.
    pub(super) fn other_target(
        &self,
        tried: &[Arc<table::Upstream>],
        now_ms: u64,
    ) -> Option<Attempt> {
        let table = self.table.load();
        let last = tried.last().and_then(|u| table::position(&table, u));
        let untried = |i: usize| !tried.iter().any(|t| table::position(&table, t) == Some(i));
        let usable = |i: usize| Some(i) != last && available(&table, i, now_ms);
        let index = self.rr.pick_other(&table, last).map(|first| {
            if available(&table, first, now_ms) && untried(first) {
                return first;
            }
            let healthy = table.healthy();
            healthy
                .iter()
                .copied()
                .find(|&i| usable(i) && untried(i))
                .or_else(|| healthy.iter().copied().find(|&i| usable(i)))
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

/// The member's slow-start weight (full unless it is ramping and slow start
/// is on).
fn weight(table: &Routes, index: usize, now_ms: u64, s: &Settings) -> u32 {
    if s.slow_start.is_none() {
        return slow_start::FULL;
    }
    let since = table.member(index).and_then(|m| m.data.ramp_from());
    slow_start::weight(since, now_ms, s.slow_start)
}

/// Requests the member has whose answer is not done.
fn in_flight(table: &Routes, index: usize) -> u32 {
    table
        .member(index)
        .map_or(u32::MAX, |m| m.data.stats.in_flight())
}
