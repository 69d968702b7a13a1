# Two entry points for people: `make demo` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean postgresql

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo's port: PORT=8400 make demo (or make demo PORT=8400).
PORT ?= 8300

demo: $(STAMP)
	$(BIN)/python -m pectus.demo --port $(PORT)

# The browser tests drive Debian's Chromium (never a downloaded browser).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The PostgreSQL store's tests and bench run a throwaway server of Debian's PostgreSQL (initdb and
# pg_ctl, in a temporary directory): installed when its initdb is missing (a client alone has none).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

test: $(STAMP) $(CHROMIUM) postgresql
	$(BIN)/python -m pytest -q

bench: $(STAMP) $(CHROMIUM) postgresql
	$(BIN)/python bench/pcode_bench.py
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/aggregator_bench.py ingest
	$(BIN)/python bench/aggregator_bench.py stores
	$(BIN)/python bench/ui_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
