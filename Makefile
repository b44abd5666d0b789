# topgun developer entry points. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck bench check clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
	touch $(STAMP)

# Runs the core benchmark until the server lands (see README).
run: install
	$(BIN)/python bench/core.py

test: install
	$(BIN)/python tools/run_tests.py $(TESTS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/core.py

check: lint typecheck test

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* .mypy_cache .ruff_cache .hypothesis
