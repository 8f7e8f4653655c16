//! The config file both daemons read, and how file and environment become
//! one raw value.
//!
//! Two stages: [`RawFile`] knows every section and rejects unknown keys
//! (serde), then each daemon validates the sections it uses into typed
//! values. The validators shared by both (durations, addresses, the pool,
//! `[log]`, `[admin]`) live here; every error names the key path.
//!
//! The environment is read through [`Env`], so tests hand in the variables
//! they want instead of changing the process's.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tether_core::target::{DEFAULT_DNS_REFRESH, DEFAULT_PATH};
use tether_core::{PoolEntry, ProbeKind, ProbeSpec, Target};

pub use crate::error::ConfigError;
use crate::tls::{self, TargetTrust};

/// Environment prefix: `TETHER_PROXY__LISTEN` sets `proxy.listen`.
pub const ENV_PREFIX: &str = "TETHER_";
/// Separates section and key (and deeper levels) in a variable's name.
pub const ENV_SEPARATOR: &str = "__";
/// Comma-separated target urls that replace `[[targets]]`.
pub const ENV_TARGETS: &str = "TETHER_TARGETS";

// === Env ===

/// The environment variables that are config: `TETHER_<SECTION>__<KEY>`
/// and `TETHER_TARGETS`. Any other `TETHER_*` variable (`TETHER_CHECKER`
/// is `tetherctl`'s) is left alone, so a variable meant for one program
/// never stops another.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process's environment. Variables whose name or value is not
    /// UTF-8 are not config (they cannot match a key).
    pub fn process() -> Env {
        Env::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An environment made of `pairs` (tests).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Env
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| is_config_var(k))
            .collect();
        Env { vars }
    }

    fn targets(&self) -> Option<&str> {
        self.vars.get(ENV_TARGETS).map(String::as_str)
    }

    /// The `TETHER_<SECTION>__<KEY>` variables.
    fn keys(&self) -> config::Map<String, String> {
        self.vars
            .iter()
            .filter(|(k, _)| k.as_str() != ENV_TARGETS)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `TETHER_TARGETS`, or `TETHER_` + a non-empty section + `__` + a key.
fn is_config_var(name: &str) -> bool {
    if name == ENV_TARGETS {
        return true;
    }
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    match rest.split_once(ENV_SEPARATOR) {
        Some((section, key)) => !section.is_empty() && !key.is_empty(),
        None => false,
    }
}

// === loading ===

/// Reads `path` (TOML) with the config variables of `env` on top. `path`
/// may be absent, leaving only the environment and defaults.
pub fn load(path: Option<&Path>, env: &Env) -> Result<RawFile, ConfigError> {
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
        config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
            .prefix_separator("_")
            .separator(ENV_SEPARATOR)
            .list_separator(",")
            .with_list_parse_key("health_source.checkers")
            .try_parsing(true)
            .source(Some(env.keys())),
    );
    if let Some(list) = env.targets() {
        let targets: Vec<HashMap<String, String>> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| HashMap::from([("url".to_owned(), u.to_owned())]))
            .collect();
        builder = builder
            .set_override("targets", targets)
            .map_err(|e| ConfigError::new(ENV_TARGETS, e.to_string()))?;
    }
    let cfg = builder
        .build()
        .map_err(|e| ConfigError::new(origin(path), e.to_string()))?;
    serde_path_to_error::deserialize::<_, RawFile>(cfg).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { origin(path) } else { key };
        ConfigError::new(key, e.into_inner().to_string())
    })
}

fn origin(path: Option<&Path>) -> String {
    path.map_or_else(|| "environment".to_owned(), |p| p.display().to_string())
}

// === the raw file ===

/// A config file as written: every section either daemon knows. Each
/// daemon validates its own sections and leaves the others', but a key no
/// daemon knows is an error everywhere, so a typo is never silently ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub checker: RawChecker,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub health_source: RawHealthSource,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub upstream_tls: RawUpstreamTls,
    #[serde(default)]
    pub sticky: RawSticky,
    #[serde(default)]
    pub passive: RawPassive,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
}

/// `[checker]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChecker {
    pub grpc_listen: Option<String>,
    /// `[checker.tls]`: the gRPC listener's certificate; `client_ca` set
    /// means clients must present a certificate it signed.
    pub tls: Option<RawServerTls>,
}

/// A TLS server's files (PEM).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// A TLS client's files (PEM): the CA to trust, and its own certificate
/// and key for mutual TLS.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[upstream_tls]`: trust for `https://` targets, beside the system
/// roots. There is no key that turns verification off.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// A CA (PEM) trusted for every `https://` target.
    pub ca: Option<PathBuf>,
}

/// `[proxy]`. Only keys that are implemented are accepted, so a setting
/// can never be silently ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub listen: Option<String>,
    pub preserve_host: Option<bool>,
    pub retries: Option<u32>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub body_timeout: Option<String>,
    /// Bytes a second a request body must average over each
    /// `body_timeout` the proxy waits for it; `0`: inactivity alone.
    pub min_body_rate: Option<u64>,
    pub send_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<usize>,
    pub drain_timeout: Option<String>,
    /// `"round_robin"` (default) or `"least_request"`.
    pub balance: Option<String>,
    /// Unix socket a new binary takes the listeners over through; `""` or
    /// absent: off.
    pub upgrade_socket: Option<String>,
    /// `[proxy.tls]`: TLS to clients.
    pub tls: Option<RawServerTls>,
}

/// `[health_source]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthSource {
    #[serde(default)]
    pub checkers: Vec<String>,
    /// `"dns"`: a checker url whose host is a name is one stream per
    /// address it resolves to (a headless Service's pods).
    pub expand: Option<String>,
    /// Only with `expand = "dns"`; default `[health] dns_refresh`.
    pub dns_refresh: Option<String>,
    /// `[health_source.tls]`: the proxy's connection to checkers.
    pub tls: Option<RawClientTls>,
}

/// `[sticky]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub enabled: Option<bool>,
    pub window: Option<String>,
    pub mode: Option<String>,
    pub cookie_name: Option<String>,
    pub keys: Option<Vec<String>>,
    pub strict: Option<bool>,
    pub sign_headers: Option<bool>,
}

/// `[passive]`: local ejection after consecutive failures.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
}

/// `[limits]`: per-client limits (the proxy's); each 0 or absent = off.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Concurrent connections per client.
    pub client_connections: Option<u32>,
    /// Requests per second per client (token bucket refill).
    pub client_rate: Option<u32>,
    /// The bucket's capacity; 0 or absent: `client_rate`.
    pub client_burst: Option<u32>,
    /// A header naming the client (e.g. `x-forwarded-for`), believed only
    /// from `trusted_proxies`; empty or absent: the peer address.
    pub client_header: Option<String>,
    /// CIDRs of the proxies in front whose `client_header` is believed.
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[admin]`: the operator's endpoint (`/metrics`, `/healthz`, `/readyz`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

/// `[health]`: probe defaults for every target.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: Option<String>,
    pub path: Option<String>,
    /// The service name gRPC probes ask about.
    pub service: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// Default re-resolution period of `expand = "dns"` entries.
    pub dns_refresh: Option<String>,
    /// The checker's: the share of members whose silence makes it
    /// suspect its own network (validated by the checker).
    pub impaired_threshold: Option<f64>,
    /// The proxy's: how long a member that turns healthy again ramps up
    /// to its full share (validated by the proxy; absent: off).
    pub slow_start: Option<String>,
}

/// One `[[targets]]` entry: a url, an optional name, and probe settings
/// that override `[health]`; with `expand = "dns"`, a template for one
/// member per address the url's host resolves to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub url: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub path: Option<String>,
    pub service: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// `"dns"` or absent.
    pub expand: Option<String>,
    /// Only with `expand = "dns"`; overrides `[health] dns_refresh`.
    pub dns_refresh: Option<String>,
    /// Only with an `https://` url: a CA (PEM) trusted for this target
    /// alone, beside the system roots and `[upstream_tls] ca`.
    pub tls_ca: Option<PathBuf>,
    /// What the proxy speaks to it: `"h1"` (default), `"h2"` (HTTP/2 over
    /// TLS by ALPN, an `https://` url) or `"h2c"` (cleartext HTTP/2 with
    /// prior knowledge, an `http://` url). Validated by [`target_protocols`].
    pub protocol: Option<String>,
}

/// `[log]`: a root level and per-logger levels, or a whole log4rs file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    #[serde(default)]
    pub loggers: BTreeMap<String, String>,
    pub file: Option<PathBuf>,
}

// === shared validators ===

/// Parses a duration string such as `"500ms"` or `"2s"`.
pub fn duration(key: &str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw.trim())
        .map_err(|e| ConfigError::new(key, format!("invalid duration {raw:?}: {e}")))?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(d)
}

/// An optional duration with its default.
pub fn duration_or(
    key: &str,
    raw: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    raw.map_or(Ok(default), |raw| duration(key, raw))
}

/// Parses a listen address such as `127.0.0.1:8080`.
pub fn socket_addr(key: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("invalid address {raw:?}, expected IP:PORT")))
}

impl RawAdmin {
    /// The admin listener: `default` when unset, none when set to `""`.
    pub fn validate(&self, default: &str) -> Result<Option<SocketAddr>, ConfigError> {
        match self.listen.as_deref().map(str::trim) {
            Some("") => Ok(None),
            Some(raw) => socket_addr("admin.listen", raw).map(Some),
            None => socket_addr("admin.listen", default).map(Some),
        }
    }
}

/// `[health]`, `[[targets]]` and `[upstream_tls]`: the pool's entries
/// ([`targets`]), each `https://` target trusting `[upstream_tls] ca`
/// before its own `tls_ca`.
pub fn pool(file: &RawFile) -> Result<Vec<PoolEntry>, ConfigError> {
    let mut entries = targets(&file.health, &file.targets)?;
    if let Some(ca) = upstream_tls_ca(&file.upstream_tls)? {
        for e in entries.iter_mut().filter(|e| e.target.is_tls()) {
            e.target.tls_ca.insert(0, ca.clone());
        }
    }
    Ok(entries)
}

/// `[upstream_tls] ca`, read and checked.
fn upstream_tls_ca(raw: &RawUpstreamTls) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(ca) = &raw.ca {
        tls::read_ca("upstream_tls.ca", ca)?;
    }
    Ok(raw.ca.clone())
}

/// Whom TLS to targets trusts besides the system roots, read from
/// `[upstream_tls] ca` and every `[[targets]] tls_ca`: what the proxy
/// verifies its upstream connections against. A proxy fed by checkers
/// reads the `[[targets]]` it lists only for this.
pub fn target_trust(file: &RawFile) -> Result<TargetTrust, ConfigError> {
    let ca = match &file.upstream_tls.ca {
        Some(path) => Some(tls::read_ca("upstream_tls.ca", path)?),
        None => None,
    };
    let mut trust = TargetTrust {
        ca,
        ..TargetTrust::default()
    };
    for (i, t) in file.targets.iter().enumerate() {
        let Some(path) = &t.tls_ca else { continue };
        let url = target_url(&format!("targets[{i}].url"), &t.url)?;
        let Some(authority) = url.strip_prefix("https://") else {
            return Err(tls_ca_needs_https(i));
        };
        let pem = tls::read_ca(&format!("targets[{i}].tls_ca"), path)?;
        trust
            .targets
            .entry(authority.to_owned())
            .or_default()
            .push(pem);
    }
    Ok(trust)
}

fn tls_ca_needs_https(i: usize) -> ConfigError {
    ConfigError::new(
        format!("targets[{i}].tls_ca"),
        "only applies to an https:// url",
    )
}

/// What the proxy speaks to a target (`[[targets]] protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TargetProtocol {
    /// HTTP/1.1 (over TLS for an `https://` url).
    #[default]
    H1,
    /// HTTP/2 over TLS, agreed by ALPN.
    H2,
    /// Cleartext HTTP/2 with prior knowledge (RFC 9113 section 3.3).
    H2c,
}

impl TargetProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetProtocol::H1 => "h1",
            TargetProtocol::H2 => "h2",
            TargetProtocol::H2c => "h2c",
        }
    }

    /// `raw` for a target whose url is `url` (normalized); `key` names the
    /// setting in errors.
    fn parse(key: &str, raw: &str, url: &str) -> Result<TargetProtocol, ConfigError> {
        let tls = url.starts_with("https://");
        match raw.trim() {
            "h1" => Ok(TargetProtocol::H1),
            "h2" if tls => Ok(TargetProtocol::H2),
            "h2" => Err(ConfigError::new(
                key,
                "\"h2\" is HTTP/2 over TLS and needs an https:// url; cleartext HTTP/2 is \"h2c\"",
            )),
            "h2c" if !tls => Ok(TargetProtocol::H2c),
            "h2c" => Err(ConfigError::new(
                key,
                "\"h2c\" is cleartext HTTP/2 and needs an http:// url; over TLS it is \"h2\"",
            )),
            other => Err(ConfigError::new(
                key,
                format!("unknown protocol {other:?}, expected \"h1\", \"h2\" or \"h2c\""),
            )),
        }
    }
}

/// Every `[[targets]] protocol` other than `h1`, by the `host:port` of the
/// target's url (a DNS entry's template host, which its members keep as
/// their Host): what the proxy speaks to each member. A proxy fed by
/// checkers reads the `[[targets]]` it lists only for this (as for
/// `tls_ca`). Two entries for one `host:port` must agree.
pub fn target_protocols(file: &RawFile) -> Result<BTreeMap<String, TargetProtocol>, ConfigError> {
    let mut out: BTreeMap<String, (usize, TargetProtocol)> = BTreeMap::new();
    for (i, t) in file.targets.iter().enumerate() {
        let url = target_url(&format!("targets[{i}].url"), &t.url)?;
        let key = format!("targets[{i}].protocol");
        let protocol = match &t.protocol {
            Some(raw) => TargetProtocol::parse(&key, raw, &url)?,
            None => TargetProtocol::H1,
        };
        let authority = url.split_once("://").map_or(url.as_str(), |(_, a)| a);
        match out.get(authority) {
            Some(&(j, other)) if other != protocol => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{:?} for {authority}, but targets[{j}] speaks {:?} to it",
                        protocol.as_str(),
                        other.as_str()
                    ),
                ));
            }
            Some(_) => {}
            None => {
                out.insert(authority.to_owned(), (i, protocol));
            }
        }
    }
    Ok(out
        .into_iter()
        .filter(|(_, (_, p))| *p != TargetProtocol::H1)
        .map(|(a, (_, p))| (a, p))
        .collect())
}

/// The only value of `[[targets]] expand`.
pub const EXPAND_DNS: &str = "dns";

/// Validates `[health]` and `[[targets]]` into the pool's entries, in
/// config order: a static target each (a host name in its url looked up
/// again every `[health] dns_refresh`), or with `expand = "dns"` a template
/// the checker resolves every `dns_refresh` (default
/// [`DEFAULT_DNS_REFRESH`]). An empty pool is an error: nothing could ever
/// be served.
pub fn targets(health: &RawHealth, raw: &[RawTarget]) -> Result<Vec<PoolEntry>, ConfigError> {
    let defaults = ProbeFields::from(health);
    // Validated on their own, so that a bad default is named as such.
    probe_spec("health", &defaults)?;
    let default_refresh = duration_or(
        "health.dns_refresh",
        health.dns_refresh.as_deref(),
        DEFAULT_DNS_REFRESH,
    )?;
    if raw.is_empty() {
        return Err(ConfigError::new(
            "targets",
            "the pool is empty: add [[targets]] entries or set TETHER_TARGETS",
        ));
    }
    let mut out: Vec<PoolEntry> = Vec::with_capacity(raw.len());
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
        if let Some(prev) = out.iter().find(|o| o.target.name == name) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!(
                    "duplicate target name {name:?} (also used by {})",
                    prev.target.url
                ),
            ));
        }
        // Every field the target leaves out is [health]'s, already valid.
        let probe = probe_spec(&key, &ProbeFields::from(t).or(&defaults))?;
        if let Some(raw) = &t.protocol {
            TargetProtocol::parse(&format!("{key}.protocol"), raw, &url)?;
        }
        let mut tls_ca = Vec::new();
        if let Some(path) = &t.tls_ca {
            if !url.starts_with("https://") {
                return Err(tls_ca_needs_https(i));
            }
            tls::read_ca(&format!("{key}.tls_ca"), path)?;
            tls_ca.push(path.clone());
        }
        let target = Target {
            name,
            url,
            probe,
            tls_ca,
        };
        let entry = match t.expand.as_deref().map(str::trim) {
            None => {
                if t.dns_refresh.is_some() {
                    return Err(ConfigError::new(
                        format!("{key}.dns_refresh"),
                        format!("only applies with expand = {EXPAND_DNS:?}"),
                    ));
                }
                PoolEntry::fixed(target).with_host_refresh(default_refresh)
            }
            Some(EXPAND_DNS) => {
                let refresh = duration_or(
                    &format!("{key}.dns_refresh"),
                    t.dns_refresh.as_deref(),
                    default_refresh,
                )?;
                PoolEntry::dns(target, refresh)
            }
            Some(other) => {
                return Err(ConfigError::new(
                    format!("{key}.expand"),
                    format!("unknown expansion {other:?}, expected {EXPAND_DNS:?}"),
                ));
            }
        };
        out.push(entry);
    }
    Ok(out)
}

/// The probe fields shared by `[health]` and `[[targets]]`.
struct ProbeFields<'a> {
    kind: Option<&'a str>,
    path: Option<&'a str>,
    service: Option<&'a str>,
    interval: Option<&'a str>,
    timeout: Option<&'a str>,
    rise: Option<u32>,
    fall: Option<u32>,
}

impl<'a> ProbeFields<'a> {
    /// These fields, each one unset taken from `defaults`.
    fn or(self, defaults: &ProbeFields<'a>) -> ProbeFields<'a> {
        ProbeFields {
            kind: self.kind.or(defaults.kind),
            path: self.path.or(defaults.path),
            service: self.service.or(defaults.service),
            interval: self.interval.or(defaults.interval),
            timeout: self.timeout.or(defaults.timeout),
            rise: self.rise.or(defaults.rise),
            fall: self.fall.or(defaults.fall),
        }
    }
}

impl<'a> From<&'a RawHealth> for ProbeFields<'a> {
    fn from(h: &'a RawHealth) -> Self {
        ProbeFields {
            kind: h.kind.as_deref(),
            path: h.path.as_deref(),
            service: h.service.as_deref(),
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
            service: t.service.as_deref(),
            interval: t.interval.as_deref(),
            timeout: t.timeout.as_deref(),
            rise: t.rise,
            fall: t.fall,
        }
    }
}

/// A probe spec from `f`, each field validated and named under `section`.
fn probe_spec(section: &str, f: &ProbeFields<'_>) -> Result<ProbeSpec, ConfigError> {
    let key = |k: &str| format!("{section}.{k}");
    let mut spec = ProbeSpec::default();
    if let Some(kind) = f.kind {
        spec.kind = ProbeKind::parse(kind.trim()).ok_or_else(|| {
            ConfigError::new(
                key("kind"),
                format!("unknown probe kind {kind:?}, expected \"tcp\", \"http\" or \"grpc\""),
            )
        })?;
    }
    if let Some(path) = f.path
        && (!path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20))
    {
        return Err(ConfigError::new(
            key("path"),
            format!("{path:?} must start with '/' and contain no spaces"),
        ));
    }
    if let Some(service) = f.service
        && service.bytes().any(|b| b.is_ascii_control())
    {
        return Err(ConfigError::new(
            key("service"),
            format!("{service:?} must contain no control characters"),
        ));
    }
    // `path` carries what the probe asks for (see `ProbeSpec::path`); the
    // other kind's setting, a default for targets of that kind, is unused.
    spec.path = match spec.kind {
        ProbeKind::Grpc => f.service.unwrap_or("").to_owned(),
        ProbeKind::Tcp | ProbeKind::Http => f.path.unwrap_or(DEFAULT_PATH).to_owned(),
    };
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

/// A target url: `http://host:port` or `https://host:port` with an
/// optional trailing slash and nothing else. The port defaults to 80 (443
/// for https). Returned without the slash.
fn target_url(key: &str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| ConfigError::new(key, format!("invalid url {raw:?}: {e}")))?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some("http") => ("http", 80),
        Some("https") => ("https", 443),
        _ => {
            return Err(ConfigError::new(
                key,
                format!("{raw:?}: only http:// and https:// targets are supported"),
            ));
        }
    };
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
    let port = authority.port_u16().unwrap_or(default_port);
    Ok(format!("{scheme}://{host}:{port}"))
}

// === [log] ===

/// The named loggers Tether writes to.
pub const LOGGERS: [&str; 4] = ["proxy", "hc", "access", "grpc"];

/// Libraries whose log lines can be given a level of their own under
/// `[log.loggers]` (each name covers the crate's modules).
pub const DEPENDENCY_LOGGERS: [&str; 5] = ["rustls", "h2", "hyper", "tonic", "tower"];

/// Validated logging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogConfig {
    Levels {
        root: log::LevelFilter,
        /// Only names from [`LOGGERS`] and [`DEPENDENCY_LOGGERS`], lower
        /// case.
        loggers: BTreeMap<&'static str, log::LevelFilter>,
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
            let key = format!("log.loggers.{name}");
            // Names are case-insensitive: the original design wrote them
            // `PROXY` and `HC`.
            let lower = name.to_ascii_lowercase();
            let known = LOGGERS
                .into_iter()
                .chain(DEPENDENCY_LOGGERS)
                .find(|n| *n == lower);
            let Some(known) = known else {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "unknown logger {name:?}, expected one of {}, or a library's: {}",
                        LOGGERS.join(", "),
                        DEPENDENCY_LOGGERS.join(", ")
                    ),
                ));
            };
            if loggers.insert(known, level(&key, l)?).is_some() {
                return Err(ConfigError::new(
                    key,
                    format!("logger {known:?} is set twice (names are case-insensitive)"),
                ));
            }
        }
        Ok(LogConfig::Levels { root, loggers })
    }
}

/// A level name, case-insensitive; `fatal` (the original design's highest
/// level) is `error`, which is as severe as `log` goes.
fn level(key: &str, raw: &str) -> Result<log::LevelFilter, ConfigError> {
    let raw_trimmed = raw.trim();
    if raw_trimmed.eq_ignore_ascii_case("fatal") {
        return Ok(log::LevelFilter::Error);
    }
    raw_trimmed.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!(
                "unknown level {raw:?}, expected off, fatal, error, warn, info, debug or trace"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_target(url: &str) -> RawTarget {
        RawTarget {
            url: url.to_owned(),
            ..RawTarget::default()
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
        assert!(got.iter().all(|e| !e.is_dns()));
        let got: Vec<Target> = got.into_iter().map(|e| e.target).collect();
        assert_eq!(got[0].name, "http://127.0.0.1:1");
        assert_eq!(got[0].probe.kind, ProbeKind::Http);
        assert_eq!(got[0].probe.interval, Duration::from_millis(500));
        assert_eq!(got[1].name, "two");
        assert_eq!(got[1].probe.rise.get(), 5);
        assert_eq!(got[1].probe.path, "/health");
    }

    #[test]
    fn grpc_probes_ask_for_a_service() {
        let health = RawHealth {
            kind: Some("http".into()),
            path: Some("/health".into()),
            service: Some("app.v1.Api".into()),
            ..RawHealth::default()
        };
        let mut grpc = raw_target("http://127.0.0.1:2");
        grpc.kind = Some("grpc".into());
        let mut named = grpc.clone();
        named.url = "http://127.0.0.1:3".into();
        named.service = Some(String::new());
        let got =
            targets(&health, &[raw_target("http://127.0.0.1:1"), grpc, named]).expect("valid");
        let probes: Vec<(ProbeKind, &str)> = got
            .iter()
            .map(|e| (e.target.probe.kind, e.target.probe.grpc_service()))
            .collect();
        // An HTTP target keeps its path; gRPC ones ask for [health]'s
        // service or their own ("": the server as a whole).
        assert_eq!(
            probes,
            [
                (ProbeKind::Http, "/health"),
                (ProbeKind::Grpc, "app.v1.Api"),
                (ProbeKind::Grpc, ""),
            ]
        );
        let default = RawHealth {
            kind: Some("grpc".into()),
            ..RawHealth::default()
        };
        let got = targets(&default, &[raw_target("http://127.0.0.1:1")]).expect("valid");
        assert_eq!(got[0].target.probe.grpc_service(), "");
        let bad = RawHealth {
            service: Some("a\nb".into()),
            ..RawHealth::default()
        };
        let err = targets(&bad, &[raw_target("http://127.0.0.1:1")]).expect_err("invalid");
        assert_eq!(err.key, "health.service");
        let mut bad = raw_target("http://127.0.0.1:1");
        bad.service = Some("\u{7f}".into());
        let err = targets(&RawHealth::default(), &[bad]).expect_err("invalid");
        assert_eq!(err.key, "targets[0].service");
    }

    #[test]
    fn errors_name_the_key() {
        let h = RawHealth::default();
        let key = |r: Result<Vec<PoolEntry>, ConfigError>| r.expect_err("invalid").key;
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
    fn target_protocols_match_the_scheme_and_errors_name_the_key() {
        let with = |url: &str, p: &str| RawTarget {
            protocol: Some(p.into()),
            ..raw_target(url)
        };
        let file = |targets| RawFile {
            targets,
            ..RawFile::default()
        };
        let got = target_protocols(&file(vec![
            raw_target("http://a:1"),
            with("http://b:2", "h2c"),
            with("https://c", "h2"),
            with("http://d:4", "h1"),
            with("http://b:2/", " h2c "),
        ]))
        .expect("valid");
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                ("b:2".to_owned(), TargetProtocol::H2c),
                ("c:443".to_owned(), TargetProtocol::H2),
            ]
        );
        for (targets, key) in [
            (vec![with("http://a:1", "h2")], "targets[0].protocol"),
            (
                vec![raw_target("http://b:1"), with("https://a:1", "h2c")],
                "targets[1].protocol",
            ),
            (vec![with("http://a:1", "http2")], "targets[0].protocol"),
            (
                vec![with("http://a:1", "h2c"), raw_target("http://a:1")],
                "targets[1].protocol",
            ),
        ] {
            let e = target_protocols(&file(targets.clone())).expect_err("invalid");
            assert_eq!(e.key, key, "{}", e.reason);
            if targets.len() == 1 {
                let e = targets_of(&targets).expect_err("invalid");
                assert_eq!(e.key, key, "{}", e.reason);
            }
        }
    }

    fn targets_of(raw: &[RawTarget]) -> Result<Vec<PoolEntry>, ConfigError> {
        targets(&RawHealth::default(), raw)
    }

    #[test]
    fn url_gets_an_explicit_port() {
        let got = targets(&RawHealth::default(), &[raw_target("http://example.test")]).expect("ok");
        assert_eq!(got[0].target.url, "http://example.test:80");
    }

    #[test]
    fn https_targets_default_to_443_and_take_their_trust() {
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("ca");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write");
        let mut own = raw_target("https://api.test");
        own.tls_ca = Some(ca_path.clone());
        let file = RawFile {
            targets: vec![
                own,
                raw_target("https://web.test:8443/"),
                raw_target("http://x:1"),
            ],
            upstream_tls: RawUpstreamTls {
                ca: Some(ca_path.clone()),
            },
            ..RawFile::default()
        };
        let got = pool(&file).expect("valid");
        assert_eq!(got[0].target.url, "https://api.test:443");
        assert_eq!(got[0].target.tls_ca, [ca_path.clone(), ca_path.clone()]);
        assert_eq!(got[1].target.url, "https://web.test:8443");
        assert_eq!(got[1].target.tls_ca, std::slice::from_ref(&ca_path));
        assert!(
            got[2].target.tls_ca.is_empty(),
            "http targets trust nothing extra"
        );
        let trust = target_trust(&file).expect("valid");
        assert!(trust.ca.is_some());
        assert_eq!(trust.targets.keys().collect::<Vec<_>>(), ["api.test:443"]);
    }

    #[test]
    fn tls_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("dir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let mut file = RawFile {
            targets: vec![raw_target("https://a:1")],
            upstream_tls: RawUpstreamTls {
                ca: Some(dir.path().join("missing.pem")),
            },
            ..RawFile::default()
        };
        let e = pool(&file).expect_err("missing");
        assert_eq!(e.key, "upstream_tls.ca");
        assert!(e.reason.contains("no such file"), "{}", e.reason);
        assert_eq!(
            target_trust(&file).expect_err("missing").key,
            "upstream_tls.ca"
        );
        file.upstream_tls.ca = None;
        file.targets.push(RawTarget {
            tls_ca: Some(junk.clone()),
            ..raw_target("https://b:2")
        });
        assert_eq!(pool(&file).expect_err("junk").key, "targets[1].tls_ca");
        assert_eq!(
            target_trust(&file).expect_err("junk").key,
            "targets[1].tls_ca"
        );
        file.targets[1] = RawTarget {
            tls_ca: Some(junk),
            ..raw_target("http://b:2")
        };
        let e = pool(&file).expect_err("http");
        assert_eq!(e.key, "targets[1].tls_ca");
        assert!(e.reason.contains("https://"), "{}", e.reason);
    }

    #[test]
    fn dns_entries_take_their_refresh_from_the_entry_or_health() {
        let health = RawHealth {
            dns_refresh: Some("30s".into()),
            ..RawHealth::default()
        };
        let mut a = raw_target("http://web.internal:8080");
        a.name = Some("web".into());
        a.expand = Some("dns".into());
        let mut b = raw_target("http://api.internal:9000");
        b.expand = Some("dns".into());
        b.dns_refresh = Some("2s".into());
        let fixed = raw_target("http://127.0.0.1:1");
        let got = targets(&health, &[a.clone(), b, fixed.clone()]).expect("valid");
        assert_eq!(got[0].dns_refresh, Some(Duration::from_secs(30)));
        assert_eq!(got[0].target.name, "web");
        assert_eq!(got[0].target.url, "http://web.internal:8080");
        assert_eq!(got[1].dns_refresh, Some(Duration::from_secs(2)));
        assert_eq!(got[2].dns_refresh, None);
        // A static target given by host name is looked up as often.
        assert_eq!(got[2].host_refresh, Duration::from_secs(30));
        let got = targets(&RawHealth::default(), &[a]).expect("valid");
        assert_eq!(got[0].dns_refresh, Some(DEFAULT_DNS_REFRESH));
    }

    #[test]
    fn dns_errors_name_the_key() {
        let key = |h: &RawHealth, t: RawTarget| targets(h, &[t]).expect_err("invalid").key;
        let h = RawHealth::default();
        let mut t = raw_target("http://web.internal:80");
        t.expand = Some("srv".into());
        assert_eq!(key(&h, t), "targets[0].expand");
        let mut t = raw_target("http://web.internal:80");
        t.expand = Some("dns".into());
        t.dns_refresh = Some("often".into());
        assert_eq!(key(&h, t), "targets[0].dns_refresh");
        let mut t = raw_target("http://web.internal:80");
        t.dns_refresh = Some("5s".into());
        assert_eq!(key(&h, t), "targets[0].dns_refresh");
        let bad = RawHealth {
            dns_refresh: Some("0s".into()),
            ..RawHealth::default()
        };
        assert_eq!(
            key(&bad, raw_target("http://web.internal:80")),
            "health.dns_refresh"
        );
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
                loggers: BTreeMap::from([("hc", log::LevelFilter::Debug)]),
            }
        );
        let bad = RawLog {
            level: Some("loud".into()),
            ..RawLog::default()
        };
        assert_eq!(bad.validate().expect_err("invalid").key, "log.level");
    }

    #[test]
    fn logger_names_are_case_insensitive_and_fatal_is_error() {
        let raw = RawLog {
            level: Some("FATAL".into()),
            loggers: BTreeMap::from([
                ("HC".into(), "debug".into()),
                ("Proxy".into(), "fatal".into()),
            ]),
            file: None,
        };
        assert_eq!(
            raw.validate().expect("valid"),
            LogConfig::Levels {
                root: log::LevelFilter::Error,
                loggers: BTreeMap::from([
                    ("hc", log::LevelFilter::Debug),
                    ("proxy", log::LevelFilter::Error),
                ]),
            }
        );
    }

    #[test]
    fn an_unknown_or_doubled_logger_is_an_error_naming_the_key() {
        let unknown = RawLog {
            loggers: BTreeMap::from([("healthcheck".into(), "debug".into())]),
            ..RawLog::default()
        };
        let e = unknown.validate().expect_err("unknown logger");
        assert_eq!(e.key, "log.loggers.healthcheck");
        assert!(e.reason.contains("proxy, hc, access, grpc"), "{}", e.reason);
        assert!(
            e.reason.contains("rustls, h2, hyper, tonic"),
            "{}",
            e.reason
        );
        // A library's logger is a name like ours.
        let library = RawLog {
            loggers: BTreeMap::from([("RUSTLS".into(), "error".into())]),
            ..RawLog::default()
        };
        assert_eq!(
            library.validate().expect("a library logger"),
            LogConfig::Levels {
                root: log::LevelFilter::Info,
                loggers: BTreeMap::from([("rustls", log::LevelFilter::Error)]),
            }
        );
        let twice = RawLog {
            loggers: BTreeMap::from([("HC".into(), "debug".into()), ("hc".into(), "info".into())]),
            ..RawLog::default()
        };
        assert!(twice.validate().is_err());
    }

    #[test]
    fn only_section_key_variables_are_config() {
        for name in [
            "TETHER_PROXY__LISTEN",
            "TETHER_LOG__LOGGERS__HC",
            "TETHER_TARGETS",
        ] {
            assert!(is_config_var(name), "{name}");
        }
        for name in [
            "TETHER_CHECKER",
            "TETHER_",
            "TETHER___X",
            "TETHER_PROXY__",
            "PATH",
            "TETHERX_PROXY__LISTEN",
        ] {
            assert!(!is_config_var(name), "{name}");
        }
    }

    #[test]
    fn a_variable_for_tetherctl_does_not_break_loading() {
        let env = Env::from_pairs([
            ("TETHER_CHECKER", "http://10.0.0.1:50051"),
            ("TETHER_PROXY__LISTEN", "127.0.0.1:9999"),
            ("TETHER_TARGETS", "http://a:1, http://b:2"),
        ]);
        let raw = load(None, &env).expect("loads");
        assert_eq!(raw.proxy.listen.as_deref(), Some("127.0.0.1:9999"));
        let urls: Vec<_> = raw.targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn an_unknown_key_in_any_section_names_it() {
        let env = Env::from_pairs([("TETHER_PROXY__LISTN", "x")]);
        assert_eq!(load(None, &env).expect_err("unknown").key, "proxy.listn");
    }

    #[test]
    fn admin_defaults_and_can_be_turned_off() {
        let mut a = RawAdmin::default();
        assert_eq!(
            a.validate("127.0.0.1:9901").expect("ok"),
            Some("127.0.0.1:9901".parse().expect("addr"))
        );
        a.listen = Some(String::new());
        assert_eq!(a.validate("127.0.0.1:9901").expect("ok"), None);
        a.listen = Some("nowhere".into());
        assert_eq!(
            a.validate("127.0.0.1:9901").expect_err("bad").key,
            "admin.listen"
        );
    }
}
