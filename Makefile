# make demo | make test | make test-fast | make dev | make serve | make loadtest | make worker   (each sets up .venv first)
# make lock: re-resolve requirements.lock (and deploy/serving.lock) after changing dependencies in pyproject.toml
# make image: the serving image (deploy/Dockerfile.serve), built without pulling any image (root, docker, mmdebstrap)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data/dataset
PRESET ?= small
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export PIPELINE_DATASET_DIR ?= $(CURDIR)/$(DATA)
export PIPELINE_WAREHOUSE_DIR ?= $(CURDIR)/data/warehouse
export PIPELINE_SQLITE_PATH ?= $(CURDIR)/data/online/features.db
export PIPELINE_CLICK_EVENTS_DIR ?= $(CURDIR)/data/click_events
DEMO_PORT ?= 8765
# One core of throughput here: more threads only contend (docs/PERFORMANCE.md).
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export POLARS_MAX_THREADS ?= 2

# dg finds the project through [tool.dg] in pyproject.toml, and wants its virtualenv active.
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(BIN):$(PATH)
LAUNCH := $(BIN)/dg launch

.PHONY: install lock serving-lock image bigquery-emulator demo test test-fast dev serve loadtest worker clean

# Exactly the locked versions, every file checked against its hash (torch: the local 2.13.0+cpu wheel),
# then the project itself and its development package (devtools/: the tests' and benchmarks' helpers),
# both editable, without resolving anything again.
$(BIN)/.installed: requirements.lock pyproject.toml setup.py devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip install --quiet --no-deps -e ./devtools
	touch $@

install: $(BIN)/.installed

# The BigQuery emulator the tests run against (local-bigquery 0.3.2) in its own Python 3.13 environment,
# hash-checked from devtools/bigquery-emulator.lock. DuckDB loads its extensions only from
# $$HOME/.duckdb: the fixture runs the emulator with HOME=$(BQ_ENV)/home, where they are linked.
BQ_ENV := .venv-bigquery
# The first Python 3.13 that runs: pyenv's 3.13.0 (the machine image's), then python3.13 on PATH.
BQ_PYTHON ?= $(shell for p in "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.13.0/bin/python3.13" \
	python3.13; do "$$p" -c "" 2>/dev/null && command -v "$$p" && break; done)
BQ_EXTENSIONS := $(BQ_ENV)/home/.duckdb/extensions/v1.5.5/linux_amd64
$(BQ_ENV)/.installed: devtools/bigquery-emulator.lock
	@test -x "$(BQ_PYTHON)" || { echo "the BigQuery emulator needs Python 3.13 (set BQ_PYTHON=/path/to/python3.13)"; exit 1; }
	rm -rf $(BQ_ENV)
	$(BQ_PYTHON) -m venv $(BQ_ENV)
	$(BQ_ENV)/bin/pip install --quiet --require-hashes --no-deps -r devtools/bigquery-emulator.lock
	mkdir -p $(BQ_EXTENSIONS)
	for e in ducklake icu spatial; do \
	  ln -sf "$(CURDIR)/$(BQ_ENV)/lib/python3.13/site-packages/duckdb_extension_$$e/extensions/v1.5.5/$$e.duckdb_extension" \
	    $(BQ_EXTENSIONS)/; done
	touch $@

bigquery-emulator: $(BQ_ENV)/.installed

# Re-resolve requirements.lock from pyproject.toml (runtime + dev + bigquery + celery + k8s + mlflow); commit the result.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet pip-tools
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --extra dev --extra bigquery --extra celery --extra k8s --extra mlflow --strip-extras \
		-o requirements.lock pyproject.toml
	$(MAKE) serving-lock

# Re-resolve deploy/serving.lock, what the serving image installs (deploy/serving.in: pipeline serve for the ONNX
# format, without torch or Dagster), at requirements.lock's versions.
serving-lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet pip-tools
	.venv-lock/bin/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
		-o deploy/serving.lock deploy/serving.in

# The serving image IMAGE from a base of Debian packages and a wheelhouse of deploy/serving.lock built here
# (docs/OPERATIONS.md, "The serving image"); the base is made again only when its package list changes.
IMAGE ?= restaurant-pipeline-serve:latest
image:
	PYTHON=$(PYTHON) deploy/build-serving-image.sh $(IMAGE)

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/pipeline generate --out $(DATA) --preset $(PRESET)
	$(BIN)/dg check defs
	$(LAUNCH) --job feature_snapshots
	$(LAUNCH) --job ingest_clicks --partition-range "$$($(BIN)/pipeline days --data $(DATA) --format range)"
	$(LAUNCH) --job train_model
	$(LAUNCH) --job refresh_features -c deploy/run_configs/quick_refresh.yaml
	@echo "A simulated day: the API serves 20 s of the synthetic users' traffic, logging what it shows; they click"
	PIPELINE_API_DRAIN_S=0 $(BIN)/pipeline serve --port $(DEMO_PORT) > data/demo-api.log 2>&1 & api=$$!; \
	  $(BIN)/pipeline simulate --url http://127.0.0.1:$(DEMO_PORT) --rate 30 --duration 20 --seed 1 --wait 120; \
	  status=$$?; kill -TERM $$api; { wait $$api; } 2>/dev/null; exit $$status
	day=$$($(BIN)/pipeline days --served --format last) && \
	  $(LAUNCH) --job close_the_loop --partition $$day && \
	  $(LAUNCH) --job ingest_clicks --partition $$day
	$(LAUNCH) --job train_model
	@echo "The model versions and their roles (the retrain on the served day is compared with the champion):"
	$(BIN)/pipeline models
	@echo
	@echo "Dataset:    $(DATA)"
	@echo "Warehouse:  $(PIPELINE_WAREHOUSE_DIR) (features/, raw_clicks/, processed_clicks/, models/, impressions/,"
	@echo "            click_events/, labeled_impressions/, online_metrics/; the API's log: impression_log/)"
	@echo "Clicks:     $(PIPELINE_CLICK_EVENTS_DIR) (the simulated users' click events)"
	@echo "Model:      $(PIPELINE_WAREHOUSE_DIR)/models/click_model/export/ (model.onnx, model.pt TorchScript, model.pt2 ExportedProgram)"
	@echo "Live:       $(BIN)/pipeline status; the roles: $(BIN)/pipeline models (a challenger serves a 10% canary"
	@echo "            once make serve runs; make dev's release_judge_sensor judges it on the logged traffic)"
	@echo "Online:     $(PIPELINE_SQLITE_PATH) (SQLite online features; REDIS_URL selects Redis)"
	@echo "Runs:       DAGSTER_HOME=$(DAGSTER_HOME)"
	@echo "Open the UI: make dev, then http://127.0.0.1:3000 (code location 'pipeline')"

test: install $(BQ_ENV)/.installed
	$(BIN)/ruff check pipeline pipeline_tests bench devtools
	$(BIN)/mypy
	$(BIN)/pytest

# The development loop: everything but the tests marked slow (the full suite is make test).
test-fast: install $(BQ_ENV)/.installed
	$(BIN)/ruff check pipeline pipeline_tests bench devtools
	$(BIN)/mypy
	$(BIN)/pytest -m "not slow" -q

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev --host 127.0.0.1 --port 3000

serve: install
	$(BIN)/pipeline serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# A Celery worker for runs with PIPELINE_EXECUTOR=celery (docs/OPERATIONS.md, "Running on more machines"): one per
# machine, all on the same broker (PIPELINE_CELERY_BROKER_URL), warehouse, data and Dagster storage. It checks
# them before it takes a step. Here the warehouse and online-store directories are created if missing.
worker: install $(DAGSTER_HOME)/dagster.yaml
	mkdir -p $(PIPELINE_WAREHOUSE_DIR) $(dir $(PIPELINE_SQLITE_PATH))
	$(BIN)/pipeline worker

loadtest: install
	$(BIN)/pipeline loadtest --url http://$(HOST):$(PORT) --requests $(DATA)/requests.parquet --rate 30 --duration 60

clean:
	rm -rf data/dataset data/warehouse data/dagster_home data/online data/click_events data/demo-api.log
