#!/usr/bin/env bash
# Checks the Prometheus files in deploy/prometheus/ with promtool, offline:
#   1. `promtool check config` on the compose stack's prometheus.yml (which
#      also checks every rule file it names);
#   2. `promtool check rules` on every rule file;
#   3. `promtool test rules` on every unit test (deploy/prometheus/tests/),
#      each alert and recording rule against input series;
#   4. the Kubernetes ConfigMap (deploy/k8s/prometheus-rules.yaml) holds the
#      very same rule files (--update writes it from them).
#
# promtool comes from Debian's `prometheus` package; the first run installs
# it when it is missing (root: apt-get, with a policy-rc.d that forbids the
# package's service to start, which is removed afterwards).
#
# Usage: scripts/prom-check.sh [--update]   (--update rewrites the ConfigMap)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=deploy/prometheus
configmap=deploy/k8s/prometheus-rules.yaml
update=0
case "${1:-}" in
  --update) update=1 ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

if ! command -v promtool >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "prom-check: promtool missing; apt-get install prometheus (as root), or run this as root" >&2
    exit 1
  fi
  echo "prom-check: installing promtool (Debian package prometheus)"
  start=$SECONDS
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# prom-check.sh: no service may start during the install\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
  fi
  cleanup_policy() { if ((made_policy)); then rm -f "$policy"; fi; }
  trap cleanup_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  # A service started despite the policy is stopped and not started at boot.
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  cleanup_policy
  trap - EXIT
  echo "prom-check: installed in $((SECONDS - start))s"
fi
echo "prom-check: $(promtool --version 2>&1 | head -n 1)"

echo "== 1. promtool check config"
promtool check config "$dir/prometheus.yml"

echo "== 2. promtool check rules"
promtool check rules "$dir"/rules/*.yml

echo "== 3. promtool test rules"
# Each test file names its rule files relative to itself.
promtool test rules "$dir"/tests/*.yml

echo "== 4. the Kubernetes ConfigMap carries the same rules"
# Made from the rule files, so it cannot drift: compared here, written with
# --update.
python3 - "$dir/rules" "$configmap" "$update" <<'PY'
import os, sys

rules_dir, manifest, update = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
head = """# Tether's Prometheus rules (alerts and recording rules) as a plain
# ConfigMap: no Prometheus Operator or CRD needed. Mount it into your
# Prometheus and list the files in rule_files, e.g. a volume from this
# ConfigMap at /etc/prometheus/rules/tether and
#   rule_files: ["/etc/prometheus/rules/tether/*.yml"]
# The `up` alerts expect the scrape jobs to be named tether-proxy and
# tether-checker (see README.md here). What each alert means and what to do:
# docs/OPERATING.md.
#
# Generated from deploy/prometheus/rules/ by `scripts/prom-check.sh --update`;
# `make test` fails when it differs from them.
apiVersion: v1
kind: ConfigMap
metadata:
  name: tether-prometheus-rules
  namespace: tether
  labels:
    app.kubernetes.io/name: tether
    app.kubernetes.io/component: monitoring
    app.kubernetes.io/part-of: tether
data:
"""
out = [head]
for f in sorted(f for f in os.listdir(rules_dir) if f.endswith(".yml")):
    out.append(f"  {f}: |\n")
    with open(os.path.join(rules_dir, f)) as fh:
        for line in fh.read().rstrip("\n").split("\n"):
            out.append(("    " + line).rstrip() + "\n")
text = "".join(out)
if update:
    with open(manifest, "w") as fh:
        fh.write(text)
    print(f"wrote {manifest}")
    sys.exit(0)
try:
    with open(manifest) as fh:
        current = fh.read()
except FileNotFoundError:
    current = None
if current != text:
    print(f"{manifest} differs from {rules_dir}: run scripts/prom-check.sh --update")
    sys.exit(1)
print(f"ok: {manifest} holds {rules_dir}/*.yml")
PY
