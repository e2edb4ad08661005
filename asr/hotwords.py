"""Hotwords: contextual biasing of beam search towards words and phrases a user names, without retraining.

    DecodingOptions(method="beam", hotwords=("PITTSBURGH", "JOHN SMITH:4"))      # a phrase, and its own boost
    asr transcribe --model M --hotwords "PITTSBURGH,JOHN SMITH:4" a.wav          # or --hotwords-file words.txt

The bias is a language model around the decoder's own (torchaudio's CTCDecoderLM, on flashlight's beam search):
every score the KenLM word LM gives (or nothing, without one) plus a bonus for each step along a hotword. With a
lexicon the steps are words (a hotword the lexicon lacks joins it: it can be emitted, at the LM's <unk> score);
without one they are tokens (characters or BPE pieces, the word's bonus spread over them). A prefix that does not
become its hotword gives its bonus back (when the next step leaves the phrase, or the utterance ends), so a
boost cannot buy a half-word. The boost is in the LM's log-probability units, scaled by lm_weight like them;
DEFAULT_BOOST was chosen on AN4 dev (recipes/an4/RESULTS.md, "Hotwords").
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

DEFAULT_BOOST = 4.0


@dataclass(frozen=True)
class Hotword:
    words: tuple[str, ...]
    boost: float = DEFAULT_BOOST           # per word of the phrase


def parse_hotwords(items) -> list[Hotword]:
    """`PHRASE` or `PHRASE:BOOST` strings (a phrase is words separated by spaces) -> Hotwords."""
    out = []
    for item in items:
        phrase, sep, boost = str(item).rpartition(":")
        if not sep or not re.fullmatch(r"-?\d+(\.\d*)?", boost.strip()):
            phrase, boost = str(item), ""
        words = tuple(phrase.split())
        if words:
            out.append(Hotword(words, float(boost) if boost else DEFAULT_BOOST))
    return out


def read_hotwords(path) -> list[str]:
    """A hotwords file: one `PHRASE` or `PHRASE<TAB or :>BOOST` a line, # comments."""
    from pathlib import Path

    lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [re.sub(r"\t+(-?[\d.]+)$", r":\1", line) for line in lines if line]


def prompt_hotwords(prompt: str) -> list[str]:
    """OpenAI's `prompt` as hotwords: its pieces between punctuation (names, terms), as whisper servers take it
    for context."""
    pieces = re.split(r"[\n,;.:!?()\"\u060c\u061b\u3001\u3002]+", prompt or "")
    return [p.strip() for p in pieces if p.strip()]


def fit(phrase: str, chars) -> str | None:
    """A phrase in the characters of a model's vocabulary: NFKC, case as the vocabulary has it, punctuation
    dropped; None when a character is still outside it."""
    text = unicodedata.normalize("NFKC", phrase)
    text = "".join(" " if unicodedata.category(c)[0] == "P" and c != "'" else c for c in text)
    letters = [c for c in chars if c.isalpha()]
    if letters and not any(c.islower() for c in letters):
        text = text.upper()
    elif letters and not any(c.isupper() for c in letters):
        text = text.lower()
    text = " ".join(text.split())
    return text if text and all(c in chars for c in text) else None


@dataclass
class _Node:
    children: dict = field(default_factory=dict)
    bonus: float = 0.0          # gained by stepping onto this node
    complete: bool = False      # a hotword ends here: its bonus is kept


class Trie:
    """Hotwords as sequences of LM units (word or token indices), each step's bonus on its node."""

    def __init__(self):
        self.root = _Node()

    def add(self, units: list[int], bonuses: list[float]) -> None:
        node = self.root
        for unit, bonus in zip(units, bonuses):
            node = node.children.setdefault(unit, _Node())
            node.bonus = max(node.bonus, bonus)
        node.complete = True


def biased_lm(inner, trie: Trie):
    """A CTCDecoderLM: `inner`'s scores (flashlight's KenLM or ZeroLM) plus the trie's bonuses, a broken
    prefix's given back (see the module doc)."""
    from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

    class BiasedLM(CTCDecoderLM):
        def __init__(self):
            CTCDecoderLM.__init__(self)
            self.info: dict = {}   # our state -> (inner state, trie node, bonus not yet kept, the step's score)

        def start(self, start_with_nothing: bool = False):
            self.info = {}                                 # a new utterance: a new tree of states
            state = CTCDecoderLMState()
            self.info[state] = (inner.start(start_with_nothing), trie.root, 0.0, 0.0)
            return state

        def score(self, state, unit: int):
            inner_state, node, pending, _ = self.info[state]
            child = state.child(unit)
            if child not in self.info:
                next_inner, lm = inner.score(inner_state, unit)
                step, bonus = node.children.get(unit), 0.0
                if step is None:                           # the phrase broke: its bonus back, maybe a new one
                    bonus, pending, step = -pending, 0.0, trie.root.children.get(unit)
                if step is not None:
                    bonus, pending = bonus + step.bonus, pending + step.bonus
                    if step.complete:
                        pending = 0.0
                self.info[child] = (next_inner, step if step is not None and step.children else trie.root, pending,
                                    lm + bonus)
            next_inner, node, pending, total = self.info[child]
            return child, total

        def finish(self, state):
            inner_state, _, pending, _ = self.info[state]
            _, lm = inner.finish(inner_state)
            return state, lm - pending

    return BiasedLM()
