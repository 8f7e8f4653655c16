//! The proto fuzz target's saved corpus, replayed as an ordinary test
//! (`fuzz/checks/` holds the checks the fuzz targets run).

#[path = "../../../fuzz/checks/proto.rs"]
mod proto;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn proto_corpus() {
    replay::replay("proto", proto::run);
}
