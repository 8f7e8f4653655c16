#!/usr/bin/env bash
# Validates the Kubernetes manifests offline, with no cluster:
#   1. every manifest against the Kubernetes API schemas (kubernetes-validate,
#      strict: unknown fields are errors), at a fixed Kubernetes version;
#   2. what the schemas cannot see: kustomization lists every file, selectors
#      match pod labels, every container is locked down and has limits, config
#      paths exist in the ConfigMap, the proxy's grace period covers its drain,
#      images name the workspace version, every pod has a pod-level security
#      context and a NetworkPolicy of its own besides the default deny
#      (and `kubectl kustomize` renders, when kubectl happens to be installed);
#   3. the TOML files inside the ConfigMap with the real binaries'
#      --check-config (skipped, with a note, when they are not built);
#   4. checkov (PyPI, pinned), the scanner a new user is likely to run:
#      every finding is either fixed or skipped in the manifest with a
#      one-line reason (`checkov.io/skipN` annotations), so any new one
#      fails this.
#
# Usage: scripts/k8s-validate.sh [DIR]     (default deploy/k8s)
# Exits non-zero on the first stage that finds a problem.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-deploy/k8s}
# The version the manifests are written for (the preStop sleep action needs
# 1.30). kubernetes-validate ships schemas 1.25 to 1.37 in its package data.
k8s_version=1.30.0
validator_version=1.37.0
venv=target/venv-k8s
checkov_version=3.3.30
# Its own venv: checkov pins many packages of its own.
checkov_venv=target/venv-checkov
bin_dir=${K8S_BIN_DIR:-target/debug}

# Reuse the venv when it already holds the pinned version: repeat runs make
# no network calls at all.
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$validator_version"; then
  echo "k8s-validate: installing kubernetes-validate $validator_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$validator_version"
fi

shopt -s nullglob
manifests=()
for f in "$dir"/*.yaml "$dir"/*.yml; do
  # kustomization.yaml is a kustomize file, not an API object: the tool has
  # no schema for it (it would only warn), so stage 2 checks it instead.
  [[ $(basename "$f") == kustomization.y*ml ]] && continue
  manifests+=("$f")
done
if ((${#manifests[@]} == 0)); then
  echo "k8s-validate: no manifests in $dir" >&2
  exit 1
fi

echo "== 1. schemas (Kubernetes $k8s_version, strict)"
# kubernetes-validate exits 0 when it has no schema for a kind (a typo'd kind
# or apiVersion); it only prints WARN. Count that as a failure too.
set +e
out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "${manifests[@]}" 2>&1)
rc=$?
set -e
[[ -n $out ]] && echo "$out"
if ((rc != 0)) || grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"; then
  echo "k8s-validate: schema validation failed" >&2
  exit 1
fi
echo "ok: ${#manifests[@]} files"

echo "== 2. cross-checks"
tomldir=$(mktemp -d)
trap 'rm -rf "$tomldir"' EXIT
# PyYAML comes with kubernetes-validate; tomllib is in the standard library.
"$venv/bin/python" - "$dir" "$tomldir" <<'PY'
import os, re, sys, tomllib, yaml

d, tomldir = sys.argv[1], sys.argv[2]
errors = []
def err(msg): errors.append(msg)

files = sorted(f for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
objs = []
for f in files:
    with open(os.path.join(d, f)) as fh:
        for doc in yaml.safe_load_all(fh):
            if doc:
                objs.append((f, doc))

# kustomization: lists exactly the manifests in the directory.
kust = [doc for f, doc in objs if doc.get("kind") == "Kustomization"]
if len(kust) != 1:
    err("expected one kustomization.yaml")
else:
    listed = kust[0].get("resources", [])
    others = {f for f, doc in objs if doc.get("kind") != "Kustomization"}
    for r in listed:
        if r not in others:
            err(f"kustomization lists {r}, which is not a manifest here")
    for f in sorted(others - set(listed)):
        err(f"{f} is not listed in kustomization.yaml")

def of_kind(kind):
    return [(f, doc) for f, doc in objs if doc.get("kind") == kind]

def name(doc):
    return f'{doc["kind"]}/{doc["metadata"]["name"]}'

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

# resource.Quantity as the API server parses it: number, then suffix.
QUANTITY = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")

def duration_s(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)", v)
    if not m:
        raise ValueError(f"cannot read duration {v!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]

configmaps = {doc["metadata"]["name"]: doc.get("data", {}) for _, doc in of_kind("ConfigMap")}
# The image tag is the release: the workspace version in Cargo.toml.
with open("Cargo.toml", "rb") as fh:
    version = tomllib.load(fh)["workspace"]["package"]["version"]
policies = [doc for _, doc in of_kind("NetworkPolicy")]
required_pod_sc = {"runAsNonRoot": True, "runAsUser": 10001}
deployments = of_kind("Deployment")
pod_labels = []
required_sc = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}
for f, dep in deployments:
    spec = dep["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    pod_labels.append(labels)
    if not matches(spec["selector"].get("matchLabels"), labels):
        err(f"{f}: {name(dep)} selector does not match its pod labels")
    pod = spec["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    for k, v in required_pod_sc.items():
        if pod_sc.get(k) != v:
            err(f"{f}: {name(dep)} pod securityContext.{k} must be {str(v).lower()}")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        err(f"{f}: {name(dep)} pod seccompProfile must be RuntimeDefault")
    own = [p for p in policies if p["spec"].get("podSelector", {}).get("matchLabels")
           and matches(p["spec"]["podSelector"]["matchLabels"], labels)]
    if not own:
        err(f"{f}: {name(dep)}: no NetworkPolicy selects its pods")
    if pod.get("enableServiceLinks") is not False:
        err(f"{f}: {name(dep)} must set enableServiceLinks: false")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod.get("initContainers", []) + pod["containers"]:
        where = f"{f}: {name(dep)} container {c['name']}"
        sc = c.get("securityContext", {})
        for k, v in required_sc.items():
            if sc.get(k) != v:
                err(f"{where}: securityContext.{k} must be {str(v).lower()}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            err(f"{where}: capabilities must drop ALL")
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(f"{where}: seccompProfile must be RuntimeDefault")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                q = res.get(part, {}).get(r)
                if q is None:
                    err(f"{where}: resources.{part}.{r} missing")
                # The schemas take any string here; the API server would not.
                elif not QUANTITY.fullmatch(str(q)):
                    err(f"{where}: resources.{part}.{r}: {q!r} is not a quantity")
        if c.get("image") != f"tether:{version}":
            err(f"{where}: image must be tether:{version} (the version in Cargo.toml)")
        if c.get("imagePullPolicy") != "IfNotPresent":
            err(f"{where}: imagePullPolicy must be IfNotPresent")
        # --config PATH must be a key of the ConfigMap mounted at its dir.
        args = c.get("args", [])
        if "--config" in args:
            path = args[args.index("--config") + 1]
            mount = next((m for m in c.get("volumeMounts", [])
                          if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
            if mount is None:
                err(f"{where}: {path} is not under a volume mount")
                continue
            if not mount.get("readOnly"):
                err(f"{where}: config mount must be readOnly")
            cm = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
            key = path[len(mount["mountPath"].rstrip("/")) + 1:]
            if cm not in configmaps or key not in configmaps[cm]:
                err(f"{where}: {path}: no key {key!r} in ConfigMap {cm!r}")
                continue
            cfg = tomllib.loads(configmaps[cm][key])
            with open(os.path.join(tomldir, key), "w") as out:
                out.write(configmaps[cm][key])
            # SIGKILL must not cut the drain short.
            drain = cfg.get("proxy", {}).get("drain_timeout")
            if drain is not None:
                grace = pod.get("terminationGracePeriodSeconds", 30)
                sleep = (c.get("lifecycle", {}).get("preStop", {})
                         .get("sleep", {}).get("seconds", 0))
                if sleep + duration_s(drain) >= grace:
                    err(f"{where}: preStop {sleep}s + drain_timeout {drain} "
                        f"must be below terminationGracePeriodSeconds {grace}")

for kind in ("Service", "PodDisruptionBudget"):
    for f, doc in of_kind(kind):
        sel = doc["spec"].get("selector", {})
        sel = sel.get("matchLabels", {}) if kind == "PodDisruptionBudget" else sel
        if not any(matches(sel, labels) for labels in pod_labels):
            err(f"{f}: {name(doc)} selects no pods of any Deployment here")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {len(objs)} objects; configs {sorted(os.listdir(tomldir))}")
PY

# kustomize itself is not needed for the checks above; when kubectl is on
# PATH, rendering the kustomization (offline) also catches what only
# kustomize rejects.
if command -v kubectl >/dev/null; then
  if ! kubectl kustomize "$dir" >/dev/null; then
    echo "k8s-validate: kubectl kustomize $dir failed" >&2
    exit 1
  fi
  echo "ok: kubectl kustomize renders"
else
  echo "skip: kubectl not installed, kustomization not rendered"
fi

echo "== 3. configs with --check-config"
rc=0
for pair in checker:tether-checker proxy:tether-proxy; do
  file="$tomldir/${pair%%:*}.toml"
  binary="$bin_dir/${pair#*:}"
  if [[ ! -f $file ]]; then
    echo "k8s-validate: ${pair%%:*}.toml is not in the ConfigMap" >&2
    rc=1
  elif [[ ! -x $binary ]]; then
    echo "skip: $binary not built (cargo build --workspace --bins)"
  # Only the file's own keys: a stray TETHER_* variable in this shell must not
  # make the check pass or fail.
  elif ! env $(env | grep -o '^TETHER_[^=]*' | sed 's/^/-u /') \
      "$binary" --config "$file" --check-config; then
    echo "k8s-validate: ${pair%%:*}.toml from the ConfigMap is rejected by ${pair#*:}" >&2
    rc=1
  fi
done
((rc == 0)) || exit $rc

echo "== 4. checkov $checkov_version"
if ! "$checkov_venv/bin/checkov" --version 2>/dev/null | grep -qx "$checkov_version"; then
  echo "k8s-validate: installing checkov $checkov_version into $checkov_venv"
  start=$SECONDS
  python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$checkov_version"
  echo "k8s-validate: checkov installed in $((SECONDS - start))s"
fi
# Offline: no download of Prisma Cloud's guidelines, no version check.
set +e
out=$(BC_SKIP_MAPPING=TRUE CHECKOV_NO_VERSION_CHECK=1 LOG_LEVEL=ERROR \
  "$checkov_venv/bin/checkov" -d "$dir" --framework kubernetes --skip-download --compact --quiet 2>&1)
rc=$?
set -e
summary=$(grep -E '^Passed checks' <<<"$out" || true)
if ((rc != 0)); then
  # The findings (--quiet: failed checks only): each check and resource.
  grep -E 'Check:|FAILED for|File:' <<<"$out" | head -n 90
  echo "k8s-validate: checkov: $summary" >&2
  echo "k8s-validate: fix each finding, or skip it in the manifest with a one-line reason" >&2
  exit 1
fi
echo "ok: checkov: ${summary:-no output}"
