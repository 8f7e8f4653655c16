//! The proxy's fuzz targets' saved corpora (sticky cookie, request
//! validation, config loader), replayed as ordinary tests (`fuzz/checks/`
//! holds the checks the fuzz targets run).

#[path = "../../../fuzz/checks/config.rs"]
mod config;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../../fuzz/checks/sticky_cookie.rs"]
mod sticky_cookie;
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
