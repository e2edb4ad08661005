"""CTC decoding: model log-probabilities -> token paths with frame times -> words.

Greedy (best frame by frame) or beam search through torchaudio's `ctc_decoder` (flashlight-text):
with a lexicon and a word n-gram LM from `asr.lm`, or lexicon-free (any spelling; no LM).
`DecodingOptions` says which and with what weights; `asr tune` saves tuned ones as JSON
(`save_decoding`), which `load_decoding` and `decoding_options` read back.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from .hotwords import Trie, biased_lm, fit, parse_hotwords
from .lm import lm_file, read_lexicon_words, write_lexicon
from .tokens import BPEVocabulary, Vocabulary
from .transcripts import Word


@dataclass(frozen=True)
class DecodingOptions:
    """How log-probs become words: the search and its LM."""
    method: str = "greedy"          # greedy | beam
    beam_size: int = 50             # hypotheses kept per frame (beam)
    beam_threshold: float = 25.0    # drop hypotheses this far (log) below the best (beam)
    lexicon: str | None = None      # word spellings (asr lm); None: lexicon-free, any character sequence
    lm: str | None = None           # KenLM ARPA / binary word LM; needs a lexicon
    lm_weight: float = 1.0          # LM log-prob scale (beam)
    word_score: float = 0.0         # added per word: > 0 favours more words (beam)
    threads: int = 0                # beam-search threads (0: one per CPU core)
    hotwords: tuple[str, ...] = ()  # words / phrases to favour, `PHRASE` or `PHRASE:BOOST` (asr.hotwords; beam)
    nbest: int = 1                  # alternatives per transcript, best first (beam)

    def __post_init__(self):
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be 'greedy' or 'beam', not {self.method!r}")
        if self.lm and not self.lexicon:
            raise ValueError("a word LM needs a lexicon (asr lm writes both)")
        if self.nbest < 1:
            raise ValueError(f"nbest must be at least 1, not {self.nbest}")
        if isinstance(self.hotwords, (list, str)):         # from JSON, or one phrase
            object.__setattr__(self, "hotwords", (self.hotwords,) if isinstance(self.hotwords, str)
                               else tuple(self.hotwords))

    @property
    def searches(self) -> bool:
        """Whether decoding is a beam search: asked for, or needed by hotwords or n-best lists."""
        return self.method == "beam" or bool(self.hotwords) or self.nbest > 1

    @property
    def label(self) -> str:
        """What a score line calls this decoding: greedy, beam, or beam + LM."""
        return "beam + LM" if self.lm else self.method


DECODING_JSON = "decoding.json"   # beside a decode dir's hyp.txt: the options it was decoded with

# Keys of decoding.json files written before chunking had options of its own (asr.transcribe.ChunkingOptions).
_CHUNKING_KEYS = {"batch_seconds", "chunk_seconds", "chunk_overlap", "min_pause"}


def save_decoding(path: str | Path, options: DecodingOptions, grid: list[dict] | None = None) -> None:
    """`options` (and the tuning grid behind them) as JSON: `asr tune` writes the recipe's decoding.json."""
    Path(path).write_text(json.dumps({"options": asdict(options), "grid": grid or []}, indent=1))


def decode_manifest(transcriber, utts, out_dir: str | Path) -> Path:
    """`asr decode`: every utterance of `utts` transcribed into out_dir/hyp.txt (`id<TAB>text`), and how into
    out_dir/decoding.json (the options, what `decoding_label` and the score lines read). Returns hyp.txt."""
    from .transcripts import write_transcripts

    results = transcriber.transcribe([u.input for u in utts])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_decoding(out / DECODING_JSON, transcriber.options)
    return write_transcripts(out / "hyp.txt", {u.id: r.text for u, r in zip(utts, results)}, "tsv")


def decoding_label(decode_dir: str | Path) -> str:
    """How a decode dir was decoded (greedy, beam, beam + LM), from the decoding.json `decode_manifest` wrote
    beside its hypotheses; "unrecorded" for a dir without one."""
    path = Path(decode_dir) / DECODING_JSON
    return load_decoding(path).label if path.exists() else "unrecorded"


def load_decoding(path: str | Path) -> DecodingOptions:
    """DecodingOptions saved by `save_decoding` (the tuned weights, LM and lexicon paths)."""
    try:
        saved = json.loads(Path(path).read_text())["options"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a decoding file written by asr tune ({e})") from e
    known = {f.name for f in fields(DecodingOptions)}
    unknown = set(saved) - known - _CHUNKING_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown decoding option(s) {', '.join(sorted(unknown))}")
    return DecodingOptions(**{k: v for k, v in saved.items() if k in known})


def decoding_options(decoding: str | Path | None = None, lm_dir: str | Path | None = None,
                     **changes) -> DecodingOptions:
    """Options from a saved decoding file (else the defaults), then beam search with `lm_dir`'s LM and
    lexicon (an `asr lm` dir), then `changes` (those that are not None), in that order."""
    options = load_decoding(decoding) if decoding else DecodingOptions()
    if lm_dir:
        options = replace(options, method="beam", lm=str(lm_file(lm_dir)), lexicon=str(Path(lm_dir) / "lexicon.txt"))
    return replace(options, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class TokenPath:
    """One utterance's decoded token ids (no blanks, repeats merged) and the frame emitting each, and,
    from lexicon beam search, the words the decoder chose and its score."""
    ids: list[int]
    frames: list[int]
    words: tuple[str, ...] | None = None
    score: float = 0.0


def greedy_paths(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[TokenPath]:
    """(N, T, V) log-probs + (N,) lengths -> per utterance the best path, repeats merged, blanks dropped.

    A fixed handful of tensor operations for the whole batch, then lists: a server's model thread pays
    for each tensor call in Python's GIL, shared with the event loop."""
    best = log_probs.argmax(-1).cpu()                                  # (N, T)
    first = torch.ones_like(best, dtype=torch.bool)
    first[:, 1:] = best[:, 1:] != best[:, :-1]                         # first frame of each run
    valid = torch.arange(best.shape[1])[None, :] < lengths.cpu()[:, None]
    keep = first & (best != 0) & valid                                 # (N, T)
    rows, frames = keep.nonzero(as_tuple=True)                         # row-major: each row's frames in order
    ids, frames, counts = best[rows, frames].tolist(), frames.tolist(), keep.sum(1).tolist()
    out, k = [], 0
    for c in counts:
        out.append(TokenPath(ids[k:k + c], frames[k:k + c]))
        k += c
    return out


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    return [p.ids for p in greedy_paths(log_probs, lengths)]


class BeamSearch:
    """Flashlight's CTC beam search over CPU log-probs.

    Flashlight's decoder holds Python's GIL, so threads do not run searches side by side (measured:
    2 threads 0.47 s vs 1 thread 0.45 s for AN4 test): many utterances are decoded by a pool of
    `threads` worker processes instead, each with its own decoder and LM.
    """

    def __init__(self, options: DecodingOptions, vocab: Vocabulary | BPEVocabulary, respell: bool = True):
        self.vocab = vocab
        self.tokens = vocab.decoder_tokens
        self._tmp = None
        fitted = [(h, fit(" ".join(h.words), vocab_chars(vocab))) for h in parse_hotwords(options.hotwords)]
        self.hotwords = [replace(h, words=tuple(f.split())) for h, f in fitted if f]
        self.dropped = [" ".join(h.words) for h, f in fitted if not f]        # outside the model's characters
        if self.dropped:
            print(f"hotwords left out: {', '.join(map(repr, self.dropped))}: characters this model cannot write",
                  file=sys.stderr, flush=True)
        if options.lexicon and respell:
            options = replace(options, lexicon=self._respell(options.lexicon))
        self.options = options
        self.threads = options.threads or os.cpu_count() or 1
        self._decoders: dict[int, object] = {}   # thread -> its decoder (each loads the LM once)
        self._pool: ProcessPoolExecutor | None = None

    def _respell(self, lexicon: str) -> str:
        """The lexicon's words spelled in this model's tokens (characters or BPE pieces), in a temporary file.

        Words the model cannot spell (characters outside its vocabulary) are left out: it could never emit them.
        """
        import tempfile

        words = []
        listed = read_lexicon_words(lexicon)
        for w in [*listed, *sorted({w for h in self.hotwords for w in h.words} - set(listed))]:   # hotwords too
            try:
                self.vocab.spell(w)
                words.append(w)
            except ValueError:
                pass
        if not words:
            raise ValueError(f"{lexicon}: the model's vocabulary can spell none of its words")
        self._tmp = tempfile.TemporaryDirectory(prefix="asr-lexicon-")
        path = Path(self._tmp.name) / "lexicon.txt"
        write_lexicon(words, path, self.vocab)
        return str(path)

    def _decoder(self):
        import threading

        from torchaudio.models.decoder import ctc_decoder

        key = threading.get_ident()
        if key not in self._decoders:
            o = self.options
            self._decoders[key] = ctc_decoder(
                lexicon=o.lexicon, tokens=self.tokens, lm=self._lm(), nbest=o.nbest, beam_size=o.beam_size,
                beam_threshold=o.beam_threshold, lm_weight=o.lm_weight, word_score=o.word_score,
                blank_token=self.tokens[0], sil_token=self.vocab.boundary_token or self.tokens[1], unk_word="<unk>")
        return self._decoders[key]

    def _lm(self):
        """What scores the search's steps: the KenLM file, or with hotwords that (or nothing) with their bonuses."""
        if not self.hotwords:
            return self.options.lm
        from flashlight.lib.text.decoder import ZeroLM
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import create_word_dict, load_words

        trie = Trie()
        if self.options.lexicon:                           # steps are words: the lexicon's word dictionary
            words = create_word_dict(load_words(self.options.lexicon))
            inner = KenLM(self.options.lm, words) if self.options.lm else ZeroLM()
            for h in self.hotwords:
                trie.add([words.get_index(w) for w in h.words], [h.boost] * len(h.words))
        else:                                              # steps are tokens: the word's boost spread over them
            inner = ZeroLM()
            for h in self.hotwords:
                units, bonuses = [], []
                for w in h.words:
                    spelled = [self.tokens.index(s) for s in self.vocab.spell(w).split()]
                    units += spelled
                    bonuses += [h.boost / len(spelled)] * len(spelled)
                trie.add(units, bonuses)
        return biased_lm(inner, trie)

    def _one(self, emissions: torch.Tensor) -> list[TokenPath]:
        n = emissions.shape[0]
        if self.options.lexicon and self.vocab.boundary_token:
            # character lexicon spellings end in a word boundary the model never emits after the last word:
            # one extra frame that is certainly a boundary lets that word complete
            boundary = torch.full((1, emissions.shape[1]), -1e4)
            boundary[0, self.tokens.index(self.vocab.boundary_token)] = 0.0
            emissions = torch.cat([emissions, boundary])                  # (T + 1, V)
        hyps = self._decoder()(emissions[None])[0]                    # (1, T, V) -> n-best list
        # flashlight's path has T + 2 steps: a virtual start and end around the T frames. Without a word
        # boundary token (BPE), the decoder's silence is <unk>, which it may place between words: not ours.
        sil = None if self.vocab.boundary_token else 1
        paths = []
        for h in hyps:
            kept = [(i, t - 1) for i, t in zip(h.tokens.tolist(), h.timesteps.tolist()) if 0 < t <= n and i != sil]
            words = tuple(h.words) if self.options.lexicon else None
            paths.append(TokenPath([i for i, _ in kept], [t for _, t in kept], words, float(h.score)))
        return paths or [TokenPath([], [])]

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[TokenPath]:
        """(N, T, V) log-probs + (N,) lengths -> one TokenPath per utterance, decoded in parallel threads."""
        return [paths[0] for paths in self.nbest(log_probs, lengths)]

    def nbest(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[TokenPath]]:
        """(N, T, V) log-probs + (N,) lengths -> per utterance its options.nbest best paths, best first."""
        emissions = [log_probs[i, :n].float().cpu().contiguous() for i, n in enumerate(lengths.tolist())]
        if self.threads == 1 or len(emissions) < 2 * self.threads:
            return [self._one(e) for e in emissions]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.threads, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_init_worker, initargs=(self.options, self.vocab))
        chunk = max(1, len(emissions) // (4 * self.threads))
        return list(self._pool.map(_decode_in_worker, [e.numpy() for e in emissions], chunksize=chunk))

    def __del__(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


_WORKER: BeamSearch | None = None


def _init_worker(options: DecodingOptions, vocab: Vocabulary | BPEVocabulary) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = BeamSearch(replace(options, threads=1), vocab, respell=False)  # options hold the respelled lexicon


def _decode_in_worker(emissions) -> list[TokenPath]:
    return _WORKER._one(torch.from_numpy(emissions))


def words_of(path: TokenPath, log_probs: torch.Tensor, vocab: Vocabulary | BPEVocabulary,
             frame_seconds: float) -> list[Word]:
    """Split a path into words (at spaces, or at BPE pieces starting a word) with times and confidences.

    A word starts at the frame emitting its first token and ends one frame after its last; its
    confidence is the mean posterior of its tokens at their frames. (T, V) log-probs, frames of
    `frame_seconds` (the backend's: feature hop x the network's time stride).
    """
    spans = vocab.word_spans(path.ids)
    # The lexicon decoder's words are the truth: it may spell a double letter on two consecutive frames,
    # which the token path (repeats merged) shows as one. Its spans still give each word's times.
    texts = list(path.words) if path.words is not None and len(path.words) == len(spans) else None
    probs = log_probs[path.frames, path.ids].exp().tolist() if spans else []    # each token's posterior
    words = []
    for k, (start, end) in enumerate(spans):
        ids, frames = path.ids[start:end], path.frames[start:end]
        words.append(Word(texts[k] if texts else vocab.decode(ids).strip(), frames[0] * frame_seconds,
                          (frames[-1] + 1) * frame_seconds, round(sum(probs[start:end]) / (end - start), 4)))
    return words


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Vocabulary | BPEVocabulary) -> list[str]:
    """(N, T, V) log-probs + (N,) lengths -> N transcripts with single spaces, no edge spaces."""
    return [vocab.separator.join(vocab.decode(p.ids).split()) for p in greedy_paths(log_probs, lengths)]


def vocab_chars(vocab: Vocabulary | BPEVocabulary) -> set[str]:
    """The characters a vocabulary can write (a BPE vocabulary's pieces' characters, '▁' read as a space)."""
    chars = vocab.chars if isinstance(vocab, Vocabulary) else [c for t in vocab.tokens[1:] for c in t]
    return {" " if c == "\u2581" else c for c in chars} | {" "}
