//! What `tetherctl watch` prints for each message of the health stream.
//!
//! [`Watcher`] keeps the pool as the stream told it (a core [`PoolView`]), so
//! a change can be shown as "from -> to", and turns each update into the text
//! to print. No I/O here.

use tether_core::{Applied, Gap, HealthUpdate, PoolView, UpdateKind};

use crate::render;

/// Output format of `watch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The snapshot as a table, then one line per change.
    Text,
    /// One JSON object per line and message.
    Json,
}

/// What to do after one update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Print this text (it ends in `\n`).
    Print(String),
    /// A duplicate or older message: nothing to print.
    Skip,
    /// The update does not follow the last version; nothing changed. Ask
    /// for a fresh snapshot.
    Gap(Gap),
}

/// The receiving side of one or more Watch streams.
#[derive(Debug)]
pub struct Watcher {
    format: Format,
    view: PoolView,
    printed_snapshot: bool,
}

impl Watcher {
    pub fn new(format: Format) -> Self {
        Watcher {
            format,
            view: PoolView::new(),
            printed_snapshot: false,
        }
    }

    /// Applies one update and says what to print for it.
    pub fn apply(&mut self, update: HealthUpdate, now_ms: u64) -> serde_json::Result<Step> {
        let version = update.version;
        let text = match &update.kind {
            UpdateKind::Snapshot { .. } => {
                if !matches!(self.view.apply(update), Ok(Applied::Changed)) {
                    return Ok(Step::Skip);
                }
                let targets = self.view.targets();
                let checker = render::checker_line(self.view.checker(), now_ms)
                    .map(|line| line + "\n")
                    .unwrap_or_default();
                let text = match self.format {
                    Format::Json => render::pool_json_line(version, targets)? + "\n",
                    Format::Text if self.printed_snapshot => {
                        let table = render::table(targets, now_ms);
                        format!("v{version} snapshot\n{checker}{table}")
                    }
                    Format::Text => checker + &render::table(targets, now_ms),
                };
                self.printed_snapshot = true;
                text
            }
            UpdateKind::Change(status) => {
                let status = status.clone();
                let previous = self
                    .view
                    .targets()
                    .iter()
                    .find(|t| t.name == status.name)
                    .cloned();
                match self.view.apply(update) {
                    Ok(Applied::Changed) => {}
                    Ok(Applied::Stale) => return Ok(Step::Skip),
                    Err(gap) => return Ok(Step::Gap(gap)),
                }
                let previous = previous.as_ref();
                match self.format {
                    Format::Json => render::change_json_line(version, previous, &status)? + "\n",
                    Format::Text => render::change_line(version, previous, &status) + "\n",
                }
            }
            UpdateKind::Removed(name) => {
                let name = name.clone();
                let previous = self
                    .view
                    .targets()
                    .iter()
                    .find(|t| t.name == name)
                    .map(|t| t.state);
                match self.view.apply(update) {
                    Ok(Applied::Changed) => {}
                    Ok(Applied::Stale) => return Ok(Step::Skip),
                    Err(gap) => return Ok(Step::Gap(gap)),
                }
                match self.format {
                    Format::Json => render::removal_json_line(version, &name, previous)? + "\n",
                    Format::Text => render::removal_line(version, &name, previous) + "\n",
                }
            }
            UpdateKind::Checker(state) => {
                let state = state.clone();
                match self.view.apply(update) {
                    Ok(Applied::Changed) => {}
                    Ok(Applied::Stale) => return Ok(Step::Skip),
                    Err(gap) => return Ok(Step::Gap(gap)),
                }
                match self.format {
                    Format::Json => render::checker_json_line(version, &state)? + "\n",
                    Format::Text => render::checker_change_line(version, &state) + "\n",
                }
            }
        };
        Ok(Step::Print(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use tether_core::{HealthState, ProbeKind, TargetStatus};

    const NOW: u64 = 1_700_000_000_000;

    fn status(name: &str, state: HealthState) -> TargetStatus {
        let mut s = TargetStatus::unknown(name, format!("http://{name}:80"), ProbeKind::Tcp);
        s.state = state;
        s
    }

    fn snapshot(version: u64, targets: Vec<TargetStatus>) -> HealthUpdate {
        HealthUpdate::snapshot(version, targets)
    }

    fn change(version: u64, s: TargetStatus) -> HealthUpdate {
        HealthUpdate::change(version, s)
    }

    fn text(w: &mut Watcher, u: HealthUpdate) -> Option<String> {
        match w.apply(u, NOW).expect("renders") {
            Step::Print(text) => Some(text),
            Step::Skip => None,
            Step::Gap(gap) => panic!("unexpected {gap:?}"),
        }
    }

    #[test]
    fn snapshot_then_changes_as_text() {
        let mut w = Watcher::new(Format::Text);
        let first = text(
            &mut w,
            snapshot(10, vec![status("app-1", HealthState::Healthy)]),
        )
        .expect("printed");
        assert_eq!(
            first,
            render::table(&[status("app-1", HealthState::Healthy)], NOW)
        );

        let mut down = status("app-1", HealthState::Unhealthy);
        down.last_error = Some("connection refused".into());
        assert_eq!(
            text(&mut w, change(11, down)).as_deref(),
            Some("v11 app-1 healthy -> unhealthy (connection refused)\n")
        );
        assert_eq!(
            text(&mut w, change(12, status("app-4", HealthState::Healthy))).as_deref(),
            Some("v12 app-4 -> healthy\n")
        );
        assert_eq!(
            text(&mut w, change(13, status("app-1", HealthState::Healthy))).as_deref(),
            Some("v13 app-1 unhealthy -> healthy\n")
        );
    }

    #[test]
    fn removals_print_the_name_and_leave_the_view() {
        let mut w = Watcher::new(Format::Text);
        text(&mut w, snapshot(1, vec![status("a", HealthState::Healthy)]));
        assert_eq!(
            text(&mut w, HealthUpdate::removed(2, "a")).as_deref(),
            Some("v2 a removed (was healthy)\n")
        );
        assert_eq!(
            text(&mut w, HealthUpdate::removed(3, "ghost")).as_deref(),
            Some("v3 ghost removed\n")
        );
        assert_eq!(text(&mut w, HealthUpdate::removed(3, "a")), None);
        assert_eq!(
            text(&mut w, change(4, status("a", HealthState::Unknown))).as_deref(),
            Some("v4 a -> unknown\n")
        );

        let mut j = Watcher::new(Format::Json);
        text(
            &mut j,
            snapshot(1, vec![status("a", HealthState::Unhealthy)]),
        );
        let line = text(&mut j, HealthUpdate::removed(2, "a")).expect("printed");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["version"], 2);
        assert_eq!(v["removed"], "a");
        assert_eq!(v["previous_state"], "unhealthy");
    }

    #[test]
    fn later_snapshot_is_labelled_and_replaces_the_pool() {
        let mut w = Watcher::new(Format::Text);
        text(&mut w, snapshot(1, vec![status("a", HealthState::Healthy)]));
        let again = text(
            &mut w,
            snapshot(7, vec![status("b", HealthState::Unhealthy)]),
        )
        .expect("printed");
        assert!(again.starts_with("v7 snapshot\nNAME "), "{again}");
        assert_eq!(
            text(&mut w, change(8, status("a", HealthState::Unhealthy))).as_deref(),
            Some("v8 a -> unhealthy\n")
        );
    }

    #[test]
    fn duplicates_print_nothing_and_gaps_are_reported() {
        let mut w = Watcher::new(Format::Text);
        let gap = w
            .apply(change(1, status("a", HealthState::Healthy)), NOW)
            .expect("renders");
        assert_eq!(gap, Step::Gap(Gap { have: None, got: 1 }));

        text(&mut w, snapshot(5, vec![status("a", HealthState::Healthy)]));
        assert_eq!(
            text(&mut w, snapshot(5, vec![status("a", HealthState::Healthy)])),
            None
        );
        assert_eq!(
            text(&mut w, change(5, status("a", HealthState::Unhealthy))),
            None
        );
        let gap = w
            .apply(change(7, status("a", HealthState::Unhealthy)), NOW)
            .expect("renders");
        assert_eq!(
            gap,
            Step::Gap(Gap {
                have: Some(5),
                got: 7
            })
        );
        assert_eq!(
            text(&mut w, change(6, status("a", HealthState::Unhealthy))).as_deref(),
            Some("v6 a healthy -> unhealthy\n")
        );
    }

    #[test]
    fn json_is_one_line_per_message() {
        let mut w = Watcher::new(Format::Json);
        let snap =
            text(&mut w, snapshot(3, vec![status("a", HealthState::Healthy)])).expect("printed");
        assert!(snap.ends_with('\n'));
        assert_eq!(snap.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&snap).expect("json");
        assert_eq!(v["version"], 3);
        assert_eq!(v["targets"][0]["name"], "a");

        let line = text(&mut w, change(4, status("a", HealthState::Unhealthy))).expect("printed");
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["version"], 4);
        assert_eq!(v["previous_state"], "healthy");
        assert_eq!(v["change"]["state"], "unhealthy");
    }
    #[test]
    fn the_checker_state_is_shown_and_follows_the_version_rules() {
        use tether_core::CheckerState;
        let mut w = Watcher::new(Format::Text);
        let impaired = CheckerState::impaired(NOW - 12_000, "3 of 4 members silent");
        let snap = HealthUpdate::snapshot_of(1, vec![status("a", HealthState::Healthy)], impaired);
        let Ok(Step::Print(text)) = w.apply(snap, NOW) else {
            panic!("a snapshot prints");
        };
        assert!(
            text.starts_with("checker impaired since 12s ago: 3 of 4 members silent"),
            "{text}"
        );
        let ok = HealthUpdate::checker(2, CheckerState::ok());
        assert_eq!(
            w.apply(ok.clone(), NOW).expect("apply"),
            Step::Print("v2 checker no longer impaired\n".into())
        );
        assert_eq!(w.apply(ok, NOW).expect("apply"), Step::Skip);
        let jump = HealthUpdate::checker(4, CheckerState::impaired(NOW, "x"));
        assert!(matches!(w.apply(jump, NOW), Ok(Step::Gap(_))));
        let mut json = Watcher::new(Format::Json);
        json.apply(HealthUpdate::snapshot(1, vec![]), NOW)
            .expect("apply");
        let Ok(Step::Print(line)) = json.apply(
            HealthUpdate::checker(2, CheckerState::impaired(7, "why")),
            NOW,
        ) else {
            panic!("a change of the checker prints");
        };
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["version"], 2);
        assert_eq!(v["checker"]["impaired"]["since_unix_ms"], 7);
        assert_eq!(v["checker"]["impaired"]["reason"], "why");
    }
}
