//! What a pool member is and how it is probed.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// Default probe kind: a TCP connect.
pub const DEFAULT_KIND: ProbeKind = ProbeKind::Tcp;
/// Default HTTP probe path.
pub const DEFAULT_PATH: &str = "/";
/// Default time between two probes of one target.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default time a probe may take before it counts as a failure.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default consecutive successes that turn an unhealthy target healthy.
pub const DEFAULT_RISE: NonZeroU32 = NonZeroU32::new(2).expect("non-zero");
/// Default consecutive failures that turn a healthy target unhealthy.
pub const DEFAULT_FALL: NonZeroU32 = NonZeroU32::new(3).expect("non-zero");

/// How a target is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A TCP connect to the target's host and port.
    Tcp,
    /// `GET {path}` answered with a status in 200-399.
    Http,
}

impl ProbeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(ProbeKind::Tcp),
            "http" => Some(ProbeKind::Http),
            _ => None,
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated probe specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    /// Request path for HTTP probes; starts with `/`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            kind: DEFAULT_KIND,
            path: DEFAULT_PATH.to_owned(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}

/// A pool member: a unique name, the base URL requests are sent to, and how
/// it is probed. The URL has been validated by whoever built the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub probe: ProbeSpec,
}
