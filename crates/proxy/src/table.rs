//! The proxy's routing table: core's `RoutingTable` with what the request
//! path needs about each member already parsed, published through one
//! atomic pointer swap.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;
use http::uri::Authority;
use log::warn;

use crate::passive::Passive;
use crate::stats::MemberStats;
use crate::upstream::TlsPeer;
use tether_core::{HealthState, Member, RoutingTable, TargetStatus};

/// What the request path needs of one member, prepared off the hot path.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The member's name: with `authority`, its identity across table
    /// loads (positions change when members come and go).
    pub name: String,
    /// `host:port`, the upstream request's authority and default Host.
    pub authority: Authority,
    /// `Some` for an `https://` member: connections to `authority` go over
    /// TLS to this peer (SNI and verified name: the `Host`'s host, so a
    /// DNS member is verified for its entry's name, not its address).
    pub tls: Option<Arc<TlsPeer>>,
    /// The `Host` requests send: the member's own when the checker gave
    /// one (a DNS member keeps its entry's `backend:8080`), else
    /// `authority`.
    pub host_header: HeaderValue,
    /// The member's name as a header value, echoed in `x-target-server`.
    pub name_header: HeaderValue,
    /// What this proxy's own traffic says; kept across table rebuilds.
    pub passive: Arc<Passive>,
    /// Counters for `/metrics`; kept across table rebuilds.
    pub stats: Arc<MemberStats>,
    /// What the checker said last, and since when (epoch ms), for the
    /// status page.
    pub state: HealthState,
    pub last_change_ms: Option<u64>,
    /// Epoch ms (this proxy's clock) at which the member turned healthy
    /// again, as this proxy saw it: where its slow-start ramp begins.
    /// `None`: not healthy, or healthy since its first verdict here.
    pub ramp_from_ms: Option<u64>,
    /// The member has had a real verdict (not `unknown`) since this proxy
    /// learned it: only then is turning healthy a recovery.
    pub judged: bool,
}

impl Upstream {
    /// Where the member's slow-start ramp begins: the later of turning
    /// healthy again and coming back from a passive ejection (both leave it
    /// cold). `None`: it is doing neither.
    pub fn ramp_from(&self) -> Option<u64> {
        self.ramp_from_ms.max(self.passive.back_at_ms())
    }
}

/// Members carry their upstream behind an `Arc`, so a request takes it with
/// one reference count rather than one per field.
pub type Routes = RoutingTable<Arc<Upstream>>;

/// The current routing table. Requests `load()` it (no lock, no refcount
/// contention); the feed task alone `store()`s a new one.
#[derive(Debug, Default)]
pub struct TableCell {
    current: ArcSwap<Routes>,
}

impl TableCell {
    pub fn new() -> Arc<TableCell> {
        Arc::new(TableCell::default())
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.current.load()
    }

    pub fn store(&self, routes: Routes) {
        self.current.store(Arc::new(routes));
    }
}

/// Where `upstream` is in `table`: the member with its name and address,
/// if `table` still has it. Requests hold an `Upstream` across awaits, and
/// the table may be swapped meanwhile (reload, DNS), so a position from an
/// earlier load means nothing in a later one.
pub fn position(table: &Routes, upstream: &Upstream) -> Option<usize> {
    table.lookup(&upstream.name).filter(|&i| {
        table
            .member(i)
            .is_some_and(|m| m.data.authority == upstream.authority)
    })
}

/// Builds the table, at `version`, for the merged pool `targets`. A member whose url or name cannot be
/// used (a checker bug or a hostile checker) is left out, loudly.
///
/// A member the checker reports as `unknown` but `previous` knew (same name
/// and url) keeps its previous health: a restarted checker knows nothing
/// until its first probes, and "I don't know" must not take a healthy pool
/// out of service (fail static). A member never seen before stays out until
/// it is probed healthy.
///
/// A draining member stays a member (its sticky clients keep reaching it);
/// the table leaves it out of the round-robin rotation.
///
/// A member that `previous` had, judged, as not healthy and that is healthy
/// now turned healthy at `now_ms` (epoch ms): its slow-start ramp begins
/// there. Its first verdict after the proxy starts, or after it joins the
/// pool, is no recovery, and neither is a restarted checker's `unknown`
/// followed by `healthy` for a member that stayed healthy here.
pub fn build(
    version: Option<u64>,
    targets: &[TargetStatus],
    previous: &Routes,
    now_ms: u64,
) -> Routes {
    let (members, draining): (Vec<_>, Vec<bool>) = targets
        .iter()
        .filter_map(|t| {
            let authority = match authority_of(&t.url) {
                Some(a) => a,
                None => {
                    warn!(target: "proxy", "ignoring target {:?}: unusable url {:?}", t.name, t.url);
                    return None;
                }
            };
            let host = t.host.as_deref().unwrap_or(authority.as_str());
            let tls = match t.url.starts_with("https://").then(|| TlsPeer::new(host)) {
                None => None,
                Some(Some(peer)) => Some(Arc::new(peer)),
                Some(None) => {
                    warn!(target: "proxy", "ignoring target {:?}: {host:?} is no TLS server name", t.name);
                    return None;
                }
            };
            let Ok(host_header) = HeaderValue::from_str(host) else {
                warn!(target: "proxy", "ignoring target {:?}: unusable host {host:?}", t.name);
                return None;
            };
            let Ok(name_header) = HeaderValue::from_str(&t.name) else {
                warn!(target: "proxy", "ignoring target {:?}: name is not a valid header value", t.name);
                return None;
            };
            let known = previous
                .lookup(&t.name)
                .and_then(|i| previous.member(i))
                .filter(|m| m.name == t.name && m.url == t.url);
            let passive = known.map_or_else(Arc::default, |m| m.data.passive.clone());
            let stats = known.map_or_else(Arc::default, |m| m.data.stats.clone());
            let healthy = match t.state {
                HealthState::Unknown => known.is_some_and(|m| m.healthy),
                state => state.is_healthy(),
            };
            let judged =
                t.state != HealthState::Unknown || known.is_some_and(|m| m.data.judged);
            let ramp_from_ms = match known {
                Some(m) if healthy && m.healthy => m.data.ramp_from_ms,
                Some(m) if healthy && m.data.judged => Some(now_ms),
                _ => None,
            };
            let member = Member {
                name: t.name.clone(),
                url: t.url.clone(),
                healthy,
                data: Arc::new(Upstream {
                    name: t.name.clone(),
                    authority,
                    tls,
                    host_header,
                    name_header,
                    passive,
                    stats,
                    state: t.state,
                    last_change_ms: t.last_change_ms,
                    ramp_from_ms,
                    judged,
                }),
            };
            Some((member, t.draining))
        })
        .unzip();
    RoutingTable::with_draining(version, members, draining)
}

/// The authority of a member url of the forms a checker sends,
/// `http://host:port` and `https://host:port`: anything more (a path, a
/// query, user info) is not a member address, and taking only part of it
/// would make the proxy connect somewhere nobody named.
fn authority_of(url: &str) -> Option<Authority> {
    let uri: http::Uri = url.parse().ok()?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || !matches!(uri.path(), "" | "/")
        || uri.query().is_some()
    {
        return None;
    }
    uri.authority()
        .filter(|a| !a.as_str().contains('@'))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_core::{HealthUpdate, PoolView, ProbeKind};

    fn build_view(view: &PoolView, previous: &Routes) -> Routes {
        build(view.version(), view.targets(), previous, 0)
    }

    fn status(name: &str, url: &str, state: HealthState) -> TargetStatus {
        let mut s = TargetStatus::unknown(name, url, ProbeKind::Tcp);
        s.state = state;
        s
    }

    #[test]
    fn builds_members_and_skips_unusable_ones() {
        let mut view = PoolView::new();
        view.apply(HealthUpdate::snapshot(
            3,
            vec![
                status("a", "http://127.0.0.1:1", HealthState::Healthy),
                status("b", "ftp://127.0.0.1:2", HealthState::Healthy),
                status("bad\nname", "http://127.0.0.1:3", HealthState::Healthy),
                status("d", "http://127.0.0.1:4", HealthState::Unknown),
            ],
        ))
        .expect("snapshot");
        let routes = build_view(&view, &Routes::default());
        let names: Vec<_> = routes.members().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(routes.healthy(), &[0]);
        assert_eq!(routes.version(), Some(3));
        assert_eq!(routes.members()[0].data.authority.as_str(), "127.0.0.1:1");
    }

    #[test]
    fn a_draining_member_stays_but_leaves_the_rotation() {
        let mut drained = status("b", "http://127.0.0.1:2", HealthState::Healthy);
        drained.draining = true;
        let mut view = PoolView::new();
        view.apply(HealthUpdate::snapshot(
            4,
            vec![
                status("a", "ftp://127.0.0.1:1", HealthState::Healthy),
                status("c", "http://127.0.0.1:3", HealthState::Healthy),
                drained,
            ],
        ))
        .expect("snapshot");
        let routes = build_view(&view, &Routes::default());
        // "a" is left out: the flag follows its own member, not a position.
        assert_eq!(routes.healthy(), &[0, 1]);
        assert_eq!(routes.rotation(), &[0]);
        assert!(routes.is_draining(1) && !routes.is_draining(0));
        assert_eq!(routes.lookup("b"), Some(1));
    }

    #[test]
    fn a_dns_member_sends_its_entry_host_to_its_own_address() {
        let mut member = status(
            "web@10.0.0.5:8080",
            "http://10.0.0.5:8080",
            HealthState::Healthy,
        );
        member.host = Some("backend:8080".into());
        let fixed = status("app", "http://127.0.0.1:1", HealthState::Healthy);
        let mut view = PoolView::new();
        view.apply(HealthUpdate::snapshot(1, vec![member, fixed]))
            .expect("snapshot");
        let routes = build_view(&view, &Routes::default());
        let dns = &routes.members()[0].data;
        assert_eq!(dns.authority.as_str(), "10.0.0.5:8080");
        assert_eq!(dns.host_header, "backend:8080");
        let fixed = &routes.members()[1].data;
        assert_eq!(fixed.host_header, "127.0.0.1:1");
    }

    #[test]
    fn https_members_go_over_tls_to_their_hosts_name() {
        let mut dns = status(
            "web@10.0.0.5:443",
            "https://10.0.0.5:443",
            HealthState::Healthy,
        );
        dns.host = Some("web.internal:443".into());
        let fixed = status("api", "https://api.internal:8443", HealthState::Healthy);
        let plain = status("old", "http://api.internal:8443", HealthState::Healthy);
        let mut view = PoolView::new();
        view.apply(HealthUpdate::snapshot(1, vec![dns, fixed, plain]))
            .expect("snapshot");
        let routes = build_view(&view, &Routes::default());
        let tls = |i: usize| routes.members()[i].data.tls.clone();
        let dns = tls(0).expect("dns member is tls");
        assert_eq!(dns.authority, "web.internal:443");
        assert_eq!(dns.name.to_str(), "web.internal");
        assert_eq!(routes.members()[0].data.authority.as_str(), "10.0.0.5:443");
        let fixed = tls(1).expect("tls");
        assert_eq!(fixed.authority, "api.internal:8443");
        assert_eq!(fixed.name.to_str(), "api.internal");
        assert!(tls(2).is_none());
    }

    #[test]
    fn only_a_member_that_recovers_ramps() {
        use HealthState::*;
        let at = |now_ms, states: [HealthState; 2], previous: &Routes| {
            let mut view = PoolView::new();
            view.apply(HealthUpdate::snapshot(
                1,
                vec![
                    status("a", "http://127.0.0.1:1", states[0]),
                    status("b", "http://127.0.0.1:2", states[1]),
                ],
            ))
            .expect("snapshot");
            build(view.version(), view.targets(), previous, now_ms)
        };
        let ramp = |r: &Routes, name| {
            r.members()[r.lookup(name).expect("member")]
                .data
                .ramp_from_ms
        };
        // Start: unknown, then the first verdicts. No ramp.
        let t = at(10, [Unknown, Unknown], &Routes::default());
        let t = at(20, [Healthy, Unhealthy], &t);
        assert_eq!((ramp(&t, "a"), ramp(&t, "b")), (None, None));
        // b recovers: its ramp starts now, and stays while it is healthy.
        let t = at(30, [Healthy, Healthy], &t);
        assert_eq!((ramp(&t, "a"), ramp(&t, "b")), (None, Some(30)));
        let t = at(40, [Healthy, Healthy], &t);
        assert_eq!(ramp(&t, "b"), Some(30));
        // A restarted checker knows nothing, then says healthy: no recovery.
        let t = at(50, [Unknown, Unknown], &t);
        let t = at(60, [Healthy, Healthy], &t);
        assert_eq!((ramp(&t, "a"), ramp(&t, "b")), (None, Some(30)));
        // Down, the checker restarts, then up: a recovery, from then.
        let t = at(70, [Unhealthy, Healthy], &t);
        assert_eq!(ramp(&t, "a"), None);
        let t = at(80, [Unknown, Healthy], &t);
        let t = at(90, [Healthy, Healthy], &t);
        assert_eq!(ramp(&t, "a"), Some(90));
    }

    #[test]
    fn unknown_keeps_the_previous_health_of_a_known_member() {
        let snapshot = |version, states: [HealthState; 3]| {
            let mut view = PoolView::new();
            view.apply(HealthUpdate::snapshot(
                version,
                vec![
                    status("a", "http://127.0.0.1:1", states[0]),
                    status("b", "http://127.0.0.1:2", states[1]),
                    status("c", "http://127.0.0.1:3", states[2]),
                ],
            ))
            .expect("snapshot");
            view
        };
        use HealthState::*;
        let before = build_view(
            &snapshot(9, [Healthy, Unhealthy, Healthy]),
            &Routes::default(),
        );
        // A restarted checker: everything unknown.
        let after = build_view(&snapshot(0, [Unknown, Unknown, Unknown]), &before);
        assert_eq!(after.healthy(), &[0, 2]);
        // A real verdict replaces the kept one.
        let probed = build_view(&snapshot(1, [Unhealthy, Unknown, Unknown]), &after);
        assert_eq!(probed.healthy(), &[2]);
        // Unknown members nobody knew get no traffic.
        assert!(
            build_view(&snapshot(0, [Unknown; 3]), &Routes::default())
                .healthy()
                .is_empty()
        );
    }
}
