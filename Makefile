# Tether. `make compose-up` runs the stack in containers, `make demo` on
# localhost; `make test` runs the tests.
CARGO ?= cargo
COMPOSE ?= $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)

.PHONY: build test lint fmt demo check-configs prom-check k8s-validate status-page differential faults fuzz bench compose-image compose-up compose-down compose-test

build:
	$(CARGO) build --locked --workspace --bins

# The binaries are built first: the whole-binary tests run them. Then the
# deploy files: every config, the Kubernetes manifests, and the compose
# stack in real containers.
test: build
	$(CARGO) test --locked --workspace
	$(MAKE) check-configs
	$(MAKE) prom-check
	$(MAKE) k8s-validate
	$(MAKE) status-page
	$(MAKE) compose-test

# Every example config in deploy/ must pass --check-config (the compose
# stack's: each with the daemon it is for; the proxy's has no pool).
check-configs: build
	@set -e; for f in deploy/*.toml; do \
	  target/debug/tether-checker --config $$f --check-config; \
	  target/debug/tether-proxy --config $$f --check-config; \
	done
	target/debug/tether-checker --config deploy/compose/checker.toml --check-config
	target/debug/tether-proxy --config deploy/compose/proxy.toml --check-config
	target/debug/tether-proxy --config deploy/compose/proxy-grpc.toml --check-config

# Prometheus's config and Tether's rules with promtool: check config, check
# rules, every rule's unit test, and the Kubernetes ConfigMap holding the same
# rules (scripts/prom-check.sh --update rewrites it). Installs Debian's
# prometheus package (for promtool) if missing, about 40 s.
prom-check:
	./scripts/prom-check.sh

# The Kubernetes manifests, offline: API schemas (k8s 1.30, strict),
# cross-checks, the ConfigMap's configs through --check-config, and checkov.
# The first run installs kubernetes-validate and checkov from PyPI into
# target/venv-k8s and target/venv-checkov.
k8s-validate: build
	./scripts/k8s-validate.sh

# The status page in headless Chromium (installed from Debian if missing):
# members, states and traffic in the DOM, and a screenshot. UPDATE=1 writes
# docs/status-page.png.
status-page: build
	python3 scripts/status_page.py $(if $(UPDATE),--update)

# The fault suite: every scenario through the built binaries (a quick
# subset also runs in `cargo test`); writes the faults section of
# docs/RELIABILITY.md and exits 1 if a target was missed. The fd limit is
# raised for the 10,000-idle-connections scenario. Release binaries by
# default: memory (RSS, F14's per attacking connection) on a debug build is
# several times what operators run. FAULTS_PROFILE=debug runs the debug
# binaries (quicker to build) and labels every figure as debug.
FAULTS_PROFILE ?= release
faults:
	$(CARGO) build --locked --workspace --bins $(if $(filter release,$(FAULTS_PROFILE)),--release)
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); target/$(FAULTS_PROFILE)/tether-faults --doc docs/RELIABILITY.md

# Each fuzz target for FUZZ_SECONDS (default 60) on stable Rust, installing
# cargo-fuzz if missing; the saved corpora replay in `make test`.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

# Tether, nginx and HAProxy on the same raw requests (malformed table +
# smuggling classics) to recording backends; writes the table into
# docs/RELIABILITY.md. Installs nginx/HAProxy from Debian if missing. ~40 s.
differential: build
	python3 scripts/differential.py --update

# The image from binaries built on the host, on a base image made locally
# from Debian's packages (no registry needed).
compose-image:
	$(CARGO) build --locked --release --bins
	./deploy/compose/base-image.sh
	mkdir -p deploy/compose/.bin
	cp target/release/tether-checker target/release/tether-proxy target/release/tetherctl target/release/tether-echo deploy/compose/.bin/
	TETHER_BUILD_TARGET=runtime-host TETHER_BASE_IMAGE=tether-base:bookworm $(COMPOSE) build

# The full stack: three backends (one DNS pool), two checkers, two proxies on
# localhost:8080 and :8081 (TETHER_PORT_A / TETHER_PORT_B to change them),
# Prometheus on localhost:9090 (TETHER_PORT_PROMETHEUS).
compose-up: compose-image
	TETHER_BUILD_TARGET=runtime-host TETHER_BASE_IMAGE=tether-base:bookworm $(COMPOSE) up -d
	@echo "tether: curl -i localhost:$${TETHER_PORT_A:-8080}/  and  $(COMPOSE) exec checker-a tetherctl health"
	@echo "prometheus: http://127.0.0.1:$${TETHER_PORT_PROMETHEUS:-9090}/classic/alerts  (docs/OPERATING.md)"

compose-down:
	$(COMPOSE) down -v --remove-orphans

# The compose stack in real containers, under its own project name and free
# ports, torn down at the end (deploy/compose/test.py says what it checks).
compose-test: build
	python3 deploy/compose/test.py --bin-dir target/debug

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

demo:
	./deploy/demo.sh

# Tether against nginx and HAProxy (CPU, latency, idle and after-burst
# memory, instructions per request under cachegrind), and the checker at
# 10,000 targets; prints the tables and a goals table and writes
# bench/RESULTS.md. About 25 minutes on a quiet machine (plus the first
# install of the tools); BENCH_QUICK=1 for a smoke run of a few minutes,
# BENCH_ONLY=part,... for some parts. See bench/README.md.
bench:
	./bench/setup.sh
	$(CARGO) build --release --locked --bins
	python3 bench/bench.py
