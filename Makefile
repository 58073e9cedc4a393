# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[postgres,dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/linkpool demo --dir demo

lint: $(STAMP)
	$(BIN)/ruff check linkpool tests bench migrations
	$(BIN)/ruff format --check linkpool tests bench migrations
	$(BIN)/mypy linkpool

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/claim.py

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache .mypy_cache
