# Top-level entry points. The two a newcomer needs:
#   make recipe   install if needed, then run the AN4 recipe end to end (prints test %WER / %CER)
#   make test     install if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RECIPE ?= an4
STAGE ?= 1
STOP_STAGE ?= 100

.PHONY: install recipe test clean-data help

help:
	@echo "make install   create .venv and install asr with its dev extra"
	@echo "make recipe    run recipes/$(RECIPE) end to end (STAGE=, STOP_STAGE=, CONFIG=, N= pick a range / config)"
	@echo "make test      run the test suite"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

recipe: install
	$(MAKE) -C recipes/$(RECIPE) all STAGE=$(STAGE) STOP_STAGE=$(STOP_STAGE)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-data:
	rm -rf data/$(RECIPE)
