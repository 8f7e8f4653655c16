#!/usr/bin/env bash
# The demo stack on localhost: three tether-echo backends (5041-5043), one
# tether-checker (gRPC 50051, admin 9902) and two tether-proxy instances
# (8080 and 8081, admin 9901 and 9911),
# all from deploy/tether.toml. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --workspace --bins
bin=target/debug

for port in 5041 5042 5043 50051 8080 8081 9901 9902 9911; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use; stop whatever holds it and retry" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: stopping"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Each process's output goes through its own line-buffered prefixer, so
# lines from different processes never interleave mid-line.
start() {
  local label=$1
  shift
  "$@" > >(sed -u "s/^/[$label] /") 2>&1 &
  pids+=($!)
}

for i in 1 2 3; do
  start "app-$i" "$bin/tether-echo" --listen "127.0.0.1:504$i" --name "app-$i"
done
start checker "$bin/tether-checker" --config deploy/tether.toml
start proxy-a env TETHER_PROXY__LISTEN=127.0.0.1:8080 "$bin/tether-proxy" --config deploy/tether.toml
start proxy-b env TETHER_PROXY__LISTEN=127.0.0.1:8081 TETHER_ADMIN__LISTEN=127.0.0.1:9911 "$bin/tether-proxy" --config deploy/tether.toml

# Wait (with a deadline) until both proxies accept connections.
deadline=$((SECONDS + 30))
for port in 8080 8081; do
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "demo: proxy on $port did not start" >&2
      exit 1
    fi
    sleep 0.1
  done
done

cat <<'TXT'

Tether demo is up:  proxies on :8080 and :8081, checker gRPC on :50051,
backends app-1..3 on :5041-5043.   Ctrl-C stops everything.

  curl -i localhost:8080/                      # round robin; note x-target-server
  curl -i localhost:8081/ \
    -H 'x-target-server: app-2' \
    -H "x-target-server-last-use: $(date +%s%3N)"   # sticky, on either proxy
  target/debug/tetherctl health                # the pool's health over gRPC
  target/debug/tetherctl watch                 # follow changes live
  curl -XPOST localhost:5042/_echo/fail        # app-2 fails its health check...
  curl -XPOST localhost:5042/_echo/recover     # ...and comes back

TXT
wait
