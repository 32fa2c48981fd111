# `make run` and `make test` are all a new user needs: each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test chromium sdks lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/journeyman dev

# The suite runs twice: on SQLite (the embedded default), then with every database on
# PostgreSQL (production). The second pass runs only the tests that reach a database (the
# `db` fixture, or the `uses_postgres` marker: tests/conftest.py deselects the rest, which
# would run unchanged, and those marked `database_incidental`, whose database only carries
# a browser, an SDK or a setting); it does not even collect what touches no database (the DSL, its
# fuzzing, replays, the benchmarks' tests, which bring their own SQLite, the clock's own
# tests) nor the fault tests. Tests skip, saying so, where no PostgreSQL answers (under
# CI=true they fail instead).
TEST_POSTGRES ?= postgresql+psycopg://postgres@127.0.0.1:5432

# Each pass runs on TEST_WORKERS pytest-xdist workers (each with its own Temporal dev
# server and databases). Measured on 2 cores: the SQLite pass 11:00 on one worker,
# 5:27 on three; the PostgreSQL pass 7:39 and 6:03. On two (2026-12-07, a host shared
# with two other engineers' runs): the SQLite pass 7:47, the PostgreSQL pass 3:27 (from
# 8:06 and 7:54 before: tests/conftest.py empties PostgreSQL databases for reuse); a
# fresh clone's whole `make test` on a quiet machine, setup included: 11 min 10 s; on
# the faster Xeon host of the evening's later session, 6 min 21 s (3:46 and 2:01).
# Two, not three: the simulations' clocks run on while a send takes real time, and
# three workers on two cores made a send take over a second. TEST_WORKERS=0 runs
# in-process.
TEST_WORKERS ?= 2

# --maxschedchunk 2: a worker is handed a test or two at a time, not a quarter of the suite
# at once, so that the two end together (tests/conftest.py spreads the `slow` ones over
# the first half of the run).
XDIST = -n $(TEST_WORKERS) --maxschedchunk 2

test: $(STAMP) chromium sdks
	$(BIN)/python -m pytest $(XDIST)
	JOURNEYMAN_TEST_POSTGRES=$(TEST_POSTGRES) $(BIN)/python -m pytest -q -p no:cacheprovider \
		$(XDIST) \
		--ignore=tests/dsl --ignore=tests/fuzz/test_dsl_properties.py \
		--ignore=tests/histories --ignore=tests/faults --ignore=tests/bench/test_bench.py \
		--ignore=tests/test_clock.py

# The Node SDKs of the conformance test (tests/api/test_sdk_conformance.py), exactly as
# locked in tests/conformance/package-lock.json.
SDKS := tests/conformance/node_modules/.package-lock.json

sdks: $(SDKS)

$(SDKS): tests/conformance/package.json tests/conformance/package-lock.json
	npm ci --prefix tests/conformance --no-audit --no-fund --ignore-scripts

# The journey page's browser test runs Debian's Chromium: installed here when missing.
chromium:
	scripts/ensure-chromium

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy journeyman workflows activities worker.py
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every benchmark side by side with its baseline (bench/README.md), about 10 minutes on
# 2 cores (597 s on 2026-12-07; 408 s on a faster host); writes docs/benchmarks.md. `.venv/bin/python -m bench --quick` for a quick look.
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .journeyman .pytest_cache tests/conformance/node_modules
