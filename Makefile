# Quick start:  `make run` (set up + full pipeline on MNIST)  ·  `make test` (set up + tests)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv's stamp names what it was installed with: another CONSTRAINTS installs again.
STAMP = $(VENV)/.installed-$(or $(notdir $(CONSTRAINTS)),unpinned)

# Offline machines: a local copy of the four MNIST .gz files (path or file:// URL).
# Unset, this uses ../shared/mnist when it holds all four, else params.yaml's public mirrors
# (MNIST_MIRROR replaces them: a folder with some files missing would stop the fetch).
MNIST_GZ := train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
            t10k-labels-idx1-ubyte
ifeq ($(origin MNIST_MIRROR), undefined)
  ifeq ($(words $(wildcard $(MNIST_GZ:%=../shared/mnist/%.gz))),4)
    export MNIST_MIRROR := $(abspath ../shared/mnist)
  endif
endif
# The local Prefect server's telemetry heartbeat otherwise logs "database is locked" (SQLite).
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# DVC otherwise starts its analytics daemon (which phones home) on every command.
export DVC_NO_ANALYTICS ?= 1

# pytest processes for `make test` (pytest-xdist): much of the end-to-end tests' time is waiting
# on servers, so two processes help even on two cores. TEST_PROCESSES=0 runs in one process.
# `--dist loadscope --no-loadscope-reorder`: each test module runs whole in one process, so a
# module's expensive fixtures (a `dvc repro`, a Prefect server) are built once, not once in each
# process that got some of its tests; modules are handed out in conftest.py's order (those with
# end-to-end tests first), so no long one starts near the end.
TEST_PROCESSES ?= 2

# The Node.js and browser examples' packages (tests/test_*example.py skip without them; CI fails).
NPM := $(shell command -v npm 2>/dev/null)
EXAMPLE_DEPS := $(if $(NPM),examples/node/node_modules/.package-lock.json \
                            examples/web/node_modules/.package-lock.json \
                            plots/node_modules/.package-lock.json)

# The pinned versions of every package that CI tests (constraints.txt); `make CONSTRAINTS=`
# lets pip resolve pyproject.toml afresh, `make constraints` re-pins.
CONSTRAINTS ?= constraints.txt

.PHONY: run repro test lint bench clean constraints

# Python 3.11 or newer (pyproject.toml); a venv made earlier by an older one is made again.
NEW_ENOUGH := import sys; sys.exit(sys.version_info < (3, 11))

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c '$(NEW_ENOUGH)' || { echo "error: $(PYTHON) is Python \
	$$($(PYTHON) -c 'import platform; print(platform.python_version())'); mnist-pipeline \
	needs 3.11 or newer: make ... PYTHON=python3.11" >&2; exit 1; }
	@test -x $(BIN)/python && test -x $(BIN)/pip && $(BIN)/python -c '$(NEW_ENOUGH)' \
	  || $(PYTHON) -m venv --clear $(VENV) \
	  || { echo "error: $(PYTHON) -m venv failed (on Debian and Ubuntu: install \
	python3.$$($(PYTHON) -c 'import sys; print(sys.version_info[1])')-venv)" >&2; exit 1; }
	@rm -f $(VENV)/.installed-*
	$(BIN)/pip install --disable-pip-version-check -q $(CONSTRAINTS:%=-c %) -e '.[dev]' \
	  || { test -z "$(CONSTRAINTS)" || echo "hint: the versions $(CONSTRAINTS) pins may not \
	install here (its header says where they were resolved); make ... CONSTRAINTS= resolves \
	afresh" >&2; exit 1; }
	@touch $(STAMP)

# `freeze --all` keeps setuptools (torch and zc.lockfile import it at run time), not pip itself.
constraints:  ## re-pin constraints.txt: pyproject.toml resolved afresh in a scratch venv
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch" constraints.txt.new' EXIT \
	  && $(PYTHON) -m venv "$$scratch" \
	  && "$$scratch/bin/pip" install --disable-pip-version-check -q -e '.[dev]' \
	  && { echo "# The versions \`make\` installs (pip install -c constraints.txt): the set CI tests,"; \
	       echo "# resolved from pyproject.toml by \`make constraints\` on $$(uname -sm), Python \
	$$("$$scratch/bin/python" -c 'import platform; print(platform.python_version())')."; \
	       echo "# A pin for a package another platform does not install (nvidia-*, triton) is"; \
	       echo "# ignored there; make CONSTRAINTS= resolves afresh (docs/development.md)."; \
	       "$$scratch/bin/pip" freeze --disable-pip-version-check --exclude-editable --all --exclude pip; } \
	     > constraints.txt.new \
	  && mv constraints.txt.new constraints.txt
	@echo "constraints.txt re-pinned: commit it with pyproject.toml"

examples/%/node_modules/.package-lock.json: examples/%/package-lock.json
	npm ci --prefix examples/$* --no-audit --no-fund --loglevel=error

plots/node_modules/.package-lock.json: plots/package-lock.json  # Vega for `dvc plots show` offline
	npm ci --prefix plots --no-audit --no-fund --loglevel=error

run: $(STAMP)  ## full pipeline as a Prefect flow: fetch → ingest → train → evaluate → export → parity → register
	$(BIN)/python -m flows.retrain

repro: $(STAMP)  ## the same stages as a DVC pipeline: runs only what changed (see dvc.yaml)
	@# Vega for `dvc plots show` (plots/offline.html); offline without npm's registry: a warning
	@test -z "$(NPM)" || test plots/node_modules/.package-lock.json -nt plots/package-lock.json \
	  || npm ci --prefix plots --no-audit --no-fund --loglevel=error \
	  || echo "warning: npm ci --prefix plots failed: dvc plots show draws no charts until it runs" >&2
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: $(STAMP) $(EXAMPLE_DEPS)  ## unit + end-to-end tests (real-MNIST tests skip when ../shared/mnist is absent)
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadscope --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)  ## benchmark scripts whose figures the README reports (fetches MNIST first)
	$(BIN)/mnist-pipeline fetch
	$(BIN)/python -m benchmarks.bench_train
	$(BIN)/python -m benchmarks.bench_inference
	$(BIN)/python -m benchmarks.bench_serve --seconds 5

clean:  ## remove pipeline outputs (not the dataset, the registry or the venv)
	rm -rf models reports
