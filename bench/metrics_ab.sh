#!/usr/bin/env bash
# User-space instructions per proxied request of two tether-proxy builds,
# counted with cachegrind (repeatable to ~0.1 %, unlike CPU time here).
#
#   bench/metrics_ab.sh BEFORE_BINARY AFTER_BINARY
#
# Written to price the operating bookkeeping (per-member counters, latency
# histogram, sticky counters, startup gate, per-connection settings): build
# 4d0b944 and a later commit and pass both binaries. See bench/RESULTS.md.
#
# Method (bench/README.md, /work/shared/MACHINE.md): one nginx worker answers
# on three ports; the proxy (bench.py's config: embedded HTTP checks every
# 1 s, sticky on, access log off, admin on) runs pinned to one CPU under
# `valgrind --tool=cachegrind --cache-sim=no`; h2load drives N2, then in a
# fresh process N1, keep-alive HTTP/1.1 requests over CONNS connections, and
# the figure is (I(N2) - I(N1)) / (N2 - N1). Start-up, shutdown and the
# first connect cancel out. Both processes of a pair live equally long (HOLD
# seconds, or as long as the N2 run needed if its load outlasted HOLD), so
# health probes and timers (about the same count per second of wall time)
# cancel out as well, whatever the load's own duration.
#
# The method lives in bench/bench.py (part "instructions", which counts
# Tether, nginx and HAProxy the same way in `make bench`); this script runs
# it for two tether-proxy builds, alternating A and B per repetition.
#
# Settings from the environment: N1 (2000), N2 (12000), CONNS (16),
# REPS (2), HOLD (seconds each proxy lives, 20), SETTLE (seconds between
# start and load, 4), PROXY_CPU (1), LOAD_CPU (0), KEEP=1 keeps the
# cachegrind files and logs (cg_annotate them) in the work dir it prints.
# AB_EXTRA_A / AB_EXTRA_B: TOML appended to that side's config (`\n` for a
# newline), to price a feature on one build: pass the same binary twice.
# Needs: valgrind, nginx, h2load (Debian: nghttp2-client), taskset, python3.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 BEFORE_BINARY AFTER_BINARY" >&2
  exit 2
fi
for tool in valgrind nginx h2load taskset python3; do
  command -v "$tool" >/dev/null || { echo "metrics_ab: $tool not found (bench/setup.sh installs it)" >&2; exit 1; }
done
exec python3 "$(dirname "$(readlink -f "$0")")/bench.py" --ab "$1" "$2"
