# Top-level entry points. The two a newcomer needs:
#   make recipe   install if needed, then run the AN4 recipe end to end (prints test %WER / %CER)
#   make test     install if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RECIPE ?= an4
STAGE ?= 1
STOP_STAGE ?= 100

.PHONY: install debs recipe test lint clean-data help chromium

help:
	@echo "make install   create .venv and install asr with its dev extra"
	@echo "make recipe    run recipes/$(RECIPE) end to end (STAGE=, STOP_STAGE=, CONFIG=, N= pick a range / config)"
	@echo "make test      lint (ruff) and run the test suite"
	@echo "make lint      ruff's lint alone"
	@echo "make chromium  the Debian packages alone, headless Chromium among them (make install does this too)"

# Debian's English word list (package wamerican): the AN4 recipe's LM learns how names are spelled from it.
WORDLIST := /usr/share/dict/american-english
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# KenLM's lmplz needs Boost headers to build.
BOOST_DEBS := libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev
# Debian's Chromium: the suite's browser tests (asr serve's page transcribing a fake microphone, report.html
# rendered to a screenshot) drive it headless.
CHROMIUM := $(shell command -v chromium || command -v chromium-browser)
DEBS_MISSING = $(if $(wildcard /usr/include/boost/program_options.hpp),,$(BOOST_DEBS)) \
  $(if $(wildcard $(WORDLIST)),,wamerican) $(if $(CHROMIUM),,chromium)

# The Debian packages first (one apt-get: two would wait on each other's lock), then the Python
# packages and the KenLM build side by side: most of a fresh install is pip unpacking torch on one
# core while the compiler uses the other.
install:
	@$(MAKE) --no-print-directory debs
	@$(MAKE) --no-print-directory -j2 $(VENV)/.installed $(BIN)/lmplz

debs:
	@if [ -n "$(strip $(DEBS_MISSING))" ]; then \
	  $(SUDO) apt-get install -y -q --no-install-recommends $(DEBS_MISSING) \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $(DEBS_MISSING)); fi

# KenLM's lmplz (n-gram LM estimation) and build_binary from the kenlm source distribution on PyPI,
# fetched by URL and checked against its SHA-256 (`pip download` would first build the sdist's own
# build requirements, CMake among them, from source: 15 minutes), built once with cmake into .venv/bin.
KENLM_VERSION := 0.3.0
KENLM_URL     := https://files.pythonhosted.org/packages/02/6e/f4e159cef39ea4ef2244b4aa32857d447d60a5d0ee269e1b1f8d3723c03e/kenlm-0.3.0.tar.gz
KENLM_SHA256  := c4628bb9fb63c8a6f9240035b8b037385cfc404cb72e933cf48878291edac1e8
KENLM_DIR     := $(VENV)/kenlm
$(BIN)/lmplz:
	rm -rf $(KENLM_DIR) && mkdir -p $(KENLM_DIR) $(BIN)
	$(PYTHON) -c "import hashlib, sys, urllib.request; data = urllib.request.urlopen(sys.argv[1]).read(); \
	  assert hashlib.sha256(data).hexdigest() == sys.argv[2], 'kenlm sdist: SHA-256 mismatch'; \
	  open(sys.argv[3], 'wb').write(data)" $(KENLM_URL) $(KENLM_SHA256) $(KENLM_DIR)/kenlm.tar.gz
	tar xzf $(KENLM_DIR)/kenlm.tar.gz -C $(KENLM_DIR)
	cmake -S $(KENLM_DIR)/kenlm-$(KENLM_VERSION) -B $(KENLM_DIR)/build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	  > $(KENLM_DIR)/cmake.log
	$(MAKE) -C $(KENLM_DIR)/build -j2 lmplz build_binary > $(KENLM_DIR)/build.log 2>&1 || (tail -20 $(KENLM_DIR)/build.log; exit 1)
	cp $(KENLM_DIR)/build/bin/lmplz $(KENLM_DIR)/build/bin/build_binary $(BIN)/

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -c "import asr.native as r; print('asr.native: the compiled recurrent loops and filterbank step', 'built' if r.compiled_loop() else 'NOT built: the Python loop runs (slower)')"
	touch $@

recipe: install
	$(MAKE) -C recipes/$(RECIPE) all STAGE=$(STAGE) STOP_STAGE=$(STOP_STAGE) CALLER_DIR=$(CURDIR)

# Two workers (pytest-xdist), whole files each so that a file's module fixtures are built once;
# PYTEST_ARGS="-n 0 -x tests/test_x.py" runs one file in this process instead.
PYTEST_ARGS ?= -n 2 --dist loadfile
test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff's lint on the package and the tests, configured in pyproject.toml ([tool.ruff]); part of `make test`.
lint: install
	$(BIN)/ruff check asr tests

# Chromium without the Python install: the Debian step of `make install`, which installs it with the others.
chromium: debs

clean-data:
	rm -rf data/$(RECIPE)
