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
LM_DESC ?= word n-gram LM (KenLM) and lexicon from the train transcripts
RESULTS ?= $(EXP)/results.md   # the score stage writes its lines here (make recipe changes no tracked file)
RECORD  ?= RESULTS.md          # `make record` appends them to the recipe's RESULTS.md, when asked
# the manifests decode and score run on, each scored on its own
TEST_SETS ?= test
# what training reads: the train manifest's files, or train_shards=... (the shard stage's index)
TRAIN_DATA ?= train_manifest=$(DATA)/train.jsonl
# the shard stage (where a recipe's STAGES has it): train.jsonl as WebDataset tar shards of SHARD_MB MiB
SHARDS   ?= $(DATA)/shards
SHARD_MB ?= 256
STAGES ?= prepare stats train lm tune decode score report
# INIT: start training from a trained model (a checkpoint, or a named one: english-base) instead of from zero:
# its model and features, this recipe's data, vocabulary and schedule (asr.finetune); INIT_EXTRA: the fine-tuning
# settings that go with it (chosen on dev: lr 1e-3 over 5e-4 for VCTK p239 and two AN4 seeds, recipes/english and
# recipes/an4 RESULTS.md)
INIT ?=
INIT_EXTRA ?= lr=1e-3
CALLER_DIR ?= $(CURDIR)
INIT_MODEL = $(if $(filter /%,$(INIT)),$(INIT),$(if $(or $(findstring /,$(INIT)),$(wildcard $(CALLER_DIR)/$(INIT))),\
               $(abspath $(CALLER_DIR)/$(INIT)),$(INIT)))
TRAIN_INIT = $(if $(INIT),init_from=$(strip $(INIT_MODEL)) init_config=checkpoint $(INIT_EXTRA))
# a train stage that did not finish (killed, stopped) goes on from its last.pt when run again, exactly
TRAIN_RESUME = $(if $(wildcard $(EXP)/last.pt),resume=true)
.PHONY: all record $(STAGES) $(TEST_SETS:%=decode-%) $(TEST_SETS:%=score-%)

# a stage's number: its place in STAGES (what STAGE / STOP_STAGE count)
_upto = $(if $(filter $(1),$(firstword $(2))),$(1),$(firstword $(2)) $(call _upto,$(1),$(wordlist 2,$(words $(2)),$(2))))
n = $(words $(call _upto,$(1),$(STAGES)))

all:
	@n=0; for s in $(STAGES); do n=$$((n+1)); \
	  if [ $$n -ge $(STAGE) ] && [ $$n -le $(STOP_STAGE) ]; then $(MAKE) --no-print-directory $$s || exit 1; fi; \
	done

# run CMD as stage NAME unless MARKER exists; with a fourth argument, ARGS (shell words, expanded when the stage
# runs), the marker records them and a done stage whose marker records others is refused, naming both, rather
# than skipped as if this run's (a marker left empty by an older checkout is taken as done); a fifth, the files
# the stage reads: one newer than the marker (a model trained again) runs the stage again; a sixth, non-empty: a
# marker that records other ARGS (or none) runs the stage again instead of being refused (a stage cheap to redo)
define stage
	@run=yes; if [ -f $(2) ] $(if $(5),&& [ -z "$$(find $(5) -newer $(2) 2>/dev/null)" ]); then run=; \
	  was=$$(cat $(2)); if [ -n '$(strip $(4))' ] && [ "$$was" != "$(strip $(4))" ] \
	    && [ -n "$$was" -o -n '$(6)' ]; then \
	    if [ -z '$(6)' ]; then echo "stage $(1): $(2) was made with $$was, not with $(strip $(4)):" \
	      "give this run its own N= (or delete $(2) to run the stage again)" >&2; exit 1; fi; \
	    echo "stage $(1): $(2) was made with $${was:-what its marker did not record} and not with" \
	      "$(strip $(4)): running it again"; rm $(2); run=yes; fi; fi; \
	if [ -z "$$run" ]; then echo "stage $(1): done, skipping ($(2))"; \
	else echo "stage $(1)" && $(3) && $(if $(strip $(4)),echo "$(strip $(4))" > $(2),touch $(2)); fi
endef

prepare:
	$(call stage,$(call n,prepare) prepare: $(PREPARE_DESC) in $(DATA),$(DATA)/.prepare.done,\
	  $(ASR) prepare $(CORPUS) --out $(DATA) $(PREPARE_CONFIG) $(PREPARE_ARGS))

shard:
	$(call stage,$(call n,shard) shard: train.jsonl as WebDataset shards of $(SHARD_MB) MiB in $(SHARDS),\
	  $(SHARDS)/.done,$(ASR) shard --manifest $(DATA)/train.jsonl --out $(SHARDS) --shard-mb $(SHARD_MB))

stats:
	@mkdir -p $(EXP)
	$(call stage,$(call n,stats) stats: feature normalisation statistics on train,$(EXP)/.stats.done,\
	  $(ASR) stats --config $(CONFIG) --manifest $(DATA)/train.jsonl --out $(EXP)/stats.json $(EXTRA))

# the trained model this run starts from, where it names one (INIT, or init_from in EXTRA, which asr train reads last)
TRAIN_FROM = $(or $(patsubst init_from=%,%,$(lastword $(filter init_from=%,$(EXTRA)))),$(if $(INIT),$(strip $(INIT_MODEL))))
# what a done train stage was made with (its marker): the config's contents (wherever the file lies), the data in
# DATA, the starting point and EXTRA; a later `make` with others is refused, not reported as this run
TRAIN_ARGS = config sha256 $$(sha256sum < $(CONFIG) | cut -c1-16), $(subst $(DATA)/,,$(TRAIN_DATA)), from \
  $(or $(TRAIN_FROM),zero)$(if $(INIT), $(INIT_EXTRA)), EXTRA: $(or $(strip $(EXTRA)),none)
# an experiment dir holds one run: asked to start from a model, a dir whose run started elsewhere (config.json's
# init_from; empty: from zero) is refused rather than skipped as done or resumed, which would report that run as this
train:
	@if [ -n "$(TRAIN_FROM)" ] && [ -f $(EXP)/config.json ]; then \
	  was=$$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("init_from", ""))' $(EXP)/config.json) \
	  && if [ "$$was" != "$(TRAIN_FROM)" ]; then \
	    echo "stage $(call n,train) train: $(EXP) holds a run started from $${was:-zero}, not from $(TRAIN_FROM):" \
	      "give this one its own N= (or delete that dir)" >&2; exit 1; fi; fi
	$(call stage,$(call n,train) train: $(CONFIG) -> $(EXP),$(EXP)/.train.done,\
	  $(ASR) train --config $(CONFIG) exp_dir=$(EXP) $(TRAIN_DATA) \
	    dev_manifest=$(DATA)/dev.jsonl stats=$(EXP)/stats.json $(TRAIN_INIT) $(TRAIN_RESUME) $(EXTRA) 2>&1 \
	    | tee -a $(EXP)/train.log; \
	  test $${PIPESTATUS[0]} -eq 0,$(TRAIN_ARGS))

# the LM is shared by the experiments and cheap to make: one built with other arguments (or before its marker
# recorded them) is built again, and every experiment's tune and decode then run again with it
LM_MADE_WITH = asr lm $(subst $(DATA)/,,$(LM_ARGS))
lm: $(LM_DEPS)
	$(call stage,$(call n,lm) lm: $(LM_DESC) in $(LM),$(LM)/.done,\
	  $(ASR) lm --manifest $(DATA)/train.jsonl --out $(LM) $(LM_ARGS),$(LM_MADE_WITH),,rerun)

tune:
	$(call stage,$(call n,tune) tune: LM weight and word score for beam search on dev,$(EXP)/.tune.done,\
	  $(ASR) tune --model $(EXP)/best.pt --manifest $(DATA)/dev.jsonl --lm-dir $(LM) --out $(EXP)/decoding.json,,\
	  $(EXP)/best.pt $(LM)/.done)

decode: $(TEST_SETS:%=decode-%)
$(TEST_SETS:%=decode-%): decode-%:
	$(call stage,$(call n,decode) decode: $* transcripts greedy (decode_$*) and with the LM (decode_$*_lm),\
	  $(EXP)/decode_$*_lm/.done,\
	  $(ASR) decode --model $(EXP)/best.pt --manifest $(DATA)/$*.jsonl --out $(EXP)/decode_$* && \
	  $(ASR) decode --model $(EXP)/best.pt --manifest $(DATA)/$*.jsonl --out $(EXP)/decode_$*_lm \
	    --decoding $(EXP)/decoding.json,,$(EXP)/best.pt $(EXP)/.tune.done)

score: $(TEST_SETS:%=score-%)
$(TEST_SETS:%=score-%): score-%:
	@echo "stage $(call n,score) score: $* WER / CER, greedy ($(EXP)/decode_$*) and with the LM ($(EXP)/decode_$*_lm)"
	@echo "greedy:" && $(ASR) score --config $(CONFIG) --manifest $(DATA)/$*.jsonl --hyp $(EXP)/decode_$*/hyp.txt \
	  --results $(RESULTS) --exp $(EXP)
	@echo "beam search + word LM + lexicon:" && \
	  $(ASR) score --config $(CONFIG) --manifest $(DATA)/$*.jsonl --hyp $(EXP)/decode_$*_lm/hyp.txt \
	    --results $(RESULTS) --exp $(EXP)

report:
	@echo "stage $(call n,report) report: curves, scores, worst utterances -> $(EXP)/report.html"
	@$(ASR) report $(EXP) --manifest $(DATA)/$(firstword $(TEST_SETS)).jsonl --results $(RECORD)   # read only: the best so far

# Not a stage: a run's score lines go into the recipe's (tracked) RESULTS.md only when asked.
record:
	@test -f $(RESULTS) || (echo "no $(RESULTS): run the score stage first" && exit 1)
	@$(ROOT)/.venv/bin/python -c "import sys; from asr.report import record_results; \
	  print(f'{record_results(sys.argv[1], sys.argv[2])} line(s) of {sys.argv[1]} -> {sys.argv[2]}')" \
	  $(RESULTS) $(RECORD)
