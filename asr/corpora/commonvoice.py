"""Mozilla Common Voice, any locale, as published: a locale folder of a release (`cv-corpus-<version>/<locale>/`)
holding `clips/*.mp3` and the release's TSVs (`client_id`, `path`, `sentence`, ...).

    asr prepare commonvoice --corpus cv-corpus-17.0/fa --out data/commonvoice   # train / dev / test.jsonl

The release's own train.tsv / dev.tsv / test.tsv are used where it has them (speaker-disjoint, made by
Common Voice from validated clips); a release without them (a delta segment) is split here by speaker
(`client_id`) from validated.tsv and other.tsv (clips not yet voted on), as asr.corpora.base.hold_out
splits: whole speakers, none larger than a held-out share. Durations come from clip_durations.tsv where
the release has it, else from each clip's header. Without a `text` config the locale's is used
(`locale_text`): the alphabet learned from the training sentences, lower case, numbers read out in the
locale's language, characters as words for scripts written without spaces.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from ..data import Utterance
from ..text import TextConfig, normalize_text
from .base import Corpus, hold_out, register, utterance, write_splits

SPLITS = ("train", "dev", "test")
UNSPLIT = ("validated.tsv", "other.tsv")       # read when the release has no split: every clip not invalidated
# Languages written without spaces between words: their characters count as words (CER is their headline)
WITHOUT_SPACES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "dz", "yue", "cmn", "nan"})


def is_commonvoice(folder: str | Path) -> bool:
    """Whether `folder` is a Common Voice locale folder: clips/ beside the release's TSVs."""
    folder = Path(folder)
    return (folder / "clips").is_dir() and any((folder / name).is_file() for name in ("validated.tsv", "train.tsv"))


def locale_of(folder: str | Path) -> str:
    """The locale a Common Voice folder holds: its TSVs' `locale` column, else the folder's name (fa, zh-CN)."""
    folder = Path(folder)
    for name in ("validated.tsv", "train.tsv", "other.tsv"):
        if (folder / name).is_file():
            for row in _rows(folder / name):
                if row.get("locale"):
                    return row["locale"]
                break
    return folder.name


def locale_text(locale: str) -> TextConfig:
    """The TextConfig for a locale's transcripts: English's for English, else the alphabet of the data, lower
    case, numbers read out in the language (where num2words knows it; else kept as digits), and for scripts
    written without spaces, characters as words."""
    language = locale.split("-")[0].lower()
    if language == "en":
        return TextConfig()
    return TextConfig(charset="data", case="lower", language=language,
                      word_unit="char" if language in WITHOUT_SPACES else "word")


def _rows(tsv: Path):
    """The rows of a Common Voice TSV as dicts (its sentences hold quotes: no CSV quoting)."""
    with tsv.open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def _durations(folder: Path) -> dict[str, float]:
    """clip -> seconds from the release's clip_durations.tsv (`clip`, `duration[ms]`), where it has one."""
    path = folder / "clip_durations.tsv"
    if not path.is_file():
        return {}
    return {row["clip"]: int(row["duration[ms]"]) / 1000 for row in _rows(path) if row.get("clip")}


def read_tsv(folder: str | Path, name: str, text: TextConfig, durations: dict | None = None) -> list[Utterance]:
    """The clips a TSV of the release lists: id from the clip's name, the speaker its client_id, the sentence
    normalised per `text`."""
    folder = Path(folder)
    tsv = folder / name
    durations = durations if durations is not None else _durations(folder)
    utts = []
    for line, row in enumerate(_rows(tsv), 2):
        if not row.get("path") or row.get("sentence") is None:
            raise ValueError(f"{tsv}:{line}: a Common Voice TSV row needs `path` and `sentence` columns")
        clip = folder / "clips" / row["path"]
        u = utterance(Path(row["path"]).stem, clip, normalize_text(row["sentence"], text), row.get("client_id") or "")
        if row["path"] in durations:
            u = Utterance(u.id, u.audio, durations[row["path"]], u.text, u.speaker)
        utts.append(u)
    return utts


def read_commonvoice(folder: str | Path, text: TextConfig) -> dict[str, list[Utterance]]:
    """train / dev / test: the release's split where it has one, else its clips split by speaker here."""
    folder = Path(folder)
    if not is_commonvoice(folder):
        raise FileNotFoundError(f"{folder}: not a Common Voice locale folder (clips/ and validated.tsv or train.tsv)")
    durations = _durations(folder)
    if all((folder / f"{s}.tsv").is_file() for s in SPLITS):
        return {s: read_tsv(folder, f"{s}.tsv", text, durations) for s in SPLITS}
    utts = [u for name in UNSPLIT if (folder / name).is_file() for u in read_tsv(folder, name, text, durations)]
    return hold_out(utts)


def recipe_config(base: str | Path, folder: str | Path) -> str:
    """recipes/commonvoice's config for a locale folder: the YAML `base` (model and schedule, no text section)
    with the locale's text section (`locale_text`) after it."""
    from ..config import section_yaml

    lines = section_yaml("text", locale_text(locale_of(folder)))
    head = f"# {base} for Common Voice {locale_of(folder)}: its text section written from the locale (locale_text)\n"
    return head + Path(base).read_text(encoding="utf-8").rstrip("\n") + "\n" + "".join(line + "\n" for line in lines)


def prepare_commonvoice(corpus: str | Path, out_dir: str | Path, text: TextConfig | None = None) -> dict[str, Path]:
    """train / dev / test.jsonl of a Common Voice locale folder; `text` by default the locale's (`locale_text`)."""
    text = text or locale_text(locale_of(corpus))
    splits = read_commonvoice(corpus, text)
    speakers = {name: len({u.speaker for u in us}) for name, us in splits.items()}
    print(f"{corpus} (Common Voice, {locale_of(corpus)}): " + ", ".join(
        f"{name} {len(us)} clips of {speakers[name]} speakers" for name, us in splits.items()), file=sys.stderr)
    return write_splits(splits, out_dir, text)


register(Corpus("commonvoice", prepare_commonvoice, "a Common Voice locale folder (clips/ and its TSVs), any "
                                                    "language; the release's split, else one by speaker"))
