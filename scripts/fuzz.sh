#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) on stable Rust.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS each (default 60)
#   scripts/fuzz.sh config proto    only these
#   scripts/fuzz.sh --merge TARGET  fold the working corpus into the committed
#                                   seeds (fuzz/corpus/TARGET), minimised
#   scripts/fuzz.sh --list          the targets
#
# No sanitizer (-s none): AddressSanitizer needs nightly flags, and every
# crate forbids unsafe code. Debug assertions are on in fuzz builds.
#
# New inputs go to fuzz/target/corpus/TARGET (not committed); the committed
# seeds in fuzz/corpus/TARGET are only read, and `make test` replays them
# (crates/*/tests/fuzz_corpus.rs). A crash is written to
# fuzz/artifacts/TARGET/; once fixed, copy it into fuzz/corpus/TARGET so it
# replays in every test run from then on.
#
# Prints one line per target (runs, runs/s, coverage, corpus) and exits
# non-zero if any target found a crash.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
CARGO_FUZZ_VERSION=0.13.2
TARGETS=(sticky_hint sticky_cookie config proto validate h1_head h1_chunked upstream_head)

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

case "${1:-}" in
    --list)
        printf '%s\n' "${TARGETS[@]}"
        exit 0
        ;;
    --merge)
        target="${2:?--merge needs a target}"
        cargo fuzz build -s none "$target"
        # -merge=1 keeps only inputs that add coverage to the first dir.
        cargo fuzz run -s none "$target" "fuzz/corpus/$target" \
            "fuzz/target/corpus/$target" -- -merge=1
        exit 0
        ;;
esac
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
fi

cargo fuzz build -s none
mkdir -p fuzz/target/logs
crashed=()
for target in "${TARGETS[@]}"; do
    work="fuzz/target/corpus/$target"
    log="fuzz/target/logs/$target.log"
    mkdir -p "$work"
    echo "fuzz: $target for ${SECONDS_EACH}s" >&2
    if ! cargo fuzz run -s none "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        crashed+=("$target")
    fi
    # libFuzzer's last status line: "#N DONE cov: C ft: F corp: E/Sb ..."
    status="$(grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse)' "$log" | tail -1 || true)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")"
    corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$status")"
    printf '%-14s runs %-10s runs/s %-8s cov %-6s corpus %s\n' \
        "$target" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}"
done
if [ "${#crashed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${crashed[*]}: see fuzz/artifacts/ and fuzz/target/logs/" >&2
    exit 1
fi
