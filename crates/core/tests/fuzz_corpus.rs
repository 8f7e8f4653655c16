//! The sticky-hint fuzz target's saved corpus, replayed as an ordinary
//! test (`fuzz/checks/` holds the checks the fuzz targets run).

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../../fuzz/checks/sticky_hint.rs"]
mod sticky_hint;

#[test]
fn sticky_hint_corpus() {
    replay::replay("sticky_hint", sticky_hint::run);
}
