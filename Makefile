# seqlab: `make train` and `make test` do all set-up on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,sweep
# Data: $SEQLAB_DATA_DIR if set, else ../shared/data where it exists, else ./data (IMDB is downloaded there).
SEQLAB_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export SEQLAB_DATA_DIR
ARGS ?=
PORT ?= 5000

.PHONY: install train test test-fast sweep ui server clean

install: $(BIN)/seqlab

$(BIN)/seqlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

train: install  ## the default experiment: tutorial LSTM on IMDB, recorded in ./mlflow.db
	$(BIN)/seqlab train $(ARGS)

# Two test processes: most tests train recurrent models on one thread; a test file stays in one process (its fixtures).
TEST_WORKERS ?= 2
test: install  ## the whole suite (trains tiny models on real reviews from SEQLAB_DATA_DIR)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-fast: install  ## without the tests that train on real data
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

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
SERVER_DIR ?= mlflow-server
server: install  ## MLflow tracking server on 127.0.0.1:$(PORT): SQLite store and artifacts in $(SERVER_DIR)/ (Ctrl-C stops it)
	mkdir -p $(SERVER_DIR)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
		--backend-store-uri sqlite:///$(abspath $(SERVER_DIR))/mlflow.db \
		--artifacts-destination $(abspath $(SERVER_DIR))/artifacts

clean:
	rm -rf outputs multirun .pytest_cache
