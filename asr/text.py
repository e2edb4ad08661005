"""Transcript normalisation and the token vocabularies: characters or BPE pieces (CTC blank = index 0).

`TextConfig` says how a recipe normalises text (case, punctuation, numbers); `normalize_text`
applies it, the same way to training targets (at prepare time) and to scoring (`asr.score`).
`Vocabulary` holds the characters such text can contain; `BPEVocabulary` holds sentencepiece
pieces trained on the training transcripts (`TrainConfig.tokens = "bpe"`). Both map text to ids
and back, split ids into words, spell words for a lexicon and save themselves into checkpoints.
"""
from __future__ import annotations

import base64
import functools
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

BLANK = "<blank>"
SPACE = " "
WORD_BOUNDARY = "|"    # flashlight's name for the character vocabulary's space
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
PUNCTUATION = ".,?!;:-\""  # kept with punctuation="keep"; the apostrophe is part of words and always kept
# English letters, apostrophe and the word separator: enough for AN4 and most read speech.
ENGLISH_CHARS = (SPACE, "'", *LETTERS)


@dataclass(frozen=True)
class TextConfig:
    """How transcripts are normalised; one per recipe, applied to training targets and to scoring."""
    case: str = "upper"          # upper | lower | keep
    punctuation: str = "drop"    # drop | keep (. , ? ! ; : - ")
    numbers: str = "spell"       # spell ("42" -> "FORTY TWO") | keep (digits stay, and join the vocabulary)

    def __post_init__(self):
        for name, allowed in (("case", ("upper", "lower", "keep")), ("punctuation", ("drop", "keep")),
                              ("numbers", ("spell", "keep"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"text.{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")

    @property
    def alphabet(self) -> tuple[str, ...]:
        """Every character normalised text can hold: the character vocabulary's tokens after the blank."""
        letters = {"upper": LETTERS, "lower": LETTERS.lower(), "keep": LETTERS + LETTERS.lower()}[self.case]
        return (SPACE, "'", *letters, *(DIGITS if self.numbers == "keep" else ""),
                *(PUNCTUATION if self.punctuation == "keep" else ""))


_spaces = re.compile(r"\s+")
_number = re.compile(r"(?<![\d.,])(\d+(?:,\d{3})*)(?:\.(\d+))?(st|nd|rd|th|s)?(?!\d)", re.IGNORECASE)


def normalize_text(text: str, cfg: TextConfig = TextConfig()) -> str:
    """Normalise one transcript per `cfg`: accents stripped, numbers spelled (or kept), case set,
    characters outside `cfg.alphabet` dropped, whitespace collapsed. Idempotent."""
    if not text.isascii():                       # (ASCII has no accents to strip: most transcripts, fast)
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    if cfg.numbers == "spell":
        text = _number.sub(lambda m: f" {spell_number(m.group(1), m.group(2), m.group(3))} ", text)
        text = text.replace("%", " PERCENT ")
    if cfg.case != "keep":
        text = text.upper() if cfg.case == "upper" else text.lower()
    text = text.translate(_outside(cfg.alphabet))           # what the alphabet lacks -> space
    return _spaces.sub(SPACE, text).strip()


class _Outside(dict):
    """str.translate's table for an alphabet: its characters kept, any other a space (filled in as met)."""

    def __init__(self, alphabet):
        super().__init__()
        self.alphabet = frozenset(alphabet)

    def __missing__(self, code: int) -> str:
        self[code] = chr(code) if chr(code) in self.alphabet else SPACE
        return self[code]


@functools.lru_cache(maxsize=16)
def _outside(alphabet: tuple[str, ...]) -> _Outside:
    return _Outside(alphabet)


def dropped_characters(text: str, cfg: TextConfig = TextConfig()) -> str:
    """The characters of `text` that `normalize_text` drops for want of a place in `cfg.alphabet` (not those
    it maps: accents, case, spelled numbers), sorted, for saying so."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    spelled = set("0123456789%") if cfg.numbers == "spell" else set()
    if cfg.case != "keep":
        text = text.upper() if cfg.case == "upper" else text.lower()
    allowed = set(cfg.alphabet) | spelled | set("\u2019\u2018\u201c\u201d.,")
    return "".join(sorted({c for c in text if c not in allowed and not c.isspace()}))


_ONES = ("ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN FIFTEEN "
         "SIXTEEN SEVENTEEN EIGHTEEN NINETEEN").split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_SCALES = ((10 ** 12, "TRILLION"), (10 ** 9, "BILLION"), (10 ** 6, "MILLION"), (1000, "THOUSAND"), (100, "HUNDRED"))
_ORDINAL = {"ONE": "FIRST", "TWO": "SECOND", "THREE": "THIRD", "FIVE": "FIFTH", "EIGHT": "EIGHTH", "NINE": "NINTH",
            "TWELVE": "TWELFTH"}


def _cardinal(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{_cardinal(head)} {name}" + ("" if rest == 0 else " " + _cardinal(rest))
    raise AssertionError(n)


def spell_number(digits: str, decimals: str | None = None, suffix: str | None = None) -> str:
    """'1,204' -> 'ONE THOUSAND TWO HUNDRED FOUR'; decimals digit by digit ('3', '14' -> 'THREE POINT ONE
    FOUR'); an ordinal suffix ('21', 'st') -> 'TWENTY FIRST'; four digits that look like a year are read
    as one ('1997' -> 'NINETEEN NINETY SEVEN', '1990s' -> 'NINETEEN NINETIES'). Numbers of 16 digits or
    more go digit by digit."""
    plain = "," not in digits and not decimals and suffix in (None, "s", "S")
    digits = digits.replace(",", "")
    if plain and len(digits) == 4 and (1100 <= int(digits) <= 1999 or 2010 <= int(digits) <= 2099):
        words = _year(int(digits))
    else:
        words = " ".join(_ONES[int(d)] for d in digits) if len(digits) > 15 else _cardinal(int(digits))
    if suffix and not decimals:
        head, _, last = words.rpartition(" ")
        if suffix.lower() == "s":   # 1990s -> NINETEEN NINETIES
            last = last[:-1] + "IES" if last.endswith("Y") else last + ("ES" if last.endswith("X") else "S")
        else:
            last = _ORDINAL.get(last) or (last[:-1] + "IETH" if last.endswith("Y") else last + "TH")
        words = f"{head} {last}".strip()
    if decimals:
        words += " POINT " + " ".join(_ONES[int(d)] for d in decimals)
    return words


def _year(n: int) -> str:
    """1997 -> NINETEEN NINETY SEVEN, 1905 -> NINETEEN OH FIVE, 1900 -> NINETEEN HUNDRED."""
    head, tail = divmod(n, 100)
    rest = "HUNDRED" if tail == 0 else ("OH " + _ONES[tail] if tail < 10 else _cardinal(tail))
    return f"{_cardinal(head)} {rest}"


@dataclass(frozen=True)
class Vocabulary:
    """Maps characters to ids; id 0 is the CTC blank, ids 1.. are `chars`."""

    chars: tuple[str, ...] = ENGLISH_CHARS

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
        """[start, end) index ranges of `ids` holding one word each (words are separated by spaces)."""
        space = self._index.get(SPACE)
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

    boundary_token = WORD_BOUNDARY

    def spell(self, word: str) -> str:
        """'HELLO' -> 'H E L L O |': a word's spelling in decoder tokens, ending at a word boundary.

        (The model emits no space after an utterance's last word: `asr.decode.BeamSearch` appends one
        word-boundary frame so that word completes.)
        """
        self.encode(word)  # ValueError names a character outside the vocabulary
        return " ".join([*word, WORD_BOUNDARY])

    def state(self) -> dict:
        return {"kind": "chars", "chars": list(self.chars)}

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}


class BPEVocabulary:
    """Sentencepiece BPE pieces: id 0 is the CTC blank, id i + 1 is sentencepiece's piece i.

    Built from a serialised sentencepiece model (`train_bpe` writes one), which it carries into
    checkpoints, so a checkpoint alone rebuilds it.
    """

    boundary_token = None  # words start at pieces beginning with '▁'; there is no separator token

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
        return Vocabulary(tuple(state["chars"]))
    if state["kind"] == "bpe":
        return BPEVocabulary(base64.b64decode(state["model"]))
    raise ValueError(f"unknown vocabulary kind {state['kind']!r}")


def train_bpe(texts: list[str], vocab_size: int, out: str | Path) -> BPEVocabulary:
    """Train a sentencepiece BPE model of `vocab_size` pieces on normalised `texts`; writes `out` (.model).

    Deterministic for the same texts. Every character of the texts is covered; a size the texts
    cannot support raises ValueError saying the largest that works.
    """
    import io

    import sentencepiece as spm

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no transcripts to train BPE pieces on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="bpe",
            character_coverage=1.0, normalization_rule_name="identity", bos_id=-1, eos_id=-1, unk_id=0,
            hard_vocab_limit=True, num_threads=1, minloglevel=2)
    except RuntimeError as e:
        raise ValueError(f"cannot train {vocab_size} BPE pieces on {len(texts)} transcripts: {e}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.getvalue())
    return BPEVocabulary(model.getvalue())


def vocabulary_report(texts: list[str], vocab: Vocabulary = Vocabulary()) -> dict:
    """Characters of `texts` with their counts, and the indices of texts holding characters outside `vocab`."""
    from collections import Counter

    counts = Counter(c for t in texts for c in t)
    known = set(vocab.chars)
    outside = {c: n for c, n in counts.items() if c not in known}
    bad = [i for i, t in enumerate(texts) if any(c not in known for c in t)]
    return {"counts": dict(counts.most_common()), "outside": outside, "bad_utterances": bad}
