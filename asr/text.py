"""Transcript normalisation and the character vocabulary (CTC blank = index 0)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

BLANK = "<blank>"
SPACE = " "
# English letters, apostrophe and the word separator: enough for AN4 and most read speech.
ENGLISH_CHARS = (SPACE, "'", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")

_not_allowed = re.compile(r"[^A-Z' ]+")
_spaces = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Upper-case, drop characters outside A-Z and apostrophe, collapse whitespace."""
    text = _not_allowed.sub(" ", text.upper())
    return _spaces.sub(" ", text).strip()


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

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}


def vocabulary_report(texts: list[str], vocab: Vocabulary = Vocabulary()) -> dict:
    """Characters of `texts` with their counts, and the indices of texts holding characters outside `vocab`."""
    from collections import Counter

    counts = Counter(c for t in texts for c in t)
    known = set(vocab.chars)
    outside = {c: n for c, n in counts.items() if c not in known}
    bad = [i for i, t in enumerate(texts) if any(c not in known for c in t)]
    return {"counts": dict(counts.most_common()), "outside": outside, "bad_utterances": bad}
