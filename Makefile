# The two commands of the quick start. Each creates .venv when missing and installs the pinned set.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 \
       HF_HUB_DISABLE_TELEMETRY=1 PREFECT_SERVER_ANALYTICS_ENABLED=false TOKENIZERS_PARALLELISM=false

.PHONY: install browser postgres demo test test-fast bench benchmark robustness clean-demo

# uv installs the same pinned set as pip in ~1 min instead of ~4 (measured on a 2-core machine, no
# cache, byte-code compiled); it sees a local wheel folder only through UV_FIND_LINKS, which takes
# PIP_FIND_LINKS when set. Plain pip is the fallback when uv cannot be installed or fails.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	( $(BIN)/pip install -q uv && UV_FIND_LINKS="$${UV_FIND_LINKS:-$${PIP_FIND_LINKS:-}}" \
	    $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.txt ) \
	  || $(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

## make demo: the synthetic benchmark through every stage (prepare ... report), under `dvc repro`.
demo: $(STAMP)
	$(BIN)/salient demo

## make browser: Debian's Chromium and its chromedriver, which tests/test_browser.py drives (never a
## downloaded browser); installed with apt (sudo when not root) only when missing.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q chromium chromium-driver; \
	fi

## make postgres: Debian's PostgreSQL server, of which tests/test_postgres_optuna.py starts a throwaway
## cluster on loopback (components/ops/pgcluster.py; no service is used); installed with apt (sudo when not
## root) only when no initdb is found in /usr/lib/postgresql/*/bin or `pg_config --bindir`.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
	    ! { command -v pg_config >/dev/null && [ -x "$$(pg_config --bindir)/initdb" ]; }; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q postgresql; \
	fi

## make test: the whole suite (slow-marked end-to-end tests, the browser and PostgreSQL tests included), in
## TEST_WORKERS pytest-xdist processes that each take whole test files, every process (tests and the stages,
## servers and workers they start) at one torch / OpenMP thread: two 2-thread torch processes on 2 cores
## spin against each other and ran up to 10x slower. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
test: $(STAMP) browser postgres
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

test-fast: $(STAMP) browser postgres
	$(BIN)/python -m pytest -q -m "not slow" tests

## make benchmark: profiles/benchmark.yaml (>= 1,000 videos, 3 pipeline seeds) in .salient/bench/benchmark/,
## recorded in benchmarks/benchmark/; rerun to resume.
benchmark: $(STAMP)
	$(BIN)/salient benchmark

## make robustness: profiles/distractors.yaml at distractor_fraction 0, 0.1, 0.2, 0.3, one whole run each,
## recorded in benchmarks/distractors/ (tables, figure); rerun to resume.
robustness: $(STAMP)
	$(BIN)/salient robustness

bench: $(STAMP)
	$(BIN)/salient bench extract
	$(BIN)/salient bench samplers
	$(BIN)/salient bench predict
