"""Word n-gram language models (KenLM's lmplz) and lexicons, for beam search with `asr.decode`.

    asr lm --manifest data/an4/train.jsonl --out data/an4/lm      # lm.arpa, lexicon.txt, words.txt
    asr lm --manifest data/an4/train.jsonl --out data/an4/lm --order 4 --transcript-weight 10 \
        --words data/an4/an4.dic --spell-words data/an4/lm/names.txt   # + task words, spelled names
    asr lm --manifest train.jsonl --out lm --text librispeech-lm-norm.txt.gz   # + a corpus's own LM text
    asr lm --arpa 3-gram.pruned.1e-7.arpa.gz --out lm                   # a published LM, with its lexicon

`lmplz` is built from the `kenlm` source distribution by `make install` (into .venv/bin); any
other lmplz on the PATH, or $LMPLZ, works too.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from . import PROJECT_ROOT
from .text import SPACE
from .tokens import BPEVocabulary, Vocabulary


def write_lexicon(words: list[str], path: str | Path, vocab: Vocabulary | BPEVocabulary = Vocabulary()) -> int:
    """One `WORD<TAB>spelling` line per word, spelled in `vocab`'s decoder tokens (characters:
    `W O R D |`; BPE: `▁WO RD`); returns the number written. Words `vocab` cannot spell raise ValueError."""
    with Path(path).open("w", encoding="utf-8") as f:
        for w in words:
            f.write(f"{w}\t{vocab.spell(w)}\n")
    return len(words)


def read_lexicon_words(path: str | Path) -> list[str]:
    """The words (first column) of a lexicon file."""
    with Path(path).open(encoding="utf-8") as f:
        return [line.split("\t", 1)[0].split(" ", 1)[0] for line in f if line.strip()]


def find_kenlm(tool: str = "lmplz") -> str | None:
    """A KenLM program (lmplz, build_binary): $LMPLZ / $BUILD_BINARY, .venv/bin (make install), beside this
    Python (a virtualenv's bin), or the PATH."""
    for candidate in (os.environ.get(tool.upper()), str(PROJECT_ROOT / ".venv" / "bin" / tool),
                      str(Path(sys.executable).parent / tool), shutil.which(tool)):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def find_lmplz() -> str:
    found = find_kenlm("lmplz")
    if found is None:
        raise FileNotFoundError(
            "lmplz (KenLM's LM estimator) not found. In a checkout of this package, `make install` builds it into "
            ".venv/bin. Otherwise build KenLM from its source (https://github.com/kpu/kenlm, or the kenlm sdist on "
            "PyPI; cmake and the Boost headers) and put lmplz on the PATH or set $LMPLZ; or "
            "decode with an ARPA LM you have (--lm lm.arpa --lexicon lexicon.txt)")
    return found


def lm_file(lm_dir: str | Path) -> Path:
    """The LM of an `asr lm` dir: KenLM's binary lm.bin where there is one (loads fast and quietly), else lm.arpa."""
    binary = Path(lm_dir) / "lm.bin"
    return binary if binary.exists() else Path(lm_dir) / "lm.arpa"


def read_word_list(path: str | Path) -> list[str]:
    """Words from a word list or pronunciation dictionary: the first field of each line, a CMU/Sphinx
    variant marker dropped (`EIGHTH(2)` is EIGHTH), duplicates removed, order kept."""
    words: dict[str, None] = {}
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                words[re.sub(r"\(\d+\)$", "", line.split()[0])] = None
    return list(words)


def spell_out(words: list[str]) -> list[str]:
    """Words as upper-case letter sequences (`Jennifer` -> `J E N N I F E R`), the way spelled names are
    transcribed; words of fewer than two letters or with anything but ASCII letters are left out."""
    return [" ".join(w.upper()) for w in words if len(w) > 1 and w.isascii() and w.isalpha()]


def open_text(path: str | Path):
    """A text file, or a gzip-compressed one (.gz: LibriSpeech's librispeech-lm-norm.txt.gz, its ARPA files)."""
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else Path(path).open(encoding="utf-8")


def arpa_words(path: str | Path) -> list[str]:
    """The words of an ARPA LM: its unigrams, less <s>, </s> and <unk>."""
    words, inside = [], False
    with open_text(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                if inside:
                    break
                inside = line == "\\1-grams:"
            elif inside and line:
                word = line.split("\t")[1]
                if word not in ("<s>", "</s>", "<unk>"):
                    words.append(word)
    if not words:
        raise ValueError(f"{path}: no unigrams: not an ARPA file?")
    return words


def use_arpa(arpa: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """An ARPA LM made elsewhere (LibriSpeech's 3-gram.pruned.1e-7.arpa.gz, 4-gram.arpa.gz) as out_dir/lm.arpa,
    with the lexicon of its unigrams (and lm.bin where build_binary is found); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_text(arpa) as src, (out / "lm.arpa.tmp").open("w", encoding="utf-8") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(out / "lm.arpa.tmp", out / "lm.arpa")
    words = sorted(arpa_words(out / "lm.arpa"))
    write_lexicon(words, out / "lexicon.txt", Vocabulary(tuple(sorted({SPACE, *"".join(words)}))))
    return {"lm": out / "lm.arpa", "lexicon": out / "lexicon.txt", **_binary(out / "lm.arpa")}


MAX_ORDER = 6   # KENLM_MAX_ORDER of KenLM's build_binary (built by `make install`) and of flashlight-text's decoder


def build_lm(texts: list[str], out_dir: str | Path, order: int = 3, lmplz: str | None = None,
             transcript_weight: int = 1, words: list[str] = (), spelled: list[str] = (),
             extra_text: str | Path | None = None, word_unit: str = "word") -> dict[str, Path]:
    """Train an `order`-gram ARPA LM on `texts` (normalised transcripts) and write its lexicon.

    The LM's text is the transcripts `transcript_weight` times (an n-gram LM's counts are its
    weights), then each of `words` the transcripts lack as a one-word sentence (a task dictionary:
    the words enter the lexicon with a unigram probability), then `spelled` as letter sequences
    (`spell_out`: word spellings teach the LM which letter follows which in a spelled name, while
    the lexicon stays the transcripts' words and letters), then `extra_text`'s lines, read as a stream (a
    normalised text file: LibriSpeech's librispeech-lm-norm.txt.gz). The lexicon holds every word of that text.
    Writes out_dir/corpus.txt, lm.arpa, words.txt (word counts) and lexicon.txt (spelled in
    characters; beam search respells it in its model's own tokens), and lm.bin (the same LM in
    KenLM's binary format) where build_binary is found; returns their paths.
    Kneser-Ney discounts fall back to defaults when a small corpus cannot estimate them. `word_unit` "char":
    transcripts written without spaces, each character a word of the LM and the lexicon.
    """
    if not 1 <= order <= MAX_ORDER:   # refused before anything is written
        raise ValueError(f"order must be 1 to {MAX_ORDER}, not {order}: KenLM (build_binary and the beam search's "
                         f"decoder) is built for at most {MAX_ORDER}-grams")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no transcripts to build a language model from")
    if word_unit == "char":
        texts = [" ".join(t.replace(SPACE, "")) for t in texts]
    if transcript_weight < 1:
        raise ValueError(f"transcript_weight must be >= 1, not {transcript_weight}")
    known = {w for t in texts for w in t.split()}
    lines = texts * transcript_weight + [w for w in words if w not in known] + spell_out(list(spelled))
    corpus = out / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in lines), encoding="utf-8")
    counts = Counter(w for t in lines for w in t.split())
    if extra_text is not None:
        with open_text(extra_text) as src, corpus.open("a", encoding="utf-8") as dst:
            for line in src:
                if line.strip():
                    dst.write(line if line.endswith("\n") else line + "\n")
                    counts.update(line.split())
    (out / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in counts.most_common()), encoding="utf-8")
    spelling = Vocabulary(tuple(sorted({SPACE, *"".join(counts)})))  # the words' own characters
    write_lexicon(sorted(counts), out / "lexicon.txt", spelling)
    arpa = out / "lm.arpa"
    cmd = [lmplz or find_lmplz(), "-o", str(order), "--discount_fallback", "-S", "256M", "-T", str(out)]
    with corpus.open() as stdin, (out / "lm.arpa.tmp").open("w") as stdout:
        run = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed on {corpus} ({run.returncode}): {run.stderr.strip()[-500:]}")
    os.replace(out / "lm.arpa.tmp", arpa)
    return {"corpus": corpus, "lm": arpa, "words": out / "words.txt", "lexicon": out / "lexicon.txt", **_binary(arpa)}


def _binary(arpa: Path) -> dict[str, Path]:
    """`arpa` in KenLM's binary format beside it (lm.bin), which beam search loads in preference, where
    build_binary is found: {"binary": path}, else {}."""
    binary = arpa.with_name("lm.bin")
    binary.unlink(missing_ok=True)  # never leave a binary of an older LM beside this one
    build_binary = find_kenlm("build_binary")
    if not build_binary:
        return {}
    run = subprocess.run([build_binary, str(arpa), str(binary) + ".tmp"], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{build_binary} failed on {arpa} ({run.returncode}): {run.stderr.strip()[-500:]}")
    os.replace(str(binary) + ".tmp", binary)
    return {"binary": binary}
