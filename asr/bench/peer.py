"""Our recogniser beside the one a user would otherwise `pip install`: CMU pocketsphinx 5 with its bundled general
US English model (a continuous HMM acoustic model, a 3-gram LM and CMUdict, 2015), on the same test sets in one run.

    asr bench peer --model english-base --manifest data/english/test_an4.jsonl --manifest ... [--lm-dir L]

Both sides' transcripts are normalised alike (asr.text, English's: upper case, numbers spelled) and scored
against the same references: %WER, %CER and the real-time factor on this machine, per test set.
"""
from __future__ import annotations

import time

import numpy as np

from ..audio import load_audio
from ..score import score
from ..text import TextConfig, normalize_text
from ..transcripts import Transcript

PCM_SCALE = 32767     # float samples -> the 16-bit PCM pocketsphinx reads


class Pocketsphinx:
    """pocketsphinx's Decoder on its bundled en-us model, behind `transcribe(paths)` (one utterance at a time)."""

    name = "pocketsphinx 5 (CMU en-us, 2015)"

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(loglevel="FATAL")
        self.sample_rate = int(self.decoder.config["samprate"])

    def transcribe(self, inputs) -> list[Transcript]:
        out = []
        for audio in inputs:
            wave = load_audio(audio, self.sample_rate).numpy()
            self.decoder.start_utt()
            self.decoder.process_raw((np.clip(wave, -1, 1) * PCM_SCALE).astype(np.int16).tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            out.append(Transcript(hyp.hypstr if hyp is not None else "", wave.shape[0] / self.sample_rate))
        return out


def bench_peer(systems: dict, test_sets: dict, text: TextConfig = TextConfig(), log=print) -> list[dict]:
    """%WER, %CER and RTF of each named system (anything with `transcribe(paths)`) on each named list of
    utterances, transcripts normalised by `text` on both sides."""
    rows = []
    for name, utts in test_sets.items():
        refs = [normalize_text(u.text, text) for u in utts]
        audio = sum(u.duration for u in utts)
        for system, recogniser in systems.items():
            start = time.perf_counter()
            hyps = [normalize_text(r.text, text) for r in recogniser.transcribe([u.input for u in utts])]
            seconds = time.perf_counter() - start
            s = score(refs, hyps)
            rows.append({"test": name, "system": system, "utterances": len(utts), "audio_hours": audio / 3600,
                         "wer": s.wer.rate, "cer": s.cer.rate, "rtf": seconds / max(audio, 1e-9)})
            log(format_peer_row(rows[-1]))
    return rows


PEER_HEADER = f"{'test set':<20} {'system':<34} {'utts':>5} {'hours':>6} {'%WER':>7} {'%CER':>7} {'RTF':>7}"


def format_peer_row(r: dict) -> str:
    return (f"{r['test']:<20} {r['system']:<34} {r['utterances']:>5} {r['audio_hours']:>6.2f} {r['wer']:>7.2f} "
            f"{r['cer']:>7.2f} {r['rtf']:>7.3f}")
