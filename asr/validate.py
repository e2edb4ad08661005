"""Checking manifest entries before they waste a run: each problem named with its reason.

    asr validate data/an4/train.jsonl [--config conf/cpu.yaml]     # summary; rejected entries to a JSONL

A finding is *fatal* when the entry cannot be used (missing or corrupt file, silence, empty or
unspellable transcript, too short for CTC, outside the duration limits) and is then rejected;
otherwise it is reported and handled (another sample rate is resampled, channels are downmixed,
clipping is kept). `prepare` rejects fatal entries with the full check (the audio is decoded),
`train` with the quick one (headers and transcripts only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .audio import AudioError, audio_info, read_audio
from .data import Utterance
from .features import FeatureConfig
from .model import ModelConfig
from .text import TextConfig, dropped_characters
from .tokens import Vocabulary

MIN_SECONDS = 0.1        # shorter than a syllable: a cut-off or empty recording
MAX_SECONDS = 60.0       # longer than any training utterance should be: one batch of its own, memory at its peak
SILENCE_PEAK = 1e-4      # -80 dBFS: no 16-bit recording of speech stays this quiet
CLIP_LEVEL = 0.999       # a sample this close to full scale counts as clipped
CLIP_FRACTION = 0.001    # reported when more than 0.1 % of samples are clipped


@dataclass(frozen=True)
class Finding:
    id: str
    audio: str
    reason: str          # what is wrong, with the numbers
    fatal: bool          # True: the entry cannot be used and is rejected; False: reported and handled
    kind: str = ""       # the problem's name, for summaries ("missing file", "sample rate"...)


def _reject(u: Utterance, kind: str, reason: str) -> Finding:
    return Finding(u.id, u.audio, reason, True, kind)


def _note(u: Utterance, kind: str, reason: str) -> Finding:
    return Finding(u.id, u.audio, reason, False, kind)


@dataclass(frozen=True)
class Checker:
    """The checks for one training setup: its characters, and its features and model for the CTC frame count."""
    alphabet: tuple[str, ...] = Vocabulary().chars
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    min_seconds: float = MIN_SECONDS
    max_seconds: float = MAX_SECONDS
    targets: bool = True        # transcripts are training targets: characters outside the alphabet reject them
    learned: bool = False       # the alphabet was learned from training transcripts (its missing characters: rare)

    @classmethod
    def for_config(cls, cfg, targets: bool = True) -> Checker:
        """The checker of a TrainConfig: its text alphabet (learned by now, for charset data), features and model
        front-end; `targets`: False for transcripts only scored against (dev, test), which may hold characters
        the model cannot write (noted, not rejected)."""
        return cls(cfg.text.alphabet, cfg.features, cfg.model, targets=targets, learned=cfg.text.charset == "data")

    def output_frames(self, seconds: float) -> int:
        """CTC frames the model emits for `seconds` of audio (FeatureConfig.num_frames, then
        ModelConfig.output_frames)."""
        return self.model.output_frames(self.features.num_frames(round(seconds * self.features.sample_rate)))

    def check_text(self, u: Utterance) -> list[Finding]:
        """Transcript problems, and whether `u.duration` seconds are enough for CTC to emit it."""
        if not u.text.strip():
            return [_reject(u, "empty transcript", "empty transcript")]
        found, text = [], u.text
        outside = "".join(sorted({c for c in text if c not in self.alphabet}))
        if outside:
            why = f"characters outside the vocabulary: {outside!r}" + (
                " (too rare in the training transcripts to be learned)" if self.learned else "")
            if self.targets:
                return [_reject(u, "outside the vocabulary", why)]
            found.append(_note(u, "outside the vocabulary", f"{why}: kept, scored as errors"))
            text = "".join(c for c in text if c in self.alphabet)
        needed = len(text) + sum(a == b for a, b in zip(text, text[1:]))  # a blank between repeats
        frames = self.output_frames(u.duration)
        if 0 < u.duration and frames < needed:
            found.append(_reject(u, "too short for its transcript", f"too short for its transcript: "
                                 f"{u.duration:.2f} s gives {frames} CTC frames, {len(text)} characters need {needed}"))
        return found

    def check_duration(self, u: Utterance, seconds: float) -> list[Finding]:
        if seconds < self.min_seconds:
            return [_reject(u, "too short", f"too short: {seconds:.3f} s (< {self.min_seconds} s)")]
        if seconds > self.max_seconds:
            return [_reject(u, "too long", f"too long: {seconds:.1f} s (> {self.max_seconds:g} s); split it")]
        return []

    def _file(self, u: Utterance):
        """(a fatal Finding or None, the header) for the file itself."""
        if not Path(u.audio).is_file():
            return _reject(u, "missing file", "missing file"), None
        try:
            info = audio_info(u.audio)
        except AudioError as e:
            return _reject(u, "unreadable audio", f"unreadable audio: {e}"), None
        if info.frames == 0:
            return _reject(u, "zero-length audio", "zero-length audio (no samples)"), None
        return None, info

    def quick(self, u: Utterance) -> list[Finding]:
        """Without decoding audio: the file is there with a readable header, durations, transcript."""
        bad, info = self._file(u)
        if bad:
            return [bad]
        seconds = u.duration if u.start is not None else info.frames / info.samplerate
        return self.check_duration(u, seconds) + self.check_text(replace(u, duration=seconds))

    def full(self, u: Utterance) -> list[Finding]:
        """The decoded samples too: corrupt data, silence, clipping, sample rate, channels, true duration."""
        bad, _ = self._file(u)
        if bad:
            return [bad]
        try:
            samples, sr = read_audio(u.audio, u.start, u.end)                  # (S, C)
        except AudioError as e:
            return [_reject(u, "corrupt audio", f"corrupt audio: {e}")]
        seconds = samples.shape[0] / sr
        return (self.check_duration(u, seconds) + self.check_text(replace(u, duration=seconds))
                + self._signal(u, samples, sr))

    def _signal(self, u: Utterance, samples: np.ndarray, sr: int) -> list[Finding]:
        found = []
        if sr != self.features.sample_rate:
            found.append(_note(u, "sample rate", f"sample rate {sr} Hz: resampled to {self.features.sample_rate} Hz"))
        if samples.shape[1] > 1:
            found.append(_note(u, "channels", f"{samples.shape[1]} channels: downmixed to mono"))
        if not np.isfinite(samples).all():
            return found + [_reject(u, "non-finite samples", "non-finite samples (NaN or infinity)")]
        peak = float(np.abs(samples).max())
        if peak < SILENCE_PEAK:
            found.append(_reject(u, "all silence", f"all silence (peak {peak:.1e}, below -80 dBFS)"))
        clipped = float((np.abs(samples) >= CLIP_LEVEL).mean())
        if clipped > CLIP_FRACTION:
            found.append(_note(u, "clipped", f"clipped: {100 * clipped:.1f}% of samples at full scale (kept)"))
        seconds = samples.shape[0] / sr
        if u.duration > 0 and abs(seconds - u.duration) > 0.05:
            found.append(_note(u, "duration differs from the manifest",
                               f"the manifest says {u.duration:.2f} s, the file holds {seconds:.2f} s"))
        return found


def normalisation_notes(utts: list[Utterance], text: TextConfig) -> list[Finding]:
    """A note for each raw transcript that normalisation by `text` loses characters of (kept, not rejected:
    training sees the normalised text)."""
    notes = []
    for u in utts:
        dropped = dropped_characters(u.text, text)
        if dropped:
            notes.append(_note(u, "dropped characters", f"dropped by the text normalisation: {dropped!r}"))
    return notes


def screen(utts: list[Utterance], checker: Checker, full: bool = True, progress: bool = False, desc: str = "checking"):
    """Split `utts` into the usable ones and the findings: (usable, findings of every entry)."""
    from tqdm import tqdm

    usable, findings = [], []
    for u in tqdm(utts, desc=desc, unit="utt", disable=not progress, leave=False):
        found = checker.full(u) if full else checker.quick(u)
        findings += found
        if not any(f.fatal for f in found):
            usable.append(u)
    return usable, findings


def write_rejected(path: str | Path, findings: list[Finding], split: str | None = None, mode: str = "w") -> int:
    """One JSON line per rejected entry (`id`, `audio`, `reasons`, and `split`); returns how many."""
    rejected: dict[str, dict] = {}
    for f in findings:
        if f.fatal:
            entry = rejected.setdefault(f.id, {"id": f.id, "audio": f.audio, "reasons": []})
            entry["reasons"].append(f.reason)
            if split:
                entry["split"] = split
    with Path(path).open(mode) as out:
        for entry in rejected.values():
            out.write(json.dumps(entry) + "\n")
    return len(rejected)


def summary(n: int, findings: list[Finding]) -> str:
    """'948 entries: 940 usable, 8 rejected (3 missing file, ...), 2 handled (...)'."""
    from collections import Counter

    def kinds(items) -> str:
        counts = Counter(f.kind or f.reason for f in items)
        return ", ".join(f"{c} {k}" for k, c in counts.most_common())

    fatal = [f for f in findings if f.fatal]
    handled = [f for f in findings if not f.fatal]
    rejected = len({f.id for f in fatal})
    line = f"{n} entries: {n - rejected} usable, {rejected} rejected"
    if fatal:
        line += f" ({kinds(fatal)})"
    if handled:
        line += f", {len(handled)} handled ({kinds(handled)})"
    return line


@dataclass(frozen=True)
class Validation:
    """What `validate_manifest` found: every finding (notes and rejections), its summary line, rejections written."""
    findings: list[Finding]
    summary: str
    rejected: int


def validate_manifest(manifest: str | Path, config: str | Path | None = None, rejected: str | Path | None = None,
                      full: bool = True, progress: bool = False, max_seconds: float | None = None) -> Validation:
    """Check every entry of `manifest` as training would see it (transcripts normalised by `config`'s text
    section, else by what prepare recorded beside the manifest), decoding the audio when `full`; the rejected
    entries go to `rejected` (default <manifest>.rejected.jsonl) with their reasons."""
    from .config import TrainConfig, load_config, text_config
    from .data import read_manifest, with_alphabet

    cfg = load_config(TrainConfig, config) if config else TrainConfig(text=text_config(None, manifest))
    cfg = replace(cfg, text=with_alphabet(cfg.text, manifest))
    checker = Checker.for_config(cfg)
    if max_seconds:
        checker = replace(checker, max_seconds=max_seconds)
    utts = read_manifest(manifest, cfg.text)          # transcripts normalised as training will see them
    _, findings = screen(utts, checker, full=full, progress=progress)
    findings = normalisation_notes(read_manifest(manifest), cfg.text) + findings
    n = write_rejected(rejected or Path(manifest).with_suffix(".rejected.jsonl"), findings)
    return Validation(findings, summary(len(utts), findings), n)
