"""Characters and BPE pieces as CTC targets: both train and decode on real VCTK speech (speaker p239).
The BPE case is tests/test_tokens_bpe.py: a file of its own so that the two trainings (~2.5 min each)
run on different pytest-xdist workers (--dist loadfile)."""
import pytest

import asr
from asr.checkpoint import load_checkpoint
from asr.lm import build_lm
from asr.model import ModelConfig
from asr.score import score
from asr.tokens import BPEVocabulary, Vocabulary
from asr.train import TrainConfig, train


def _train(d, tokens: str):
    cfg = TrainConfig(
        exp_dir=str(d / tokens), train_manifest=str(d / "six.jsonl"), dev_manifest=str(d / "six.jsonl"),
        stats=str(d / "stats.json"), epochs=120, lr=4e-3, batch_frames=300, final_lr=0.1, spec_augment=False,
        threads=1, max_batch_size=1, tokens=tokens, bpe_vocab_size=36, tensorboard=False,  # one utterance a batch:
        model=ModelConfig(conv_channels=128, hidden=128, layers=2, dropout=0.0))  # exact unpacked, 2x faster
    return train(cfg), d / tokens / "best.pt"


def check_tokens(vctk_six, tokens: str) -> None:
    """Train on the six sentences with `tokens` as CTC targets, then decode greedy and with an LM and lexicon."""
    d, utts = vctk_six
    best, path = _train(d, tokens)
    _, _, vocab, ckpt = load_checkpoint(path)
    if tokens == "bpe":   # the pieces travel in the checkpoint: 36 pieces + the blank
        assert isinstance(vocab, BPEVocabulary) and len(vocab) == 37 and (d / "bpe" / "bpe.model").exists()
    else:
        assert isinstance(vocab, Vocabulary) and len(vocab) == 29
    assert ckpt["train_config"]["tokens"] == tokens
    refs = [u.text for u in utts]

    model = asr.load_model(path)
    results = model.transcribe([u.audio for u in utts])
    greedy = score(refs, [r.text for r in results])
    assert greedy.cer.rate < 15, [r.text for r in results]                   # it learned the six sentences
    for r in results:                                                          # words with times, in order
        assert r.words and all(0 <= w.start < w.end <= r.duration + 0.02 for w in r.words)
        assert " ".join(w.text for w in r.words) == r.text

    lm = build_lm(refs, d / f"lm_{tokens}")
    beam = model.with_options(method="beam", lexicon=str(lm["lexicon"]), lm=str(lm["lm"]), threads=1) \
        .transcribe([u.audio for u in utts])
    lexicon = {w for t in refs for w in t.split()}
    assert all(set(r.text.split()) <= lexicon for r in beam), [r.text for r in beam]   # lexicon words only
    assert score(refs, [r.text for r in beam]).wer.rate <= greedy.wer.rate


@pytest.mark.slow
def test_character_model_trains_and_decodes_on_vctk(vctk_six):
    check_tokens(vctk_six, "chars")
