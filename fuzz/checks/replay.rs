//! Replays a fuzz target's saved corpus through its check, for the crates'
//! `tests/fuzz_corpus.rs` (plain `cargo test`: no cargo-fuzz, no nightly).
//! Every file runs even after a failure, and the failures are named.

use std::path::Path;

/// Runs `check` on every file in `fuzz/corpus/<target>`; panics naming the
/// files whose check panicked, or when the corpus is empty or missing (so
/// a moved directory cannot pass by replaying nothing).
pub fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus files", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).expect("read a corpus file");
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus files failed: {failed:#?}",
        failed.len(),
        files.len()
    );
}
