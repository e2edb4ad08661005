"""Streaming: a unidirectional model fed chunk by chunk gives the frames and transcript of one offline pass."""
import pytest
import torch

import asr
from asr.backends.checkpoint import CheckpointBackend
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import AcousticModel, ModelConfig
from asr.text import Vocabulary
from asr.transcribe import Transcriber


def _untrained(lookahead: int = 3, front_end: str = "conv1d") -> Transcriber:
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(bidirectional=False, lookahead=lookahead, hidden=64, conv_channels=64,
                                      layers=2, front_end=front_end, conv2d_channels=8)).eval()
    return Transcriber(CheckpointBackend(model, FeatureExtractor(FeatureConfig()), Vocabulary()))


@pytest.mark.parametrize("chunk, front_end", [(160, "conv1d"), (1600, "conv1d"), (7777, "conv1d"),
                                              (16000, "conv1d"), (160, "conv2d"), (7777, "conv2d")])
def test_streamed_frames_are_the_offline_frames(an4_test_utts, chunk, front_end):   # 10 ms, 100 ms, odd, 1 s
    t = _untrained(front_end=front_end)
    for u in an4_test_utts[:3]:
        wave = u.samples()
        offline, n = t.log_probs([wave])                            # (1, T', V)
        stream, final_frames = t.stream(), []
        for i in range(0, wave.shape[0], chunk):
            final_frames.append(stream.feed(wave[i:i + chunk]).frames)
        result = stream.finish()
        assert final_frames == sorted(final_frames) and final_frames[-1] < n.item()  # the lookahead holds the tail
        torch.testing.assert_close(stream.log_probs, offline[0, :n[0]], atol=1e-5, rtol=1e-4)
        assert result.text == t.transcribe(wave).text and result.duration == pytest.approx(u.duration, abs=1e-3)


def test_streaming_needs_a_unidirectional_model(an4_model):
    with pytest.raises(ValueError, match="unidirectional"):
        asr.load_model(an4_model).stream()
    with pytest.raises(ValueError, match="lookahead is for unidirectional"):
        ModelConfig(bidirectional=True, lookahead=2)


@pytest.mark.slow
def test_a_trained_streaming_model_shows_words_soon_after_they_end(five_utts, tmp_path):
    """A unidirectional GRU with 2 frames of lookahead, trained on five AN4 utterances: streamed in 100 ms
    chunks it transcribes them as offline, each word shown within a fraction of a second of its end."""
    from asr.bench.stream import stream_latency
    from asr.cli import main as asr_main
    from asr.data import write_manifest
    from asr.train import TrainConfig, train
    manifest, stats = tmp_path / "five.jsonl", tmp_path / "stats.json"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    train(TrainConfig(exp_dir=str(tmp_path), train_manifest=str(manifest), dev_manifest=str(manifest),
                      stats=str(stats), epochs=300, lr=4e-3, batch_frames=300, final_lr=0.1, spec_augment=False,
                      threads=1, tensorboard=False,  # unpacked is exact for a unidirectional model
                      model=ModelConfig(conv_channels=96, hidden=128, layers=2, dropout=0.0, bidirectional=False,
                                        lookahead=2)))
    model = asr.load_model(tmp_path / "best.pt")
    offline = [r.text for r in model.transcribe([u.audio for u in five_utts])]
    row = stream_latency(model, five_utts, chunk_seconds=0.1)
    assert row["wer"] == asr.score([u.text for u in five_utts], offline).wer.rate
    assert row["wer"] <= 20 and row["words"] >= 10
    # algorithmic latency 25 + 30 + 2 x 20 ms, plus up to one 100 ms chunk; a word waits for its last frame
    assert 0.0 <= row["latency_median"] <= 0.5 and row["latency_p90"] <= 1.0, row
