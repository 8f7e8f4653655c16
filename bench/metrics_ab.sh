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
# `valgrind --tool=cachegrind --cache-sim=no`; h2load drives N1, then in a
# fresh process N2, keep-alive HTTP/1.1 requests over CONNS connections, and
# the figure is (I(N2) - I(N1)) / (N2 - N1). Start-up, shutdown and the
# first connect cancel out. Every process lives exactly HOLD seconds, so
# health probes and timers (about the same count per second of wall time)
# cancel out as well, whatever the load's own duration.
#
# Settings from the environment: N1 (2000), N2 (12000), CONNS (16),
# REPS (2), HOLD (seconds each proxy lives, 20), SETTLE (seconds between
# start and load, 4), PROXY_CPU (1), LOAD_CPU (0), KEEP=1 keeps the
# cachegrind files and logs (cg_annotate them) in the work dir it prints.
# Needs: valgrind, nginx, h2load (Debian: nghttp2-client), taskset, python3.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 BEFORE_BINARY AFTER_BINARY" >&2
  exit 2
fi
BIN_A=$(readlink -f "$1")
BIN_B=$(readlink -f "$2")
N1=${N1:-2000}
N2=${N2:-12000}
CONNS=${CONNS:-16}
REPS=${REPS:-2}
HOLD=${HOLD:-20}
SETTLE=${SETTLE:-4}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
for tool in valgrind nginx h2load taskset python3; do
  command -v "$tool" >/dev/null || { echo "metrics_ab: $tool not found" >&2; exit 1; }
done
for b in "$BIN_A" "$BIN_B"; do
  [[ -x $b ]] || { echo "metrics_ab: $b is not an executable" >&2; exit 1; }
done

work=$(mktemp -d /tmp/tether-metrics-ab-XXXXXX)
nginx_pid=""
proxy_pid=""
cleanup() {
  [[ -n $proxy_pid ]] && kill "$proxy_pid" 2>/dev/null || true
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then echo "metrics_ab: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_ports() { # N distinct ports the kernel hands out now
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() { # port pid: until one connect succeeds (only that one reaches the server)
  local deadline=$((SECONDS + 60))
  while ! python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$1" 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || { echo "metrics_ab: process $2 died" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "metrics_ab: port $1 not listening" >&2; return 1; }
    sleep 0.2
  done
}

# --- backends: one nginx worker, three ports (as bench.py) ---
read -r b1 b2 b3 pport <<<"$(free_ports 4)"
mkdir -p "$work/nginx-tmp"
cat >"$work/backends.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $work/backends.pid;
error_log $work/backends.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx-tmp/body;
  proxy_temp_path $work/nginx-tmp/proxy;
  fastcgi_temp_path $work/nginx-tmp/fastcgi;
  uwsgi_temp_path $work/nginx-tmp/uwsgi;
  scgi_temp_path $work/nginx-tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server { listen 127.0.0.1:$b1; default_type text/plain; location / { return 200 "app-1\n"; } }
  server { listen 127.0.0.1:$b2; default_type text/plain; location / { return 200 "app-2\n"; } }
  server { listen 127.0.0.1:$b3; default_type text/plain; location / { return 200 "app-3\n"; } }
}
EOF
taskset -c "$LOAD_CPU" nginx -p "$work" -e "$work/backends-early.log" -c "$work/backends.conf" &
nginx_pid=$!
for p in $b1 $b2 $b3; do wait_port "$p" "$nginx_pid"; done

# --- the proxy's config: bench.py's, word for word ---
cat >"$work/tether.toml" <<EOF
[proxy]
listen = "127.0.0.1:$pport"
header_read_timeout = "60s"

[admin]
listen = "127.0.0.1:0"

[health]
kind = "http"
path = "/health"
interval = "1s"
timeout = "1s"

[[targets]]
url = "http://127.0.0.1:$b1"
name = "app-1"

[[targets]]
url = "http://127.0.0.1:$b2"
name = "app-2"

[[targets]]
url = "http://127.0.0.1:$b3"
name = "app-3"

[sticky]
enabled = true

[log]
level = "warn"
[log.loggers]
access = "off"
EOF

# one_run BINARY N TAG: prints the total instructions of one proxy process
one_run() {
  local bin=$1 n=$2 tag=$3 out="$work/cg.$3.out" t0=$SECONDS
  env -u TETHER_LOG taskset -c "$PROXY_CPU" valgrind --tool=cachegrind --cache-sim=no \
    --cachegrind-out-file="$out" "$bin" --config "$work/tether.toml" \
    >"$work/proxy.$tag.log" 2>&1 &
  proxy_pid=$!
  wait_port "$pport" "$proxy_pid"
  sleep "$SETTLE" # health known: every member up before the load
  taskset -c "$LOAD_CPU" h2load --h1 -n "$n" -c "$CONNS" -t 1 "http://127.0.0.1:$pport/" >"$work/h2load.$tag.log" 2>&1
  if ! grep -q "status codes: $n 2xx" "$work/h2load.$tag.log"; then
    echo "metrics_ab: $tag: not all $n requests answered 2xx:" >&2
    grep -E "requests:|status codes:" "$work/h2load.$tag.log" >&2
    exit 1
  fi
  local left=$((t0 + HOLD - SECONDS))
  ((left > 0)) || { echo "metrics_ab: $tag: load outlasted HOLD=$HOLD s; raise HOLD" >&2; exit 1; }
  sleep "$left"
  kill -TERM "$proxy_pid"
  wait "$proxy_pid" || true
  proxy_pid=""
  awk '/^summary:/ {print $2}' "$out"
}

echo "metrics_ab: N1=$N1 N2=$N2 CONNS=$CONNS REPS=$REPS HOLD=${HOLD}s; proxy on CPU $PROXY_CPU, nginx and h2load on CPU $LOAD_CPU"
declare -A per
for rep in $(seq 1 "$REPS"); do
  for side in A B; do
    if [[ $side == A ]]; then bin=$BIN_A; else bin=$BIN_B; fi
    i1=$(one_run "$bin" "$N1" "$side$rep-n1")
    i2=$(one_run "$bin" "$N2" "$side$rep-n2")
    per[$side$rep]=$(python3 -c "print(f'{($i2 - $i1) / ($N2 - $N1):.0f}')")
    echo "metrics_ab: $side rep $rep: I($N1)=$i1 I($N2)=$i2 -> ${per[$side$rep]} instructions/request ($bin)"
  done
done
pairs=()
for k in "${!per[@]}"; do pairs+=("$k=${per[$k]}"); done
python3 - "$REPS" "${pairs[@]}" <<'EOF'
import statistics, sys
reps = int(sys.argv[1])
d = {k: float(v) for k, v in (a.split("=") for a in sys.argv[2:])}
a = [d[f"A{r}"] for r in range(1, reps + 1)]
b = [d[f"B{r}"] for r in range(1, reps + 1)]
ma, mb = statistics.mean(a), statistics.mean(b)
print(f"before (A): {ma:,.0f} instructions/request  (runs: {', '.join(f'{x:,.0f}' for x in a)})")
print(f"after  (B): {mb:,.0f} instructions/request  (runs: {', '.join(f'{x:,.0f}' for x in b)})")
print(f"difference: {mb - ma:+,.0f} instructions/request, {100 * (mb - ma) / ma:+.2f} %")
EOF
