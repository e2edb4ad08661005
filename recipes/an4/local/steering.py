"""The run-time steering figures of RESULTS.md ("Steering at run time"), measured in one run on AN4 test:
hotword recall and WER with and without hotwords (with the LM and without any), the oracle WER of 5- and
10-best lists, a long recording decoded with and without VAD, and endpoint latency when streaming.

    .venv/bin/python recipes/an4/local/steering.py [--model tests/fixtures/an4_cpu_2x160.pt] [--an4 DIR]

The hotwords are, as in tests/test_steering.py, the ten words of three letters or more that plain beam search
misses most often on AN4 test (a user who knows the domain's terms boosts them).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_steering import long_recording, missed_words, recall  # noqa: E402

import asr  # noqa: E402
from asr.bench.stream import stream_latency  # noqa: E402
from asr.corpora.an4 import read_split  # noqa: E402
from asr.decode import DecodingOptions  # noqa: E402
from asr.lm import build_lm  # noqa: E402
from asr.score import score  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "an4_cpu_2x160.pt"))
    p.add_argument("--an4", default=str(ROOT.parent / "shared" / "corpora" / "an4" / "an4"))
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args()
    test = read_split(args.an4, "test")
    refs, waves = [u.text for u in test], [u.samples() for u in test]
    lm_dir = Path(tempfile.mkdtemp(prefix="an4-lm-"))
    build_lm([u.text for u in read_split(args.an4, "train")], lm_dir)
    lm = dict(lm=str(lm_dir / "lm.arpa"), lexicon=str(lm_dir / "lexicon.txt"), word_score=1.0)
    figures: dict = {"model": args.model}

    for name, extra in (("lm", lm), ("no_lm", {})):
        plain = asr.load_model(args.model, options=DecodingOptions(method="beam", **extra))
        before = [r.text for r in plain.transcribe(waves)]
        hot = missed_words(refs, before)[:10]
        for boost in (2.0, 4.0, 8.0):
            boosted = [r.text for r in plain.with_options(hotwords=tuple(f"{w}:{boost}" for w in hot))
                       .transcribe(waves)]
            others = [i for i, ref in enumerate(refs) if not set(ref.split()) & set(hot)]
            row = {"hotwords": hot, "boost": boost, "recall_before": recall(set(hot), refs, before),
                   "recall_after": recall(set(hot), refs, boosted), "wer_before": score(refs, before).wer.rate,
                   "wer_after": score(refs, boosted).wer.rate, "others": len(others),
                   "others_changed": sum(boosted[i] != before[i] for i in others)}
            figures[f"hotwords_{name}_boost{boost:g}"] = row
            print(f"hotwords ({name}, boost {boost:g}): recall {row['recall_before']} -> {row['recall_after']}, "
                  f"%WER {row['wer_before']:.2f} -> {row['wer_after']:.2f}, utterances without them changed "
                  f"{row['others_changed']} of {row['others']}", flush=True)

    nbest = asr.load_model(args.model, options=DecodingOptions(method="beam", nbest=10, **lm)).transcribe(waves)
    for n in (1, 5, 10):
        oracle = [min((a.text for a in r.alternatives[:n]), key=lambda t, ref=ref: score([ref], [t]).wer.errors)
                  if r.alternatives else r.text for ref, r in zip(refs, nbest)]
        figures[f"oracle_{n}best"] = score(refs, oracle).wer.rate
        print(f"oracle %WER of {n}-best (LM): {figures[f'oracle_{n}best']:.2f}", flush=True)

    model = asr.load_model(args.model)
    utts = test[:16]
    wave, spans = long_recording(utts)
    alone = " ".join(r.text for r in model.transcribe([u.samples() for u in utts]))
    ref = " ".join(u.text for u in utts)
    figures["long_seconds"] = wave.shape[0] / 16000
    figures["one_by_one_wer"] = score([ref], [alone]).wer.rate
    for vad in ("off", "on"):
        started = time.perf_counter()
        r = model.with_options(vad=vad).transcribe(wave)
        seconds = time.perf_counter() - started
        gaps = sum(not any(a - 0.1 <= w.start and w.end <= b + 0.1 for a, b in spans) for w in r.words)
        figures[f"vad_{vad}"] = {"seconds": seconds, "wer": score([ref], [r.text]).wer.rate, "words_in_gaps": gaps,
                                 "diff_vs_one_by_one": score([alone], [r.text]).wer.rate}
        print(f"long recording ({figures['long_seconds']:.1f} s, 16 utterances, 4 s gaps of silence / noise), "
              f"VAD {vad}: {seconds:.2f} s, %WER {figures[f'vad_{vad}']['wer']:.2f} (one by one "
              f"{figures['one_by_one_wer']:.2f}), words in the gaps {gaps}, words differing from one by one "
              f"{figures[f'vad_{vad}']['diff_vs_one_by_one']:.2f} %", flush=True)

    row = stream_latency(model, test, chunk_seconds=0.1)
    figures["stream_redecode"] = row
    print(f"streaming (re-decoded, bidirectional): %WER {row['wer']:.2f}, endpoint (end of speech -> final) median "
          f"{row['endpoint_median'] * 1000:.0f} ms mean {row['endpoint_mean'] * 1000:.0f} ms, {row['utterances']} of "
          f"{len(test)} ended by the rules, RTF {row['rtf']:.3f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
