# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: run test setup setup-test horovod flash-attn lint format docs clean

run: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) all

# The tests include 2-rank Horovod runs: Horovod is built once (about 4 minutes) and cached.
test: $(VENV)/.installed-test $(VENV)/.installed-horovod
	MAMMOSCALE_REQUIRE_HOROVOD=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test
horovod: $(VENV)/.installed-horovod

# Python: ruff (lint, then the formatter's check); Snakefiles: snakefmt's check, then snakemake's own linter.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

# flash-attn for attention flash_attention_2: CUDA machines only (docs/gpu-cluster.md).
flash-attn: $(VENV)/.installed
	tools/install-flash-attn $(BIN)/python

# docs/configuration.md from the configuration schema (a test keeps them equal).
docs: $(VENV)/.installed
	$(BIN)/python tools/config-docs

# Apply the formatters.
format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile rules

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); mammoscale needs 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV); on Debian/Ubuntu: apt-get install python3.11-venv" >&2; rm -rf $(VENV); exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[train]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

$(VENV)/.installed-horovod: $(VENV)/.installed tools/build-horovod
	tools/build-horovod $(BIN)/python
	touch $@

clean:
	rm -rf results .snakemake
