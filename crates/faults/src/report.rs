//! A scenario's result, and the table `make faults` writes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::load::{Figures, ms};
use crate::probe::Snapshot;

/// One target: what the issue asks, what was measured, whether it was met
/// exactly (`met`) and within the generous bound a loaded CI machine gets
/// (`within_bound`, what the tests assert).
#[derive(Clone, Debug)]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub met: bool,
    pub within_bound: bool,
}

impl Check {
    /// A target with no timing slack: met and within bound are the same.
    pub fn exact(target: &str, measured: String, met: bool) -> Check {
        Check {
            target: target.to_owned(),
            measured,
            met,
            within_bound: met,
        }
    }

    /// A time target `want` with a CI bound `bound`.
    pub fn time(target: &str, got: Option<Duration>, want: Duration, bound: Duration) -> Check {
        let measured = got.map_or_else(|| "never".to_owned(), ms);
        Check {
            target: target.to_owned(),
            measured,
            met: got.is_some_and(|g| g <= want),
            within_bound: got.is_some_and(|g| g <= bound),
        }
    }
}

/// What one scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub id: &'static str,
    pub name: &'static str,
    pub load: Option<Figures>,
    pub detect: Option<Duration>,
    pub recover: Option<Duration>,
    pub before: Snapshot,
    pub after: Snapshot,
    pub notes: Vec<String>,
    pub checks: Vec<Check>,
    pub took: Duration,
    /// Why the scenario did not run (the machine cannot inject its
    /// failure, e.g. no root or no iptables): no figures, no checks, and
    /// nothing missed; the table says so instead.
    pub not_run: Option<String>,
}

impl Outcome {
    pub fn new(id: &'static str, name: &'static str) -> Outcome {
        Outcome {
            id,
            name,
            ..Outcome::default()
        }
    }

    /// A scenario that could not run here, and why.
    pub fn not_run(id: &'static str, name: &'static str, why: impl Into<String>) -> Outcome {
        Outcome {
            not_run: Some(why.into()),
            ..Outcome::new(id, name)
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn check(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// The descriptor target: back to `limit` within `deadline`.
    pub fn fds_back(&mut self, settled: bool, limit: usize, deadline: Duration) {
        let measured = format!("{} → {} (limit {limit})", self.before.fds, self.after.fds);
        self.check(Check::exact(
            &format!("fds back to baseline within {} s", deadline.as_secs()),
            measured,
            settled,
        ));
    }

    /// Targets missed, each as `target: measured`.
    pub fn missed(&self, bound: bool) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| if bound { !c.within_bound } else { !c.met })
            .map(|c| format!("{}: {}", c.target, c.measured))
            .collect()
    }

    /// Human-readable, for the terminal and test output.
    pub fn text(&self) -> String {
        if let Some(why) = &self.not_run {
            return format!("{} {}: NOT RUN: {why}\n", self.id, self.name);
        }
        let mut s = format!(
            "{} {} ({:.1} s)\n",
            self.id,
            self.name,
            self.took.as_secs_f64()
        );
        if let Some(f) = &self.load {
            let _ = writeln!(s, "  load: {f}");
        }
        if let Some(d) = self.detect {
            let _ = writeln!(s, "  detect: {}", ms(d));
        }
        if let Some(d) = self.recover {
            let _ = writeln!(s, "  recover: {}", ms(d));
        }
        let _ = writeln!(
            s,
            "  proxy: rss {} → {}, fds {} → {}",
            mib(self.before.rss),
            mib(self.after.rss),
            self.before.fds,
            self.after.fds
        );
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        for c in &self.checks {
            let verdict = match (c.met, c.within_bound) {
                (true, _) => "met",
                (false, true) => "MISSED (within CI bound)",
                (false, false) => "MISSED",
            };
            let _ = writeln!(s, "  target {}: {} — {verdict}", c.target, c.measured);
        }
        s
    }

    /// One row of the doc's table.
    pub fn row(&self) -> String {
        let cell = |s: String| s.replace('|', "\\|");
        if let Some(why) = &self.not_run {
            return format!(
                "| {} | {} | – | – | – | – | – | – | not run: {} | |",
                self.id,
                self.name,
                cell(why.clone())
            );
        }
        let load = self.load.as_ref();
        let targets: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {}: {}",
                    if c.met { "✅" } else { "❌" },
                    c.target,
                    c.measured
                )
            })
            .collect();
        let latency = load.map_or("–".to_owned(), |f| {
            format!("{} / {} / {}", ms(f.p50), ms(f.p99), ms(f.max))
        });
        let times = format!(
            "{} / {}",
            self.detect.map_or("–".to_owned(), ms),
            self.recover.map_or("–".to_owned(), ms)
        );
        let rss = format!("{} → {}", mib(self.before.rss), mib(self.after.rss));
        let fds = format!("{} → {}", self.before.fds, self.after.fds);
        format!(
            "| {} | {} | {} | {} | {latency} | {times} | {rss} | {fds} | {} | {} |",
            self.id,
            self.name,
            load.map_or("–".to_owned(), |f| f.sent.to_string()),
            cell(load.map_or("–".to_owned(), Figures::failures)),
            cell(targets.join("<br>")),
            cell(self.notes.join("<br>")),
        )
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

const BEGIN: &str = "<!-- faults:begin -->";
const END: &str = "<!-- faults:end -->";

/// The text between the markers: the table, the date and commit.
pub fn section(outcomes: &[Outcome], not_done: &[(&str, &str)], header: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}\n");
    s.push_str(
        "| # | Scenario | Requests | Failures (status / connection error) | p50 / p99 / max | Detect / recover | Proxy RSS before → after | Proxy fds before → after | Targets | Notes |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for o in outcomes {
        s.push_str(&o.row());
        s.push('\n');
    }
    if !not_done.is_empty() {
        s.push_str("\nNot run by this suite:\n\n");
        for (id, why) in not_done {
            let _ = writeln!(s, "- {id}: {why}");
        }
    }
    s
}

/// Replaces the text between the faults markers in `doc`.
pub fn write_doc(doc: &Path, body: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(doc)?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return Err(std::io::Error::other(format!(
            "{}: no {BEGIN} … {END} markers",
            doc.display()
        )));
    };
    let mut out = String::new();
    out.push_str(&text[..b + BEGIN.len()]);
    out.push('\n');
    out.push_str(body.trim_end());
    out.push('\n');
    out.push_str(&text[e..]);
    std::fs::write(doc, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_not_run_says_why_and_misses_nothing() {
        let o = Outcome::not_run("F17", "cut off", "needs root | iptables");
        assert!(o.missed(false).is_empty() && o.missed(true).is_empty());
        assert_eq!(o.text(), "F17 cut off: NOT RUN: needs root | iptables\n");
        assert_eq!(
            o.row(),
            "| F17 | cut off | – | – | – | – | – | – | not run: needs root \\| iptables | |"
        );
        let table = section(&[o], &[], "header");
        assert!(table.contains("not run: needs root"), "{table}");
    }
}
