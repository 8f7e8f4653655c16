//! `tetherctl checkers`: a proxy's view of every checker it follows and the
//! merged table it routes on, read from the proxy's `/status.json`.
//!
//! Parsing and rendering are pure and unit tested; strings from the proxy
//! are shown with control characters escaped, as everywhere.

use serde::Deserialize;

use crate::render::sanitize;

/// The part of the proxy's `/status.json` shown here; unknown fields are
/// ignored so a newer proxy can add some.
#[derive(Debug, Deserialize)]
pub struct Status {
    pub table_version: Option<u64>,
    pub live: usize,
    pub checkers: Vec<Checker>,
    pub merged: Vec<Member>,
}

#[derive(Debug, Deserialize)]
pub struct Checker {
    pub address: String,
    pub stream_up: bool,
    /// `null` or `{since_ms, reason}`.
    pub impaired: Option<Impaired>,
    pub version: Option<u64>,
    pub members: usize,
    pub unhealthy: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Impaired {
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct Member {
    pub name: String,
    pub state: String,
    pub healthy: bool,
    pub draining: bool,
    #[serde(default)]
    pub ejected: bool,
}

/// The admin path asked when the URL names none.
pub const PATH: &str = "/status.json";

/// Two tables: the checkers, then the merged members.
pub fn render(status: &Status) -> String {
    let mut rows = vec![
        [
            "CHECKER",
            "STREAM",
            "IMPAIRED",
            "VERSION",
            "MEMBERS",
            "UNHEALTHY",
        ]
        .map(str::to_owned),
    ];
    for c in &status.checkers {
        rows.push([
            sanitize(&c.address).into_owned(),
            if c.stream_up { "up" } else { "down" }.to_owned(),
            c.impaired.as_ref().map_or_else(
                || "no".to_owned(),
                |i| format!("yes: {}", sanitize(&i.reason)),
            ),
            c.version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            c.members.to_string(),
            if c.unhealthy.is_empty() {
                "-".to_owned()
            } else {
                sanitize(&c.unhealthy.join(",")).into_owned()
            },
        ]);
    }
    let mut out = columns(&rows);
    let taking = status.merged.iter().filter(|m| m.healthy).count();
    out.push_str(&format!(
        "\nmerged: table {}, {} of {} checkers live, {taking}/{} members take traffic\n",
        status
            .table_version
            .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
        status.live,
        status.checkers.len(),
        status.merged.len(),
    ));
    let mut rows = vec![["NAME", "STATE", "TRAFFIC"].map(str::to_owned)];
    for m in &status.merged {
        let traffic = match (m.healthy, m.draining, m.ejected) {
            (false, _, _) => "no",
            (true, _, true) => "ejected",
            (true, true, false) => "draining",
            (true, false, false) => "yes",
        };
        rows.push([
            sanitize(&m.name).into_owned(),
            sanitize(&m.state).into_owned(),
            traffic.to_owned(),
        ]);
    }
    out.push_str(&columns(&rows));
    out
}

/// Rows padded to common column widths, without trailing spaces.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
      "table_version": 5,
      "live": 1,
      "checkers": [
        {"address": "http://10.0.0.1:50051", "stream_up": true, "impaired": null,
         "live": true, "version": 42, "members": 2, "unhealthy": ["app-2"]},
        {"address": "http://10.0.0.2:50051", "stream_up": true, "impaired": {"since_ms": 1, "reason": "2 of 2 silent"},
         "live": false, "version": null, "members": 0, "unhealthy": []}
      ],
      "merged": [
        {"name": "app-1", "url": "http://a:1", "state": "healthy", "healthy": true,
         "draining": false, "ejected": false, "later": 1},
        {"name": "app-2", "url": "http://b:1", "state": "unhealthy", "healthy": false,
         "draining": false, "ejected": false}
      ]
    }"#;

    #[test]
    fn renders_checkers_and_the_merge() {
        let status: Status = serde_json::from_str(DOC).expect("parse");
        let text = render(&status);
        let want = "\
CHECKER                STREAM  IMPAIRED            VERSION  MEMBERS  UNHEALTHY
http://10.0.0.1:50051  up      no                  42       2        app-2
http://10.0.0.2:50051  up      yes: 2 of 2 silent  -        0        -

merged: table v5, 1 of 2 checkers live, 1/2 members take traffic
NAME   STATE      TRAFFIC
app-1  healthy    yes
app-2  unhealthy  no
";
        assert_eq!(text, want);
    }
}
