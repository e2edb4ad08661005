# The stages every recipe shares; a recipe's Makefile sets CORPUS, PREPARE_DESC (and
# PREPARE_ARGS) and includes this file. See recipes/an4/Makefile for the usage.
SHELL  := /bin/bash
ROOT   := $(abspath ../..)
ASR    ?= $(ROOT)/.venv/bin/asr
DATA   ?= $(ROOT)/data/$(CORPUS)
CONFIG ?= conf/cpu.yaml
N      ?= $(basename $(notdir $(CONFIG)))
EXP    ?= $(DATA)/exp/$(N)
PREPARE_CONFIG ?= --config $(CONFIG)   # its text section normalises the transcripts
MAX_UTTS ?=
EXTRA  ?=
STAGE ?= 1
STOP_STAGE ?= 100

LM     ?= $(DATA)/lm
LM_ARGS ?=             # a recipe's own options for asr lm (order, extra words, spelled words)
LM_DEPS ?=             # ... and files it needs made first
RESULTS ?= $(EXP)/results.md   # the score stage writes its lines here (make recipe changes no tracked file)
RECORD  ?= RESULTS.md          # `make record` appends them to the recipe's RESULTS.md, when asked
STAGES := prepare stats train lm tune decode score report
.PHONY: all record $(STAGES)

all:
	@n=0; for s in $(STAGES); do n=$$((n+1)); \
	  if [ $$n -ge $(STAGE) ] && [ $$n -le $(STOP_STAGE) ]; then $(MAKE) --no-print-directory $$s || exit 1; fi; \
	done

# run CMD as stage NAME unless MARKER exists
define stage
	@if [ -f $(2) ]; then echo "stage $(1): done, skipping ($(2))"; \
	else echo "stage $(1)" && $(3) && touch $(2); fi
endef

prepare:
	$(call stage,1 prepare: $(PREPARE_DESC) in $(DATA),$(DATA)/.prepare.done,\
	  $(ASR) prepare $(CORPUS) --out $(DATA) $(PREPARE_CONFIG) $(PREPARE_ARGS))

stats:
	@mkdir -p $(EXP)
	$(call stage,2 stats: feature normalisation statistics on train,$(EXP)/.stats.done,\
	  $(ASR) stats --config $(CONFIG) --manifest $(DATA)/train.jsonl --out $(EXP)/stats.json $(EXTRA))

train:
	$(call stage,3 train: $(CONFIG) -> $(EXP),$(EXP)/.train.done,\
	  $(ASR) train --config $(CONFIG) exp_dir=$(EXP) train_manifest=$(DATA)/train.jsonl \
	    dev_manifest=$(DATA)/dev.jsonl stats=$(EXP)/stats.json $(EXTRA) 2>&1 | tee $(EXP)/train.log; \
	  test $${PIPESTATUS[0]} -eq 0)

lm: $(LM_DEPS)
	$(call stage,4 lm: word n-gram LM (KenLM) and lexicon from the train transcripts in $(LM),$(LM)/.done,\
	  $(ASR) lm --manifest $(DATA)/train.jsonl --out $(LM) $(LM_ARGS))

tune:
	$(call stage,5 tune: LM weight and word score for beam search on dev,$(EXP)/.tune.done,\
	  $(ASR) tune --model $(EXP)/best.pt --manifest $(DATA)/dev.jsonl --lm-dir $(LM) --out $(EXP)/decoding.json)

decode:
	$(call stage,6 decode: test transcripts greedy (decode_test) and with the LM (decode_test_lm),$(EXP)/decode_test_lm/.done,\
	  $(ASR) decode --model $(EXP)/best.pt --manifest $(DATA)/test.jsonl --out $(EXP)/decode_test && \
	  $(ASR) decode --model $(EXP)/best.pt --manifest $(DATA)/test.jsonl --out $(EXP)/decode_test_lm \
	    --decoding $(EXP)/decoding.json)

score:
	@echo "stage 7 score: test WER / CER, greedy ($(EXP)/decode_test) and with the LM ($(EXP)/decode_test_lm)"
	@echo "greedy:" && $(ASR) score --config $(CONFIG) --manifest $(DATA)/test.jsonl --hyp $(EXP)/decode_test/hyp.txt \
	  --results $(RESULTS) --exp $(EXP)
	@echo "beam search + word LM + lexicon:" && \
	  $(ASR) score --config $(CONFIG) --manifest $(DATA)/test.jsonl --hyp $(EXP)/decode_test_lm/hyp.txt \
	    --results $(RESULTS) --exp $(EXP)

report:
	@echo "stage 8 report: curves, scores, worst utterances -> $(EXP)/report.html"
	@$(ASR) report $(EXP) --manifest $(DATA)/test.jsonl --results $(RECORD)   # read only: the best so far

# Not a stage: a run's score lines go into the recipe's (tracked) RESULTS.md only when asked.
record:
	@test -f $(RESULTS) || (echo "no $(RESULTS): run the score stage first" && exit 1)
	@$(ROOT)/.venv/bin/python -c "import sys; from asr.report import record_results; \
	  print(f'{record_results(sys.argv[1], sys.argv[2])} line(s) of {sys.argv[1]} -> {sys.argv[2]}')" \
	  $(RESULTS) $(RECORD)
