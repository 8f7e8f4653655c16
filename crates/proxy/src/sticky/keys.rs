//! `sticky.keys`: where key material comes from (a literal, `env:VAR`,
//! `file:/path`), how keys are named (ids from their SHA-256, so rotation
//! needs no configuration) and compared on reload. The material is held
//! only here and in `ring`'s HMAC keys; `Debug` shows ids.

use std::fmt;
use std::sync::Arc;

use ring::{digest, hmac};
use tether_daemon::config::ConfigError;

use super::codec::HEX;

/// Shortest key accepted, in bytes (after trimming whitespace at the ends).
pub const MIN_KEY_BYTES: usize = 32;
/// Hex digits of a key id.
pub(super) const KEY_ID_LEN: usize = 8;

pub(super) struct Key {
    /// First 8 hex digits of the key's SHA-256.
    pub(super) id: [u8; KEY_ID_LEN],
    /// The key's whole SHA-256, to tell key lists apart on reload.
    fingerprint: [u8; 32],
    pub(super) key: hmac::Key,
}

/// `sticky.keys`: the first signs, all verify. Cheap to clone.
#[derive(Clone, Default)]
pub struct Keys(pub(super) Arc<[Key]>);

// === impl Keys ===

impl Keys {
    /// Reads each entry: `env:VAR` (the variable's value), `file:/path`
    /// (the file's contents) or the key itself. Whitespace at the ends is
    /// trimmed; what remains must be at least [`MIN_KEY_BYTES`]. Errors name
    /// `sticky.keys[i]` and never contain key material.
    pub fn load(raw: &[String]) -> Result<Keys, ConfigError> {
        let mut keys: Vec<Key> = Vec::with_capacity(raw.len());
        for (i, entry) in raw.iter().enumerate() {
            let name = format!("sticky.keys[{i}]");
            let material = material(&name, entry)?;
            let key = Key::new(&material);
            if let Some(j) = keys.iter().position(|k| k.id == key.id) {
                return Err(ConfigError::new(
                    name,
                    format!("has the same key id as sticky.keys[{j}] (a repeated key?)"),
                ));
            }
            keys.push(key);
        }
        Ok(Keys(keys.into()))
    }

    /// Keys from raw bytes, for tests and tools; no length rule.
    pub fn from_bytes<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Keys {
        Keys(keys.into_iter().map(Key::new).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids, signing key first.
    pub fn ids(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|k| String::from_utf8_lossy(&k.id).into_owned())
            .collect()
    }
}

impl Key {
    fn new(material: &[u8]) -> Key {
        let digest = digest::digest(&digest::SHA256, material);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        let mut id = [0u8; KEY_ID_LEN];
        for (i, b) in fingerprint[..KEY_ID_LEN / 2].iter().enumerate() {
            id[2 * i] = HEX[usize::from(b >> 4)];
            id[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        Key {
            id,
            fingerprint,
            key: hmac::Key::new(hmac::HMAC_SHA256, material),
        }
    }
}

impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|(a, b)| a.fingerprint == b.fingerprint)
    }
}

impl Eq for Keys {}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Keys").field(&self.ids()).finish()
    }
}

/// One `sticky.keys` entry's bytes.
fn material(key: &str, raw: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = if let Some(var) = raw.strip_prefix("env:") {
        match std::env::var(var) {
            Ok(v) => v.into_bytes(),
            Err(std::env::VarError::NotPresent) => {
                return Err(ConfigError::new(key, format!("${var} is not set")));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::new(key, format!("${var} is not UTF-8")));
            }
        }
    } else if let Some(path) = raw.strip_prefix("file:") {
        warn_if_readable_by_all(key, path);
        std::fs::read(path).map_err(|e| ConfigError::new(key, format!("{path}: {e}")))?
    } else {
        raw.as_bytes().to_vec()
    };
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < MIN_KEY_BYTES {
        return Err(ConfigError::new(
            key,
            format!(
                "a key must be at least {MIN_KEY_BYTES} bytes (got {})",
                trimmed.len()
            ),
        ));
    }
    Ok(trimmed.to_vec())
}

#[cfg(unix)]
fn warn_if_readable_by_all(key: &str, path: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        log::warn!(target: "proxy", "{key}: {path} is readable by every user; chmod o-r it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_all(_key: &str, _path: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Keys {
        Keys::from_bytes(list.iter().map(|k| k.as_bytes()))
    }

    #[test]
    fn key_ids_are_sha256_prefixes() {
        // SHA-256("") = e3b0c442...
        assert_eq!(Keys::from_bytes([&b""[..]]).ids(), ["e3b0c442"]);
    }

    #[test]
    fn keys_load_from_literal_env_and_file_and_errors_name_the_entry() {
        let long = "l".repeat(32);
        let dir = std::env::temp_dir().join(format!("tether-sticky-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("key");
        std::fs::write(&file, format!("{}\n", "f".repeat(40))).expect("write");
        let loaded = Keys::load(&[long.clone(), format!("file:{}", file.display())]).expect("keys");
        assert_eq!(loaded, keys(&[long.as_str(), "f".repeat(40).as_str()]));
        let err = Keys::load(&[long.clone(), "short".into()]).expect_err("short");
        assert_eq!(err.key, "sticky.keys[1]");
        assert!(!err.to_string().contains("short\""), "{err}");
        let err = Keys::load(&["env:TETHER_TEST_SURELY_UNSET_KEY".into()]).expect_err("unset");
        assert_eq!(err.key, "sticky.keys[0]");
        let err = Keys::load(&[long.clone(), long.clone()]).expect_err("repeat");
        assert_eq!(err.key, "sticky.keys[1]");
        let err = Keys::load(&["file:/nonexistent/tether/key".into()]).expect_err("missing");
        assert_eq!(err.key, "sticky.keys[0]");
        // Debug shows ids, never material.
        assert!(!format!("{loaded:?}").contains(&long));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
