"""The ONNX backend: a file written by `asr export --format onnx`, run by onnxruntime.

The graph takes (N, S) float32 waves + (N,) int64 lengths and gives (N, T', V) log-probs + (N,)
lengths; the metadata entry `asr` holds the vocabulary and configs, and, for a unidirectional model,
`asr.stream` the streaming step's graph (samples, final flag and state in; log-probs and state out).
Sessions run on the CPU, or with CUDA where onnxruntime has it and the device asks for it; their
threads follow torch's (`torch.set_num_threads`) when the model is loaded.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch

from ..features import FeatureConfig
from ..model import ModelConfig
from ..tokens import vocabulary_from_state
from .base import Backend, StepStream

META = "asr"            # metadata key: vocabulary, configs
STREAM = "asr.stream"   # metadata key: the streaming step's graph (base64), unidirectional models only


def session(model: bytes | str, device: str | torch.device = "cpu"):
    """An onnxruntime session with torch's thread count, CUDA when asked for and available."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3      # errors only: no warnings about unused initialisers
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model, options, providers=providers)


class OnnxBackend(Backend):
    name = "ONNX"
    precision_hint = ": it runs as exported (`asr export --int8` for a smaller model; bf16 is a checkpoint's)"

    def __init__(self, path: Path, device: str | torch.device = "cpu"):
        self.path, self.device = Path(path), torch.device(device)
        try:
            self.session = session(str(path), device)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: onnxruntime cannot load it ({e})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        if META not in props:
            raise ValueError(f"{path}: an ONNX model without asr's metadata (not written by asr export --format onnx)")
        self.meta = json.loads(props[META])
        self._stream_graph = props.get(STREAM)
        self.vocab = vocabulary_from_state(self.meta["vocab"])
        self.features = FeatureConfig(**self.meta["feature_config"])
        self.config = ModelConfig(**self.meta["model_config"])
        self.int8 = self.meta.get("int8", False)
        # onnxruntime's CPU GRU / LSTM kernels gain little from wide batches while padding costs: AN4 test
        # ran fastest at about 10 s of audio per pass (1.69 s against 2.31 s at the default 200 s, 1 thread)
        if "CUDAExecutionProvider" not in self.session.get_providers():
            self.batch_seconds = 10.0

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return path.suffix == ".onnx" and path.is_file()

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu", precision: str = "fp32") -> OnnxBackend:
        cls.check_precision(path, precision)
        return cls(path, device)

    def log_probs(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, out_lengths = self.session.run(None, {"waves": waves.float().numpy(),
                                                         "lengths": lengths.long().numpy()})
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)

    def stream(self) -> StepStream:
        if self._stream_graph is None:
            raise ValueError("streaming needs a unidirectional model (model.bidirectional: false)")
        step = session(base64.b64decode(self._stream_graph), self.device)
        names = [i.name for i in step.get_inputs()]

        def run(samples, final, *state):
            feeds = dict(zip(names, (samples, final, *state)))
            return step.run(None, {k: np.asarray(v) for k, v in feeds.items()})

        state = [np.zeros(shape, dtype=dtype) for shape, dtype in self.meta["stream_state"]]
        return StepStream(run, state)
