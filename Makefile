# Every target installs what it needs first, so a fresh clone needs only `make demo` / `make test`.
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help install demo test test-django test-fast lint bench clean-local floors wheel-smoke dist

help:
	@echo "make demo   install, then run the example suite with testdb on an embedded PostgreSQL"
	@echo "make test   install, then lint and run the whole test suite"
	@echo "make lint   ruff + mypy --strict"
	@echo "make bench  benchmarks (bench/), printing ratios against a baseline"
	@echo "make floors the built wheel, every dependency at its lowest allowed version, in a fresh venv: smoke run"
	@echo "make wheel-smoke  the same smoke with the newest versions"
	@echo "make dist   wheel and sdist into dist/"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

$(BIN)/testdb: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --quiet
	@touch $@

install: $(BIN)/testdb

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: install lint test-django
	$(BIN)/pytest -p xdist -n 2 --dist=loadgroup tests

test-django: install  # examples/django_app: pytest-django on testdb's worker databases
	cd examples/django_app && ../../$(BIN)/testdb run -n 2 -- ../../$(BIN)/pytest -n 2 -q -p no:cacheprovider

test-fast: install
	$(BIN)/pytest -x -q tests/unit

demo: install
	cd examples/homesec && ../../$(BIN)/testdb run --server embedded -n 4 -- ../../$(BIN)/pytest -n 4 -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/provision.py --server embedded
	$(BIN)/python bench/provision.py --server local
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/clone_strategy.py --server embedded
	$(BIN)/python bench/clone_strategy.py --server local
	$(BIN)/python bench/clean.py
	$(BIN)/python bench/migrations.py --server local
	UV=$(UV) $(BIN)/python bench/cli.py
	$(BIN)/python bench/fresh.py --server embedded
	$(BIN)/python bench/fresh.py --server local
	$(BIN)/python bench/shared_server.py

# Honest dependency floors (scripts/check-floors.sh): about 20 s with a warm uv cache.
floors: | $(UV)
	UV=$(UV) PYTHON=$(PYTHON) scripts/check-floors.sh

wheel-smoke: | $(UV)
	UV=$(UV) PYTHON=$(PYTHON) RESOLUTION=highest scripts/check-floors.sh

dist: | $(UV)
	$(UV) build --out-dir dist
