//! What every Tether service binary does after its config is valid: start
//! logging, start the runtime, run until a signal, map the outcome to an
//! exit code. Shared so the binaries behave the same.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::LogConfig;
use crate::logging::Logging;

/// The flags every Tether service takes (flattened into each binary's own
/// parser, which adds its name and `--version`).
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// TOML config file; every key can also come from TETHER_* variables.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the config, print the result, and exit 0 (valid) or 2.
    #[arg(long)]
    pub check_config: bool,
}

/// Exit code for a bad config or logging set-up: nothing started.
pub const EXIT_CONFIG: u8 = 2;

/// One worker per CPU the process may run on (its affinity mask), so a
/// process pinned to one core runs one worker. On a single CPU the
/// current-thread scheduler does the same work without the machinery of
/// work stealing.
fn runtime_builder() -> tokio::runtime::Builder {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    }
}

/// Starts logging, then runs `service` (handed the logging handle, for
/// reloads) to completion on a runtime sized to the CPUs. `binary` names
/// the program in messages; `logger` is the log target for its last words.
pub fn serve<F, E>(
    binary: &str,
    logger: &str,
    log: &LogConfig,
    service: impl FnOnce(Logging) -> F,
) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let logging = match crate::logging::init(log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{binary}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match runtime_builder().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{binary}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(service(logging)) {
        Ok(()) => {
            log::info!(target: logger, "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!(target: logger, "{e}");
            eprintln!("{binary}: {e}");
            ExitCode::FAILURE
        }
    }
}
