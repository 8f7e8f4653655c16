//! The fast subset of the fault suite, run by `cargo test`: the most
//! important scenarios at quick size, each asserting its targets within the
//! generous bounds a loaded 2-core CI machine needs (exact figures come
//! from `make faults`). Needs `cargo build --workspace --bins` first.

use tether_faults::{Outcome, Size, scenarios};

fn assert_within_bounds(o: &Outcome) {
    eprintln!("{}", o.text());
    let missed = o.missed(true);
    assert!(
        missed.is_empty(),
        "{} {}: {missed:#?}\n{}",
        o.id,
        o.name,
        o.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_backend_killed_under_load() {
    assert_within_bounds(&scenarios::backend_killed(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_backend_hung() {
    assert_within_bounds(&scenarios::backend_hung(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_member_black_holes_syns() {
    assert_within_bounds(&scenarios::syn_blackhole(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f6_all_down_then_one_back() {
    assert_within_bounds(&scenarios::all_down_then_one(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f7_checker_killed_and_restarted() {
    assert_within_bounds(&scenarios::checker_killed(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f9_checker_hung() {
    assert_within_bounds(&scenarios::checker_hung(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f10_no_connection_outside_the_pool() {
    assert_within_bounds(&scenarios::outside_pool(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f11_twenty_reloads_under_load() {
    assert_within_bounds(&scenarios::reloads(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_binary_upgrade_under_load() {
    assert_within_bounds(&scenarios::binary_upgrade(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_http2_windows_never_opened() {
    assert_within_bounds(&scenarios::shut_windows(Size::Quick).await);
}

// Issue 16. F17-F19 need root and iptables (they cut a checker process
// off); without them they report themselves as not run and pass.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f17_checker_cut_from_every_backend() {
    assert_within_bounds(&scenarios::checker_cut_from_backends(Size::Quick).await);
}

/// The other checker still takes a really failing member out: proxies
/// count only live checkers (stream up, not impaired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f18_one_of_two_checkers_cut_while_a_backend_fails() {
    assert_within_bounds(&scenarios::one_of_two_checkers_cut(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f19_checker_partition_heals() {
    assert_within_bounds(&scenarios::checker_partition_heals(Size::Quick).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f20_every_backend_answers_503() {
    assert_within_bounds(&scenarios::every_backend_503(Size::Quick).await);
}
