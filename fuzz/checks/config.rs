//! Fuzz check: the config loader. Arbitrary bytes are written to a file
//! and loaded as TOML by `tether_daemon::config::load` (no environment),
//! then validated by `ProxyConfig::from_file` and `CheckerConfig::from_file`.
//! Nothing panics, and every error names a key and a reason.
//!
//! Validation reads the files a config names (TLS certificates, `file:`
//! sticky keys, a log4rs file). An input naming a path under `/dev`,
//! `/proc` or `/sys` is skipped: `/dev/zero` as a key file never ends, and
//! that is the operator's own doing, not a parsing bug.
//!
//! Shared by `fuzz/fuzz_targets/config.rs` and
//! `crates/proxy/tests/fuzz_corpus.rs`.

use std::path::PathBuf;
use std::sync::OnceLock;

use tether_checker::config::CheckerConfig;
use tether_daemon::config::{self, ConfigError, Env};
use tether_proxy::ProxyConfig;

pub fn run(data: &[u8]) {
    if [&b"/dev"[..], b"/proc", b"/sys"]
        .iter()
        .any(|p| data.windows(p.len()).any(|w| w == *p))
    {
        return;
    }
    let path = scratch();
    std::fs::write(path, data).expect("write the scratch config");
    let raw = match config::load(Some(path), &Env::default()) {
        Ok(raw) => raw,
        Err(e) => return named(&e),
    };
    if let Err(e) = ProxyConfig::from_file(&raw) {
        named(&e);
    }
    if let Err(e) = CheckerConfig::from_file(&raw) {
        named(&e);
    }
}

fn named(e: &ConfigError) {
    assert!(!e.key.trim().is_empty(), "an error without a key: {e}");
    assert!(
        !e.reason.trim().is_empty(),
        "an error without a reason: {e}"
    );
}

/// One file per process, rewritten for each input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("tether-fuzz-config-{}.toml", std::process::id()))
    })
}
