//! Signed stickiness: the `tether_sticky` cookie and, with
//! `sticky.sign_headers`, the signed `x-target-server-last-use` header.
//!
//! Both carry one claim, "this client used member NAME at LAST-USE (epoch
//! ms)", with an HMAC-SHA256 under one of `sticky.keys`:
//!
//! ```text
//! cookie:  tether_sticky=<name>.<last-use ms>.<key id>.<mac>
//! header:  x-target-server: <name>
//!          x-target-server-last-use: <last-use ms>.<key id>.<mac>
//! ```
//!
//! The key id is the first 8 hex digits of the key's SHA-256, so ids need
//! no configuration and a rotated key list still finds the right key. The
//! mac (43 characters of unpadded base64url) covers a length-prefixed name,
//! the time as 8 bytes and the key id, so no two claims share an input. In
//! the cookie the name is percent-encoded where RFC 6265 does not allow a
//! byte (and `%` itself); it is parsed from the right, so names with `.`
//! and `@` (`backend@10.0.0.5:8080`) need no escaping.
//!
//! Here the claim is only checked (mac in constant time, then the window
//! from the signed time); core decides, matching the name against pool
//! members only. Key material never leaves `keys.rs` and `ring`: `Debug`
//! shows ids.
//!
//! Three parts: `keys.rs` loads and rotates `sticky.keys`; `codec.rs` signs
//! and opens claims (the HMAC and the `<name>.<ms>.<key id>.<mac>` form);
//! `headers.rs` finds claims in a request and writes them into a response.

mod codec;
mod headers;
mod keys;

use tether_daemon::config::ConfigError;

pub use headers::{
    Claim, Read, Rules, find_cookie, is_cookie_name, read, set_cookie, signed_last_use,
    strip_cookie,
};
pub use keys::{Keys, MIN_KEY_BYTES};

/// Default name of the sticky cookie.
pub const DEFAULT_COOKIE_NAME: &str = "tether_sticky";

/// Where stickiness is read from (`sticky.mode`). Responses always carry
/// the headers; cookie modes add `Set-Cookie`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `x-target-server` + `x-target-server-last-use` (the original design).
    #[default]
    Header,
    /// The signed cookie only; request headers are not read.
    Cookie,
    /// The cookie first, then the headers.
    Both,
}

impl Mode {
    pub fn parse(key: &str, raw: &str) -> Result<Mode, ConfigError> {
        match raw {
            "header" => Ok(Mode::Header),
            "cookie" => Ok(Mode::Cookie),
            "both" => Ok(Mode::Both),
            other => Err(ConfigError::new(
                key,
                format!("{other:?}: expected \"header\", \"cookie\" or \"both\""),
            )),
        }
    }

    pub fn reads_headers(self) -> bool {
        matches!(self, Mode::Header | Mode::Both)
    }

    pub fn uses_cookie(self) -> bool {
        matches!(self, Mode::Cookie | Mode::Both)
    }
}
