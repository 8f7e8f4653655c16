//! What the proxy shows on its admin endpoint (`tether_daemon::admin`
//! serves it): readiness, Prometheus metrics, the status page and
//! `/status.json`, all read from the routing table, the counters kept
//! beside its members, and the feed's view of every checker.

use std::fmt::Write;
use std::sync::Arc;

use serde::Serialize;

use tether_core::HealthState;
use tether_daemon::admin::{BoxFuture, Status, escape};
use tether_daemon::clock;
use tether_daemon::config_state::ConfigState;
use tether_daemon::metrics::{Kind, Text};

use crate::feed::FeedCell;
use crate::limits::Limit;
use crate::stats::{CLASSES, Goaway, ProxyStats, StickyResult};
use crate::table::TableCell;

/// The proxy's admin view.
#[derive(Debug)]
pub struct ProxyStatus {
    pub table: Arc<TableCell>,
    pub stats: Arc<ProxyStats>,
    /// Every checker's view, as the feed last merged them.
    pub checkers: Arc<FeedCell>,
    /// Reload outcomes and certificate expiry.
    pub config: Arc<ConfigState>,
}

impl Status for ProxyStatus {
    fn title(&self) -> &'static str {
        "tether-proxy"
    }

    fn readiness(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(self.ready()))
    }

    fn metrics(&self) -> BoxFuture<'_, Text> {
        let mut out = Text::new();
        self.write_metrics(&mut out);
        Box::pin(std::future::ready(out))
    }

    fn page(&self) -> BoxFuture<'_, String> {
        let mut out = String::new();
        self.write_page(&mut out);
        Box::pin(std::future::ready(out))
    }

    fn json(&self) -> Option<BoxFuture<'_, String>> {
        let doc = self.document(clock::now_ms());
        let text =
            serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        Some(Box::pin(std::future::ready(text + "\n")))
    }
}

impl ProxyStatus {
    fn ready(&self) -> Result<(), String> {
        let table = self.table.load();
        if table.version().is_none() {
            return Err("no health snapshot yet".to_owned());
        }
        if !self.stats.is_settled() {
            return Err("waiting for the first probe round".to_owned());
        }
        if table.healthy().is_empty() {
            return Err("no healthy member".to_owned());
        }
        Ok(())
    }

    fn write_metrics(&self, out: &mut Text) {
        let table = self.table.load();
        let s = &self.stats;
        out.family(
            "tether_requests_total",
            Kind::Counter,
            "Responses by member and status class (target=\"\": the proxy answered alone).",
        );
        for m in table.members() {
            for (class, count) in CLASSES.iter().zip(&m.data.stats.responses) {
                out.sample(
                    "tether_requests_total",
                    &[("target", &m.name), ("code", class)],
                    count.get(),
                );
            }
        }
        for (class, count) in CLASSES.iter().zip(&s.local_responses) {
            out.sample(
                "tether_requests_total",
                &[("target", ""), ("code", class)],
                count.get(),
            );
        }
        out.family(
            "tether_request_duration_seconds",
            Kind::Histogram,
            "Time from a request's head to its response's head.",
        )
        .histogram("tether_request_duration_seconds", &[], &s.request_duration);
        out.family(
            "tether_upstream_connect_failures_total",
            Kind::Counter,
            "Connections to a member that could not be made.",
        );
        for m in table.members() {
            out.sample(
                "tether_upstream_connect_failures_total",
                &[("target", &m.name)],
                m.data.stats.connect_failures.get(),
            );
        }
        out.family(
            "tether_requests_cancelled_total",
            Kind::Counter,
            "Requests that reached a member and were abandoned by their client before the answer was done.",
        );
        for m in table.members() {
            out.sample(
                "tether_requests_cancelled_total",
                &[("target", &m.name)],
                m.data.stats.cancelled.get(),
            );
        }
        out.family(
            "tether_goaways_total",
            Kind::Counter,
            "HTTP/2 GOAWAYs the proxy sent, by reason: drain, send_timeout, or the protocol error the client made.",
        );
        for (reason, count) in Goaway::ALL.iter().zip(&s.goaways) {
            out.sample(
                "tether_goaways_total",
                &[("reason", reason.as_str())],
                count.get(),
            );
        }
        out.family(
            "tether_retries_total",
            Kind::Counter,
            "Requests sent again to another member.",
        )
        .sample("tether_retries_total", &[], s.retries.get());
        out.family(
            "tether_ejections_total",
            Kind::Counter,
            "Local (passive) ejections of a member.",
        );
        for m in table.members() {
            out.sample(
                "tether_ejections_total",
                &[("target", &m.name)],
                m.data.stats.ejections.get(),
            );
        }
        out.family(
            "tether_target_healthy",
            Kind::Gauge,
            "1 when the member takes traffic by the checker's verdict.",
        );
        for m in table.members() {
            out.sample(
                "tether_target_healthy",
                &[("target", &m.name)],
                u8::from(m.healthy),
            );
        }
        out.family(
            "tether_health_version",
            Kind::Gauge,
            "Version of the last health update applied, per checker (each counts its own; embedded: checker=\"embedded\").",
        );
        let checkers = self.checkers.load();
        for c in &checkers.checkers {
            if let Some(version) = c.view.pool.version() {
                out.sample("tether_health_version", &[("checker", &c.label)], version);
            }
        }
        out.family(
            "tether_checkers_live",
            Kind::Gauge,
            "Checkers whose stream is up and which are not impaired: the ones whose verdicts count.",
        )
        .sample("tether_checkers_live", &[], s.checkers_live.get());
        out.family(
            "tether_health_updates_total",
            Kind::Counter,
            "Health updates that changed the merged routing table.",
        )
        .sample("tether_health_updates_total", &[], s.health_updates.get());
        out.family(
            "tether_health_stream_reconnects_total",
            Kind::Counter,
            "Health subscriptions opened after each checker's first.",
        )
        .sample(
            "tether_health_stream_reconnects_total",
            &[],
            s.health_stream_reconnects.get(),
        );
        out.family(
            "tether_open_connections",
            Kind::Gauge,
            "Client connections open now.",
        )
        .sample("tether_open_connections", &[], s.open_connections.get());
        out.family(
            "tether_sticky_total",
            Kind::Counter,
            "Requests with a sticky claim (headers or cookie), by what became of it: honoured, ignored, invalid, tampered, expired, unknown_key.",
        );
        for (result, count) in StickyResult::ALL.iter().zip(&s.sticky) {
            out.sample(
                "tether_sticky_total",
                &[("result", result.as_str())],
                count.get(),
            );
        }
        out.family(
            "tether_limited_total",
            Kind::Counter,
            "Connections and requests answered 429 by [limits], by limit: connections, rate.",
        );
        for (limit, count) in Limit::ALL.iter().zip(&s.limited) {
            out.sample(
                "tether_limited_total",
                &[("limit", limit.as_str())],
                count.get(),
            );
        }
        out.family(
            "tether_limit_clients",
            Kind::Gauge,
            "Clients the [limits] table holds state for (at most 32768; the oldest out).",
        )
        .sample("tether_limit_clients", &[], s.limit_clients.get());
        self.config.write_metrics(out);
    }

    fn write_page(&self, out: &mut String) {
        let table = self.table.load();
        let now = clock::now_ms();
        let ready = match self.ready() {
            Ok(()) => "<span class=\"healthy\">ready</span>".to_owned(),
            Err(why) => format!(
                "<span class=\"unhealthy\">not ready: {}</span>",
                escape(&why)
            ),
        };
        let _ = write!(
            out,
            "<h1>tether-proxy</h1>\n<p>{ready} &middot; table version {} &middot; {}/{} members healthy &middot; {} open connections</p>\n",
            table
                .version()
                .map_or_else(|| "-".to_owned(), |v| v.to_string()),
            table.healthy().len(),
            table.members().len(),
            self.stats.open_connections.get(),
        );
        out.push_str("<table>\n<thead><tr><th>member</th><th>url</th><th>state</th><th class=\"num\">requests</th><th class=\"num\">5xx</th><th class=\"num\">connect failures</th><th>last change</th><th>last request</th></tr></thead>\n<tbody>\n");
        for m in table.members() {
            let st = &m.data.stats;
            let state = if m.data.passive.is_ejected(now) {
                "ejected"
            } else {
                match m.data.state {
                    HealthState::Unknown if m.healthy => "healthy",
                    state => state.as_str(),
                }
            };
            let class = match state {
                "healthy" => "healthy",
                "unknown" => "unknown",
                _ => "unhealthy",
            };
            let _ = writeln!(
                out,
                "<tr class=\"row-{class}\"><td>{}</td><td class=\"url\">{}</td><td><span class=\"badge {class}\">{state}</span></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&m.name),
                escape(&m.url),
                st.requests(),
                st.errors(),
                st.connect_failures.get(),
                ago(now, m.data.last_change_ms),
                ago(
                    now,
                    nonzero(
                        st.last_response_ms
                            .load(std::sync::atomic::Ordering::Relaxed)
                    )
                ),
            );
        }
        out.push_str("</tbody>\n</table>\n");
        self.write_checkers(out);
        out.push_str("<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/readyz\">/readyz</a> &middot; <a href=\"/healthz\">/healthz</a> &middot; <a href=\"/status.json\">/status.json</a></p>\n");
    }

    /// Each checker's view beside the merge the table above comes from.
    fn write_checkers(&self, out: &mut String) {
        let now = clock::now_ms();
        let doc = self.document(now);
        let _ = writeln!(
            out,
            "<h2>Checkers</h2>\n<p>{} of {} live (stream up, not impaired); a member is out only when most live checkers that know it say unhealthy.</p>",
            doc.live,
            doc.checkers.len()
        );
        out.push_str("<table>\n<thead><tr><th>checker</th><th>stream</th><th>impaired</th><th class=\"num\">version</th><th class=\"num\">members</th><th>calls unhealthy</th></tr></thead>\n<tbody>\n");
        for c in &doc.checkers {
            let (class, stream) = match (c.stream_up, c.impaired.is_some()) {
                (true, false) => ("healthy", "up"),
                (true, true) => ("unknown", "up"),
                (false, _) => ("unhealthy", "down"),
            };
            let _ = writeln!(
                out,
                "<tr><td class=\"url\">{}</td><td><span class=\"badge {class}\">{stream}</span></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&c.address),
                c.impaired.as_ref().map_or_else(
                    || "no".to_owned(),
                    |i| format!("yes, {}: {}", ago(now, Some(i.since_ms)), escape(&i.reason))
                ),
                c.version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                c.members,
                if c.unhealthy.is_empty() {
                    "-".to_owned()
                } else {
                    escape(&c.unhealthy.join(", "))
                },
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    /// What `/status.json` says.
    fn document(&self, now_ms: u64) -> StatusDoc {
        let table = self.table.load();
        let feed = self.checkers.load();
        let checkers: Vec<CheckerDoc> = feed
            .checkers
            .iter()
            .map(|c| CheckerDoc {
                address: c.label.clone(),
                stream_up: c.view.stream_up,
                impaired: c.view.impairment().map(|i| ImpairedDoc {
                    since_ms: i.since_ms,
                    reason: i.reason.clone(),
                }),
                live: c.view.is_live(),
                version: c.view.pool.version(),
                members: c.view.pool.targets().len(),
                unhealthy: c.view.unhealthy().map(str::to_owned).collect(),
            })
            .collect();
        let merged = table
            .members()
            .iter()
            .enumerate()
            .map(|(i, m)| MemberDoc {
                name: m.name.clone(),
                url: m.url.clone(),
                state: m.data.state.as_str(),
                healthy: m.healthy,
                draining: table.is_draining(i),
                ejected: m.data.passive.is_ejected(now_ms),
            })
            .collect();
        StatusDoc {
            pid: std::process::id(),
            table_version: table.version(),
            live: checkers.iter().filter(|c| c.live).count(),
            checkers,
            merged,
        }
    }
}

// === /status.json ===

/// The proxy's `/status.json`: every checker's view and the merged table.
/// `tetherctl checkers` reads it; fields are only ever added.
#[derive(Debug, Serialize)]
struct StatusDoc {
    /// The process answering: after a binary upgrade, which one serves.
    pid: u32,
    /// The merged table's version: how many tables the feed has built.
    table_version: Option<u64>,
    /// Checkers whose verdicts count now.
    live: usize,
    checkers: Vec<CheckerDoc>,
    /// The members the proxy routes on, in pool order.
    merged: Vec<MemberDoc>,
}

#[derive(Debug, Serialize)]
struct CheckerDoc {
    address: String,
    stream_up: bool,
    /// `null`, or since when (epoch ms) and why the checker says its own
    /// probes cannot be trusted.
    impaired: Option<ImpairedDoc>,
    live: bool,
    /// The checker's own version of its last update.
    version: Option<u64>,
    members: usize,
    /// Members it calls unhealthy (what it said last, also when down).
    unhealthy: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ImpairedDoc {
    since_ms: u64,
    reason: String,
}

#[derive(Debug, Serialize)]
struct MemberDoc {
    name: String,
    url: String,
    /// The merged verdict: healthy, unhealthy or unknown (nobody knows yet).
    state: &'static str,
    /// Takes traffic by the checkers' word (an unknown known member keeps
    /// what it had).
    healthy: bool,
    draining: bool,
    /// This proxy's own traffic took it out for a while.
    ejected: bool,
}

fn nonzero(ms: u64) -> Option<u64> {
    (ms != 0).then_some(ms)
}

/// "3s ago", "5m ago", or "-".
pub fn ago(now_ms: u64, then_ms: Option<u64>) -> String {
    let Some(then) = then_ms else {
        return "-".to_owned();
    };
    let secs = now_ms.saturating_sub(then) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}
