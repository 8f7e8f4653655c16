//! Errors of the daemon support code.

/// A configuration problem: the key path at fault and why.
#[derive(Debug, thiserror::Error)]
#[error("config: `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Logging could not be set up (or changed).
#[derive(Debug, thiserror::Error)]
#[error("logging: {0}")]
pub struct LoggingError(pub String);
