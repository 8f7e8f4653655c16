//! The proxy's view of a config file: `[proxy]`, `[health_source]`,
//! `[sticky]`, `[passive]`, `[limits]` and `[admin]` are its own; `[health]`,
//! `[[targets]]` and `[checker]` are read for embedded mode; `[log]` as
//! everywhere. The file itself and the shared validators are
//! `tether_daemon::config`'s.

use std::net::SocketAddr;
use std::time::Duration;

use tether_core::{Policy, PoolEntry};
use tether_daemon::config::RawSticky;

use crate::sticky::{DEFAULT_COOKIE_NAME, Keys, Mode, Rules, is_cookie_name};
use tether_daemon::config::{self as shared, ConfigError, LogConfig, RawFile, RawServerTls};
use tether_daemon::tls::{ClientTls, ServerTls};

use crate::guard::Pace;
use crate::http2::Protocols;
use crate::limits::ClientLimits;
use crate::source::Resolver;
use crate::tls::{self, TlsFiles};
use crate::upstream::Trust;

/// Default client listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin endpoint.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default extra attempts on other targets after a connect failure.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time a host name's addresses are used before it is looked up
/// again (`[health] dns_refresh`, as for the checker's DNS entries).
pub const DEFAULT_DNS_REFRESH: Duration = tether_core::target::DEFAULT_DNS_REFRESH;
/// Default time until the upstream response head arrives (then 504).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time for a whole request head, also the keep-alive gap.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default client idle time: an HTTP/2 connection without streams, or a
/// tunnel (WebSocket) without traffic either way.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default inactivity allowed while a body streams, either direction.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client may take no bytes of its answer (nginx's
/// `send_timeout`).
/// `min_body_rate`: 1 KiB a second, so a body trickled to hold a backend
/// is cut after one `body_timeout` (a legitimate upload on the slowest
/// mobile link brings several times that).
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on the request header section (then 431).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Default cap on the number of request headers (then 431).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default cap on the request target (then 414).
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// Default time in-flight work may take after SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default sticky window.
pub const DEFAULT_STICKY_WINDOW: Duration = tether_core::sticky::DEFAULT_WINDOW;
/// Default consecutive connect or gateway failures before local ejection.
pub const DEFAULT_PASSIVE_FAILURES: u32 = 3;
/// Default first ejection; doubles on each repeat.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);
/// Default longest ejection.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(120);

/// Where health comes from.
#[derive(Clone, Debug)]
pub enum HealthSource {
    /// Follow every one of these checkers (expanded by `checker_dns`).
    Checkers(Vec<http::Uri>),
    /// Probe `targets` in-process; serve the health API on `grpc_listen`
    /// when `[checker] grpc_listen` is set.
    Embedded {
        /// Static targets and `expand = "dns"` templates, in config order.
        targets: Vec<PoolEntry>,
        grpc_listen: Option<SocketAddr>,
    },
}

/// `[health_source] expand = "dns"`: a checker url whose host is a name
/// (not an IP literal) is followed at every address the name resolves to,
/// looked up again every `refresh`.
#[derive(Clone, Debug)]
pub struct CheckerDns {
    pub refresh: Duration,
    /// The system's; tests put their own.
    pub resolver: Resolver,
}

/// `[sticky]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickyConfig {
    pub enabled: bool,
    pub window: Duration,
    pub mode: Mode,
    /// A token (RFC 9110), so it needs no quoting in `Set-Cookie`.
    pub cookie_name: String,
    /// The first signs, all verify; `Debug` shows key ids only.
    pub keys: Keys,
    /// A live pin to a member that is down answers 503.
    pub strict: bool,
    /// `x-target-server-last-use` is signed, and unsigned hints ignored.
    pub sign_headers: bool,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig {
            enabled: true,
            window: DEFAULT_STICKY_WINDOW,
            mode: Mode::Header,
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            keys: Keys::default(),
            strict: false,
            sign_headers: false,
        }
    }
}

impl StickyConfig {
    /// What reading a request needs.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            mode: self.mode,
            cookie_name: &self.cookie_name,
            keys: &self.keys,
            sign_headers: self.sign_headers,
            window: self.window,
        }
    }

    fn from_raw(raw: &RawSticky) -> Result<StickyConfig, ConfigError> {
        let mode = match raw.mode.as_deref() {
            Some(m) => Mode::parse("sticky.mode", m)?,
            None => Mode::Header,
        };
        let cookie_name = raw
            .cookie_name
            .clone()
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_owned());
        if !is_cookie_name(&cookie_name) {
            return Err(ConfigError::new(
                "sticky.cookie_name",
                format!("{cookie_name:?} is not a valid cookie name"),
            ));
        }
        let keys = Keys::load(raw.keys.as_deref().unwrap_or_default())?;
        let sign_headers = raw.sign_headers.unwrap_or(false);
        if keys.is_empty() {
            if mode.uses_cookie() {
                return Err(ConfigError::new(
                    "sticky.keys",
                    "at least one key is needed with sticky.mode = \"cookie\" or \"both\"",
                ));
            }
            if sign_headers {
                return Err(ConfigError::new(
                    "sticky.keys",
                    "at least one key is needed with sticky.sign_headers = true",
                ));
            }
        }
        Ok(StickyConfig {
            enabled: raw.enabled.unwrap_or(true),
            window: shared::duration_or(
                "sticky.window",
                raw.window.as_deref(),
                DEFAULT_STICKY_WINDOW,
            )?,
            mode,
            cookie_name,
            keys,
            strict: raw.strict.unwrap_or(false),
            sign_headers,
        })
    }
}

/// Request limits, checked before anything reaches a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    /// `None`: unlimited.
    pub max_body_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_body_bytes: None,
        }
    }
}

/// `[passive]`, validated. `consecutive_failures` 0 turns ejection off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            consecutive_failures: DEFAULT_PASSIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
        }
    }
}

/// The proxy's validated settings.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub preserve_host: bool,
    pub retries: u32,
    pub connect_timeout: Duration,
    /// `[health] dns_refresh`: how long new upstream connections use a
    /// member host name's addresses before it is looked up again.
    pub dns_refresh: Duration,
    pub response_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    /// Bytes a second a request body must average (see [`Pace`]).
    pub min_body_rate: u64,
    /// No progress writing to a client for this long ends the connection
    /// (HTTP/1, tunnels) or the stream (HTTP/2) and frees its backend.
    pub send_timeout: Duration,
    pub limits: Limits,
    /// `[limits]`: per client.
    pub clients: ClientLimits,
    /// `None`: unlimited.
    pub max_connections: Option<usize>,
    pub drain_timeout: Duration,
    /// `[proxy] upgrade_socket`: where a new binary (`--upgrade`) takes the
    /// listening sockets over; `None`: off.
    pub upgrade_socket: Option<std::path::PathBuf>,
    pub passive: PassiveConfig,
    pub sticky: StickyConfig,
    /// `[proxy] balance`: how new clients are spread.
    pub balance: Policy,
    /// `[health] slow_start`: the ramp of a member that turns healthy
    /// again; `None`: off.
    pub slow_start: Option<Duration>,
    pub source: HealthSource,
    /// `[health_source.tls]`: how to reach `https://` checkers (and report
    /// to them). Only with `HealthSource::Checkers`.
    pub health_source_tls: Option<ClientTls>,
    /// `[health_source] expand = "dns"`; only with `HealthSource::Checkers`.
    pub checker_dns: Option<CheckerDns>,
    /// `[checker.tls]`: the embedded checker's gRPC listener. Only with
    /// `HealthSource::Embedded` and a `grpc_listen`.
    pub embedded_checker_tls: Option<ServerTls>,
    /// `[proxy.tls]`: `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// `[upstream_tls] ca` and the `[[targets]] tls_ca` this config lists:
    /// whom `https://` members are verified against, besides the system
    /// roots.
    pub upstream_tls: Trust,
    /// `[[targets]] protocol`: what the proxy speaks to each member.
    pub protocols: Protocols,
    /// `None`: no admin endpoint.
    pub admin_listen: Option<SocketAddr>,
    pub log: LogConfig,
}

/// The settings a reload changes in place: everything a connection and its
/// requests read. Each client connection takes the current value when it is
/// accepted and keeps it for its life, so a reload costs the request path
/// nothing and never changes the rules under a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub preserve_host: bool,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub dns_refresh: Duration,
    pub response_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    /// What a request body must keep up: `body_timeout` and
    /// `min_body_rate`.
    pub request_pace: Pace,
    /// No progress writing to a client for this long ends the connection
    /// (HTTP/1, tunnels) or the stream (HTTP/2) and frees its backend.
    pub send_timeout: Duration,
    pub limits: Limits,
    /// `[limits]`: per client.
    pub clients: ClientLimits,
    pub passive: PassiveConfig,
    pub sticky: StickyConfig,
    pub balance: Policy,
    /// `None`: slow start off.
    pub slow_start: Option<Duration>,
    /// New upstream TLS connections verify against this.
    pub upstream_tls: Trust,
    /// HTTP/1.1, or HTTP/2 over TLS or cleartext, per member.
    pub protocols: Protocols,
}

impl ProxyConfig {
    /// The part of this config a reload applies in place.
    pub fn settings(&self) -> Settings {
        Settings {
            preserve_host: self.preserve_host,
            retries: self.retries,
            connect_timeout: self.connect_timeout,
            dns_refresh: self.dns_refresh,
            response_timeout: self.response_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
            request_pace: Pace::at_least(self.body_timeout, self.min_body_rate),
            send_timeout: self.send_timeout,
            limits: self.limits,
            clients: self.clients.clone(),
            passive: self.passive,
            sticky: self.sticky.clone(),
            balance: self.balance,
            slow_start: self.slow_start,
            upstream_tls: self.upstream_tls.clone(),
            protocols: self.protocols.clone(),
        }
    }

    /// Every setting at its default, with health from `source`.
    pub fn with_defaults(source: HealthSource) -> ProxyConfig {
        ProxyConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            preserve_host: false,
            retries: DEFAULT_RETRIES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            dns_refresh: DEFAULT_DNS_REFRESH,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            limits: Limits::default(),
            clients: ClientLimits::default(),
            max_connections: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            upgrade_socket: None,
            passive: PassiveConfig::default(),
            sticky: StickyConfig::default(),
            balance: Policy::default(),
            slow_start: None,
            source,
            health_source_tls: None,
            checker_dns: None,
            embedded_checker_tls: None,
            tls: None,
            upstream_tls: Trust::default(),
            protocols: Protocols::default(),
            admin_listen: None,
            log: LogConfig::default(),
        }
    }
}

impl ProxyConfig {
    /// Validates the proxy's sections of `file`.
    pub fn from_file(file: &RawFile) -> Result<ProxyConfig, ConfigError> {
        let p = &file.proxy;
        let dur = |key: &str, raw: &Option<String>, default: Duration| {
            shared::duration_or(key, raw.as_deref(), default)
        };
        let (source, health_source_tls, embedded_checker_tls) = health_source(file)?;
        let checker_dns = checker_dns(file)?;
        Ok(ProxyConfig {
            listen: shared::socket_addr(
                "proxy.listen",
                p.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
            )?,
            preserve_host: p.preserve_host.unwrap_or(false),
            retries: p.retries.unwrap_or(DEFAULT_RETRIES),
            connect_timeout: dur(
                "proxy.connect_timeout",
                &p.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            dns_refresh: dur(
                "health.dns_refresh",
                &file.health.dns_refresh,
                DEFAULT_DNS_REFRESH,
            )?,
            response_timeout: dur(
                "proxy.response_timeout",
                &p.response_timeout,
                DEFAULT_RESPONSE_TIMEOUT,
            )?,
            header_read_timeout: dur(
                "proxy.header_read_timeout",
                &p.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            idle_timeout: dur("proxy.idle_timeout", &p.idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
            body_timeout: dur("proxy.body_timeout", &p.body_timeout, DEFAULT_BODY_TIMEOUT)?,
            min_body_rate: p.min_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE),
            send_timeout: dur("proxy.send_timeout", &p.send_timeout, DEFAULT_SEND_TIMEOUT)?,
            limits: Limits {
                max_header_bytes: at_least(
                    "proxy.max_header_bytes",
                    p.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
                    MIN_HEADER_BYTES,
                )?,
                max_headers: at_least(
                    "proxy.max_headers",
                    p.max_headers.unwrap_or(DEFAULT_MAX_HEADERS),
                    1,
                )?,
                max_uri_bytes: at_least(
                    "proxy.max_uri_bytes",
                    p.max_uri_bytes.unwrap_or(DEFAULT_MAX_URI_BYTES),
                    1,
                )?,
                max_body_bytes: p.max_body_bytes.filter(|&n| n > 0),
            },
            clients: ClientLimits::from_raw(&file.limits)?,
            max_connections: p.max_connections.filter(|&n| n > 0),
            drain_timeout: dur(
                "proxy.drain_timeout",
                &p.drain_timeout,
                DEFAULT_DRAIN_TIMEOUT,
            )?,
            upgrade_socket: p
                .upgrade_socket
                .as_deref()
                .filter(|path| !path.is_empty())
                .map(std::path::PathBuf::from),
            passive: {
                let base = dur(
                    "passive.base_ejection",
                    &file.passive.base_ejection,
                    DEFAULT_BASE_EJECTION,
                )?;
                let max = dur(
                    "passive.max_ejection",
                    &file.passive.max_ejection,
                    DEFAULT_MAX_EJECTION,
                )?;
                if max < base {
                    return Err(ConfigError::new(
                        "passive.max_ejection",
                        "must not be shorter than passive.base_ejection",
                    ));
                }
                PassiveConfig {
                    consecutive_failures: file
                        .passive
                        .consecutive_failures
                        .unwrap_or(DEFAULT_PASSIVE_FAILURES),
                    base_ejection: base,
                    max_ejection: max,
                }
            },
            sticky: StickyConfig::from_raw(&file.sticky)?,
            balance: balance(p.balance.as_deref())?,
            slow_start: slow_start(file.health.slow_start.as_deref())?,
            source,
            health_source_tls,
            checker_dns,
            embedded_checker_tls,
            tls: listener_tls(file.proxy.tls.as_ref())?,
            upstream_tls: Trust::new(shared::target_trust(file)?),
            protocols: Protocols::new(shared::target_protocols(file)?),
            admin_listen: file.admin.validate(DEFAULT_ADMIN_LISTEN)?,
            log: file.log.validate()?,
        })
    }
}

/// `[proxy.tls]`: both files, loaded once here so `--check-config` finds a
/// broken or mismatched pair.
fn listener_tls(raw: Option<&RawServerTls>) -> Result<Option<TlsFiles>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.client_ca.is_some() {
        return Err(ConfigError::new(
            "proxy.tls.client_ca",
            "client certificates on the proxy listener are not supported",
        ));
    }
    let cert = raw
        .cert
        .clone()
        .ok_or_else(|| ConfigError::new("proxy.tls.cert", "required with [proxy.tls]"))?;
    let key = raw
        .key
        .clone()
        .ok_or_else(|| ConfigError::new("proxy.tls.key", "required with [proxy.tls]"))?;
    let files = TlsFiles { cert, key };
    if let Err(e) = tls::load(&files) {
        let key = match e.file {
            tls::TlsFile::Key => "proxy.tls.key",
            tls::TlsFile::Cert => "proxy.tls.cert",
        };
        return Err(ConfigError::new(key, e.to_string()));
    }
    Ok(Some(files))
}

/// `[proxy] balance`: absent is round robin.
fn balance(raw: Option<&str>) -> Result<Policy, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Policy::default());
    };
    Policy::parse(raw.trim()).ok_or_else(|| {
        ConfigError::new(
            "proxy.balance",
            format!("{raw:?} is not a policy; expected \"round_robin\" or \"least_request\""),
        )
    })
}

/// `[health] slow_start`: absent is off. The proxy reads it from its own
/// file (a checker's verdicts carry no such setting), so it applies alike
/// in embedded mode and behind remote checkers.
fn slow_start(raw: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    raw.map(|raw| shared::duration("health.slow_start", raw))
        .transpose()
}

/// hyper's read buffer cannot be smaller than this.
const MIN_HEADER_BYTES: usize = 8192;

fn at_least(key: &str, value: usize, min: usize) -> Result<usize, ConfigError> {
    if value < min {
        return Err(ConfigError::new(key, format!("must be at least {min}")));
    }
    Ok(value)
}

/// `[health_source]` (and, in embedded mode, `[checker]`): where health
/// comes from, and the TLS of that channel. Each mode reads only its own
/// TLS section.
fn health_source(
    file: &RawFile,
) -> Result<(HealthSource, Option<ClientTls>, Option<ServerTls>), ConfigError> {
    let hs = &file.health_source;
    if hs.checkers.is_empty() {
        let grpc_listen = match file.checker.grpc_listen.as_deref() {
            Some(raw) => Some(shared::socket_addr("checker.grpc_listen", raw)?),
            None => None,
        };
        let tls = match grpc_listen {
            Some(_) => tether_checker::config::tls(file)?,
            None => None,
        };
        let source = HealthSource::Embedded {
            targets: shared::pool(file)?,
            grpc_listen,
        };
        return Ok((source, None, tls));
    }
    let tls = hs
        .tls
        .as_ref()
        .map(|raw| raw.validate(HEALTH_SOURCE_TLS))
        .transpose()?;
    let mut uris = Vec::with_capacity(hs.checkers.len());
    for (i, raw) in hs.checkers.iter().enumerate() {
        let key = format!("health_source.checkers[{i}]");
        uris.push(checker_uri(&key, raw, tls.is_some())?);
    }
    Ok((HealthSource::Checkers(uris), tls, None))
}

/// `[health_source] expand` and `dns_refresh`.
fn checker_dns(file: &RawFile) -> Result<Option<CheckerDns>, ConfigError> {
    let hs = &file.health_source;
    match hs.expand.as_deref().map(str::trim) {
        None => {
            if hs.dns_refresh.is_some() {
                return Err(ConfigError::new(
                    "health_source.dns_refresh",
                    format!(
                        "only applies with health_source.expand = {:?}",
                        shared::EXPAND_DNS
                    ),
                ));
            }
            Ok(None)
        }
        Some(shared::EXPAND_DNS) => {
            if hs.checkers.is_empty() {
                return Err(ConfigError::new(
                    "health_source.expand",
                    "only applies with health_source.checkers (the embedded checker has no address)",
                ));
            }
            let default = shared::duration_or(
                "health.dns_refresh",
                file.health.dns_refresh.as_deref(),
                DEFAULT_DNS_REFRESH,
            )?;
            let refresh = shared::duration_or(
                "health_source.dns_refresh",
                hs.dns_refresh.as_deref(),
                default,
            )?;
            Ok(Some(CheckerDns {
                refresh,
                resolver: Resolver::default(),
            }))
        }
        Some(other) => Err(ConfigError::new(
            "health_source.expand",
            format!(
                "unknown expansion {other:?}, expected {:?}",
                shared::EXPAND_DNS
            ),
        )),
    }
}

/// The config section of the proxy's TLS to checkers.
pub const HEALTH_SOURCE_TLS: &str = "health_source.tls";

/// A checker's url: `https://host:port` when `[health_source.tls]` is set,
/// `http://host:port` when it is not. Mixing is refused: with TLS set, a
/// plain url would send (and take) health in the clear.
fn checker_uri(key: &str, raw: &str, tls: bool) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = raw
        .trim()
        .parse()
        .map_err(|e| ConfigError::new(key, format!("invalid url {raw:?}: {e}")))?;
    let has_path = !matches!(uri.path(), "" | "/") || uri.query().is_some();
    match (uri.scheme_str(), uri.authority()) {
        (Some(_), Some(a)) if a.as_str().contains('@') || has_path => Err(ConfigError::new(
            key,
            format!("{raw:?}: expected scheme://host:port, nothing more"),
        )),
        (Some("http"), Some(_)) if !tls => Ok(uri),
        (Some("https"), Some(_)) if tls => Ok(uri),
        (Some("http"), Some(_)) => Err(ConfigError::new(
            key,
            format!("{raw:?}: [health_source.tls] is set, so checkers are https://"),
        )),
        (Some("https"), Some(_)) => Err(ConfigError::new(
            key,
            format!("{raw:?}: https:// needs [health_source.tls] with the checkers' ca"),
        )),
        _ => Err(ConfigError::new(
            key,
            format!("{raw:?}: expected http://host:port (https:// with [health_source.tls])"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_daemon::config::{RawClientTls, RawHealthSource, RawTarget};

    #[test]
    fn defaults_need_only_a_pool() {
        let file = RawFile {
            targets: vec![RawTarget {
                url: "http://127.0.0.1:1".into(),
                ..RawTarget::default()
            }],
            ..RawFile::default()
        };
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(
            c.admin_listen,
            Some(DEFAULT_ADMIN_LISTEN.parse().expect("addr"))
        );
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.retries, 2);
        assert!(!c.preserve_host);
        assert_eq!(c.sticky.window, Duration::from_secs(30));
        assert_eq!(c.dns_refresh, DEFAULT_DNS_REFRESH);
        assert!(matches!(
            c.source,
            HealthSource::Embedded {
                grpc_listen: None,
                ..
            }
        ));
    }

    #[test]
    fn upstream_names_are_looked_up_again_every_health_dns_refresh() {
        let mut file = RawFile::default();
        file.health_source.checkers = vec!["http://127.0.0.1:50051".into()];
        file.health.dns_refresh = Some("3s".into());
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(c.settings().dns_refresh, Duration::from_secs(3));
        file.health.dns_refresh = Some("often".into());
        let e = ProxyConfig::from_file(&file).expect_err("invalid");
        assert!(e.to_string().contains("health.dns_refresh"), "{e}");
    }

    #[test]
    fn balance_and_slow_start_and_their_errors() {
        let mut file = RawFile::default();
        file.health_source.checkers = vec!["http://127.0.0.1:50051".into()];
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(c.settings().balance, Policy::RoundRobin);
        assert_eq!(c.settings().slow_start, None);

        file.proxy.balance = Some("least_request".into());
        file.health.slow_start = Some("30s".into());
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(c.settings().balance, Policy::LeastRequest);
        assert_eq!(c.settings().slow_start, Some(Duration::from_secs(30)));

        file.proxy.balance = Some("leastconn".into());
        let e = ProxyConfig::from_file(&file).expect_err("bad");
        assert_eq!(e.key, "proxy.balance");
        assert!(e.reason.contains("least_request"), "{}", e.reason);
        file.proxy.balance = Some("round_robin".into());
        for bad in ["slowly", "0s"] {
            file.health.slow_start = Some(bad.into());
            assert_eq!(
                ProxyConfig::from_file(&file).expect_err(bad).key,
                "health.slow_start"
            );
        }
    }

    #[test]
    fn checkers_replace_the_pool() {
        let file = RawFile {
            health_source: RawHealthSource {
                checkers: vec!["http://127.0.0.1:50051".into()],
                ..RawHealthSource::default()
            },
            ..RawFile::default()
        };
        assert!(matches!(
            ProxyConfig::from_file(&file).expect("valid").source,
            HealthSource::Checkers(ref c) if c.len() == 1
        ));
    }

    #[test]
    fn errors_name_the_key() {
        let mut file = RawFile {
            health_source: RawHealthSource {
                checkers: vec!["ftp://x".into()],
                ..RawHealthSource::default()
            },
            ..RawFile::default()
        };
        assert_eq!(
            ProxyConfig::from_file(&file).expect_err("bad").key,
            "health_source.checkers[0]"
        );
        file.health_source.checkers = vec!["http://127.0.0.1:1".into()];
        file.proxy.response_timeout = Some("fast".into());
        assert_eq!(
            ProxyConfig::from_file(&file).expect_err("bad").key,
            "proxy.response_timeout"
        );
        file.proxy.response_timeout = None;
        file.sticky.window = Some("0s".into());
        assert_eq!(
            ProxyConfig::from_file(&file).expect_err("bad").key,
            "sticky.window"
        );
        file.sticky.window = None;
        file.proxy.listen = Some("localhost".into());
        assert_eq!(
            ProxyConfig::from_file(&file).expect_err("bad").key,
            "proxy.listen"
        );
    }

    #[test]
    fn sticky_keys_modes_and_their_errors() {
        let mut file = RawFile {
            health_source: RawHealthSource {
                checkers: vec!["http://127.0.0.1:1".into()],
                ..RawHealthSource::default()
            },
            ..RawFile::default()
        };
        let key = |file: &RawFile| ProxyConfig::from_file(file).expect_err("bad").key;
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(c.sticky.mode, Mode::Header);
        assert_eq!(c.sticky.cookie_name, "tether_sticky");
        assert!(!c.sticky.strict && !c.sticky.sign_headers && c.sticky.keys.is_empty());

        file.sticky.mode = Some("cookie".into());
        assert_eq!(key(&file), "sticky.keys");
        file.sticky.mode = Some("cookies".into());
        assert_eq!(key(&file), "sticky.mode");
        file.sticky.mode = None;
        file.sticky.sign_headers = Some(true);
        assert_eq!(key(&file), "sticky.keys");

        let secret = "s".repeat(32);
        file.sticky.keys = Some(vec![secret.clone(), "too short".into()]);
        let err = ProxyConfig::from_file(&file).expect_err("short");
        assert_eq!(err.key, "sticky.keys[1]");
        assert!(!err.to_string().contains("too short"), "{err}");

        file.sticky.keys = Some(vec![secret.clone()]);
        file.sticky.mode = Some("both".into());
        file.sticky.strict = Some(true);
        file.sticky.cookie_name = Some("bad name".into());
        assert_eq!(key(&file), "sticky.cookie_name");
        file.sticky.cookie_name = Some("sid".into());
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(c.sticky.mode, Mode::Both);
        assert!(c.sticky.strict && c.sticky.sign_headers);
        assert_eq!(c.sticky.keys.ids().len(), 1);
        assert!(!format!("{c:?}").contains(&secret), "keys never in Debug");
    }

    #[test]
    fn checker_urls_are_https_exactly_when_the_channel_has_tls() {
        let file = |checkers: &[&str], tls: Option<RawClientTls>| RawFile {
            health_source: RawHealthSource {
                checkers: checkers.iter().map(|c| (*c).to_owned()).collect(),
                tls,
                ..RawHealthSource::default()
            },
            ..RawFile::default()
        };
        let err = |f: RawFile| ProxyConfig::from_file(&f).expect_err("invalid");
        let e = err(file(&["https://127.0.0.1:50051"], None));
        assert_eq!(e.key, "health_source.checkers[0]");
        assert!(e.reason.contains("[health_source.tls]"), "{}", e.reason);
        for bad in ["http://c:1/health", "http://user@c:1", "http://c:1/?q=1"] {
            assert_eq!(
                err(file(&["http://c:2", bad], None)).key,
                "health_source.checkers[1]",
                "{bad}"
            );
        }
        // [health_source.tls] is validated (its ca is the only trust anchor).
        let no_ca = RawClientTls::default();
        assert_eq!(
            err(file(&["https://c:1"], Some(no_ca))).key,
            "health_source.tls.ca"
        );
        let missing = RawClientTls {
            ca: Some("/nonexistent/ca.crt".into()),
            ..RawClientTls::default()
        };
        let e = err(file(&["https://c:1"], Some(missing)));
        assert_eq!(e.key, "health_source.tls.ca");
        assert!(e.reason.contains("no such file"), "{}", e.reason);
    }

    #[test]
    fn checker_names_expand_by_dns_only_when_asked() {
        let mut file = RawFile {
            health_source: RawHealthSource {
                checkers: vec!["http://checkers.tether.svc:50051".into()],
                ..RawHealthSource::default()
            },
            ..RawFile::default()
        };
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert!(c.checker_dns.is_none());
        file.health_source.expand = Some("dns".into());
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(
            c.checker_dns.expect("dns").refresh,
            DEFAULT_DNS_REFRESH,
            "[health] dns_refresh's default"
        );
        file.health.dns_refresh = Some("4s".into());
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(c.checker_dns.expect("dns").refresh, Duration::from_secs(4));
        file.health_source.dns_refresh = Some("2s".into());
        let c = ProxyConfig::from_file(&file).expect("valid");
        assert_eq!(c.checker_dns.expect("dns").refresh, Duration::from_secs(2));

        let key = |file: &RawFile| ProxyConfig::from_file(file).expect_err("invalid").key;
        file.health_source.dns_refresh = Some("0s".into());
        assert_eq!(key(&file), "health_source.dns_refresh");
        file.health_source.dns_refresh = Some("2s".into());
        file.health_source.expand = Some("srv".into());
        assert_eq!(key(&file), "health_source.expand");
        file.health_source.expand = None;
        assert_eq!(key(&file), "health_source.dns_refresh");
        file.health_source.dns_refresh = None;
        file.health_source.checkers.clear();
        file.health_source.expand = Some("dns".into());
        file.targets = vec![RawTarget {
            url: "http://127.0.0.1:1".into(),
            ..RawTarget::default()
        }];
        assert_eq!(key(&file), "health_source.expand");
    }

    #[test]
    fn empty_pool_in_embedded_mode_is_an_error() {
        assert_eq!(
            ProxyConfig::from_file(&RawFile::default())
                .expect_err("empty")
                .key,
            "targets"
        );
    }
}
