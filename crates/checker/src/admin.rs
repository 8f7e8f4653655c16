//! What the checker shows on its admin endpoint (`tether_daemon::admin`
//! serves it): ready once its first probe round is done, the pool's health
//! as metrics, and a status page. Everything is asked of the hub task, so
//! it is as consistent as a `List`.

use std::fmt::Write;

use tether_core::{HealthState, TargetStatus};
use tether_daemon::admin::{BoxFuture, Status, escape};
use tether_daemon::clock;
use tether_daemon::metrics::{Kind, Text};

use crate::hub::{HubHandle, HubMetrics};

/// The checker's admin view.
#[derive(Debug)]
pub struct CheckerStatus {
    pub hub: HubHandle,
    /// Reload outcomes and certificate expiry.
    pub config: std::sync::Arc<tether_daemon::config_state::ConfigState>,
}

impl Status for CheckerStatus {
    fn title(&self) -> &'static str {
        "tether-checker"
    }

    fn readiness(&self) -> BoxFuture<'_, Result<(), String>> {
        // Once done, always done: a member reset by a reload must not make
        // the checker flap out of its Service.
        let ready = match (
            self.hub.first_round_done(),
            self.hub.checker_state().impaired,
        ) {
            (false, _) => Err("the first probe round is not done".to_owned()),
            // Out of its Service: proxies that follow several checkers
            // should lean on the others.
            (true, Some(i)) => Err(format!(
                "impaired since {} (epoch ms): {}",
                i.since_ms, i.reason
            )),
            (true, None) => Ok(()),
        };
        Box::pin(std::future::ready(ready))
    }

    fn metrics(&self) -> BoxFuture<'_, Text> {
        Box::pin(async move {
            let mut out = Text::new();
            let (Ok((_, targets)), Ok(hub)) = (self.hub.list().await, self.hub.metrics().await)
            else {
                return out;
            };
            let impaired = self.hub.checker_state().is_impaired();
            write_metrics(&mut out, &hub, &targets, impaired);
            self.config.write_metrics(&mut out);
            out
        })
    }

    fn page(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let mut out = String::new();
            match self.hub.list().await {
                Ok((version, targets)) => {
                    if let Some(i) = self.hub.checker_state().impaired {
                        let _ = writeln!(
                            out,
                            "<p class=\"unhealthy\">checker impaired: {}; verdicts caused by silence are held</p>",
                            escape(&i.reason)
                        );
                    }
                    write_page(&mut out, version, &targets);
                }
                Err(e) => {
                    let _ = write!(out, "<p>{}</p>", escape(&e.to_string()));
                }
            }
            out
        })
    }
}

fn write_metrics(out: &mut Text, hub: &HubMetrics, targets: &[TargetStatus], impaired: bool) {
    out.family(
        "tether_checker_impaired",
        Kind::Gauge,
        "1 while the checker suspects its own network (silence from most members at once).",
    )
    .sample("tether_checker_impaired", &[], u8::from(impaired));
    out.family(
        "tether_health_version",
        Kind::Gauge,
        "Version of the pool's health; grows by one per change.",
    )
    .sample("tether_health_version", &[], hub.version);
    out.family(
        "tether_watch_subscribers",
        Kind::Gauge,
        "Open Watch streams.",
    )
    .sample("tether_watch_subscribers", &[], hub.watch_subscribers);
    out.family(
        "tether_probes_total",
        Kind::Counter,
        "Probes by target and result, since the target joined.",
    );
    for t in &hub.targets {
        for (result, count) in [
            ("success", t.probes_succeeded),
            ("failure", t.probes_failed),
        ] {
            out.sample(
                "tether_probes_total",
                &[("target", &t.name), ("result", result)],
                count,
            );
        }
    }
    out.family(
        "tether_probe_duration_seconds",
        Kind::Histogram,
        "Probe durations by target.",
    );
    for t in &hub.targets {
        out.histogram(
            "tether_probe_duration_seconds",
            &[("target", &t.name)],
            &t.probe_duration,
        );
    }
    out.family(
        "tether_target_healthy",
        Kind::Gauge,
        "1 when the target's state is healthy.",
    );
    for t in targets {
        out.sample(
            "tether_target_healthy",
            &[("target", &t.name)],
            u8::from(t.state == HealthState::Healthy),
        );
    }
    out.family(
        "tether_target_probe_latency_seconds",
        Kind::Gauge,
        "Duration of the target's last probe.",
    );
    for t in targets {
        if let Some(l) = t.last_latency {
            out.sample(
                "tether_target_probe_latency_seconds",
                &[("target", &t.name)],
                l.as_secs_f64(),
            );
        }
    }
}

fn write_page(out: &mut String, version: u64, targets: &[TargetStatus]) {
    let now = clock::now_ms();
    let healthy = targets
        .iter()
        .filter(|t| t.state == HealthState::Healthy)
        .count();
    let _ = write!(
        out,
        "<h1>tether-checker</h1>\n<p>health version {version} &middot; {healthy}/{} targets healthy</p>\n",
        targets.len()
    );
    out.push_str("<table>\n<tr><th>target</th><th>url</th><th>state</th><th>probe</th><th class=\"num\">latency</th><th>last change</th><th>last error</th></tr>\n");
    for t in targets {
        let state = t.state.as_str();
        let latency = t.last_latency.map_or_else(
            || "-".to_owned(),
            |l| format!("{:.1} ms", l.as_secs_f64() * 1e3),
        );
        let since = t.last_change_ms.map_or_else(
            || "-".to_owned(),
            |then| format!("{}s ago", now.saturating_sub(then) / 1000),
        );
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td><td class=\"num\">{latency}</td><td>{since}</td><td>{}</td></tr>",
            escape(&t.name),
            escape(&t.url),
            t.probe_kind,
            escape(t.last_error.as_deref().unwrap_or("-")),
        );
    }
    out.push_str("</table>\n<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/readyz\">/readyz</a> &middot; <a href=\"/healthz\">/healthz</a></p>\n");
}
