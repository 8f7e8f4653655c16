# Tether. `make demo` runs the stack on localhost; `make test` runs the tests.
CARGO ?= cargo

.PHONY: build test lint fmt demo check-configs bench

build:
	$(CARGO) build --locked --workspace --bins

# The binaries are built first: the whole-binary tests run them.
test: build
	$(CARGO) test --locked --workspace
	$(MAKE) check-configs

# Every example config in deploy/ must pass --check-config.
check-configs: build
	@set -e; for f in deploy/*.toml; do \
	  target/debug/tether-checker --config $$f --check-config; \
	  target/debug/tether-proxy --config $$f --check-config; \
	done

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

demo:
	./deploy/demo.sh

# Tether against nginx and HAProxy, and the checker at 10,000 targets; prints
# the tables and writes bench/RESULTS.md. About 10 minutes on a quiet machine
# (plus the first install of the tools); BENCH_QUICK=1 for a one-minute
# smoke run. See bench/README.md.
bench:
	./bench/setup.sh
	$(CARGO) build --release --locked --bins
	python3 bench/bench.py
