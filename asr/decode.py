"""CTC decoding: model log-probabilities -> transcripts."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .text import Vocabulary


@dataclass(frozen=True)
class DecodingOptions:
    method: str = "greedy"          # greedy (beam search with an LM: see issue tracker)
    batch_seconds: float = 200.0    # padded audio per forward pass when decoding many files

    def __post_init__(self):
        if self.method != "greedy":
            raise ValueError(f"decoding method must be 'greedy', not {self.method!r}")


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """(N, T, V) log-probs + (N,) lengths -> per utterance the best path, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1).cpu()                                  # (N, T)
    out = []
    for path, n in zip(best, lengths.tolist()):
        path = path[:n]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]                               # first of each run
        out.append([i for i in path[keep].tolist() if i != 0])
    return out


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Vocabulary) -> list[str]:
    """(N, T, V) log-probs + (N,) lengths -> N transcripts with single spaces, no edge spaces."""
    return [" ".join(vocab.decode(ids).split()) for ids in greedy_ids(log_probs, lengths)]
