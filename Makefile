# dustpatrol — the front door. A fresh Debian machine with Python >= 3.11 needs only `make`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The install stamp is keyed on pyproject.toml: editing dependencies reinstalls, nothing else does.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: help install test test-all lint typecheck pytest bench demo serve web clean

help:
	@echo "make test      lint, type-check and the fast test suite (installs into .venv on first use)"
	@echo "make test-all  the full suite, slow tests included"
	@echo "make bench     benchmarks; results printed and written to var/bench/"
	@echo "make demo      the whole loop on a simulated district"
	@echo "make serve     the notice service on 127.0.0.1:8000"
	@echo "make web       rebuild the map page's vendored front-end packages from npm (web/)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dustpatrol needs Python >= 3.11: run make PYTHON=python3.11 ...")'
	@if [ ! -x $(BIN)/python ]; then \
		$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): on Debian, apt-get install python3-venv"; exit 1; }; \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

pytest: $(STAMP)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test: lint typecheck pytest

test-all: lint typecheck $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# sahi (the sliced-inference baseline of the vision bench) without its dependencies: they
# would install the GUI opencv-python beside the headless one.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps sahi==0.12.8 fire==0.7.1 tqdm==4.70.1
	$(BIN)/python -m bench

# DEMO_ARGS, e.g. make demo DEMO_ARGS="--seed 11 --no-serve"
demo: $(STAMP)
	$(BIN)/dustpatrol demo $(DEMO_ARGS)

serve: $(STAMP)
	$(BIN)/dustpatrol serve

# The map page's front-end packages (Leaflet) come from npm, pinned in web/package-lock.json,
# and are copied into api/static/vendor, which is committed: serving needs no Node.js.
web:
	cd web && npm ci --no-audit --no-fund && node build.mjs

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
