#!/usr/bin/env bash
# The allocator comparison (issue 18 item 4; bench/RESULTS.md, 2026-12-06):
# the same measurements on the system allocator (glibc) as it comes, glibc
# with tunables set by the environment, jemalloc as it comes, jemalloc with
# the options the release build now has (jemalloc-d), and mimalloc.
#
#   bench/alloc_compare.sh build              # three builds, profile alloc-cmp
#   bench/alloc_compare.sh run PART...        # PART: idle burst checker instructions f14
#   bench/alloc_compare.sh summary            # the table, from what the runs wrote
#
# Every variant is built with the same cargo profile (`alloc-cmp`: release
# with thin LTO, to build in minutes) and without default features, and
# jemalloc without the options .cargo/config.toml compiles in; the variants
# with options run a build with them in the environment of Tether's
# processes only (bench.py's BENCH_TETHER_ENV: GLIBC_TUNABLES,
# _RJEM_MALLOC_CONF), so nginx, HAProxy and the load generators run the same
# in every variant. Runs go round the variants in turn
# (ALLOC_RUNS rounds, default 3) so that a machine whose load drifts
# spreads the drift over all of them. RSS and instruction counts only:
# timings on a shared machine rank nothing.
#
# Settings: ALLOC_OUT (default target/alloc-cmp-runs), ALLOC_RUNS (3),
# ALLOC_VARIANTS (default: all six, by name), ALLOC_T1 / ALLOC_T2 (the two
# tunables settings), ALLOC_JD (jemalloc-d's options), and bench.py's own
# BENCH_* for the parts.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=alloc-cmp
OUT=${ALLOC_OUT:-target/alloc-cmp-runs}
RUNS=${ALLOC_RUNS:-3}
# Tunables, set 1: two arenas at most (the proxy runs one worker per CPU;
# a checker too), and a fixed trim threshold, which also stops glibc from
# raising its mmap threshold (and with it the trim threshold) after every
# large free: freed memory at the heap's top goes back above 128 KiB.
T1=${ALLOC_T1:-glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=131072}
# Set 2: one arena, and allocations of 64 KiB and more in their own
# mappings (returned to the kernel when freed), trimming above 64 KiB.
T2=${ALLOC_T2:-glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=65536:glibc.malloc.mmap_threshold=65536}
# jemalloc as it comes keeps freed pages for dirty_decay_ms (10 s) and
# purges them only while it allocates; jemalloc-d purges them within about a
# second, from its own background thread.
JD=${ALLOC_JD:-background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0}
VARIANTS=${ALLOC_VARIANTS:-glibc glibc-t1 glibc-t2 jemalloc jemalloc-d mimalloc}

build_of() { case $1 in glibc*) echo glibc ;; jemalloc*) echo jemalloc ;; *) echo "$1" ;; esac; }
env_of() {
  case $1 in
    glibc-t1) echo "GLIBC_TUNABLES=$T1" ;;
    glibc-t2) echo "GLIBC_TUNABLES=$T2" ;;
    # tikv-jemallocator's symbols carry the _rjem_ prefix, so does the variable
    jemalloc-d) echo "_RJEM_MALLOC_CONF=$JD" ;;
    *) echo "" ;;
  esac
}

build() {
  mkdir -p "$OUT"
  for b in glibc jemalloc mimalloc; do
    features=(--no-default-features)
    [[ $b != glibc ]] && features+=(--features "tether-proxy/$b,tether-checker/$b")
    start=$(date +%s)
    # The same packages every time (the helpers too: faults, echo, bench
    # ports and watch), so that every build unifies the same dependency
    # features and the allocator is the only difference.
    JEMALLOC_SYS_WITH_MALLOC_CONF="" cargo build --locked --profile "$PROFILE" -p tether-proxy -p tether-checker -p tether-faults \
      -p tether-testkit --bins "${features[@]}"
    echo "$b: built in $(($(date +%s) - start)) s" | tee -a "$OUT/builds.txt"
    mkdir -p "$OUT/bin-$b"
    cp "target/$PROFILE/tether-proxy" "target/$PROFILE/tether-checker" "$OUT/bin-$b/"
  done
  # tether-faults runs the tether-proxy beside it: one copy per build.
  for b in glibc jemalloc mimalloc; do
    cp "target/$PROFILE/tether-faults" "target/$PROFILE/tether-echo" "$OUT/bin-$b/"
  done
  # What the helpers' defaults (BENCH_BUILD_DIR) find: the glibc build.
  cp "$OUT/bin-glibc/tether-proxy" "$OUT/bin-glibc/tether-checker" "target/$PROFILE/"
}

run_part() { # variant part run
  local v=$1 part=$2 r=$3 bin
  bin=$OUT/bin-$(build_of "$v")
  local tag=$OUT/$part-$v-$r
  echo "== $part $v run $r ($(date -u +%H:%M:%S))"
  if [[ $part == f14 ]]; then
    # F14's RSS per attacking connection, one kind per fresh proxy.
    env $(env_of "$v") "$bin/tether-faults" --only F14 >"$tag.txt" 2>"$tag.err" || true
    grep -o 'RSS per attacking connection.*' "$tag.txt" || { tail -5 "$tag.err"; return 1; }
    return 0
  fi
  local only=$part allocs=0
  BENCH_ONLY=$only BENCH_ALLOCS=$allocs BENCH_INS_REPS=${BENCH_INS_REPS:-1} \
    BENCH_CHECK_KINDS=${BENCH_CHECK_KINDS:-http} BENCH_CHECK_HAPROXY=${BENCH_CHECK_HAPROXY:-0} \
    BENCH_FLIPS=${BENCH_FLIPS:-3} BENCH_WINDOW=${BENCH_WINDOW:-5} BENCH_BURST_PEERS=${BENCH_BURST_PEERS:-tether} \
    BENCH_BUILD_DIR="$PWD/target/$PROFILE" BENCH_TETHER_A="$PWD/$bin/tether-proxy" \
    BENCH_CHECKER="$PWD/$bin/tether-checker" BENCH_TETHER_ENV="$(env_of "$v")" \
    BENCH_OUT="$tag.md" BENCH_FIGURES="$tag.json" \
    python3 bench/bench.py >"$tag.log" 2>&1 || { tail -20 "$tag.log"; return 1; }
  grep -E '^(burst tether|  tether:|checker \(|instructions tether)' "$tag.log" || true
}

run() {
  [[ $# -gt 0 ]] || { echo "usage: $0 run PART..." >&2; exit 2; }
  mkdir -p "$OUT"
  for part in "$@"; do
    local runs=$RUNS
    # cachegrind counts repeat to a few instructions: one run is enough
    [[ $part == instructions ]] && runs=1
    for r in $(seq 1 "$runs"); do
      for v in $VARIANTS; do
        run_part "$v" "$part" "$r"
      done
    done
  done
}

summary() {
  python3 - "$OUT" $VARIANTS <<'EOF'
import glob, json, os, re, statistics, sys
out, variants = sys.argv[1], sys.argv[2:]

def cell(vals, unit_fmt="{:.1f}"):
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return unit_fmt.format(med) + " (1)"
    return f"{unit_fmt.format(med)} [{unit_fmt.format(min(vals))}-{unit_fmt.format(max(vals))}] ({len(vals)})"

def figs(part, v):
    for path in sorted(glob.glob(os.path.join(out, f"{part}-{v}-[0-9]*.json"))):
        with open(path) as f:
            yield json.load(f)

def f14(v):
    kinds = {}
    for path in sorted(glob.glob(os.path.join(out, f"f14-{v}-[0-9]*.txt"))):
        text = open(path).read()
        # A run whose attacking connections were no longer open when RSS
        # was read (its fds figure far below the 500 connections) did not
        # measure what they hold: left out.
        for kind, kib, fds in re.findall(r"(Slowloris|SlowBody|SlowReader) ([\d.]+) KiB \((\d+) fds\)", text):
            if int(fds) >= 400:
                kinds.setdefault(kind, []).append(float(kib))
    return kinds

rows = [
    ("burst HTTP/1.1, RSS 2 s after (MiB)", lambda v: [d["burst"]["tether"]["h1"] / 1024 for d in figs("burst", v)]),
    ("burst h2c, RSS 2 s after (MiB)", lambda v: [d["burst"]["tether"]["h2"] / 1024 for d in figs("burst", v)]),
    ("idle KiB per connection (10,000)", lambda v: [d["idle_kib_per_conn"]["tether"] for d in figs("idle", v)]),
    ("checker, 10,000 HTTP targets, RSS alone (MiB)", lambda v: [d["checker"]["http"]["rss_alone_kib"] / 1024 for d in figs("checker", v)]),
    ("checker, + 50 subscribers, RSS (MiB)", lambda v: [d["checker"]["http"]["rss_kib"] / 1024 for d in figs("checker", v)]),
    ("F14 slowloris, KiB per connection", lambda v: f14(v).get("Slowloris", [])),
    ("F14 slow body, KiB per connection", lambda v: f14(v).get("SlowBody", [])),
    ("F14 slow reader, KiB per connection", lambda v: f14(v).get("SlowReader", [])),
    ("instructions per request", lambda v: [d["instructions"]["tether"] for d in figs("instructions", v)]),
]
print("| measure: median [min-max] (runs) | " + " | ".join(variants) + " |")
print("| --- | " + " | ".join("---" for _ in variants) + " |")
for label, get in rows:
    fmt = "{:,.0f}" if "instructions" in label else "{:.1f}" if "MiB" in label or "F14" in label else "{:.2f}"
    print(f"| {label} | " + " | ".join(cell(get(v), fmt) for v in variants) + " |")
EOF
}

case ${1:-} in
  build) build ;;
  run) shift; run "$@" ;;
  summary) summary ;;
  *) echo "usage: $0 build | run PART... | summary" >&2; exit 2 ;;
esac
