# The README's two commands are `make demo` and `make test`; CI runs `.ci/run`, which
# calls `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test test-tools test-quick lint build release size bench-cap clean

demo:
	bash scripts/demo.sh

# The whole suite: lint, unit tests, and end-to-end tests against real local servers.
test: test-tools lint
	$(CARGO) test --all-targets

test-tools:
	bash scripts/test-tools.sh >/dev/null

test-quick:
	$(CARGO) test --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

build:
	$(CARGO) build

release:
	$(CARGO) build --release

size: release
	@ls -l target/release/tvm-upload | awk '{printf "target/release/tvm-upload: %d bytes (%.2f MiB)\n", $$5, $$5/1048576}'

clean:
	$(CARGO) clean

# Achieved rate against the bandwidth cap (a benchmark, not a test).
bench-cap:
	bash scripts/bench_cap.sh
