# The two commands a newcomer needs: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-random lint bench install system-packages clean

$(STAMP): pyproject.toml
	@scripts/ensure-system-packages
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## Start database (local or private), broker, ingest, API and the device simulator; Ctrl-C stops.
run: install
	$(BIN)/eldercare run

## Lint, then the whole suite against real PostgreSQL and Mosquitto; then the storage-sensitive
## tests again on plain PostgreSQL when the first pass used TimescaleDB.
test: install lint
	$(BIN)/pytest
	ELDERCARE_TEST_STORAGE=off $(BIN)/pytest -q tests/test_storage.py tests/test_ingest_e2e.py \
		tests/test_delivery.py tests/test_rollups.py tests/test_api_readings.py tests/test_alert_wiring.py \
		tests/test_bench_smoke.py

## The whole suite in a shuffled order (pytest-randomly; the seed is printed, `-p randomly
## -p "randomly_seed=N"` repeats it): no test may depend on another one's leftovers or on the order.
test-random: install
	$(BIN)/pytest -p randomly

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## Benchmarks (not tests); results are recorded in docs/performance.md.
bench: install
	$(BIN)/eldercare bench ingest

clean:
	rm -rf $(VENV) build *.egg-info
