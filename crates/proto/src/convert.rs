//! Conversions between wire and core types.

use std::time::Duration;

use tether_core::{
    CheckerState, HealthState, HealthUpdate, Impairment, ProbeKind, TargetStatus, UpdateKind,
};
use tonic::codegen::http::HeaderValue;
use tonic::codegen::http::uri::Authority;

use crate::pb;

/// A wire message that does not make a valid core value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid field `{field}`: {reason}")]
pub struct ConvertError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConvertError {
    ConvertError {
        field,
        reason: reason.into(),
    }
}

// === HealthState ===

impl From<HealthState> for pb::HealthState {
    fn from(s: HealthState) -> Self {
        match s {
            HealthState::Unknown => pb::HealthState::Unknown,
            HealthState::Healthy => pb::HealthState::Healthy,
            HealthState::Unhealthy => pb::HealthState::Unhealthy,
        }
    }
}

fn state_from_wire(raw: i32) -> Result<HealthState, ConvertError> {
    match pb::HealthState::try_from(raw) {
        Ok(pb::HealthState::Unknown) => Ok(HealthState::Unknown),
        Ok(pb::HealthState::Healthy) => Ok(HealthState::Healthy),
        Ok(pb::HealthState::Unhealthy) => Ok(HealthState::Unhealthy),
        Ok(pb::HealthState::Unspecified) => Err(invalid("state", "unspecified")),
        Err(_) => Err(invalid("state", format!("unknown value {raw}"))),
    }
}

// === ProbeKind ===

impl From<ProbeKind> for pb::ProbeKind {
    fn from(k: ProbeKind) -> Self {
        match k {
            ProbeKind::Tcp => pb::ProbeKind::Tcp,
            ProbeKind::Http => pb::ProbeKind::Http,
            ProbeKind::Grpc => pb::ProbeKind::Grpc,
        }
    }
}

fn kind_from_wire(raw: i32) -> Result<ProbeKind, ConvertError> {
    match pb::ProbeKind::try_from(raw) {
        Ok(pb::ProbeKind::Tcp) => Ok(ProbeKind::Tcp),
        Ok(pb::ProbeKind::Http) => Ok(ProbeKind::Http),
        Ok(pb::ProbeKind::Grpc) => Ok(ProbeKind::Grpc),
        Ok(pb::ProbeKind::Unspecified) => Err(invalid("probe_kind", "unspecified")),
        Err(_) => Err(invalid("probe_kind", format!("unknown value {raw}"))),
    }
}

// === TargetStatus ===

/// A Host the proxy may send as is: an authority (`host:port`, no user
/// info) that is also a header value, so a checker cannot smuggle header
/// bytes through it.
fn host_from_wire(raw: String) -> Result<Option<String>, ConvertError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let authority: Authority = raw
        .parse()
        .map_err(|e| invalid("host", format!("{raw:?}: {e}")))?;
    if authority.host().is_empty() || authority.port_u16().is_none() || raw.contains('@') {
        return Err(invalid("host", format!("{raw:?}: not host:port")));
    }
    HeaderValue::from_str(&raw).map_err(|e| invalid("host", format!("{raw:?}: {e}")))?;
    Ok(Some(raw))
}

impl From<&TargetStatus> for pb::TargetHealth {
    fn from(s: &TargetStatus) -> Self {
        pb::TargetHealth {
            name: s.name.clone(),
            url: s.url.clone(),
            host: s.host.clone().unwrap_or_default(),
            state: pb::HealthState::from(s.state).into(),
            probe_kind: pb::ProbeKind::from(s.probe_kind).into(),
            last_probe_unix_ms: s.last_probe_ms,
            last_latency_us: s
                .last_latency
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            consecutive_successes: s.consecutive_successes,
            consecutive_failures: s.consecutive_failures,
            last_error: s.last_error.clone().unwrap_or_default(),
            last_change_unix_ms: s.last_change_ms,
            draining: s.draining,
        }
    }
}

impl TryFrom<pb::TargetHealth> for TargetStatus {
    type Error = ConvertError;

    fn try_from(m: pb::TargetHealth) -> Result<Self, Self::Error> {
        if m.name.is_empty() {
            return Err(invalid("name", "empty"));
        }
        if m.url.is_empty() {
            return Err(invalid("url", "empty"));
        }
        Ok(TargetStatus {
            state: state_from_wire(m.state)?,
            probe_kind: kind_from_wire(m.probe_kind)?,
            host: host_from_wire(m.host)?,
            name: m.name,
            url: m.url,
            last_probe_ms: m.last_probe_unix_ms,
            last_latency: m.last_latency_us.map(Duration::from_micros),
            consecutive_successes: m.consecutive_successes,
            consecutive_failures: m.consecutive_failures,
            last_error: (!m.last_error.is_empty()).then_some(m.last_error),
            last_change_ms: m.last_change_unix_ms,
            draining: m.draining,
        })
    }
}

// === CheckerState ===

impl From<&CheckerState> for pb::CheckerState {
    fn from(s: &CheckerState) -> Self {
        pb::CheckerState {
            impaired: s.impaired.as_ref().map(|i| pb::Impairment {
                since_unix_ms: i.since_ms,
                reason: i.reason.clone(),
            }),
        }
    }
}

impl TryFrom<pb::CheckerState> for CheckerState {
    type Error = ConvertError;

    fn try_from(m: pb::CheckerState) -> Result<Self, Self::Error> {
        let impaired = match m.impaired {
            None => None,
            Some(i) if i.since_unix_ms == 0 => {
                return Err(invalid("checker.impaired.since_unix_ms", "zero"));
            }
            Some(i) => Some(Impairment {
                since_ms: i.since_unix_ms,
                reason: i.reason,
            }),
        };
        Ok(CheckerState { impaired })
    }
}

/// A checker state that may be absent on the wire: a sender that predates
/// the field is not impaired.
pub fn checker_from_wire(m: Option<pb::CheckerState>) -> Result<CheckerState, ConvertError> {
    m.map_or(Ok(CheckerState::ok()), CheckerState::try_from)
}

// === HealthUpdate ===

impl From<&HealthUpdate> for pb::WatchResponse {
    fn from(u: &HealthUpdate) -> Self {
        let update = match &u.kind {
            UpdateKind::Snapshot { targets, checker } => {
                pb::watch_response::Update::Snapshot(pb::Snapshot {
                    targets: targets.iter().map(pb::TargetHealth::from).collect(),
                    // Absent when not impaired: the bytes an older
                    // checker sent, and the same meaning.
                    checker: checker.is_impaired().then(|| checker.into()),
                })
            }
            UpdateKind::Change(s) => pb::watch_response::Update::Change(s.into()),
            UpdateKind::Removed(name) => pb::watch_response::Update::Removed(name.clone()),
            UpdateKind::Checker(state) => pb::watch_response::Update::Checker(state.into()),
        };
        pb::WatchResponse {
            version: u.version,
            update: Some(update),
        }
    }
}

impl TryFrom<pb::WatchResponse> for HealthUpdate {
    type Error = ConvertError;

    fn try_from(m: pb::WatchResponse) -> Result<Self, Self::Error> {
        let kind = match m.update {
            Some(pb::watch_response::Update::Snapshot(s)) => UpdateKind::Snapshot {
                targets: s
                    .targets
                    .into_iter()
                    .map(TargetStatus::try_from)
                    .collect::<Result<_, _>>()?,
                checker: checker_from_wire(s.checker)?,
            },
            Some(pb::watch_response::Update::Checker(c)) => UpdateKind::Checker(c.try_into()?),
            Some(pb::watch_response::Update::Change(c)) => UpdateKind::Change(c.try_into()?),
            Some(pb::watch_response::Update::Removed(name)) if name.is_empty() => {
                return Err(invalid("removed", "empty"));
            }
            Some(pb::watch_response::Update::Removed(name)) => UpdateKind::Removed(name),
            None => return Err(invalid("update", "missing")),
        };
        Ok(HealthUpdate {
            version: m.version,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TargetStatus {
        TargetStatus {
            name: "app-1".into(),
            url: "http://127.0.0.1:5041".into(),
            host: None,
            state: HealthState::Healthy,
            probe_kind: ProbeKind::Http,
            last_probe_ms: Some(1_700_000_000_123),
            last_latency: Some(Duration::from_micros(1234)),
            consecutive_successes: 4,
            consecutive_failures: 0,
            last_error: None,
            last_change_ms: Some(1_700_000_000_000),
            draining: false,
        }
    }

    #[test]
    fn target_round_trips() {
        let s = sample();
        let wire = pb::TargetHealth::from(&s);
        assert_eq!(TargetStatus::try_from(wire), Ok(s));
        let draining = TargetStatus {
            draining: true,
            ..sample()
        };
        let wire = pb::TargetHealth::from(&draining);
        assert!(wire.draining);
        assert_eq!(TargetStatus::try_from(wire), Ok(draining));
    }

    #[test]
    fn host_round_trips_and_empty_is_none() {
        let s = TargetStatus {
            host: Some("backend:8080".into()),
            ..sample()
        };
        let wire = pb::TargetHealth::from(&s);
        assert_eq!(wire.host, "backend:8080");
        assert_eq!(TargetStatus::try_from(wire), Ok(s));
        assert_eq!(pb::TargetHealth::from(&sample()).host, "");
        for ok in ["backend:80", "[fd00::5]:8080", "10.0.0.5:80"] {
            let mut wire = pb::TargetHealth::from(&sample());
            wire.host = ok.into();
            let s = TargetStatus::try_from(wire).expect(ok);
            assert_eq!(s.host.as_deref(), Some(ok));
        }
    }

    #[test]
    fn a_host_that_is_not_an_authority_is_refused() {
        for bad in [
            "backend:8080\r\nX-Injected: 1",
            "backend\n",
            "user@backend:8080",
            "backend/path",
            "backend:8080 x",
            ":8080",
            "backend:port",
            "backend",
            "backend:99999",
            "b\u{e9}:80",
        ] {
            let mut wire = pb::TargetHealth::from(&sample());
            wire.host = bad.into();
            assert_eq!(
                TargetStatus::try_from(wire).map_err(|e| e.field),
                Err("host"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn update_round_trips() {
        for kind in [
            UpdateKind::Snapshot {
                targets: vec![sample()],
                checker: CheckerState::ok(),
            },
            UpdateKind::Snapshot {
                targets: vec![sample()],
                checker: CheckerState::impaired(1_700_000_000_000, "2 of 3 members silent"),
            },
            UpdateKind::Change(sample()),
            UpdateKind::Removed("app-1@10.0.0.5:8080".into()),
            UpdateKind::Checker(CheckerState::ok()),
            UpdateKind::Checker(CheckerState::impaired(1_700_000_000_000, "all silent")),
        ] {
            let u = HealthUpdate { version: 7, kind };
            let wire = pb::WatchResponse::from(&u);
            assert_eq!(HealthUpdate::try_from(wire), Ok(u));
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut wire = pb::TargetHealth::from(&sample());
        wire.state = 0;
        assert_eq!(
            TargetStatus::try_from(wire.clone()).map_err(|e| e.field),
            Err("state")
        );
        wire.state = 99;
        assert_eq!(
            TargetStatus::try_from(wire.clone()).map_err(|e| e.field),
            Err("state")
        );
        wire.state = 2;
        wire.probe_kind = 0;
        assert_eq!(
            TargetStatus::try_from(wire.clone()).map_err(|e| e.field),
            Err("probe_kind")
        );
        wire.probe_kind = 1;
        wire.name.clear();
        assert_eq!(
            TargetStatus::try_from(wire).map_err(|e| e.field),
            Err("name")
        );
        let empty = pb::WatchResponse {
            version: 1,
            update: None,
        };
        assert_eq!(
            HealthUpdate::try_from(empty).map_err(|e| e.field),
            Err("update")
        );
        let nameless = pb::WatchResponse {
            version: 2,
            update: Some(pb::watch_response::Update::Removed(String::new())),
        };
        assert_eq!(
            HealthUpdate::try_from(nameless).map_err(|e| e.field),
            Err("removed")
        );
    }
    #[test]
    fn a_snapshot_without_checker_state_is_not_impaired() {
        // What a checker that predates the field sends.
        let old = pb::WatchResponse {
            version: 3,
            update: Some(pb::watch_response::Update::Snapshot(pb::Snapshot {
                targets: vec![pb::TargetHealth::from(&sample())],
                checker: None,
            })),
        };
        let u = HealthUpdate::try_from(old).expect("valid");
        assert_eq!(u, HealthUpdate::snapshot(3, vec![sample()]));
        let empty = pb::CheckerState { impaired: None };
        assert_eq!(CheckerState::try_from(empty), Ok(CheckerState::ok()));
        assert_eq!(checker_from_wire(None), Ok(CheckerState::ok()));
    }

    #[test]
    fn an_impairment_without_a_time_is_refused() {
        let wire = pb::WatchResponse {
            version: 4,
            update: Some(pb::watch_response::Update::Checker(pb::CheckerState {
                impaired: Some(pb::Impairment {
                    since_unix_ms: 0,
                    reason: "x".into(),
                }),
            })),
        };
        assert_eq!(
            HealthUpdate::try_from(wire).map_err(|e| e.field),
            Err("checker.impaired.since_unix_ms")
        );
    }
}
