# make test: from a fresh machine with nothing but python3 to lint, types and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint format typecheck pytest test chaos prod-smoke bench bench-quick dev demo clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy refundflow tests bench

pytest: $(STAMP) browser
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Browser tests drive Debian's Chromium through Playwright (Playwright's own browser download is
# not reachable from CI). Installed here when missing; needs root, as CI has. A CJK font too, so
# the console's zh-CN screenshots show Chinese, not empty boxes.
CHROMIUM ?= /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	fc-list :lang=zh | grep -q . || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-wqy-microhei)

test: lint typecheck pytest

# The long fault round (tests/chaos, marker `chaos`): every provider, the worker killed at each
# payout point and the Temporal server once, N refunds besides; DB=postgresql for PostgreSQL.
N ?= 50
DB ?= sqlite
chaos: $(STAMP)
	CHAOS_REFUNDS=$(N) CHAOS_DB=$(DB) $(BIN)/pytest -q -s -m chaos tests/chaos $(PYTEST_ARGS)

# The production shape as plain processes (tests/prod): a fresh PostgreSQL database, a Temporal
# dev server set up by `refundflow setup`, the API and two workers with only REFUNDFLOW_*
# environment, PROD_SMOKE_REFUNDS refunds through the API, one worker SIGKILLed midway.
PROD_SMOKE_REFUNDS ?= 50
prod-smoke: $(STAMP)
	PROD_SMOKE_REFUNDS=$(PROD_SMOKE_REFUNDS) $(BIN)/pytest -q -s tests/prod $(PYTEST_ARGS)

# The performance bench (bench/, docs/performance.md): its own Temporal server, database, worker
# and API as processes; refunds against a baseline workflow in the same run; results to
# bench/results/. BENCH_ARGS e.g. `--open 10000` or `--db postgresql`.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick --results $${TMPDIR:-/tmp}/refundflow-bench $(BENCH_ARGS)

# The whole stack on this machine; data in ./data, so a second `make dev` resumes it.
dev: $(STAMP)
	$(BIN)/refundflow dev $(DEV_ARGS)

demo: $(STAMP)
	$(BIN)/refundflow demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
