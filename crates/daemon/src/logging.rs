//! Starts log4rs from a validated `[log]` section, and changes its levels
//! on reload.
//!
//! Tether logs through named loggers: `proxy` (routing decisions, table
//! changes), `hc` (probe results and state changes), `access` (one line per
//! request) and `grpc`. The access log is off unless a level is set for it,
//! and per-request logging checks a flag the proxy refreshes on reload, so
//! it costs nothing when off.

use log::LevelFilter;
use log4rs::append::console::{ConsoleAppender, Target};
use log4rs::config::{Appender, Config, Logger, Root};
use log4rs::encode::pattern::PatternEncoder;

use crate::config::{DEPENDENCY_LOGGERS, LOGGERS, LogConfig};
use crate::error::LoggingError;

const PATTERN: &str = "{d(%Y-%m-%dT%H:%M:%S%.3fZ)(utc)} {l:<5} {t} - {m}{n}";

/// The installed logger. Levels from `[log]` can be swapped in place with
/// `apply`; a log4rs file (`log.file`) reloads itself by its own
/// `refresh_rate`.
#[derive(Debug)]
pub struct Logging {
    /// `None` when a log4rs file is in charge.
    handle: Option<log4rs::Handle>,
}

/// Installs the global logger. Call once, from `main`.
pub fn init(config: &LogConfig) -> Result<Logging, LoggingError> {
    match config {
        LogConfig::File(path) => {
            log4rs::init_file(path, Default::default())
                .map_err(|e| LoggingError(format!("{}: {e}", path.display())))?;
            Ok(Logging { handle: None })
        }
        LogConfig::Levels { .. } => {
            let handle =
                log4rs::init_config(build(config)?).map_err(|e| LoggingError(e.to_string()))?;
            Ok(Logging {
                handle: Some(handle),
            })
        }
    }
}

impl Logging {
    /// Replaces the levels without a restart. A log4rs file follows its own
    /// `refresh_rate` instead, so there is nothing to do for one.
    pub fn apply(&self, config: &LogConfig) -> Result<(), LoggingError> {
        if let Some(handle) = &self.handle {
            handle.set_config(build(config)?);
        }
        Ok(())
    }
}

fn build(config: &LogConfig) -> Result<Config, LoggingError> {
    match config {
        LogConfig::File(path) => log4rs::config::load_config_file(path, Default::default())
            .map_err(|e| LoggingError(format!("{}: {e}", path.display()))),
        LogConfig::Levels { root, loggers } => {
            let stderr = ConsoleAppender::builder()
                .target(Target::Stderr)
                .encoder(Box::new(PatternEncoder::new(PATTERN)))
                .build();
            let mut builder =
                Config::builder().appender(Appender::builder().build("stderr", Box::new(stderr)));
            for name in LOGGERS {
                let level = match loggers.get(name) {
                    Some(l) => *l,
                    None if name == "access" => LevelFilter::Off,
                    None => *root,
                };
                builder = builder.logger(Logger::builder().build(name, level));
            }
            for name in DEPENDENCY_LOGGERS {
                let level = match loggers.get(name) {
                    Some(l) => *l,
                    // rustls warns for every handshake that offers an IP
                    // address as SNI: any client could fill the log. Its
                    // real failures reach ours as handshake errors.
                    None if name == "rustls" => (*root).min(LevelFilter::Error),
                    None => *root,
                };
                builder = builder.logger(Logger::builder().build(name, level));
            }
            builder
                .build(Root::builder().appender("stderr").build(*root))
                .map_err(|e| LoggingError(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn level_of(config: &Config, name: &str) -> Option<LevelFilter> {
        config
            .loggers()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.level())
    }

    #[test]
    fn library_loggers_follow_the_root_but_rustls_stays_quiet() {
        let config = build(&LogConfig::Levels {
            root: LevelFilter::Info,
            loggers: BTreeMap::new(),
        })
        .expect("config");
        // An IP address offered as SNI is a rustls warning any client can
        // repeat: not at the default level.
        assert_eq!(level_of(&config, "rustls"), Some(LevelFilter::Error));
        assert_eq!(level_of(&config, "h2"), Some(LevelFilter::Info));
        let config = build(&LogConfig::Levels {
            root: LevelFilter::Info,
            loggers: BTreeMap::from([("rustls", LevelFilter::Debug)]),
        })
        .expect("config");
        assert_eq!(level_of(&config, "rustls"), Some(LevelFilter::Debug));
    }
}
