"""Streaming: a unidirectional model fed chunk by chunk gives the frames and transcript of one offline pass."""
import pytest
import torch

import asr
from asr.backends.checkpoint import CheckpointBackend
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import AcousticModel, ModelConfig
from asr.rnn import products_in
from asr.tokens import Vocabulary
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
        stream, final_frames = t.stream(endpoints=None), []         # one utterance: the offline pass's
        for i in range(0, wave.shape[0], chunk):
            final_frames.append(stream.feed(wave[i:i + chunk]).frames)
        result = stream.finish()
        assert final_frames == sorted(final_frames) and final_frames[-1] < n.item()  # the lookahead holds the tail
        torch.testing.assert_close(stream.log_probs, offline[0, :n[0]], atol=1e-5, rtol=1e-4)
        assert result.text == t.transcribe(wave).text and result.duration == pytest.approx(u.duration, abs=1e-3)


def test_a_bf16_model_streams_the_frames_of_its_offline_pass(an4_test_utts):
    """precision "bf16": the 1-D convolution rounds its inputs, and the recurrent stack each step's state, alike
    chunk by chunk and in the offline pass, so streamed frames are still the offline pass's. Both are forced here
    (AcousticModel.products_in takes each where this CPU runs it faster)."""
    t = _untrained(front_end="conv2d")
    wave = an4_test_utts[0].samples()
    fp32, _ = t.log_probs([wave])
    t.backend.model.conv2.to(torch.bfloat16)
    products_in(t.backend.model.rnn, torch.bfloat16)     # False (float32 kept) without MKL's bfloat16 product
    offline, n = t.log_probs([wave])                                # (1, T', V)
    stream = t.stream(endpoints=None)
    for i in range(0, wave.shape[0], 1600):
        stream.feed(wave[i:i + 1600])
    stream.finish()
    assert offline.dtype == torch.float32 and not torch.equal(offline, fp32)      # rounded: bfloat16 ran
    torch.testing.assert_close(stream.log_probs, offline[0, :n[0]], atol=1e-5, rtol=1e-4)


def test_frame_streaming_needs_a_unidirectional_model_and_any_model_streams_by_redecoding(an4_model, an4_test_utts):
    """A bidirectional model cannot stream frame by frame; its stream decodes the utterance so far again every
    second, and ends as transcribe() of the whole does."""
    model = asr.load_model(an4_model)
    with pytest.raises(ValueError, match="unidirectional"):
        model.stream(mode="frames")
    with pytest.raises(ValueError, match="lookahead is for unidirectional"):
        ModelConfig(bidirectional=True, lookahead=2)
    wave = an4_test_utts[0].samples()
    stream, partials = model.stream(), []
    assert stream.mode == "redecode" and _untrained().stream().mode == "frames"
    for i in range(0, wave.shape[0], 1600):
        partials.append(stream.feed(wave[i:i + 1600]).text)
    assert stream.finish().text == model.transcribe(wave).text
    assert partials[5] == "" and partials[-1]                        # a decode every second of audio, not before


@pytest.mark.slow
def test_a_trained_streaming_model_shows_words_soon_after_they_end(five_utts, stream_model):
    """A unidirectional GRU with 2 frames of lookahead, trained on five AN4 utterances: streamed in 100 ms
    chunks it transcribes them as offline, each word shown within a fraction of a second of its end, and each
    utterance ended by the endpoint rules once its silence has lasted long enough."""
    from asr.bench.stream import stream_latency

    model = asr.load_model(stream_model)
    offline = [r.text for r in model.transcribe([u.audio for u in five_utts])]
    row = stream_latency(model, five_utts, chunk_seconds=0.1, tail=0.0, endpoints=None)   # each as it is
    assert row["wer"] == asr.score([u.text for u in five_utts], offline).wer.rate
    assert row["wer"] <= 20 and row["words"] >= 10
    # algorithmic latency 25 + 30 + 2 x 20 ms, plus up to one 100 ms chunk; a word waits for its last frame
    assert 0.0 <= row["latency_median"] <= 0.5 and row["latency_p90"] <= 1.0, row
    ended = stream_latency(model, five_utts, chunk_seconds=0.1)          # then 2 s of silence: the rules end each
    assert ended["utterances"] == 5 and ended["endpoint_median"] <= 1.2 + 0.5, ended   # the 1.2 s rule, a chunk


@pytest.mark.parametrize("mode", ["frames", "redecode"])
def test_a_stream_ends_utterances_on_silence_by_itself(five_utts, stream_model, an4_model, mode):
    """Two utterances with 2 s of silence between them: two finals, each as transcribe() gives it alone, the
    first before the stream is finished; a unidirectional model frame by frame, a bidirectional one re-decoded."""
    model = asr.load_model(stream_model if mode == "frames" else an4_model)
    first, second = five_utts[1].samples(), five_utts[2].samples()
    wave = torch.cat([first, torch.zeros(32000), second])
    stream, ended = model.stream(), []
    assert stream.mode == mode
    for i in range(0, wave.shape[0], 1600):
        partial = stream.feed(wave[i:i + 1600])
        ended += [(i + 1600) / 16000 for _ in partial.finals]
    whole = stream.finish()
    texts = [u.transcript.text for u in stream.utterances]
    assert len(texts) == 2 and texts[0] == model.transcribe(first).text and all(texts)
    if mode == "redecode":                                  # each utterance decoded alone
        assert texts[1] == model.transcribe(second).text
    else:                                      # frame by frame: the offline pass's frames (and characters), split
        assert "".join(texts).replace(" ", "") == model.transcribe(wave).text.replace(" ", "")
    assert first.shape[0] / 16000 < ended[0] < (first.shape[0] + 32000) / 16000       # in the pause, by itself
    assert stream.utterances[1].start >= first.shape[0] / 16000 - 0.1
    assert all(stream.utterances[1].start <= w.start for w in stream.utterances[1].transcript.words)
    assert whole.text.split() == " ".join(texts).split()
    quiet = model.stream(endpoints=None)
    for i in range(0, wave.shape[0], 1600):
        assert not quiet.feed(wave[i:i + 1600]).finals                          # rules off: one utterance
