//! Starts log4rs from a validated `[log]` section.
//!
//! Tether logs through named loggers: `proxy` (routing decisions, table
//! changes), `hc` (probe results and state changes), `access` (one line per
//! request) and `grpc`. The access log is off unless a level is set for it,
//! and per-request logging checks `log_enabled!` first, so it costs nothing
//! when off.

use log::LevelFilter;
use log4rs::append::console::{ConsoleAppender, Target};
use log4rs::config::{Appender, Config, Logger, Root};
use log4rs::encode::pattern::PatternEncoder;

use crate::config::LogConfig;
use crate::error::Error;

/// The named loggers Tether writes to.
pub const LOGGERS: [&str; 4] = ["proxy", "hc", "access", "grpc"];

const PATTERN: &str = "{d(%Y-%m-%dT%H:%M:%S%.3fZ)(utc)} {l:<5} {t} - {m}{n}";

/// Installs the global logger. Call once, from `main`.
pub fn init(config: &LogConfig) -> Result<(), Error> {
    match config {
        LogConfig::File(path) => log4rs::init_file(path, Default::default())
            .map_err(|e| Error::Logging(format!("{}: {e}", path.display()))),
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
            for (name, level) in loggers
                .iter()
                .filter(|(n, _)| !LOGGERS.contains(&n.as_str()))
            {
                builder = builder.logger(Logger::builder().build(name, *level));
            }
            let config = builder
                .build(Root::builder().appender("stderr").build(*root))
                .map_err(|e| Error::Logging(e.to_string()))?;
            log4rs::init_config(config)
                .map(|_| ())
                .map_err(|e| Error::Logging(e.to_string()))
        }
    }
}
