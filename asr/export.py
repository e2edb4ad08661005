"""Export for deployment: ONNX (onnxruntime, int8), a sherpa-onnx model dir, or TorchScript.

    asr export --model best.pt --format onnx --out model.onnx [--int8]    asr.load_model("model.onnx")
    asr export --model best.pt --format sherpa-onnx --out DIR             DIR/model.onnx + DIR/tokens.txt
    asr export --model best.pt --format torchscript --out model.ts [--int8]

An ONNX or TorchScript file is the recogniser in one file: features and acoustic model traced from
the checkpoint's Recognizer (waveforms (N, S) + lengths -> log-probs (N, T', V) + lengths; dynamic
batch and time axes, exact padded batches through the RNN ops' sequence lengths), with the
vocabulary and configs in its metadata, so it loads alone (asr.backends.onnx / .torchscript). A
unidirectional model also carries its streaming step (StreamStep: samples and state in, log-probs
and state out; in an ONNX file as a second graph in the metadata). The graphs are traced with
PyTorch's TorchScript-based ONNX exporter: its dynamo exporter fails on GRU / LSTM / RNN (torch
2.14), and every length from 0 samples to 10 minutes is checked against the checkpoint in the tests.

int8: onnxruntime's dynamic quantisation of the acoustic model's MatMul / LSTM nodes (the feature
nodes stay fp32: their power spectra span 20 decades; the convolutions too: its ConvInteger ran 2.5x
slower than the fp32 Conv on AVX2 without VNNI). onnxruntime has an int8 LSTM kernel but none for GRU
or vanilla RNN, whose int8 models quantise only the output layer and are no faster
(recipes/an4/RESULTS.md); fp32 is the default.

sherpa-onnx: its OfflineRecognizer.from_nemo_ctc computes features itself (kaldi-native-fbank); a
model trained with `features.kind: fbank` (asr.features) sees the same ones. The graph takes them
as NeMo's (N, F, T) + lengths, normalises with the checkpoint's statistics inside, and gives
log-probs; tokens.txt maps ids to tokens (blank `<blk>`, the space `▁`).
"""
from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .backends.checkpoint import Recognizer, StreamStep
from .backends.onnx import META, STREAM
from .backends.torchscript import META as TS_META
from .checkpoint import load_checkpoint, read_checkpoint
from .features import FeatureConfig, FeatureExtractor
from .model import AcousticModel, ModelConfig

OPSET = 17
FORMATS = ("onnx", "sherpa-onnx", "torchscript")
# What sherpa-onnx's OfflineRecognizer.from_nemo_ctc computes itself: Kaldi fbank (kaldi-native-fbank) with our
# defaults' bins, hop and rate (80 bins every 10 ms at 16 kHz)
SHERPA_FEATURES = FeatureConfig(kind="fbank")
_SHERPA_FIXED = ("sample_rate", "n_mels", "hop_length")


def _metadata(extractor: FeatureExtractor, model: AcousticModel, vocab, checkpoint, int8: bool) -> dict:
    return {"vocab": vocab.state(), "feature_config": asdict(extractor.cfg), "model_config": asdict(model.cfg),
            "int8": int8, "source": str(checkpoint), "frame_seconds": extractor.cfg.hop_length
            * model.cfg.time_stride / extractor.cfg.sample_rate}


def _examples(sample_rate: int):
    """(N, S) waves and (N,) lengths to trace with: two inputs of unequal length, neither of them short."""
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(2, sample_rate, generator=g) * 0.1                   # (2, S): 1 s of noise
    return waves, torch.tensor([sample_rate, sample_rate * 9 // 16])


def _stream_example(step: StreamStep, sample_rate: int):
    """A mid-stream state (every pending buffer non-empty) and a chunk, to trace the step with."""
    state = step.initial_state(1)
    with torch.no_grad():
        _, *state = step(torch.randn(1, sample_rate // 4) * 0.1, torch.tensor(False), *state)
    return (torch.randn(1, sample_rate // 10) * 0.1, torch.tensor(False), *state)


def _stream_names(step: StreamStep) -> list[str]:
    rnn = ["h", "c"] if step.model.cfg.cell == "lstm" else ["h"]
    return ["pending", "start", "frames", "conv1", "conv2", "lookahead", *rnn]


def export_onnx(checkpoint: str | Path, out: str | Path, int8: bool = False) -> Path:
    """The checkpoint's Recognizer as one ONNX file at `out` (and its streaming step, for a unidirectional
    model); `int8`: dynamically quantised by onnxruntime. Returns `out`."""
    import onnx

    model, extractor, vocab, _ = load_checkpoint(checkpoint)
    out = Path(out)
    meta = _metadata(extractor, model, vocab, checkpoint, int8)
    with tempfile.TemporaryDirectory() as tmp:
        offline = Path(tmp) / "offline.onnx"
        _export_offline(Recognizer(extractor, model, pack=True).eval(), offline, extractor.cfg.sample_rate)
        stream = None
        if not model.cfg.bidirectional:
            stream = Path(tmp) / "stream.onnx"
            step = StreamStep(extractor, model).eval()
            _export_stream(step, stream, extractor.cfg.sample_rate)
            meta["stream_state"] = [[list(t.shape), str(t.dtype).removeprefix("torch.")] for t in step.initial_state(1)]
        if int8:
            offline, stream = quantize(offline, Path(tmp) / "offline_int8.onnx"), stream and quantize(
                stream, Path(tmp) / "stream_int8.onnx")
        graph = onnx.load(str(offline))
        props = {META: json.dumps(meta)}
        if stream is not None:
            props[STREAM] = base64.b64encode(Path(stream).read_bytes()).decode("ascii")
        onnx.helper.set_model_props(graph, props)
        onnx.save(graph, str(out))
    return out


def _export_offline(network: nn.Module, out: Path, sample_rate: int) -> None:
    with torch.no_grad():
        torch.onnx.export(network, _examples(sample_rate), str(out), dynamo=False, opset_version=OPSET,
                          input_names=["waves", "lengths"], output_names=["log_probs", "out_lengths"],
                          dynamic_axes={"waves": {0: "N", 1: "S"}, "lengths": {0: "N"},
                                        "log_probs": {0: "N", 1: "T"}, "out_lengths": {0: "N"}})


def _export_stream(step: StreamStep, out: Path, sample_rate: int) -> None:
    names = _stream_names(step)
    time_axis = step.model.initial_state(1).conv1.dim() - 1       # (N, F, r1), a 2-D front end's (N, 1, F, r1)
    dims = {"pending": {0: "N", 1: "r"}, "conv1": {0: "N", time_axis: "r1"}, "conv2": {0: "N", 2: "r2"},
            "lookahead": {0: "N", 2: "r3"}, "h": {1: "N"}, "c": {1: "N"}, "start": {}, "frames": {}}
    with torch.no_grad():
        torch.onnx.export(step, _stream_example(step, sample_rate), str(out), dynamo=False, opset_version=OPSET,
                          input_names=["samples", "final", *names],
                          output_names=["log_probs", *[f"next_{n}" for n in names]],
                          dynamic_axes={"samples": {0: "N", 1: "s"}, "log_probs": {0: "N", 1: "t"},
                                        **dims, **{f"next_{n}": d for n, d in dims.items()}})


def quantize(model: Path, out: Path) -> Path:
    """onnxruntime's dynamic int8 quantisation of the acoustic model's nodes (not the features')."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    features = [n.name for n in onnx.load(str(model)).graph.node if n.name.startswith("/extractor/")]
    # signed weights with 7-bit range, per channel: exact AN4 test WER where unsigned 8-bit lost half a point
    # (recipes/an4/RESULTS.md); the 7 bits keep x86 CPUs without VNNI from saturating their int16 sums
    quantize_dynamic(str(model), str(out), weight_type=QuantType.QInt8, reduce_range=True, per_channel=True,
                     nodes_to_exclude=features, op_types_to_quantize=["MatMul", "LSTM", "Gemm"])
    return out


class SherpaCTC(nn.Module):
    """sherpa-onnx's NeMo CTC interface: (N, F, T) features (kaldi-native-fbank's, which `fbank` features are)
    + (N,) int64 frame counts -> (N, T', V) log-probs, normalised with the checkpoint's statistics inside."""

    def __init__(self, extractor: FeatureExtractor, model: AcousticModel):
        super().__init__()
        self.extractor, self.model = extractor, model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.extractor.normalize(features.transpose(1, 2))                  # (N, T, F)
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        log_probs, _ = self.model(x * mask, lengths)                            # (N, T', V)
        return log_probs


def export_sherpa_onnx(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """DIR/model.onnx and DIR/tokens.txt for sherpa_onnx.OfflineRecognizer.from_nemo_ctc; returns DIR."""
    import onnx

    model, extractor, vocab, _ = load_checkpoint(checkpoint)
    f = extractor.cfg
    s = SHERPA_FEATURES
    if f.kind != s.kind or f.utterance_mean or any(getattr(f, k) != getattr(s, k) for k in _SHERPA_FIXED):
        raise ValueError(f"{checkpoint}: sherpa-onnx computes {s.n_mels} Kaldi fbank features every "
                         f"{1000 * s.hop_length / s.sample_rate:g} ms at {s.sample_rate} Hz itself; this model was "
                         f"trained on {f.kind} features ({f}). Train with features.kind=fbank for it (or export "
                         f"--format onnx, which carries its own features)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = torch.tensor([300, 170])
    example = (torch.randn(2, extractor.cfg.dim, 300), frames)
    with torch.no_grad():
        torch.onnx.export(SherpaCTC(extractor, model).eval(), example, str(out / "model.onnx"), dynamo=False,
                          opset_version=OPSET, input_names=["audio_signal", "length"], output_names=["logprobs"],
                          dynamic_axes={"audio_signal": {0: "N", 2: "T"}, "length": {0: "N"},
                                        "logprobs": {0: "N", 1: "T_out"}})
    graph = onnx.load(str(out / "model.onnx"))
    onnx.helper.set_model_props(graph, {"vocab_size": str(len(vocab)), "subsampling_factor": str(model.cfg.time_stride),
                                        "normalize_type": "", "model_type": "EncDecCTCModel",
                                        META: json.dumps(_metadata(extractor, model, vocab, checkpoint, False))})
    onnx.save(graph, str(out / "model.onnx"))
    tokens = ["<blk>", *("\u2581" if t == " " else t for t in vocab.tokens[1:])]
    (out / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    return out


def export_torchscript(checkpoint: str | Path, out: str | Path, int8: bool = False) -> Path:
    """Trace the checkpoint's Recognizer (and, for a unidirectional model, its streaming step as the method
    `stream_step`) to TorchScript at `out`; `int8`: PyTorch's dynamic quantisation of the recurrent and
    linear layers. Returns `out`."""
    model, extractor, vocab, _ = load_checkpoint(checkpoint)
    if int8:
        model = torch.ao.quantization.quantize_dynamic(model, {nn.GRU, nn.LSTM, nn.RNN, nn.Linear}, dtype=torch.qint8)
    # PyTorch's quantised GRU / LSTM traced over packed sequences keeps the example's batch size, so an int8
    # archive is traced unpacked and its backend runs one input at a time; fp32 batches are exact
    network = Traced(extractor, model, pack=not int8).eval()
    methods = {"forward": _examples(extractor.cfg.sample_rate)}
    meta = {**_metadata(extractor, model, vocab, checkpoint, int8), "packed": not int8}
    if not model.cfg.bidirectional:
        methods["stream_step"] = _stream_example(network.step, extractor.cfg.sample_rate)
        meta["stream_state"] = [[list(t.shape), str(t.dtype).removeprefix("torch.")]
                                for t in network.step.initial_state(1)]
    with torch.no_grad():
        traced = torch.jit.trace_module(network, methods, check_trace=False)
    out = Path(out)
    torch.jit.save(traced, str(out), _extra_files={TS_META: json.dumps(meta)})
    return out


class Traced(nn.Module):
    """What a TorchScript export traces: the Recognizer as forward, the StreamStep as stream_step."""

    def __init__(self, extractor: FeatureExtractor, model: AcousticModel, pack: bool = True):
        super().__init__()
        self.recognizer = Recognizer(extractor, model, pack=pack)
        self.step = StreamStep(extractor, model) if not model.cfg.bidirectional else None

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor):
        return self.recognizer(waves, lengths)

    def stream_step(self, samples: torch.Tensor, final: torch.Tensor, *state: torch.Tensor):
        return self.step(samples, final, *state)


def sherpa_recognizer(model_dir: str | Path, threads: int = 1):
    """sherpa-onnx's own OfflineRecognizer on an `export_sherpa_onnx` dir (its features, its greedy search)."""
    import sherpa_onnx

    d = Path(model_dir)
    return sherpa_onnx.OfflineRecognizer.from_nemo_ctc(model=str(d / "model.onnx"), tokens=str(d / "tokens.txt"),
                                                       num_threads=threads, sample_rate=SHERPA_FEATURES.sample_rate,
                                                       feature_dim=SHERPA_FEATURES.n_mels)


def sherpa_transcribe(recognizer, waves: list[torch.Tensor], sample_rate: int = SHERPA_FEATURES.sample_rate
                      ) -> list[str]:
    """Transcripts of (S,) float waves by a sherpa-onnx OfflineRecognizer, decoded as one batch of streams."""
    streams = []
    for w in waves:
        stream = recognizer.create_stream()
        stream.accept_waveform(sample_rate, w.numpy())
        streams.append(stream)
    recognizer.decode_streams(streams)
    return [" ".join(s.result.text.split()) for s in streams]


def export_model(checkpoint: str | Path, out: str | Path, fmt: str = "onnx",
                 int8: bool = False) -> tuple[Path, list[str]]:
    """`asr export`: `checkpoint` as `fmt` (one of FORMATS) at `out`, int8 where asked; returns the file (or the
    sherpa-onnx dir) written and notes for whoever asked for it."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "sherpa-onnx":
        if int8:
            raise ValueError("int8 quantisation is for the onnx and torchscript formats, not sherpa-onnx")
        return export_sherpa_onnx(checkpoint, out), []
    path = (export_onnx if fmt == "onnx" else export_torchscript)(checkpoint, out, int8=int8)
    cell = ModelConfig(**read_checkpoint(checkpoint)["model_config"]).cell
    if fmt == "onnx" and int8 and cell != "lstm":
        return path, [f"onnxruntime has no int8 {cell.upper()} kernel: only the output layer is int8 and the model "
                      f"runs at fp32's speed (recipes/an4/RESULTS.md); the fp32 export is the one to ship"]
    return path, []
