//! The proxy's fuzz targets' saved corpora (sticky cookie, request
//! validation, config loader, HTTP/1 request heads and chunked bodies),
//! replayed as ordinary tests (`fuzz/checks/` holds the checks the fuzz
//! targets run).

#[path = "../../../fuzz/checks/config.rs"]
mod config;
#[path = "../../../fuzz/checks/h1_chunked.rs"]
mod h1_chunked;
#[path = "../../../fuzz/checks/h1_head.rs"]
mod h1_head;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../../fuzz/checks/sticky_cookie.rs"]
mod sticky_cookie;
#[path = "../../../fuzz/checks/upstream_head.rs"]
mod upstream_head;
#[path = "../../../fuzz/checks/validate.rs"]
mod validate;

#[test]
fn sticky_cookie_corpus() {
    replay::replay("sticky_cookie", sticky_cookie::run);
}

#[test]
fn validate_corpus() {
    replay::replay("validate", validate::run);
}

#[test]
fn config_corpus() {
    replay::replay("config", config::run);
}

#[test]
fn h1_head_corpus() {
    replay::replay("h1_head", h1_head::run);
}

#[test]
fn h1_chunked_corpus() {
    replay::replay("h1_chunked", h1_chunked::run);
}

#[test]
fn upstream_head_corpus() {
    replay::replay("upstream_head", upstream_head::run);
}

/// Runs `check` on the named files of `fuzz/corpus/<target>`.
fn replay_files(target: &str, names: &[&str], check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for name in names {
        let path = dir.join(target).join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&data);
    }
}

// Not a bug: case 16h in scripts/differential_cases.json, kept on purpose
// (`5 \r\n`, whitespace after a size with no extension, which the RFC
// grammar does not allow). Here so the choice stays visible.
#[test]
#[ignore = "documented tolerance in http1/chunked.rs (case 16h), not RFC 9112 as written"]
fn h1_chunked_whitespace_after_size_is_refused() {
    replay_files(
        "h1_chunked",
        &["case-16h", "hand-ws-after-size"],
        h1_chunked::run_strict,
    );
}
