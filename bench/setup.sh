#!/usr/bin/env bash
# Installs what `make bench` needs: nginx and HAProxy (the peers, and nginx
# as the backends), wrk (saturated load), oha (constant-rate latency), the
# openssl CLI (a throwaway certificate for the TLS part), valgrind
# (cachegrind counts instructions per request: this VM has no hardware
# counters) and h2load from nghttp2-client (a fixed number of requests, over
# HTTP/1.1 or h2c, for the instruction counts and the RSS-after-load figure).
# Idempotent: installs only what is missing. Debian packages that ship a
# service would start it on install; a policy-rc.d forbids that, and any
# instance that started anyway is stopped, so no port stays taken.
set -euo pipefail

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl) # the TLS part's certificate
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)

if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bench/setup.sh: need root to install ${need_apt[*]} (or install them yourself)" >&2
    exit 1
  fi
  echo "bench/setup.sh: installing ${need_apt[*]}"
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# bench/setup.sh: no service may start during the install\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
  fi
  cleanup_policy() { if ((made_policy)); then rm -f "$policy"; fi; }
  trap cleanup_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Belt and braces: a service started despite the policy is stopped, and
  # is not started at boot either.
  for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$svc ]]; then
      "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
  done
fi

if ! command -v oha >/dev/null 2>&1 && [[ ! -x ${CARGO_HOME:-$HOME/.cargo}/bin/oha ]]; then
  echo "bench/setup.sh: cargo install oha (takes a few minutes)"
  cargo install oha --locked
fi

echo "bench/setup.sh: ok: $(nginx -v 2>&1 | head -1); $(haproxy -v 2>&1 | head -1); $(wrk -v 2>&1 | head -1 || true); $(openssl version); $(valgrind --version); $(h2load --version 2>&1 | head -1); $("${CARGO_HOME:-$HOME/.cargo}/bin/oha" --version 2>/dev/null || oha --version)"
