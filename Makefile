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

$(VPY): requirements-dev.txt requirements-integration.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt -r requirements-integration.txt
	touch $(VPY)

.PHONY: venv
venv: $(VPY) ## Create .venv with the pinned build and test dependencies

.PHONY: build
build: $(VPY) ## Build the extension (release) and install it into .venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop $(MATURIN_FLAGS) --quiet

.PHONY: demo
demo: build ## Build, run the asyncio Hello World on ferroloop, compare loops on two micro-benchmarks
	$(VPY) examples/hello.py
	$(VPY) bench/micro.py --quick call_soon create_task

.PHONY: lint
lint: $(VPY) ## cargo fmt --check, cargo clippy -D warnings, ruff
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/ruff format --check python tests bench examples

.PHONY: fmt
fmt: $(VPY) ## Format Rust and Python sources
	cargo fmt --all
	$(VENV)/bin/ruff format python tests bench examples

.PHONY: test-debug
test-debug: $(VPY) ## Debug build counting live handles and transports; the suite asserts none outlives its loop
	$(MAKE) --no-print-directory VENV=.venv-debug MATURIN_FLAGS="--features leak-check" pytest

.PHONY: stubtest
stubtest: build ## Check python/ferroloop/_ferroloop.pyi against the built module (mypy.stubtest)
	$(VPY) -m mypy.stubtest ferroloop._ferroloop

.PHONY: wheel
wheel: $(VPY) ## Build a wheel and an sdist into dist/, install each in a clean venv, smoke-test them
	rm -rf dist
	$(VENV)/bin/maturin build --release --quiet --out dist
	$(VENV)/bin/maturin sdist --out dist >/dev/null
	@set -e; for kind in whl tar.gz; do \
	  rm -rf dist/venv-$$kind; $(PYTHON) -m venv dist/venv-$$kind; \
	  dist/venv-$$kind/bin/pip install --quiet dist/*.$$kind; \
	  (cd dist && venv-$$kind/bin/python ../tests/smoke.py) && echo "$$kind: smoke test passed"; \
	done

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

# The other CPython versions installed with pyenv: each gets its own venv, build, behaviour suite
# and conformance run. A version that is not installed is reported and fails the run.
OTHER_PYTHONS ?= 3.12 3.13

.PHONY: test-pythons
test-pythons: ## The behaviour suite and conformance on $(OTHER_PYTHONS) too
	@set -e; for v in $(OTHER_PYTHONS); do \
	  prefix=$$(pyenv prefix $$v 2>/dev/null) || { echo "Python $$v is not installed (pyenv prefix $$v)"; exit 1; }; \
	  $(MAKE) --no-print-directory PYTHON=$$prefix/bin/python3 VENV=.venv-$$v pytest conformance; \
	done

.PHONY: test
test: lint cargo-test stubtest pytest conformance test-pythons test-debug wheel ## Everything CI runs

.PHONY: bench-setup
bench-setup: build
	$(VPY) -m pip install --quiet -r requirements-bench.txt
	cargo build --release -p ferroloop-bench
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null; } \
	  || echo "wrk is not installed: HTTP is measured with the Rust load generator"

.PHONY: bench
bench: bench-setup ## asyncio, uvloop, rloop, ferroloop and a Rust reference side by side (~12 min)
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
integration-setup: $(VPY) services ## The integration suite's libraries (in every venv) and servers
