"""Word n-gram language models (KenLM's lmplz) and lexicons, for beam search with `asr.decode`.

    asr lm --manifest data/an4/train.jsonl --out data/an4/lm      # lm.arpa, lexicon.txt, words.txt
    asr lm --manifest data/an4/train.jsonl --out data/an4/lm --order 4 --transcript-weight 10 \
        --words data/an4/an4.dic --spell-words data/an4/lm/names.txt   # + task words, spelled names

`lmplz` is built from the `kenlm` source distribution by `make install` (into .venv/bin); any
other lmplz on the PATH, or $LMPLZ, works too.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .text import SPACE, BPEVocabulary, Vocabulary


def write_lexicon(words: list[str], path: str | Path, vocab: Vocabulary | BPEVocabulary = Vocabulary()) -> int:
    """One `WORD<TAB>spelling` line per word, spelled in `vocab`'s decoder tokens (characters:
    `W O R D |`; BPE: `▁WO RD`); returns the number written. Words `vocab` cannot spell raise ValueError."""
    with Path(path).open("w") as f:
        for w in words:
            f.write(f"{w}\t{vocab.spell(w)}\n")
    return len(words)


def read_lexicon_words(path: str | Path) -> list[str]:
    """The words (first column) of a lexicon file."""
    with Path(path).open() as f:
        return [line.split("\t", 1)[0].split(" ", 1)[0] for line in f if line.strip()]


def find_kenlm(tool: str = "lmplz") -> str | None:
    """A KenLM program (lmplz, build_binary): $LMPLZ / $BUILD_BINARY, .venv/bin (make install), beside this
    Python (a virtualenv's bin), or the PATH."""
    for candidate in (os.environ.get(tool.upper()), str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / tool),
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
    with Path(path).open() as f:
        for line in f:
            if line.strip():
                words[re.sub(r"\(\d+\)$", "", line.split()[0])] = None
    return list(words)


def spell_out(words: list[str]) -> list[str]:
    """Words as upper-case letter sequences (`Jennifer` -> `J E N N I F E R`), the way spelled names are
    transcribed; words of fewer than two letters or with anything but ASCII letters are left out."""
    return [" ".join(w.upper()) for w in words if len(w) > 1 and w.isascii() and w.isalpha()]


def build_lm(texts: list[str], out_dir: str | Path, order: int = 3, lmplz: str | None = None,
             transcript_weight: int = 1, words: list[str] = (), spelled: list[str] = ()) -> dict[str, Path]:
    """Train an `order`-gram ARPA LM on `texts` (normalised transcripts) and write its lexicon.

    The LM's text is the transcripts `transcript_weight` times (an n-gram LM's counts are its
    weights), then each of `words` the transcripts lack as a one-word sentence (a task dictionary:
    the words enter the lexicon with a unigram probability), then `spelled` as letter sequences
    (`spell_out`: word spellings teach the LM which letter follows which in a spelled name, while
    the lexicon stays the transcripts' words and letters). The lexicon holds every word of that text.
    Writes out_dir/corpus.txt, lm.arpa, words.txt (word counts) and lexicon.txt (spelled in
    characters; beam search respells it in its model's own tokens), and lm.bin (the same LM in
    KenLM's binary format) where build_binary is found; returns their paths.
    Kneser-Ney discounts fall back to defaults when a small corpus cannot estimate them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no transcripts to build a language model from")
    if transcript_weight < 1:
        raise ValueError(f"transcript_weight must be >= 1, not {transcript_weight}")
    known = {w for t in texts for w in t.split()}
    lines = texts * transcript_weight + [w for w in words if w not in known] + spell_out(list(spelled))
    corpus = out / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in lines))
    counts = Counter(w for t in lines for w in t.split())
    (out / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in counts.most_common()))
    spelling = Vocabulary(tuple(sorted({SPACE, *"".join(counts)})))  # the words' own characters
    write_lexicon(sorted(counts), out / "lexicon.txt", spelling)
    arpa = out / "lm.arpa"
    cmd = [lmplz or find_lmplz(), "-o", str(order), "--discount_fallback", "-S", "256M", "-T", str(out)]
    with corpus.open() as stdin, (out / "lm.arpa.tmp").open("w") as stdout:
        run = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed on {corpus} ({run.returncode}): {run.stderr.strip()[-500:]}")
    os.replace(out / "lm.arpa.tmp", arpa)
    paths = {"corpus": corpus, "lm": arpa, "words": out / "words.txt", "lexicon": out / "lexicon.txt"}
    (out / "lm.bin").unlink(missing_ok=True)  # never leave a binary of an older LM beside this one
    build_binary = find_kenlm("build_binary")
    if build_binary:  # the same LM in KenLM's binary format, which beam search loads in preference
        run = subprocess.run([build_binary, str(arpa), str(out / "lm.bin.tmp")], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{build_binary} failed on {arpa} ({run.returncode}): {run.stderr.strip()[-500:]}")
        os.replace(out / "lm.bin.tmp", out / "lm.bin")
        paths["binary"] = out / "lm.bin"
    return paths
