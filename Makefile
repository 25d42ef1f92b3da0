# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Every target sets up what it needs and is quick when that is already done.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OPTFOLIO := $(VENV)/bin/optfolio
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
OUT ?= out
PYTEST_ARGS ?=

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup demo simulate test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# The main job on the embedded defaults.
demo: setup
	$(OPTFOLIO) simulate --out $(OUT)/simulation-study

simulate: setup
	$(OPTFOLIO) simulate --out $(OUT)/simulation-study

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) bench/portfolio_sql.py

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache .hypothesis
