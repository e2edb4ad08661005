# Top-level entry points. The two a newcomer needs:
#   make recipe   install if needed, then run the AN4 recipe end to end (prints test %WER / %CER)
#   make test     install if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RECIPE ?= an4
STAGE ?= 1
STOP_STAGE ?= 100

.PHONY: install recipe test clean-data help chromium

help:
	@echo "make install   create .venv and install asr with its dev extra"
	@echo "make recipe    run recipes/$(RECIPE) end to end (STAGE=, STOP_STAGE=, CONFIG=, N= pick a range / config)"
	@echo "make test      run the test suite"
	@echo "make chromium  (optional) headless Chromium from Debian, for the test that screenshots report.html"

# Debian's English word list (package wamerican): the AN4 recipe's LM learns how names are spelled from it.
WORDLIST := /usr/share/dict/american-english

install: $(VENV)/.installed $(BIN)/lmplz $(WORDLIST)

$(WORDLIST):
	$(SUDO) apt-get install -y -q --no-install-recommends wamerican \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends wamerican)

# KenLM's lmplz (n-gram LM estimation) from the kenlm source distribution, built once into .venv/bin.
# It needs Boost headers: installed from Debian's archive when missing (as root, else with sudo).
KENLM   := kenlm==0.3.0
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BOOST_DEBS := libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev
$(BIN)/lmplz: | $(VENV)/.installed
	@test -f /usr/include/boost/program_options.hpp || $(SUDO) apt-get install -y -q --no-install-recommends $(BOOST_DEBS) \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $(BOOST_DEBS))
	rm -rf $(VENV)/kenlm && mkdir -p $(VENV)/kenlm
	$(BIN)/pip download -q --no-deps --no-binary :all: $(KENLM) -d $(VENV)/kenlm
	tar xzf $(VENV)/kenlm/kenlm-*.tar.gz -C $(VENV)/kenlm
	cmake -S $(VENV)/kenlm/kenlm-0.3.0 -B $(VENV)/kenlm/build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	  > $(VENV)/kenlm/cmake.log
	$(MAKE) -C $(VENV)/kenlm/build -j2 lmplz build_binary > $(VENV)/kenlm/build.log 2>&1 || (tail -20 $(VENV)/kenlm/build.log; exit 1)
	cp $(VENV)/kenlm/build/bin/lmplz $(VENV)/kenlm/build/bin/build_binary $(BIN)/

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

recipe: install
	$(MAKE) -C recipes/$(RECIPE) all STAGE=$(STAGE) STOP_STAGE=$(STOP_STAGE)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Optional: the suite renders report.html to a PNG where Chromium is installed (and skips that test otherwise).
chromium:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y -q --no-install-recommends chromium \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium)

clean-data:
	rm -rf data/$(RECIPE)
