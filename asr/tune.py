"""Choosing beam-search weights on dev: a grid over LM weight and word score, model run once.

    asr tune --model best.pt --manifest dev.jsonl --lm-dir data/an4/lm --out exp/decoding.json
"""
from __future__ import annotations

from dataclasses import replace

from .decode import BeamSearch, DecodingOptions, greedy_paths, words_of
from .score import score

LM_WEIGHTS = (0.5, 1.0, 1.5, 2.0, 3.0)
WORD_SCORES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)  # AN4 dev preferred the top of a -1..3 grid


def tune_decoding(transcriber, utts, options: DecodingOptions, lm_weights=LM_WEIGHTS, word_scores=WORD_SCORES,
                  log=print) -> tuple[DecodingOptions, list[dict]]:
    """Dev WER (CER for a model whose words are characters) of beam search for every (lm_weight, word_score);
    returns the best options and the grid.

    Greedy WER is the grid's first row (lm_weight None) for comparison. Ties go to the smaller weights.
    `asr.decode.save_decoding` writes the result as the recipe's decoding.json.
    """
    log_probs, lengths = [], []
    for u in utts:  # one pass of the model; the grid reuses its outputs
        lp, n = transcriber.log_probs([u.samples(transcriber.sample_rate)])
        log_probs.append(lp[0, :n[0]])
        lengths.append(n[0])
    refs = [u.text for u in utts]

    vocab = transcriber.vocab
    unit = getattr(vocab, "word_unit", "word")       # characters as words: CER decides

    def wer(paths) -> dict:
        hyps = [vocab.separator.join(w.text for w in words_of(p, lp, vocab, transcriber.frame_seconds))
                for p, lp in zip(paths, log_probs)]
        s = score(refs, hyps, unit)
        return {"wer": s.wer.rate, "cer": s.cer.rate, "headline": s.headline.rate}

    greedy = [greedy_paths(lp[None], n.reshape(1))[0] for lp, n in zip(log_probs, lengths)]
    grid = [{"lm_weight": None, "word_score": None, **wer(greedy)}]
    log(f"greedy: %WER {grid[0]['wer']:.2f}")
    best = None
    for lw in lm_weights:
        for ws in word_scores:
            opts = replace(options, method="beam", lm_weight=lw, word_score=ws)
            beam = BeamSearch(opts, transcriber.vocab)
            paths = [beam(lp[None], n.reshape(1))[0] for lp, n in zip(log_probs, lengths)]
            row = {"lm_weight": lw, "word_score": ws, **wer(paths)}
            grid.append(row)
            log(f"lm_weight {lw:g} word_score {ws:g}: %WER {row['wer']:.2f} %CER {row['cer']:.2f}")
            if best is None or row["headline"] < best[1]["headline"]:
                best = (opts, row)
    return best[0], grid
