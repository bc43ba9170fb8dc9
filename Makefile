# seqlab: `make train` and `make test` do all set-up on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,sweep,server
# Data: $SEQLAB_DATA_DIR if set, else ../shared/data where it exists, else ./data (IMDB is downloaded there).
SEQLAB_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export SEQLAB_DATA_DIR
ARGS ?=
PORT ?= 5000

.PHONY: install train test test-fast test-integration sweep ui server clean

install: $(BIN)/seqlab

$(BIN)/seqlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

train: install  ## the default experiment: tutorial LSTM on IMDB, recorded in ./mlflow.db
	$(BIN)/seqlab train $(ARGS)

# Two test processes: most tests train recurrent models on one thread; a test file stays in one process (its fixtures).
# Tiers (pyproject.toml, tests/conftest.py): unit (no training, no subprocess), integration (tiny in-process training),
# slow (real data from SEQLAB_DATA_DIR, subprocesses, servers, clusters).
TEST_WORKERS ?= 2
test: install  ## the whole suite, every tier
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 $(ARGS)

test-fast: install  ## the unit tier: no training, no subprocess (about a minute on 2 cores)
	$(BIN)/python -m pytest -q -m unit -n $(TEST_WORKERS) $(ARGS)

test-integration: install  ## the integration tier: tiny in-process training runs (debug=tiny)
	$(BIN)/python -m pytest -q -m integration -n $(TEST_WORKERS) --dist loadfile $(ARGS)

SWEEP ?= seed_tutorial
sweep: install  ## the tutorial's comparison: one multirun into one MLflow experiment, then its table
	$(BIN)/seqlab train experiment=$(SWEEP) $(ARGS)
	$(BIN)/seqlab compare --experiment $(SWEEP)

# One worker and no job runner (the defaults take 1.8 GB and over a minute to start on 2 cores).
ui: install  ## MLflow UI on the local store ./mlflow.db at http://127.0.0.1:$(PORT) (Ctrl-C stops it)
	@$(BIN)/python -c 'import mlflow; [print(f"{e.name}: http://127.0.0.1:$(PORT)/#/experiments/{e.experiment_id}/runs?workflowType=machine_learning") for e in mlflow.MlflowClient("sqlite:///mlflow.db").search_experiments() if e.name != "Default"]' 2>/dev/null || true
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
		--backend-store-uri sqlite:///mlflow.db

# A tracking server for a team or for parallel jobs: point runs at it with tracking.uri=http://127.0.0.1:$(PORT).
# One worker and no job runner: ready in about 10 s with 0.5 GB (the defaults take 35 s and 2.2 GB on 2 cores).
# The store: SQLite in $(SERVER_DIR)/mlflow.db (DB=sqlite); DB=postgres: a PostgreSQL cluster in
# $(SERVER_DIR)/postgres on 127.0.0.1:$(PG_PORT) (scripts/postgres.sh; stopped with the server); DB_URL=...: an
# existing database (e.g. postgresql+psycopg2://USER@HOST:5432/mlflow, password in ~/.pgpass, not in the URL).
SERVER_DIR ?= mlflow-server
DB ?= sqlite
DB_URL ?=
PG_PORT ?= 5433
WORKERS ?= 1
MLFLOW_SERVER = MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers $(WORKERS)
server: install  ## MLflow tracking server on 127.0.0.1:$(PORT): SQLite (DB=postgres: PostgreSQL) store and artifacts in $(SERVER_DIR)/ (Ctrl-C stops it)
	mkdir -p $(SERVER_DIR)
ifneq ($(DB_URL),)
	$(MLFLOW_SERVER) --backend-store-uri '$(DB_URL)' --artifacts-destination $(abspath $(SERVER_DIR))/artifacts
else ifeq ($(DB),postgres)
	trap 'scripts/postgres.sh stop $(SERVER_DIR)/postgres' EXIT; trap 'exit 130' INT TERM; \
	store=$$(scripts/postgres.sh start $(SERVER_DIR)/postgres $(PG_PORT)) && \
	$(MLFLOW_SERVER) --backend-store-uri "$$store" --artifacts-destination $(abspath $(SERVER_DIR))/artifacts
else ifeq ($(DB),sqlite)
	$(MLFLOW_SERVER) \
		--backend-store-uri sqlite:///$(abspath $(SERVER_DIR))/mlflow.db \
		--artifacts-destination $(abspath $(SERVER_DIR))/artifacts
else
	@echo "DB=$(DB): sqlite (the default) or postgres, or DB_URL=... for an existing database" >&2; exit 2
endif

clean:
	rm -rf outputs multirun .pytest_cache
