# The README's two commands are `make demo` and `make test`; CI runs `.ci/run`, which
# calls `make test`. Tools the tests need are installed once per machine into
# ~/.cache/tvm-upload-tools (TVM_TOOLS_DIR) by scripts/test-tools.sh.
SHELL := /bin/bash
CARGO ?= cargo
AARCH64 := aarch64-unknown-linux-musl
AARCH64_BIN := target/$(AARCH64)/release/tvm-upload
# The same binary with the test-only knobs (cargo feature test-knobs), for the qemu suite
# only; the one above is the shipped, size-checked binary, which has none.
AARCH64_TEST_BIN := target/$(AARCH64)/release/tvm-upload-test-knobs
# The test lists, in one place (scripts/run_tests.sh and CI use these targets).
# Unit tests of the pure logic live in the library and the binaries.
UNIT_TESTS := --lib --bins
# The real binary against real local servers.
E2E_TESTS := --test cli --test e2e --test lifecycles --test operations --test monitoring \
             --test operator --test faults --test hostile --test tls --test busybox --test tooling \
             --test compression --test servers --test links --test requests --test permissions
# Those of E2E_TESTS that run the aarch64 binary under qemu too: the others measure
# timing against injected faults or need the host's busybox and setpriv, which qemu's
# slower start-up and a foreign binary do not change.
AARCH64_TESTS := --test cli --test e2e --test operations --test monitoring --test compression

.PHONY: footprint demo test test-tools test-quick test-e2e test-csv2kafka test-chaos test-local test-aarch64 test-all test-aws \
        lint audit coverage build release cross cross-armv7 size check-size bench bench-cap cross-test-knobs clean

demo:
	bash scripts/demo.sh

# The whole suite, as CI runs it: lint, every native test (unit, CLI, end-to-end
# against real local servers, the busybox init script), then the static aarch64 build
# under its size budget and the end-to-end suite again with that binary under qemu.
test: test-tools lint audit test-local test-chaos test-aarch64

test-tools:
	bash scripts/test-tools.sh >/dev/null

# Unit tests of the pure logic: no servers, well under a minute.
test-quick:
	$(CARGO) test $(UNIT_TESTS)

# The end-to-end suites (not the chaos loop, which has its own target).
test-e2e: test-tools
	$(CARGO) test --features test-knobs $(E2E_TESTS)

# Unit and integration tests against local servers, csv2kafka's included (its feature
# builds librdkafka from source, once per target dir).
test-local: test-tools
	$(CARGO) test --all-targets --features csv2kafka,test-knobs

# The aarch64 release binary: built, size-checked (and checked to have no test knobs),
# then built again with the knobs (only our crate recompiles) and that copy run through
# the end-to-end suite under qemu-aarch64-static against the same local servers.
test-aarch64: test-tools cross-test-knobs cross check-size
	file $(AARCH64_BIN) | grep -q 'ARM aarch64' && file $(AARCH64_BIN) | grep -q 'statically linked'
	TVM_UPLOAD_BIN=$(CURDIR)/$(AARCH64_TEST_BIN) TVM_UPLOAD_RUNNER=qemu-aarch64-static \
	  $(CARGO) test --features test-knobs $(AARCH64_TESTS)

# csv2kafka alone: its unit tests and tests/csv2kafka.rs against s3s-fs, moto and tansu.
test-csv2kafka: test-tools
	$(CARGO) test --features csv2kafka --lib csv2kafka --test csv2kafka

# The kill loop (tests/chaos.rs, a few minutes): SIGKILL at random moments, then
# exactly-once, byte-identical, bounded journal, no stored part sent again.
# TVM_CHAOS_SEED=<printed seed> reproduces a run's workload and kill schedule.
test-chaos: test-tools
	$(CARGO) test --test chaos -- --ignored --nocapture

# Everything: native, the chaos suite, aarch64.
test-all: test-local test-chaos test-aarch64

# Against a real bucket, when TEST_BUCKET, AWS_REGION and credentials are set.
test-aws:
	bash scripts/test_aws.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings

audit:
	bash scripts/audit.sh

coverage:
	bash scripts/coverage.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

cross:
	bash cross/build.sh $(AARCH64)

# The aarch64 binary with the test-only knobs, copied to $(AARCH64_TEST_BIN).
cross-test-knobs:
	bash cross/build.sh $(AARCH64) test-knobs

cross-armv7:
	bash cross/build.sh armv7-unknown-linux-musleabihf

# The static aarch64 binary's size against the 4 MiB budget (and the native one's).
size: release cross check-size
	@ls -l target/release/tvm-upload | awk '{printf "native x86_64: %d bytes (%.2f MiB)\n", $$5, $$5/1048576}'

check-size:
	bash scripts/check_size.sh $(AARCH64_BIN)

# tvm-upload against rclone and the AWS CLI, then the daemon figures; writes
# bench/results.json, docs/benchmarks.png and docs/BENCHMARKS.md (~35 minutes), then csv2kafka
# (bench/csv2kafka_bench.py) and compression (bench/compression_bench.py, bench/corpus.py).
bench:
	python3 bench/bench.py
	python3 bench/csv2kafka_bench.py
	python3 bench/compression_bench.py

# Achieved rate against the bandwidth cap (a benchmark, not a test).
bench-cap:
	bash scripts/bench_cap.sh

clean:
	$(CARGO) clean

# Binary sizes, idle RSS and CPU, peak RSS on a 1 GiB upload (for docs/GUIDE.md, "Footprint").
footprint:
	bash scripts/footprint.sh
