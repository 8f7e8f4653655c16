//! Configuration shared by every Tether process: how files and environment
//! are read, and the sections the checker owns (`[checker]`, `[health]`,
//! `[[targets]]`, `[log]`).
//!
//! Two stages: raw serde structs that reject unknown keys, then `validate`
//! into typed values. Every error names the key path. The proxy reuses the
//! loader and these sections (it embeds the checker when no checker is
//! configured), which is why they live here and not in the proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tether_core::{ProbeKind, ProbeSpec, Target};

pub use crate::error::ConfigError;

/// Default address of the checker's gRPC listener.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";
/// Environment prefix: `TETHER_PROXY__LISTEN` sets `proxy.listen`.
pub const ENV_PREFIX: &str = "TETHER";
/// Comma-separated target urls that replace `[[targets]]`.
pub const ENV_TARGETS: &str = "TETHER_TARGETS";

/// Reads `path` (TOML) with environment overrides into `T`. `path` may be
/// absent, leaving only the environment and defaults.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::new(
                "--config",
                format!("{}: no such file", path.display()),
            ));
        }
        builder = builder
            .add_source(config::File::from(path.to_path_buf()).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("health_source.checkers")
            .try_parsing(true),
    );
    if let Ok(list) = std::env::var(ENV_TARGETS) {
        let targets: Vec<std::collections::HashMap<String, String>> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| std::collections::HashMap::from([("url".to_owned(), u.to_owned())]))
            .collect();
        builder = builder
            .set_override("targets", targets)
            .map_err(|e| ConfigError::new(ENV_TARGETS, e.to_string()))?;
    }
    let cfg = builder
        .build()
        .map_err(|e| ConfigError::new(origin(path), e.to_string()))?;
    serde_path_to_error::deserialize::<_, T>(cfg).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { origin(path) } else { key };
        ConfigError::new(key, e.into_inner().to_string())
    })
}

fn origin(path: Option<&Path>) -> String {
    path.map_or_else(|| "environment".to_owned(), |p| p.display().to_string())
}

/// Parses a duration string such as `"500ms"` or `"2s"`.
pub fn duration(key: &str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw.trim())
        .map_err(|e| ConfigError::new(key, format!("invalid duration {raw:?}: {e}")))?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(d)
}

/// Parses a listen address such as `127.0.0.1:8080`.
pub fn socket_addr(key: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("invalid address {raw:?}, expected IP:PORT")))
}

// === [health] and [[targets]] ===

/// `[health]`: probe defaults for every target.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// One `[[targets]]` entry: a url, an optional name, and probe settings
/// that override `[health]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub url: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// Validates `[health]` and `[[targets]]` into the pool. An empty pool is
/// an error: nothing could ever be served.
pub fn targets(health: &RawHealth, raw: &[RawTarget]) -> Result<Vec<Target>, ConfigError> {
    let defaults = probe_spec("health", &ProbeSpec::default(), &health.into())?;
    if raw.is_empty() {
        return Err(ConfigError::new(
            "targets",
            "the pool is empty: add [[targets]] entries or set TETHER_TARGETS",
        ));
    }
    let mut out: Vec<Target> = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let key = format!("targets[{i}]");
        let url = target_url(&format!("{key}.url"), &t.url)?;
        let name = match &t.name {
            Some(n) if n.trim().is_empty() => {
                return Err(ConfigError::new(format!("{key}.name"), "must not be empty"));
            }
            Some(n) => n.trim().to_owned(),
            None => url.clone(),
        };
        if let Some(prev) = out.iter().find(|o| o.name == name) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!("duplicate target name {name:?} (also used by {})", prev.url),
            ));
        }
        let probe = probe_spec(&key, &defaults, &t.into())?;
        out.push(Target { name, url, probe });
    }
    Ok(out)
}

/// The probe fields shared by `[health]` and `[[targets]]`.
struct ProbeFields<'a> {
    kind: Option<&'a str>,
    path: Option<&'a str>,
    interval: Option<&'a str>,
    timeout: Option<&'a str>,
    rise: Option<u32>,
    fall: Option<u32>,
}

impl<'a> From<&'a RawHealth> for ProbeFields<'a> {
    fn from(h: &'a RawHealth) -> Self {
        ProbeFields {
            kind: h.kind.as_deref(),
            path: h.path.as_deref(),
            interval: h.interval.as_deref(),
            timeout: h.timeout.as_deref(),
            rise: h.rise,
            fall: h.fall,
        }
    }
}

impl<'a> From<&'a RawTarget> for ProbeFields<'a> {
    fn from(t: &'a RawTarget) -> Self {
        ProbeFields {
            kind: t.kind.as_deref(),
            path: t.path.as_deref(),
            interval: t.interval.as_deref(),
            timeout: t.timeout.as_deref(),
            rise: t.rise,
            fall: t.fall,
        }
    }
}

fn probe_spec(
    section: &str,
    base: &ProbeSpec,
    f: &ProbeFields<'_>,
) -> Result<ProbeSpec, ConfigError> {
    let key = |k: &str| format!("{section}.{k}");
    let mut spec = base.clone();
    if let Some(kind) = f.kind {
        spec.kind = ProbeKind::parse(kind.trim()).ok_or_else(|| {
            ConfigError::new(
                key("kind"),
                format!("unknown probe kind {kind:?}, expected \"tcp\" or \"http\""),
            )
        })?;
    }
    if let Some(path) = f.path {
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
            return Err(ConfigError::new(
                key("path"),
                format!("{path:?} must start with '/' and contain no spaces"),
            ));
        }
        spec.path = path.to_owned();
    }
    if let Some(raw) = f.interval {
        spec.interval = duration(&key("interval"), raw)?;
    }
    if let Some(raw) = f.timeout {
        spec.timeout = duration(&key("timeout"), raw)?;
    }
    if let Some(rise) = f.rise {
        spec.rise = NonZeroU32::new(rise)
            .ok_or_else(|| ConfigError::new(key("rise"), "must be at least 1"))?;
    }
    if let Some(fall) = f.fall {
        spec.fall = NonZeroU32::new(fall)
            .ok_or_else(|| ConfigError::new(key("fall"), "must be at least 1"))?;
    }
    Ok(spec)
}

/// A target url: `http://host:port` with an optional trailing slash and
/// nothing else. The port defaults to 80. Returned without the slash.
fn target_url(key: &str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| ConfigError::new(key, format!("invalid url {raw:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(ConfigError::new(
            key,
            format!("{raw:?}: only http:// targets are supported"),
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(ConfigError::new(key, format!("{raw:?}: missing host")));
    };
    if authority.as_str().contains('@') {
        return Err(ConfigError::new(
            key,
            format!("{raw:?}: user info is not allowed"),
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{raw:?}: a target url has no path or query"),
        ));
    }
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    Ok(format!("http://{}:{port}", host))
}

// === [checker] ===

/// `[checker]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChecker {
    pub grpc_listen: Option<String>,
}

// === [log] ===

/// `[log]`: a root level and per-logger levels, or a whole log4rs file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    #[serde(default)]
    pub loggers: BTreeMap<String, String>,
    pub file: Option<PathBuf>,
}

/// Validated logging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogConfig {
    Levels {
        root: log::LevelFilter,
        loggers: BTreeMap<String, log::LevelFilter>,
    },
    /// A log4rs YAML file that replaces everything above.
    File(PathBuf),
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig::Levels {
            root: log::LevelFilter::Info,
            loggers: BTreeMap::new(),
        }
    }
}

impl RawLog {
    pub fn validate(&self) -> Result<LogConfig, ConfigError> {
        if let Some(file) = &self.file {
            if !file.exists() {
                return Err(ConfigError::new(
                    "log.file",
                    format!("{}: no such file", file.display()),
                ));
            }
            // Parse it now, so --check-config catches a broken file.
            log4rs::config::load_config_file(file, Default::default())
                .map_err(|e| ConfigError::new("log.file", format!("{}: {e}", file.display())))?;
            return Ok(LogConfig::File(file.clone()));
        }
        let root = match &self.level {
            Some(l) => level("log.level", l)?,
            None => log::LevelFilter::Info,
        };
        let mut loggers = BTreeMap::new();
        for (name, l) in &self.loggers {
            loggers.insert(name.clone(), level(&format!("log.loggers.{name}"), l)?);
        }
        Ok(LogConfig::Levels { root, loggers })
    }
}

fn level(key: &str, raw: &str) -> Result<log::LevelFilter, ConfigError> {
    raw.trim().parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("unknown level {raw:?}, expected off, error, warn, info, debug or trace"),
        )
    })
}

// === the checker's view of the file ===

/// A config file as the checker reads it: its own sections are checked,
/// the data-plane sections are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckerFile {
    #[serde(default)]
    pub checker: RawChecker,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub log: RawLog,
    pub proxy: Option<serde::de::IgnoredAny>,
    pub health_source: Option<serde::de::IgnoredAny>,
    pub sticky: Option<serde::de::IgnoredAny>,
    pub passive: Option<serde::de::IgnoredAny>,
    pub admin: Option<serde::de::IgnoredAny>,
}

/// The checker's validated settings.
#[derive(Clone, Debug)]
pub struct CheckerConfig {
    pub grpc_listen: SocketAddr,
    pub targets: Vec<Target>,
    pub log: LogConfig,
}

impl CheckerFile {
    pub fn validate(&self) -> Result<CheckerConfig, ConfigError> {
        let grpc_listen = socket_addr(
            "checker.grpc_listen",
            self.checker
                .grpc_listen
                .as_deref()
                .unwrap_or(DEFAULT_GRPC_LISTEN),
        )?;
        Ok(CheckerConfig {
            grpc_listen,
            targets: targets(&self.health, &self.targets)?,
            log: self.log.validate()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_target(url: &str) -> RawTarget {
        RawTarget {
            url: url.to_owned(),
            name: None,
            kind: None,
            path: None,
            interval: None,
            timeout: None,
            rise: None,
            fall: None,
        }
    }

    #[test]
    fn target_defaults_come_from_health_section() {
        let health = RawHealth {
            kind: Some("http".into()),
            path: Some("/health".into()),
            interval: Some("500ms".into()),
            ..RawHealth::default()
        };
        let mut t2 = raw_target("http://127.0.0.1:2");
        t2.name = Some("two".into());
        t2.rise = Some(5);
        let got = targets(&health, &[raw_target("http://127.0.0.1:1/"), t2]).expect("valid");
        assert_eq!(got[0].name, "http://127.0.0.1:1");
        assert_eq!(got[0].probe.kind, ProbeKind::Http);
        assert_eq!(got[0].probe.interval, Duration::from_millis(500));
        assert_eq!(got[1].name, "two");
        assert_eq!(got[1].probe.rise.get(), 5);
        assert_eq!(got[1].probe.path, "/health");
    }

    #[test]
    fn errors_name_the_key() {
        let h = RawHealth::default();
        let key = |r: Result<Vec<Target>, ConfigError>| r.expect_err("invalid").key;
        assert_eq!(key(targets(&h, &[])), "targets");
        assert_eq!(
            key(targets(&h, &[raw_target("ftp://x:1")])),
            "targets[0].url"
        );
        assert_eq!(
            key(targets(&h, &[raw_target("http://x:1/a")])),
            "targets[0].url"
        );
        let mut bad = raw_target("http://x:1");
        bad.interval = Some("soon".into());
        assert_eq!(key(targets(&h, &[bad])), "targets[0].interval");
        let mut bad = raw_target("http://x:1");
        bad.fall = Some(0);
        assert_eq!(key(targets(&h, &[bad])), "targets[0].fall");
        let dup = [raw_target("http://x:1"), raw_target("http://x:1")];
        assert_eq!(key(targets(&h, &dup)), "targets[1].name");
        let bad_kind = RawHealth {
            kind: Some("udp".into()),
            ..RawHealth::default()
        };
        assert_eq!(
            key(targets(&bad_kind, &[raw_target("http://x:1")])),
            "health.kind"
        );
    }

    #[test]
    fn url_gets_an_explicit_port() {
        let got = targets(&RawHealth::default(), &[raw_target("http://example.test")]).expect("ok");
        assert_eq!(got[0].url, "http://example.test:80");
    }

    #[test]
    fn log_levels_validate() {
        let raw = RawLog {
            level: Some("warn".into()),
            loggers: BTreeMap::from([("hc".into(), "debug".into())]),
            file: None,
        };
        assert_eq!(
            raw.validate().expect("valid"),
            LogConfig::Levels {
                root: log::LevelFilter::Warn,
                loggers: BTreeMap::from([("hc".into(), log::LevelFilter::Debug)]),
            }
        );
        let bad = RawLog {
            level: Some("loud".into()),
            ..RawLog::default()
        };
        assert_eq!(bad.validate().expect_err("invalid").key, "log.level");
    }
}
