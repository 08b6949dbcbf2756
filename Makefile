# The two commands of the README: `make quickstart` and `make test`. Both create .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-fast lint bench down clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	bash scripts/install-system-deps.sh
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/agentdeploy up --detach
	$(BIN)/agentdeploy quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check agentdeploy flows tasks blocks tests
	$(BIN)/mypy agentdeploy

down:
	$(BIN)/agentdeploy down

clean:
	rm -rf $(VENV)
