"""lhotse manifests in: a CutSet, or a RecordingSet + SupervisionSet (`.jsonl.gz` or `.jsonl`), so that
any of lhotse's corpus recipes (`lhotse prepare <corpus>`) feeds this package's training.

    asr prepare lhotse --corpus cuts_train.jsonl.gz --out data/mine          # -> data/mine/all.jsonl
    asr prepare lhotse --corpus data/lhotse/librispeech --out data/libri     # a dir: one manifest per split

Each supervision becomes an utterance: its id, speaker and text, and its span of the recording's
file (`start` / `end` in seconds). lhotse is an optional extra (`pip install 'asr[lhotse]'`).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..data import Utterance
from .base import Corpus, normalised, register, write_splits

_SUFFIXES = (".jsonl.gz", ".jsonl", ".json")


def _lhotse():
    try:
        import lhotse
    except ImportError:
        raise ValueError("reading lhotse manifests needs lhotse: pip install lhotse (or asr[lhotse])") from None
    return lhotse


def is_lhotse(path: str | Path) -> bool:
    """Whether `path` is a lhotse manifest file (a gzipped one, or JSON lines with lhotse's cut or recording keys)."""
    import gzip
    import json

    path = Path(path)
    if not path.is_file():
        return False
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        entry = json.loads(first)
    except (OSError, UnicodeDecodeError, ValueError, EOFError):
        return False
    return isinstance(entry, dict) and ("recording" in entry or "sources" in entry or
                                        {"recording_id", "start", "duration"} <= set(entry))


def cuts_to_utterances(cuts, where: str) -> list[Utterance]:
    """A lhotse CutSet -> one Utterance per supervision (its span of the recording's audio file)."""
    utts = []
    for cut in cuts:
        recording = getattr(cut, "recording", None)
        if recording is None:
            raise ValueError(f"{where}: cut {cut.id} has no recording (a {type(cut).__name__}); give mono cuts "
                             f"of recordings")
        files = [s.source for s in recording.sources if s.type == "file"]
        if len(files) != 1 or len(recording.sources) != 1:
            raise ValueError(f"{where}: recording {recording.id}: needs one audio file source, has "
                             f"{', '.join(s.type for s in recording.sources) or 'none'}")
        whole = recording.duration
        for sup in cut.supervisions:
            start = max(cut.start + sup.start, 0.0)
            end = min(cut.start + sup.end, whole)
            if sup.text is None:
                raise ValueError(f"{where}: supervision {sup.id} has no text")
            span = (None, None) if start <= 0.0 and end >= whole - 1e-3 else (round(start, 3), round(end, 3))
            utts.append(Utterance(sup.id, str(files[0]), round(end - start, 3), sup.text, sup.speaker or "", *span))
    return utts


def read_lhotse(*paths: str | Path) -> list[Utterance]:
    """Utterances of one CutSet file, or of a RecordingSet file and a SupervisionSet file (either order)."""
    lhotse = _lhotse()
    where = " + ".join(map(str, paths))
    try:
        if len(paths) == 1:
            manifest = lhotse.load_manifest(paths[0])
            if isinstance(manifest, lhotse.CutSet):
                return cuts_to_utterances(manifest, where)
            raise ValueError(f"{where}: a {type(manifest).__name__}; give a CutSet, or recordings and supervisions")
        parts = [lhotse.load_manifest(p) for p in paths]
        recordings = next((m for m in parts if isinstance(m, lhotse.RecordingSet)), None)
        supervisions = next((m for m in parts if isinstance(m, lhotse.SupervisionSet)), None)
        if recordings is None or supervisions is None or len(paths) != 2:
            raise ValueError(f"{where}: give one RecordingSet and one SupervisionSet")
        cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        return cuts_to_utterances(cuts.trim_to_supervisions(keep_overlapping=False), where)
    except (KeyError, TypeError, AssertionError) as e:
        raise ValueError(f"{where}: not a lhotse manifest lhotse can read ({type(e).__name__}: {e})") from e


def _splits(folder: Path) -> dict[str, list[Path]]:
    """A lhotse recipe's output dir: `<corpus>_cuts_<split>` or `<corpus>_recordings_<split>` +
    `<corpus>_supervisions_<split>` files -> {split: [files]}."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        name = next((path.name[:-len(s)] for s in _SUFFIXES if path.name.endswith(s)), None)
        m = name and re.match(r"^(?:.*_)?(cuts|recordings|supervisions)_(.+)$", name)
        if m:
            found.setdefault(m.group(2), {})[m.group(1)] = path
    splits = {}
    for split, kinds in found.items():
        if "cuts" in kinds:
            splits[split] = [kinds["cuts"]]
        elif {"recordings", "supervisions"} <= set(kinds):
            splits[split] = [kinds["recordings"], kinds["supervisions"]]
    if not splits:
        raise ValueError(f"{folder}: no lhotse manifests (*_cuts_<split>.jsonl.gz, or *_recordings_<split> with "
                         f"*_supervisions_<split>)")
    return splits


def prepare_lhotse(corpus: str | Path, out_dir: str | Path, text=None) -> dict[str, Path]:
    """Manifests from lhotse's: a CutSet file -> all.jsonl; a dir of a lhotse recipe's files -> <split>.jsonl
    each; transcripts normalised per `text` (a TextConfig; default: what they ask for, asr.corpora.base.normalised)."""
    corpus = Path(corpus)
    groups = _splits(corpus) if corpus.is_dir() else {"all": [corpus]}
    splits, text = normalised({name: read_lhotse(*files) for name, files in groups.items()}, text)
    return write_splits(splits, out_dir, text)


register(Corpus("lhotse", prepare_lhotse, "lhotse manifests: a CutSet, or a lhotse recipe's dir of recordings + "
                                          "supervisions per split (needs lhotse)"))
