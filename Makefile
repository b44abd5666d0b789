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

# The server on ws://127.0.0.1:8080/ws with SQLite (topgun.sqlite3) and a development secret
# kept in .topgun-dev-secret (created on first run; never use it in production).
DEV_SECRET := .topgun-dev-secret

$(DEV_SECRET):
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(48))" > $@

run: install $(DEV_SECRET)
	@echo "dev token for user 'dev': $(BIN)/topgun token --secret-file $(DEV_SECRET) --sub dev"
	$(BIN)/twistd --nodaemon --pidfile= topgun --jwt-secret-file $(DEV_SECRET) \
		--store sqlite:topgun.sqlite3

test: install
	$(BIN)/python tools/run_tests.py $(TESTS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/core.py --seconds 2
	$(BIN)/python bench/load.py --short
	test ! -f bench/merkle.py || $(BIN)/python bench/merkle.py
	test ! -f bench/store.py || $(BIN)/python bench/store.py

check: lint typecheck test

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* .mypy_cache .ruff_cache .hypothesis
