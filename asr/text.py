"""Transcript normalisation in any script (the token vocabularies built on it: asr.tokens).

`TextConfig` says how a recipe normalises text; `normalize_text` applies it, the same way to training targets
(at prepare time) and to scoring (`asr.score`). The text is Unicode throughout: NFKC, case folded where the
script has case, punctuation found by its Unicode category, letters and combining marks kept (accents too,
unless asked), the invisible marks of right-to-left and joined scripts handled, digits of any script spelled
in the recipe's language (num2words) or kept. The characters a model writes in (`TextConfig.alphabet`) are
English's fixed 28 (today's default, which AN4 and the English recipes keep), characters a config lists, or
those the training transcripts use (`charset: data`, learned by `learn_alphabet`, recorded in text.json).
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

BLANK = "<blank>"
SPACE = " "
WORD_BOUNDARY = "|"    # flashlight's name for the character vocabulary's space
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
PUNCTUATION = ".,?!;:-\""  # English keeps these with punctuation="keep"; the apostrophe is part of words, always kept
# English letters, apostrophe and the word separator: enough for AN4 and most read speech.
ENGLISH_CHARS = (SPACE, "'", *LETTERS)
CHARSETS = ("english", "data")
# Characters that are invisible: bidirectional marks (LRM, RLM, ALM, embeddings, overrides, isolates), the BOM,
# the soft hyphen and the Arabic tatweel (a stretched joint, not a letter). Dropped.
INVISIBLE = frozenset("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff\u00ad\u0640")
JOINERS = frozenset("\u200c\u200d")   # ZWNJ, ZWJ: part of a word between two of its letters (Persian: می‌روم)
WORD_SEPARATORS = frozenset("\u200b")  # the zero-width space: a word break in Thai, Khmer, Lao
# Spellings a language writes with two code points, unified to its own (Persian: Arabic yeh and kaf)
LETTER_VARIANTS = {"fa": {"\u064a": "\u06cc", "\u0649": "\u06cc", "\u0643": "\u06a9"}}


@dataclass(frozen=True)
class TextConfig:
    """How transcripts are normalised and which characters they are written in; one per recipe, applied to
    training targets and to scoring. The defaults are English's (AN4's): upper case, the 28 English
    characters, accents stripped, numbers spelled."""
    case: str = "upper"          # upper | lower | keep: folded where the script has case (Latin, Cyrillic, Greek...)
    punctuation: str = "drop"    # drop | keep: Unicode punctuation (P*) becomes a space, or stays
    numbers: str = "spell"       # spell (digits of any script read out in `language`) | keep (digits join the alphabet)
    charset: str | tuple[str, ...] = "auto"  # english: space, ' and A-Z (+ digits and . , ? ! ; : - " when kept);
    #                              data: learned from the training transcripts; or the characters themselves;
    #                              auto: english for language en, else data
    language: str = "en"         # ISO 639 code: numbers spelled in it (num2words), its letter variants unified;
    #                              "" when unknown (numbers then stay digits)
    accents: str = "auto"        # strip | keep | auto: stripped for the english charset (CAFÉ -> CAFE), else kept
    word_unit: str = "word"      # word | char: scripts written without spaces (zh, ja, th) count characters as words
    min_count: int = 3           # charset data: characters rarer in the training transcripts are left out
    learned: tuple[str, ...] = ()  # charset data: the characters learned (prepare records them in text.json)

    def __post_init__(self):
        for name, allowed in (("case", ("upper", "lower", "keep")), ("punctuation", ("drop", "keep")),
                              ("numbers", ("spell", "keep")), ("accents", ("auto", "strip", "keep")),
                              ("word_unit", ("word", "char"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"text.{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.charset == "auto":
            object.__setattr__(self, "charset", "english" if self.language == "en" else "data")
        if isinstance(self.charset, str) and self.charset not in CHARSETS:
            raise ValueError(f"text.charset must be english, data, auto or a list of characters, not "
                             f"{self.charset!r}")
        if self.min_count < 1:
            raise ValueError(f"text.min_count must be at least 1, not {self.min_count}")
        for name in ("charset", "learned"):                  # lists from YAML or JSON: tuples, comparable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def english(self) -> bool:
        return self.charset == "english"

    @property
    def strips_accents(self) -> bool:
        return self.accents == "strip" or (self.accents == "auto" and self.english)

    @property
    def alphabet(self) -> tuple[str, ...]:
        """Every character normalised text can hold: the character vocabulary's tokens after the blank. For
        charset data, what was learned (ValueError before it is)."""
        if self.english:
            letters = {"upper": LETTERS, "lower": LETTERS.lower(), "keep": LETTERS + LETTERS.lower()}[self.case]
            return (SPACE, "'", *letters, *(DIGITS if self.numbers == "keep" else ""),
                    *(PUNCTUATION if self.punctuation == "keep" else ""))
        chars = self.learned if self.charset == "data" else self.charset
        if not chars:
            raise ValueError("text.charset is data: the alphabet is learned from the training transcripts "
                             "(asr prepare records it in text.json; asr train learns it)")
        return chars if SPACE in chars or self.word_unit == "char" else (SPACE, *chars)

    def with_alphabet_of(self, texts: Iterable[str]) -> TextConfig:
        """For charset data: this config with the alphabet learned from `texts` (normalised training
        transcripts), unless it has one; any other config as it is."""
        if self.charset != "data" or self.learned:
            return self
        return replace(self, learned=learn_alphabet(texts, self.min_count)[0])

    def same_normalisation(self, other: TextConfig) -> bool:
        """Whether text normalised by `other` is normalised as this config asks: the same settings, and for
        charset data, the same learned alphabet unless this config has learned none yet (it takes other's)."""
        if replace(self, learned=()) != replace(other, learned=()):
            return False
        return not self.learned or self.learned == other.learned


def learn_alphabet(texts: Iterable[str], min_count: int = 3) -> tuple[tuple[str, ...], dict[str, int]]:
    """The characters of normalised `texts` that occur at least `min_count` times (the space first, then by code
    point), and the rarer ones with their counts: those are mapped to a near character of the alphabet where
    one is (an accented letter to its letter, a stray mark dropped) or leave their utterances out of training."""
    counts = Counter(c for t in texts for c in t)
    counts.pop(SPACE, None)
    kept = sorted(c for c, n in counts.items() if n >= min_count)
    if not kept:
        raise ValueError(f"no character occurs {min_count} times in the training transcripts: nothing to learn")
    return (SPACE, *kept), {c: n for c, n in sorted(counts.items()) if n < min_count}


ENGLISH_LETTER_SHARE = 0.99   # transcripts whose letters are this much A-Z are English's to normalise
WITHOUT_SPACES_SHARE = 0.1    # transcripts with fewer spaces than this share are written without them (zh, ja, th)


def detect_text_config(texts: Iterable[str]) -> TextConfig:
    """The TextConfig a set of raw transcripts asks for, when nobody says: English's where their letters are
    A-Z (a stray accented loanword is stripped, as English always has), else the characters of the data in
    lower case, the language unknown (digits stay digits), and characters as words where the transcripts are
    written without spaces."""
    texts = [unicodedata.normalize("NFKC", t) for t in texts if t.strip()]
    letters = [c for t in texts for c in t if unicodedata.category(c)[0] == "L"]
    if not letters or sum(c.isascii() for c in letters) >= ENGLISH_LETTER_SHARE * len(letters):
        return TextConfig()
    long = [t.strip() for t in texts if len(t.strip()) >= 8]
    spaced = sum(SPACE in t for t in long)
    unit = "char" if long and spaced < WITHOUT_SPACES_SHARE * len(long) else "word"
    return TextConfig(charset="data", case="lower", language="", word_unit=unit)


_spaces = re.compile(r"\s+")
_number = re.compile(r"(?<![\d.,])(\d+(?:,\d{3})*)(?:\.(\d+))?(st|nd|rd|th|s)?(?!\d)", re.IGNORECASE)
_digits = re.compile(r"\d+(?:[.\u066b]\d+)?")          # any script's digits, a decimal part after . or ٫


def normalize_text(text: str, cfg: TextConfig = TextConfig()) -> str:
    """Normalise one transcript per `cfg` (see the module doc and TextConfig); idempotent."""
    return _restrict(_normalize(text, cfg), cfg)


def _normalize(text: str, cfg: TextConfig) -> str:
    """Every step but the last: the text as `cfg` writes it, before its alphabet is applied."""
    if not text.isascii():                        # (ASCII is already NFKC and has no marks: most English, fast)
        text = unicodedata.normalize("NFKC", text)
        if not cfg.english:                       # (the English alphabet makes any of them a space, as it always has)
            text = _invisible(text)
        if cfg.language in LETTER_VARIANTS:
            text = text.translate(str.maketrans(LETTER_VARIANTS[cfg.language]))
        if cfg.strips_accents:
            text = unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFD", text)
                                                        if not unicodedata.combining(c)))
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    if cfg.numbers == "spell":
        text = _spell_numbers(text, cfg.language)
    if cfg.case != "keep":
        text = text.upper() if cfg.case == "upper" else text.lower()
    if not cfg.english:                                              # (the English alphabet does this itself)
        text = "".join(_kept(c, cfg) for c in text)
    text = _spaces.sub(SPACE, text).strip()
    return text.replace(SPACE, "") if cfg.word_unit == "char" else text


def _invisible(text: str) -> str:
    """Invisible marks dropped; a joiner kept only inside a word, a zero-width space made a space."""
    out = []
    for i, c in enumerate(text):
        if c in INVISIBLE:
            continue
        if c in JOINERS and not (0 < i < len(text) - 1 and _in_word(text[i - 1]) and _in_word(text[i + 1])):
            continue
        out.append(SPACE if c in WORD_SEPARATORS else c)
    return "".join(out)


def _in_word(c: str) -> bool:
    return unicodedata.category(c)[0] in "LM"


def _kept(c: str, cfg: TextConfig) -> str:
    """A character as the text keeps it: letters, marks, joiners, the apostrophe; digits where numbers are kept
    (or could not be spelled); punctuation where asked; anything else (symbols, controls) a space."""
    kind = unicodedata.category(c)
    if kind[0] in "LM" or c == "'" or c in JOINERS:
        return c
    if kind == "Nd" or (kind[0] == "P" and cfg.punctuation == "keep"):
        return c
    return SPACE


def _spell_numbers(text: str, language: str) -> str:
    """Digit runs (any script) read out: English as this module always has, other languages by num2words; in a
    language num2words does not know (or none), the digits stay."""
    if language == "en":
        text = _number.sub(lambda m: f" {spell_number(m.group(1), m.group(2), m.group(3))} ", text)
        return text.replace("%", " PERCENT ")
    if not language or not any(c.isdigit() for c in text):
        return text
    try:
        from num2words import num2words
        num2words(0, lang=language)
    except (ImportError, NotImplementedError):
        return text
    return _digits.sub(lambda m: f" {_read_number(m.group(0), language)} ", text)


def _read_number(digits: str, language: str) -> str:
    from decimal import Decimal

    from num2words import num2words

    ascii_digits = "".join(str(unicodedata.digit(c)) if c.isdigit() else "." for c in digits)
    value = Decimal(ascii_digits) if "." in ascii_digits else int(ascii_digits)
    try:
        return num2words(value, lang=language)
    except (NotImplementedError, OverflowError, ValueError, TypeError):
        return digits


def _restrict(text: str, cfg: TextConfig) -> str:
    """The last step: the text in the config's alphabet. A character outside it becomes its nearest in it
    where there is one (é -> e, a stray mark dropped); else, for the english charset or listed characters, a
    space; for a learned alphabet it stays, and the checks name it (its utterance cannot be trained on). Before
    a data alphabet is learned: the text as it is."""
    if cfg.english:
        return _spaces.sub(SPACE, text.translate(_outside(cfg.alphabet))).strip()
    if cfg.charset == "data" and not cfg.learned:
        return text
    alphabet = frozenset(cfg.alphabet)
    if all(c in alphabet for c in text):
        return text
    out = "".join(c if c in alphabet else _nearest(c, alphabet, SPACE if cfg.charset != "data" else c)
                  for c in text)
    out = _spaces.sub(SPACE, out).strip()
    return out.replace(SPACE, "") if cfg.word_unit == "char" else out


def _nearest(c: str, alphabet: frozenset, otherwise: str) -> str:
    """`c` as characters of `alphabet`: its decomposition less the marks the alphabet lacks (ė -> e; a lone
    mark -> nothing), or `otherwise` when a base character is missing too."""
    parts = unicodedata.normalize("NFD", c)
    kept = "".join(p for p in parts if p in alphabet or not unicodedata.combining(p))
    return kept if all(p in alphabet for p in kept) else otherwise


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
    if cfg.english:       # as this has always said it: accents, case, numbers and . , quotes are not news
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        spelled = set("0123456789%") if cfg.numbers == "spell" else set()
        if cfg.case != "keep":
            text = text.upper() if cfg.case == "upper" else text.lower()
        allowed = set(cfg.alphabet) | spelled | set("\u2019\u2018\u201c\u201d.,")
        return "".join(sorted({c for c in text if c not in allowed and not c.isspace()}))
    if cfg.charset == "data":          # a learned alphabet drops nothing: a rare character stays, and is named
        return ""
    alphabet = frozenset(cfg.alphabet)
    return "".join(sorted({c for c in _normalize(text, cfg) if c not in alphabet and not c.isspace()
                           and _nearest(c, alphabet, "") == ""}))


def outside_alphabet(text: str, cfg: TextConfig) -> str:
    """The characters of normalised `text` outside `cfg.alphabet` (a learned alphabet's rare ones), sorted."""
    alphabet = frozenset(cfg.alphabet)
    return "".join(sorted({c for c in text if c not in alphabet}))


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
