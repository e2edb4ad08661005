"""The token vocabularies a model writes in: characters (`Vocabulary`) or sentencepiece BPE pieces (`BPEVocabulary`,
`TrainConfig.tokens = "bpe"`, trained on the training transcripts by `train_bpe`); CTC blank = 0 in both.

Both map text (normalised by asr.text) to ids and back, split ids into words, spell words for a lexicon and save
themselves into checkpoints (`vocabulary_from_state` rebuilds either).
"""
from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .text import BLANK, ENGLISH_CHARS, SPACE, WORD_BOUNDARY

LARGE_SCRIPT = 500      # more distinct characters (Chinese, Japanese): BPE covers the rare ones with UTF-8 bytes


@dataclass(frozen=True)
class Vocabulary:
    """Maps characters to ids; id 0 is the CTC blank, ids 1.. are `chars`. `word_unit` "char": a script written
    without spaces, each character a word (for word times, lexicons and the LM)."""

    chars: tuple[str, ...] = ENGLISH_CHARS
    word_unit: str = "word"

    @property
    def separator(self) -> str:
        """What joins words into text: a space, or nothing where characters are the words."""
        return "" if self.word_unit == "char" else SPACE

    @property
    def boundary_token(self) -> str | None:
        """flashlight's word-boundary token (the space, spelled '|'); none where characters are the words."""
        return None if self.word_unit == "char" else WORD_BOUNDARY

    @property
    def tokens(self) -> list[str]:
        return [BLANK, *self.chars]

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        """Text (already normalised) -> ids; unknown characters raise ValueError naming them."""
        index = self._index
        try:
            return [index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary (text: {text!r})") from None

    def decode(self, ids: list[int]) -> str:
        """Ids (blanks and repeats already removed) -> text."""
        return "".join(self.chars[i - 1] for i in ids if i > 0)

    def word_spans(self, ids: list[int]) -> list[tuple[int, int]]:
        """[start, end) index ranges of `ids` holding one word each (words are separated by spaces, or are the
        characters)."""
        space = self._index.get(SPACE)
        if self.word_unit == "char":
            return [(i, i + 1) for i, token in enumerate(ids) if token != space]
        spans, start = [], 0
        for i, token in enumerate([*ids, space]):
            if token == space:
                if i > start:
                    spans.append((start, i))
                start = i + 1
        return spans

    # flashlight's decoder: token names (space -> '|'), the word-boundary token, lexicon spellings
    @property
    def decoder_tokens(self) -> list[str]:
        return [WORD_BOUNDARY if t == SPACE else t for t in self.tokens]

    def spell(self, word: str) -> str:
        """'HELLO' -> 'H E L L O |': a word's spelling in decoder tokens, ending at a word boundary (where
        characters are the words: the character alone).

        (The model emits no space after an utterance's last word: `asr.decode.BeamSearch` appends one
        word-boundary frame so that word completes.)
        """
        self.encode(word)  # ValueError names a character outside the vocabulary
        return " ".join([*word, *([self.boundary_token] if self.boundary_token else [])])

    def state(self) -> dict:
        unit = {"word_unit": "char"} if self.word_unit == "char" else {}    # older checkpoints: words
        return {"kind": "chars", "chars": list(self.chars), **unit}

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}


class BPEVocabulary:
    """Sentencepiece BPE pieces: id 0 is the CTC blank, id i + 1 is sentencepiece's piece i.

    Built from a serialised sentencepiece model (`train_bpe` writes one), which it carries into
    checkpoints, so a checkpoint alone rebuilds it.
    """

    boundary_token = None  # words start at pieces beginning with '▁'; there is no separator token
    separator = SPACE
    word_unit = "word"

    def __init__(self, model: bytes):
        import sentencepiece as spm

        self.model = bytes(model)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model)
        self.tokens = [BLANK, *(self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size()))]
        self._unk = self.sp.unk_id() + 1

    @classmethod
    def load(cls, path: str | Path) -> BPEVocabulary:
        return cls(Path(path).read_bytes())

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, BPEVocabulary) and other.model == self.model

    def __hash__(self) -> int:
        return hash(self.model)

    def __getstate__(self) -> dict:
        return {"model": self.model}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model"])

    def encode(self, text: str) -> list[int]:
        """Text (already normalised) -> piece ids; text the pieces cannot spell raises ValueError naming it."""
        ids = [i + 1 for i in self.sp.encode(text, out_type=int)]
        if self._unk in ids:
            unknown = sorted({c for c in text if c != SPACE and self.sp.piece_to_id(c) == self.sp.unk_id()})
            raise ValueError(f"characters {unknown} are not in the BPE vocabulary (text: {text!r})")
        return ids

    def decode(self, ids: list[int]) -> str:
        """Piece ids (blanks and repeats already removed) -> text."""
        return self.sp.decode([i - 1 for i in ids if i > 0])

    def word_spans(self, ids: list[int]) -> list[tuple[int, int]]:
        """[start, end) index ranges of `ids` holding one word each: a word starts at a '▁' piece."""
        starts = [i for i, t in enumerate(ids) if i == 0 or self.tokens[t].startswith("\u2581")]
        spans = [(s, e) for s, e in zip(starts, [*starts[1:], len(ids)])]
        return [(s, e) for s, e in spans if self.decode(ids[s:e]).strip()]

    @property
    def decoder_tokens(self) -> list[str]:
        return self.tokens

    def spell(self, word: str) -> str:
        """'HELLO' -> '▁HE LLO': a word's spelling in pieces, for a lexicon."""
        self.encode(word)
        return " ".join(self.sp.encode(word, out_type=str))

    def state(self) -> dict:
        return {"kind": "bpe", "model": base64.b64encode(self.model).decode("ascii")}


def vocabulary_from_state(state: dict | list) -> Vocabulary | BPEVocabulary:
    """Rebuild a vocabulary from `state()` (or from an older checkpoint's list of characters)."""
    if isinstance(state, list):
        return Vocabulary(tuple(state))
    if state["kind"] == "chars":
        return Vocabulary(tuple(state["chars"]), state.get("word_unit", "word"))
    if state["kind"] == "bpe":
        return BPEVocabulary(base64.b64decode(state["model"]))
    raise ValueError(f"unknown vocabulary kind {state['kind']!r}")


def train_bpe(texts: list[str], vocab_size: int, out: str | Path) -> BPEVocabulary:
    """Train a sentencepiece BPE model of `vocab_size` pieces on normalised `texts`; writes `out` (.model).

    Deterministic for the same texts. Every character of the texts is covered, or, in a script of more
    than LARGE_SCRIPT characters, the 99.95 % most frequent and the rest spelled as UTF-8 bytes (sentencepiece's
    byte fallback); a size the texts cannot support raises ValueError saying the largest that works.
    """
    import io

    import sentencepiece as spm

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no transcripts to train BPE pieces on")
    model = io.BytesIO()
    large = len({c for t in texts for c in t}) > LARGE_SCRIPT     # Chinese, Japanese: rare characters as bytes
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="bpe",
            character_coverage=0.9995 if large else 1.0, byte_fallback=large,
            normalization_rule_name="identity", bos_id=-1, eos_id=-1, unk_id=0,
            hard_vocab_limit=True, num_threads=1, minloglevel=2)
    except RuntimeError as e:
        raise ValueError(f"cannot train {vocab_size} BPE pieces on {len(texts)} transcripts: {e}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.getvalue())
    return BPEVocabulary(model.getvalue())


def vocabulary_report(texts: list[str], vocab: Vocabulary = Vocabulary()) -> dict:
    """Characters of `texts` with their counts, and the indices of texts holding characters outside `vocab`."""
    counts = Counter(c for t in texts for c in t)
    known = set(vocab.chars)
    outside = {c: n for c, n in counts.items() if c not in known}
    bad = [i for i, t in enumerate(texts) if any(c not in known for c in t)]
    return {"counts": dict(counts.most_common()), "outside": outside, "bad_utterances": bad}
