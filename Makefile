# ferroloop's tasks. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# The release profile everywhere (tests included), so one build serves the demo, tests and benchmarks.
MATURIN_FLAGS ?= --release

.PHONY: help
help: ## List the tasks
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# A stamp file, not the interpreter: $(VPY) is a symlink, and touching it would touch the
# interpreter every venv shares, so a venv made earlier would never see new requirements.
VSTAMP := $(VENV)/.installed

$(VSTAMP): requirements-dev.txt requirements-integration.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt -r requirements-integration.txt
	touch $(VSTAMP)

.PHONY: venv
venv: $(VSTAMP) ## Create .venv with the pinned build and test dependencies

.PHONY: build
build: $(VSTAMP) ## Build the extension (release) and install it into .venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop $(MATURIN_FLAGS) --quiet

.PHONY: demo
demo: build ## Build, run the asyncio Hello World on ferroloop, compare loops on two micro-benchmarks
	$(VPY) examples/hello.py
	$(VPY) bench/micro.py --quick call_soon create_task

.PHONY: lint
lint: $(VSTAMP) ## cargo fmt --check, cargo clippy -D warnings, ruff, no cycle between the Rust modules
	cargo fmt --all -- --check
	$(PYTHON) tests/lint/module_cycles.py crates/ferroloop-py/src
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/ruff format --check python tests bench examples

.PHONY: fmt
fmt: $(VSTAMP) ## Format Rust and Python sources
	cargo fmt --all
	$(VENV)/bin/ruff format python tests bench examples

# Build variants never overwrite one another. Only the release build is installed editable: `maturin
# develop` writes it into python/ferroloop, which .venv and the per-version .venv-3.X import (one
# file per ABI tag). The debug build is a wheel built in its own cargo target directory (so it does
# not evict the release build's artifacts) and installed, not editable, into the venvs that test it,
# which then import their own copy. `make check-builds` checks that every venv imports its build.
DEBUG_WHEELS := target/variants/debug/wheels

.PHONY: build-debug
build-debug: $(VSTAMP) ## The debug build (leak-check feature) as a wheel, in target/variants/debug
	rm -rf $(DEBUG_WHEELS)
	$(VENV)/bin/maturin build --quiet --interpreter $(PYTHON) --features leak-check --compatibility linux \
	  --target-dir target/variants/debug --out $(DEBUG_WHEELS)

.PHONY: check-builds
check-builds: ## Check that each venv imports its own build: release in .venv and .venv-3.X, debug elsewhere
	$(PYTHON) tests/variants/check.py

.PHONY: test-debug
test-debug: build-debug services ## Debug build counting live handles and transports; the suite asserts none outlives its loop
	$(MAKE) --no-print-directory VENV=.venv-debug venv
	.venv-debug/bin/python -m pip install --quiet --no-deps --force-reinstall $(DEBUG_WHEELS)/*.whl
	.venv-debug/bin/python -m pytest -q --ignore=tests/test_fuzz.py  # the fuzzer compares loops; it runs in `pytest`
	$(PYTHON) tests/variants/check.py

# Every transport (TCP, Unix, datagram, TLS, pipes) and every sock_* operation, ferroloop's half.
# Of the TLS tests (OpenSSL's work is most of their time under valgrind), those of the TLS
# transport's own paths: data both ways, flow control, close_notify, abort, a peer that closes at
# each stage; not the ones of argument checking, certificate verification or ALPN, nor those that
# assert a timeout fires within 3 s (valgrind's slowdown breaks them).
MEMCHECK_TESTS ?= tests/test_net_tcp.py tests/test_net_unix.py tests/test_net_datagram.py tests/test_sock.py \
  tests/test_tls.py tests/test_pipes.py tests/test_robustness.py tests/test_streams.py
# Of the streams tests, those of the native stream operations (streams/op.rs) and their waits.
MEMCHECK_SELECT ?= ferroloop and not (test_tls and (argument_errors or verification or certificate or alpn \
  or timeout or hostname or https_exchange or start_tls_over_tls or start_tls_failures or not_reported)) \
  and not (test_streams and not (coroutines or never_awaited or by_hand or abandoned or drain or writer_write \
  or waiting_in_a_read or patched_with or ferroloops_operations or cancelled or second_reader))

.PHONY: test-memcheck
test-memcheck: build-debug ## The transport, socket and TLS tests under valgrind memcheck, on the debug build (~4 min)
	$(MAKE) --no-print-directory VENV=.venv-memcheck venv
	.venv-memcheck/bin/python -m pip install --quiet --no-deps --force-reinstall $(DEBUG_WHEELS)/*.whl
	bash tests/memcheck/run.sh .venv-memcheck -k '$(MEMCHECK_SELECT)' $(MEMCHECK_TESTS)
	$(PYTHON) tests/variants/check.py

.PHONY: stubtest
stubtest: build ## Check python/ferroloop/_ferroloop.pyi against the built module (mypy.stubtest)
	$(VPY) -m mypy.stubtest ferroloop._ferroloop

# Wheels for every glibc Linux users run: manylinux2014 (glibc 2.17), as uvloop's and the other
# loops' are. rustc compiles as for any build; zig (maturin --zig, ziglang from requirements-wheel.txt)
# links against glibc 2.17's symbols, so the one build runs on RHEL/Alma 8, Amazon Linux 2, Ubuntu
# 20.04 and newer. Each wheel is built where its Python is (3.14 and 3.15 in the sid chroot), checked
# by tests/wheels/check.py (auditwheel show, and every glibc symbol version read from the binary),
# then installed alone into a clean venv and smoke-tested with no Rust toolchain visible.
WHEEL_GLIBC := 2.17
# The host's other Pythons, and no ~/.cargo/bin: what the smoke tests see.
BARE_PATH := /usr/local/bin:/usr/bin:/bin

$(VENV)/.wheel-deps: requirements-wheel.txt $(VSTAMP)
	$(VPY) -m pip install --quiet -r requirements-wheel.txt
	touch $@

.PHONY: wheel wheel-sdist wheel-binary
wheel: $(VSTAMP) $(VENV)/.wheel-deps ## manylinux2014 wheels for Python 3.11-3.15 and an sdist into dist/, checked (auditwheel) and smoke-tested
	rm -rf dist
	$(MAKE) --no-print-directory wheel-sdist wheel-binary

# The sdist, installed (so built from source) into a clean venv and smoke-tested. `make test` runs
# it in lane 1 and wheel-binary in lane 2, so that the lanes end together.
wheel-sdist: $(VSTAMP)
	rm -rf dist/*.tar.gz dist/venv-sdist
	$(VENV)/bin/maturin sdist --out dist >/dev/null
	$(PYTHON) -m venv dist/venv-sdist
	dist/venv-sdist/bin/pip install --quiet dist/*.tar.gz
	cd dist && venv-sdist/bin/python ../tests/smoke.py && echo "sdist: smoke test passed"

# The wheels, each built where its Python is, checked, then installed alone and smoke-tested.
wheel-binary: $(VSTAMP) $(VENV)/.wheel-deps
	rm -f dist/*.whl
	$(MAKE) --no-print-directory wheel-one
	@set -e; for v in $(OTHER_PYTHONS); do \
	  prefix=$$(pyenv prefix $$v 2>/dev/null) || { echo "Python $$v is not installed (pyenv prefix $$v)"; exit 1; }; \
	  CARGO_TARGET_DIR=$(CURDIR)/target/variants/$$v \
	    $(MAKE) --no-print-directory PYTHON=$$prefix/bin/python3 VENV=.venv-$$v wheel-one; \
	done
	@set -e; for v in $(SID_PYTHONS); do \
	  CARGO_TARGET_DIR=$(CURDIR)/target/variants/$$v \
	    bash tests/pythons/sid.sh run make --no-print-directory PYTHON=python$$v VENV=.venv-$$v wheel-one; \
	done
	@set -e; host=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  PATH=$(abspath $(VENV))/bin:$$PATH $(VPY) tests/wheels/check.py --glibc $(WHEEL_GLIBC) \
	    --versions "$$host $(OTHER_PYTHONS) $(SID_PYTHONS)" dist/*.whl
	@set -e; for python in $$($(PYTHON) -c 'import sys; print(sys.executable)') \
	    $$(for v in $(OTHER_PYTHONS); do echo $$(pyenv prefix $$v)/bin/python3; done); do \
	  env -i HOME=$$HOME PATH=$(BARE_PATH) LANG=C.UTF-8 bash tests/wheels/smoke.sh $$python dist; \
	done
	@set -e; for v in $(SID_PYTHONS); do \
	  bash tests/pythons/sid.sh run-bare bash tests/wheels/smoke.sh python$$v dist; \
	done

# One wheel, $(PYTHON)'s, into dist/: built in a target directory of its own beside
# $(CARGO_TARGET_DIR)'s release build (zig links differently, and sharing one would rebuild both).
.PHONY: wheel-one
wheel-one: $(VSTAMP) $(VENV)/.wheel-deps
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin build --release --quiet --zig \
	  --compatibility manylinux2014 --interpreter $(PYTHON) \
	  --target-dir $${CARGO_TARGET_DIR:-$(CURDIR)/target}/manylinux --out dist

.PHONY: cargo-test
cargo-test: ## Rust unit tests of the core crate
	cargo test -p ferroloop-core

# Differential fuzzing (tests/test_fuzz.py): `make test` runs a bounded, derandomized pass with the suite.
FUZZ_EXAMPLES ?= 3000

.PHONY: fuzz
fuzz: build ## Differential fuzzing against asyncio, long: FUZZ_EXAMPLES random programs per test
	FERROLOOP_FUZZ=1 FERROLOOP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VPY) -m pytest -q tests/test_fuzz.py

.PHONY: pytest
pytest: build services ## The behaviour and integration suites, on stock asyncio and on ferroloop
	$(VPY) -m pytest -q

.PHONY: services
services: ## PostgreSQL and redis-server for the integration suite (Debian packages, when missing)
	bash tests/integration/setup_services.sh

.PHONY: conformance
conformance: build ## CPython's test.test_asyncio with ferroloop as the loop; fails on a regression
	$(VPY) tests/cpython/run.py --expected tests/cpython/expected/$$($(VPY) -c 'import sys; print("%d.%d" % sys.version_info[:2])').json

# uvloop's and anyio's own test suites (tests/thirdparty), from their pinned sdists (downloaded once
# into .thirdparty/), each on stock asyncio and on ferroloop; fails on a test that passes on asyncio
# only. Their test dependencies go into the venv once (the stamp file).
$(VENV)/.thirdparty-deps: requirements-thirdparty.txt $(VSTAMP)
	$(VPY) -m pip install --quiet -r requirements-thirdparty.txt
	touch $@

.PHONY: test-thirdparty
test-thirdparty: build $(VENV)/.thirdparty-deps ## uvloop's and anyio's own suites on asyncio and on ferroloop; fails on a test lost
	$(VPY) tests/thirdparty/run.py

# The other CPython versions installed with pyenv: each gets its own venv, build, behaviour suite
# and conformance run. A version that is not installed is reported and fails the run. Each builds in
# its own cargo target directory: a build for another interpreter rebuilds pyo3 and the extension,
# which in the shared target/ would be undone by the next `make build` for .venv's Python.
OTHER_PYTHONS ?= 3.12 3.13

.PHONY: test-pythons
test-pythons: ## The behaviour suite, conformance and the third-party suites on $(OTHER_PYTHONS) too
	@set -e; for v in $(OTHER_PYTHONS); do \
	  prefix=$$(pyenv prefix $$v 2>/dev/null) || { echo "Python $$v is not installed (pyenv prefix $$v)"; exit 1; }; \
	  CARGO_TARGET_DIR=$(CURDIR)/target/variants/$$v \
	    $(MAKE) --no-print-directory PYTHON=$$prefix/bin/python3 VENV=.venv-$$v pytest conformance test-thirdparty; \
	done

# CPython 3.14 and 3.15 are Debian sid's, which need a newer glibc than this Debian's: they run in a
# sid chroot that tests/pythons/sid.sh makes once (outside the checkout; root, about a minute) and
# runs each command in (the checkout and the Rust toolchain bound in at the same paths). Inside,
# the same targets as for $(OTHER_PYTHONS), each version with its own venv and target directory.
SID_PYTHONS ?= 3.14 3.15

.PHONY: sid
sid: ## Create the Debian sid chroot with Python 3.14 and 3.15 (once; tests/pythons/sid.sh)
	bash tests/pythons/sid.sh create

.PHONY: test-sid-pythons
test-sid-pythons: sid ## The behaviour suite, conformance and the third-party suites on $(SID_PYTHONS), in the sid chroot
	@set -e; for v in $(SID_PYTHONS); do \
	  CARGO_TARGET_DIR=$(CURDIR)/target/variants/$$v \
	    bash tests/pythons/sid.sh run make --no-print-directory PYTHON=python$$v VENV=.venv-$$v pytest conformance test-thirdparty; \
	done

# `make test` runs its suites in two lanes at once: each suite keeps about one of the machine's two
# cores busy. What the lanes share is prepared first (lint's build, the services, the third-party
# sdists, the sid chroot); then lane 1 runs the release build's suites on $(PYTHON), the debug
# build's (leak check, memcheck), the suites on the first of $(OTHER_PYTHONS) and the sdist; lane 2
# the suites on the rest of them and on $(SID_PYTHONS) (in the chroot), and the wheels. Each lane's steps run
# in order, each in its own venv and cargo target directory; a lane's output is shown when it ends.
.PHONY: test
test: lint cargo-test stubtest services thirdparty-fetch sid ## Everything CI runs
	rm -rf dist
	$(MAKE) --no-print-directory -j2 --output-sync=recurse test-lane-main test-lane-others

.PHONY: test-lane-main test-lane-others thirdparty-fetch
test-lane-main:
	$(MAKE) --no-print-directory -j1 pytest conformance test-thirdparty test-debug test-memcheck
	$(MAKE) --no-print-directory -j1 test-pythons OTHER_PYTHONS="$(LANE_MAIN_PYTHONS)"
	$(MAKE) --no-print-directory -j1 wheel-sdist

test-lane-others:
	$(MAKE) --no-print-directory -j1 test-pythons OTHER_PYTHONS="$(filter-out $(LANE_MAIN_PYTHONS),$(OTHER_PYTHONS))"
	$(MAKE) --no-print-directory -j1 test-sid-pythons wheel-binary

# Which of $(OTHER_PYTHONS) lane 1 tests, after the debug build's suites (the lanes take about as long).
LANE_MAIN_PYTHONS ?= $(firstword $(OTHER_PYTHONS))

thirdparty-fetch: $(VSTAMP)
	$(VPY) tests/thirdparty/run.py --fetch-only

.PHONY: bench-setup
bench-setup: build
	$(VPY) -m pip install --quiet -r requirements-bench.txt
	cargo build --release -p ferroloop-bench
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null; } \
	  || echo "wrk is not installed: HTTP is measured with the Rust load generator"

.PHONY: bench
bench: bench-setup ## asyncio, uvloop, rloop, ferroloop and a Rust reference side by side (~16 min)
	$(VPY) bench/run.py

.PHONY: bench-micro
bench-micro: build ## Only the in-process micro-benchmarks (a minute)
	$(VPY) bench/micro.py

.PHONY: clean
clean: ## Remove build products and .venv
	cargo clean
	rm -rf $(VENV)

.PHONY: soak
soak: build ## The full soak: 100,000 connections and 10 million callbacks on both loops
	$(VPY) tests/soak.py

# The integration suite (tests/integration): uvicorn, aiohttp, websockets, asyncpg, redis-py, anyio
# and pytest-asyncio on stock asyncio and on ferroloop, with PostgreSQL and redis-server it starts.
.PHONY: integration-setup
integration-setup: $(VSTAMP) services ## The integration suite's libraries (in every venv) and servers
