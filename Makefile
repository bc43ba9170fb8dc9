# seqlab: `make train` and `make test` do all set-up on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,sweep
# Data: $SEQLAB_DATA_DIR if set, else ../shared/data where it exists, else ./data (IMDB is downloaded there).
SEQLAB_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export SEQLAB_DATA_DIR
ARGS ?=

.PHONY: install train test test-fast sweep ui clean

install: $(BIN)/seqlab

$(BIN)/seqlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

train: install  ## the default experiment: tutorial LSTM on IMDB, recorded in ./mlflow.db
	$(BIN)/seqlab train $(ARGS)

test: install  ## the whole suite (trains tiny models on real reviews from SEQLAB_DATA_DIR)
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: install  ## without the tests that train on real data
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

ui: install  ## MLflow UI on the local store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs multirun .pytest_cache
