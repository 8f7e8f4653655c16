//! Text and JSON renderings of target health.
//!
//! Everything here is a pure function of its arguments (the current time
//! included), so the output formats are unit tested without a checker.
//! Strings that come from the checker are shown with control characters
//! escaped, so a hostile or broken value cannot break the table or the
//! terminal.

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;
use tether_core::{CheckerState, HealthState, TargetStatus};

/// Column headers of the health table, in order.
const HEADERS: [&str; 7] = [
    "NAME",
    "STATE",
    "URL",
    "PROBE",
    "LATENCY",
    "SINCE",
    "LAST ERROR",
];

/// Spaces between two columns.
const COLUMN_GAP: usize = 2;

/// Shown for a value the checker does not have (yet).
const NONE: &str = "-";

/// The health table: a header line and one line per target, in the given
/// order, columns padded to a common width. Every line ends with `\n` and
/// carries no trailing spaces.
pub fn table(targets: &[TargetStatus], now_ms: u64) -> String {
    let rows: Vec<[String; 7]> = targets.iter().map(|t| row(t, now_ms)).collect();
    let mut widths = HEADERS.map(width);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    push_row(&mut out, &HEADERS, &widths);
    for row in &rows {
        push_row(&mut out, row, &widths);
    }
    out
}

fn row(t: &TargetStatus, now_ms: u64) -> [String; 7] {
    [
        sanitize(&t.name).into_owned(),
        state_text(t).into_owned(),
        sanitize(&t.url).into_owned(),
        t.probe_kind.as_str().to_owned(),
        t.last_latency.map_or_else(|| NONE.to_owned(), latency),
        t.last_change_ms
            .map_or_else(|| NONE.to_owned(), |since| age(since, now_ms)),
        t.last_error
            .as_deref()
            .map_or_else(|| NONE.to_owned(), |e| sanitize(e).into_owned()),
    ]
}

fn push_row<S: AsRef<str>>(out: &mut String, cells: &[S], widths: &[usize]) {
    let last = cells.len().saturating_sub(1);
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        let cell = cell.as_ref();
        out.push_str(cell);
        if i < last {
            let pad = w.saturating_sub(width(cell)) + COLUMN_GAP;
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push('\n');
}

/// Display width of a cell, counted in characters.
fn width(s: &str) -> usize {
    s.chars().count()
}

/// A target's state as shown to a person: `healthy`, or `healthy
/// (draining)` for a drained target (no new clients, sticky ones stay).
pub fn state_text(t: &TargetStatus) -> Cow<'static, str> {
    if t.draining {
        Cow::Owned(format!("{} (draining)", t.state.as_str()))
    } else {
        Cow::Borrowed(t.state.as_str())
    }
}

/// What `tetherctl drain` and `enable` print: the target, what the call
/// did and the version after it, e.g. `app-2 is draining (healthy), v12`.
pub fn drain_line(t: &TargetStatus, changed: bool, version: u64) -> String {
    let what = match (t.draining, changed) {
        (true, true) => "is draining",
        (true, false) => "was already draining",
        (false, true) => "takes new clients again",
        (false, false) => "was not draining",
    };
    format!(
        "{} {what} ({}), v{version}",
        sanitize(&t.name),
        t.state.as_str()
    )
}

/// `s` with every control character (newline, escape, ...) replaced by its
/// Rust escape (`\n`, `\u{1b}`).
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A probe duration: `850µs`, `1.2ms`, `2.05s`.
pub fn latency(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", d.as_secs_f64() * 1_000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// How long ago `since_ms` was at `now_ms` (both Unix epoch milliseconds):
/// `12s ago`, `4m12s ago`, `3h4m ago`, `2d3h ago`. A time in the future
/// (clock skew between hosts) shows as `0s ago`.
pub fn age(since_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(since_ms) / 1_000;
    let (m, h, d) = (secs / 60, secs / 3_600, secs / 86_400);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3_600 => format!("{m}m{}s ago", secs % 60),
        3_600..86_400 => format!("{h}h{}m ago", m % 60),
        _ => format!("{d}d{}h ago", h % 24),
    }
}

/// One line (without `\n`) for a changed target:
/// `v12 app-2 healthy -> unhealthy (connection refused)`,
/// `v13 app-2 healthy -> healthy (draining)`, or `v12 app-4 -> healthy` for
/// a target not seen before.
pub fn change_line(version: u64, previous: Option<&TargetStatus>, now: &TargetStatus) -> String {
    let mut line = format!("v{version} {} ", sanitize(&now.name));
    if let Some(previous) = previous {
        line.push_str(&state_text(previous));
        line.push(' ');
    }
    line.push_str("-> ");
    line.push_str(&state_text(now));
    if let Some(error) = &now.last_error {
        line.push_str(" (");
        line.push_str(&sanitize(error));
        line.push(')');
    }
    line
}

/// One line (without `\n`) for a target that left the pool:
/// `v13 web@10.0.0.5:8080 removed (was healthy)`, or without the part in
/// brackets when the watcher never knew it.
pub fn removal_line(version: u64, name: &str, previous: Option<HealthState>) -> String {
    let mut line = format!("v{version} {} removed", sanitize(name));
    if let Some(previous) = previous {
        line.push_str(" (was ");
        line.push_str(previous.as_str());
        line.push(')');
    }
    line
}

/// What a checker says about itself, for the line above the table:
/// `checker impaired since 12s ago: 3 of 4 members silent`; `None` when
/// it is not impaired.
pub fn checker_line(state: &CheckerState, now_ms: u64) -> Option<String> {
    let i = state.impaired.as_ref()?;
    Some(format!(
        "checker impaired since {}: {}; verdicts caused by silence are held",
        age(i.since_ms, now_ms),
        sanitize(&i.reason)
    ))
}

/// One line (without `\n`) for a change of the checker's own state:
/// `v14 checker impaired: 3 of 4 members silent` or `v15 checker no
/// longer impaired`.
pub fn checker_change_line(version: u64, state: &CheckerState) -> String {
    match &state.impaired {
        Some(i) => format!("v{version} checker impaired: {}", sanitize(&i.reason)),
        None => format!("v{version} checker no longer impaired"),
    }
}

/// `{"since_unix_ms": N, "reason": "..."}`
#[derive(Debug, Serialize)]
struct ImpairmentJson<'a> {
    since_unix_ms: u64,
    reason: &'a str,
}

/// `{"impaired": {...} | null}`
#[derive(Debug, Serialize)]
struct CheckerJson<'a> {
    impaired: Option<ImpairmentJson<'a>>,
}

impl<'a> From<&'a CheckerState> for CheckerJson<'a> {
    fn from(s: &'a CheckerState) -> Self {
        CheckerJson {
            impaired: s.impaired.as_ref().map(|i| ImpairmentJson {
                since_unix_ms: i.since_ms,
                reason: &i.reason,
            }),
        }
    }
}

/// `{"version": N, "checker": {"impaired": {...} | null}}`
#[derive(Debug, Serialize)]
struct CheckerChangeJson<'a> {
    version: u64,
    checker: CheckerJson<'a>,
}

/// A change of the checker's own state as one JSON line (no trailing
/// newline): `{"version":N,"checker":{"impaired":{...}|null}}`.
pub fn checker_json_line(version: u64, state: &CheckerState) -> serde_json::Result<String> {
    serde_json::to_string(&CheckerChangeJson {
        version,
        checker: CheckerJson::from(state),
    })
}

/// A target as JSON. Field names follow the gRPC message.
#[derive(Debug, Serialize)]
struct TargetJson<'a> {
    name: &'a str,
    url: &'a str,
    state: &'static str,
    probe_kind: &'static str,
    last_probe_unix_ms: Option<u64>,
    last_latency_us: Option<u64>,
    consecutive_successes: u32,
    consecutive_failures: u32,
    last_error: Option<&'a str>,
    last_change_unix_ms: Option<u64>,
    draining: bool,
}

impl<'a> From<&'a TargetStatus> for TargetJson<'a> {
    fn from(t: &'a TargetStatus) -> Self {
        TargetJson {
            name: &t.name,
            url: &t.url,
            state: t.state.as_str(),
            probe_kind: t.probe_kind.as_str(),
            last_probe_unix_ms: t.last_probe_ms,
            last_latency_us: t
                .last_latency
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            consecutive_successes: t.consecutive_successes,
            consecutive_failures: t.consecutive_failures,
            last_error: t.last_error.as_deref(),
            last_change_unix_ms: t.last_change_ms,
            draining: t.draining,
        }
    }
}

/// `{"version": N, "targets": [...]}`
#[derive(Debug, Serialize)]
struct PoolJson<'a> {
    version: u64,
    targets: Vec<TargetJson<'a>>,
}

/// `{"version": N, "previous_state": "healthy" | null, "change": {...}}`
#[derive(Debug, Serialize)]
struct ChangeJson<'a> {
    version: u64,
    previous_state: Option<&'static str>,
    change: TargetJson<'a>,
}

fn pool_json(version: u64, targets: &[TargetStatus]) -> PoolJson<'_> {
    PoolJson {
        version,
        targets: targets.iter().map(TargetJson::from).collect(),
    }
}

/// The pool as an indented JSON object, `{"version": N, "targets": [...]}`
/// (no trailing newline).
pub fn pool_json_pretty(version: u64, targets: &[TargetStatus]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&pool_json(version, targets))
}

/// The pool as one JSON line (no trailing newline), same shape as
/// [`pool_json_pretty`].
pub fn pool_json_line(version: u64, targets: &[TargetStatus]) -> serde_json::Result<String> {
    serde_json::to_string(&pool_json(version, targets))
}

/// A change as one JSON line (no trailing newline):
/// `{"version":N,"previous_state":"healthy"|null,"change":{...}}`.
pub fn change_json_line(
    version: u64,
    previous: Option<&TargetStatus>,
    now: &TargetStatus,
) -> serde_json::Result<String> {
    serde_json::to_string(&ChangeJson {
        version,
        previous_state: previous.map(|p| p.state.as_str()),
        change: TargetJson::from(now),
    })
}

/// `{"version": N, "previous_state": "healthy" | null, "removed": "name"}`
#[derive(Debug, Serialize)]
struct RemovalJson<'a> {
    version: u64,
    previous_state: Option<&'static str>,
    removed: &'a str,
}

/// A removal as one JSON line (no trailing newline):
/// `{"version":N,"previous_state":"healthy"|null,"removed":"name"}`.
pub fn removal_json_line(
    version: u64,
    name: &str,
    previous: Option<HealthState>,
) -> serde_json::Result<String> {
    serde_json::to_string(&RemovalJson {
        version,
        previous_state: previous.map(HealthState::as_str),
        removed: name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tether_core::ProbeKind;

    const NOW: u64 = 1_700_000_100_000;

    fn healthy() -> TargetStatus {
        TargetStatus {
            name: "app-1".into(),
            url: "http://127.0.0.1:5041".into(),
            host: None,
            state: HealthState::Healthy,
            probe_kind: ProbeKind::Http,
            last_probe_ms: Some(NOW - 500),
            last_latency: Some(Duration::from_micros(1_234)),
            consecutive_successes: 4,
            consecutive_failures: 0,
            last_error: None,
            last_change_ms: Some(NOW - 12_000),
            draining: false,
        }
    }

    fn unhealthy() -> TargetStatus {
        TargetStatus {
            name: "backend-long-name".into(),
            url: "http://10.0.0.5:8080".into(),
            host: None,
            state: HealthState::Unhealthy,
            probe_kind: ProbeKind::Tcp,
            last_probe_ms: Some(NOW - 100),
            last_latency: Some(Duration::from_micros(2_001_000)),
            consecutive_successes: 0,
            consecutive_failures: 7,
            last_error: Some("connection refused".into()),
            last_change_ms: Some(NOW - 252_000),
            draining: false,
        }
    }

    fn fresh() -> TargetStatus {
        TargetStatus::unknown("c", "http://c:1", ProbeKind::Tcp)
    }

    #[test]
    fn table_is_aligned() {
        let out = table(&[healthy(), unhealthy(), fresh()], NOW);
        let expected = "\
NAME               STATE      URL                    PROBE  LATENCY  SINCE      LAST ERROR
app-1              healthy    http://127.0.0.1:5041  http   1.2ms    12s ago    -
backend-long-name  unhealthy  http://10.0.0.5:8080   tcp    2.00s    4m12s ago  connection refused
c                  unknown    http://c:1             tcp    -        -          -
";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_draining_target_says_so_in_its_state() {
        let drained = TargetStatus {
            draining: true,
            ..healthy()
        };
        let out = table(&[drained.clone(), unhealthy()], NOW);
        let expected = "\
NAME               STATE               URL                    PROBE  LATENCY  SINCE      LAST ERROR
app-1              healthy (draining)  http://127.0.0.1:5041  http   1.2ms    12s ago    -
backend-long-name  unhealthy           http://10.0.0.5:8080   tcp    2.00s    4m12s ago  connection refused
";
        assert_eq!(out, expected);
        assert_eq!(
            change_line(20, Some(&healthy()), &drained),
            "v20 app-1 healthy -> healthy (draining)"
        );
        assert_eq!(
            change_line(21, Some(&drained), &healthy()),
            "v21 app-1 healthy (draining) -> healthy"
        );
        let line = change_json_line(20, Some(&healthy()), &drained).expect("json");
        let value: Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(value["change"]["draining"], true);
        assert_eq!(
            drain_line(&drained, true, 20),
            "app-1 is draining (healthy), v20"
        );
        assert_eq!(
            drain_line(&drained, false, 20),
            "app-1 was already draining (healthy), v20"
        );
        assert_eq!(
            drain_line(&healthy(), true, 21),
            "app-1 takes new clients again (healthy), v21"
        );
        assert_eq!(
            drain_line(&healthy(), false, 21),
            "app-1 was not draining (healthy), v21"
        );
    }

    #[test]
    fn every_column_starts_at_the_same_offset() {
        let out = table(&[healthy(), unhealthy(), fresh()], NOW);
        let lines: Vec<&str> = out.lines().collect();
        for header in &HEADERS[1..] {
            let col = lines[0].find(header).expect("header present");
            for line in &lines[1..] {
                let before = &line[..col];
                assert!(before.ends_with("  "), "{line:?} at {header}");
                assert_ne!(line.as_bytes()[col], b' ', "{line:?} at {header}");
            }
        }
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn empty_pool_is_just_the_header() {
        assert_eq!(
            table(&[], NOW),
            "NAME  STATE  URL  PROBE  LATENCY  SINCE  LAST ERROR\n"
        );
    }

    #[test]
    fn control_characters_cannot_break_the_table() {
        let mut t = unhealthy();
        t.name = "évil\nname".into();
        t.last_error = Some("bad\r\n\u{1b}[31mred".into());
        let out = table(&[t], NOW);
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains(r"évil\nname"));
        assert!(out.contains(r"bad\r\n\u{1b}[31mred"));
        assert!(!out.contains('\u{1b}'));
    }

    #[test]
    fn latency_units() {
        assert_eq!(latency(Duration::from_micros(850)), "850µs");
        assert_eq!(latency(Duration::from_micros(1_234)), "1.2ms");
        assert_eq!(latency(Duration::from_micros(250_000)), "250.0ms");
        assert_eq!(latency(Duration::from_millis(2_050)), "2.05s");
        assert_eq!(latency(Duration::ZERO), "0µs");
        assert_eq!(latency(Duration::MAX), format!("{:.2}s", u64::MAX as f64));
    }

    #[test]
    fn age_units() {
        assert_eq!(age(NOW - 12_999, NOW), "12s ago");
        assert_eq!(age(NOW - 60_000, NOW), "1m0s ago");
        assert_eq!(age(NOW - 3_599_000, NOW), "59m59s ago");
        assert_eq!(age(NOW - 3_660_000, NOW), "1h1m ago");
        assert_eq!(age(NOW - 90_000_000, NOW), "1d1h ago");
        assert_eq!(age(NOW + 5_000, NOW), "0s ago");
        assert_eq!(
            age(0, u64::MAX),
            format!(
                "{}d{}h ago",
                u64::MAX / 1000 / 86_400,
                (u64::MAX / 1000 / 3600) % 24
            )
        );
    }

    #[test]
    fn change_lines() {
        assert_eq!(
            change_line(12, Some(&healthy()), &unhealthy()),
            "v12 backend-long-name healthy -> unhealthy (connection refused)"
        );
        assert_eq!(
            change_line(13, Some(&unhealthy()), &healthy()),
            "v13 app-1 unhealthy -> healthy"
        );
        assert_eq!(change_line(14, None, &healthy()), "v14 app-1 -> healthy");
        let mut odd = unhealthy();
        odd.last_error = Some("line1\nline2".into());
        assert_eq!(
            change_line(15, None, &odd),
            r"v15 backend-long-name -> unhealthy (line1\nline2)"
        );
    }

    #[test]
    fn pool_json_shape() {
        let text = pool_json_pretty(42, &[healthy(), fresh()]).expect("json");
        let value: Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(
            value,
            json!({
                "version": 42,
                "targets": [
                    {
                        "name": "app-1",
                        "url": "http://127.0.0.1:5041",
                        "state": "healthy",
                        "probe_kind": "http",
                        "last_probe_unix_ms": NOW - 500,
                        "last_latency_us": 1234,
                        "consecutive_successes": 4,
                        "consecutive_failures": 0,
                        "last_error": null,
                        "last_change_unix_ms": NOW - 12_000,
                        "draining": false,
                    },
                    {
                        "name": "c",
                        "url": "http://c:1",
                        "state": "unknown",
                        "probe_kind": "tcp",
                        "last_probe_unix_ms": null,
                        "last_latency_us": null,
                        "consecutive_successes": 0,
                        "consecutive_failures": 0,
                        "last_error": null,
                        "last_change_unix_ms": null,
                        "draining": false,
                    },
                ],
            })
        );
        let line = pool_json_line(42, &[healthy(), fresh()]).expect("json");
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Value>(&line).expect("parses"), value);
        assert!(line.starts_with(r#"{"version":42,"targets":[{"name":"app-1","#));
    }

    #[test]
    fn change_json_shape() {
        let line = change_json_line(9, Some(&healthy()), &unhealthy()).expect("json");
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(value["version"], 9);
        assert_eq!(value["previous_state"], "healthy");
        assert_eq!(value["change"]["name"], "backend-long-name");
        assert_eq!(value["change"]["state"], "unhealthy");
        assert_eq!(value["change"]["last_error"], "connection refused");
        assert_eq!(value["change"]["last_latency_us"], 2_001_000);
        let line = change_json_line(10, None, &fresh()).expect("json");
        let value: Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(value["previous_state"], Value::Null);
    }
}
