"""A cost model: predicted hours per epoch and per run of a config on N GPUs, from measured step throughput.

    asr bench plan --config recipes/librispeech/conf/960h.yaml --gpus 1,8,64 --train-hours 960.9

The figures are predictions, built from `asr bench train` rows (audio-seconds per second of the full
pipeline, per batch size, on one GPU) and stated assumptions:

  per GPU     the measured throughput at the config's batch_frames, interpolated log-log between the
              batch sizes measured (clamped to their range), and between the measured models by
              parameter count (the config's own model when it was measured)
  per step    the all-reduce of fp32 gradients, 2 (N-1)/N x 4 bytes x parameters over the slowest link
              (NVLink inside a node, the network between nodes), not overlapped with the backward pass
  per epoch   train hours x the speed perturbation's mean 1/speed, at that rate on N GPUs; the dev pass,
              checkpoints and start-up are left out
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import yaml

from .. import PROJECT_ROOT
from ..config import TrainConfig
from ..model import AcousticModel, ModelConfig, count_parameters
from ..tokens import Vocabulary

DEFAULT_THROUGHPUT = PROJECT_ROOT / "recipes" / "librispeech" / "h200_throughput.yaml"
FILL = 0.9                # audio / padded frames in a length-bucketed batch: only the step count depends on it


@dataclass(frozen=True)
class Links:
    """All-reduce bandwidth per GPU (GB/s): NVLink within a node, the network between nodes."""
    gpus_per_node: int = 8
    intra_gbs: float = 300.0  # NCCL bus bandwidth on 8 NVLink-connected H100/H200s is ~350-450 GB/s: conservative
    inter_gbs: float = 50.0   # one 400 Gb/s InfiniBand / RoCE link per GPU


@dataclass(frozen=True)
class Measurement:
    parameters: int
    label: str
    rows: list            # asr bench train rows: max_frames, pipeline (audio-s/s), batch_size


def parameters_of(model: ModelConfig, n_features: int, vocab_size: int | None = None) -> int:
    """Parameters of `model` on `n_features` inputs and `vocab_size` outputs (default: the character vocabulary)."""
    vocab_size = vocab_size or len(Vocabulary())
    with torch.device("meta"):                     # shapes only: no memory, no initialisation
        return count_parameters(AcousticModel(replace(model, n_features=n_features, vocab_size=vocab_size)))


def read_measurements(path: str | Path, n_features: int) -> tuple[str, list[Measurement]]:
    """A throughput file: YAML {device, measurements: [{rows: JSON path, model: {...}}]}, or a rows JSON from
    `asr bench train --out` (rows that carry their model)."""
    path = Path(path)
    if path.suffix == ".json":
        rows = json.loads(path.read_text())
        if "model" not in rows[0]:
            raise ValueError(f"{path}: rows without their model; list the file in a YAML with its model")
        return rows[0].get("device", "?"), [Measurement(rows[0]["parameters"], path.name, rows)]
    spec = yaml.safe_load(path.read_text())
    out = []
    for m in spec["measurements"]:
        model = ModelConfig(**m["model"])
        rows = json.loads((path.parent / m["rows"]).read_text())
        out.append(Measurement(parameters_of(model, n_features), f"{model.layers}x{model.hidden} {model.cell.upper()}",
                               rows))
    return spec.get("device", "?"), out


def _loglog(x: float, points: list[tuple[float, float]]) -> float:
    """y at x, interpolated linearly in log-log between the points (sorted by x), clamped to their range."""
    points = sorted(points)
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            t = math.log(x / x0) / math.log(x1 / x0)
            return math.exp(math.log(y0) + t * math.log(y1 / y0))
    raise AssertionError("unreachable")


def per_gpu_throughput(measurements: list[Measurement], parameters: int, batch_frames: int) -> float:
    """Audio-seconds per second on one GPU for a model of `parameters` at `batch_frames` padded frames."""
    at_frames = [(m.parameters, _loglog(batch_frames, [(r["max_frames"], r["pipeline"]) for r in m.rows]))
                 for m in measurements]
    return _loglog(parameters, at_frames)


def plan_run(cfg: TrainConfig, gpus: int, train_hours: float, measurements: list[Measurement],
             links: Links = Links()) -> dict:
    """The predicted figures of training `cfg` for cfg.epochs epochs of `train_hours` on `gpus` GPUs."""
    parameters = parameters_of(cfg.model, cfg.features.dim, len(Vocabulary(cfg.text.alphabet)))
    rate = per_gpu_throughput(measurements, parameters, cfg.batch_frames)
    speeds = cfg.speed_perturb or (1.0,)
    epoch_audio = train_hours * 3600 * sum(1 / s for s in speeds) / len(speeds)    # seconds of audio an epoch
    step_audio = FILL * cfg.batch_frames / cfg.features.frames_per_second          # per GPU
    steps = math.ceil(epoch_audio / (gpus * step_audio))
    bandwidth = (links.intra_gbs if gpus <= links.gpus_per_node else links.inter_gbs) * 1e9
    comm = 2 * (gpus - 1) / gpus * 4 * parameters / bandwidth                       # seconds a step
    compute = step_audio / rate
    epoch_hours = steps * (compute + comm) / 3600
    return {"gpus": gpus, "nodes": math.ceil(gpus / links.gpus_per_node), "parameters": parameters,
            "per_gpu": rate, "steps_per_epoch": steps, "step_seconds": compute + comm, "comm_seconds": comm,
            "global_batch_hours": gpus * step_audio / 3600, "epoch_hours": epoch_hours,
            "run_hours": epoch_hours * cfg.epochs, "gpu_hours": epoch_hours * cfg.epochs * gpus}


HEADER = (f"{'GPUs':>5} {'nodes':>5} {'batch h':>8} {'steps/ep':>9} {'step s':>7} {'comm %':>7} {'epoch min':>10} "
          f"{'run h':>7} {'GPU-h':>7}")


def format_plan(rows: list[dict]) -> str:
    return "\n".join([HEADER, *(f"{r['gpus']:>5} {r['nodes']:>5} {r['global_batch_hours']:>8.2f} "
                                f"{r['steps_per_epoch']:>9} {r['step_seconds']:>7.3f} "
                                f"{100 * r['comm_seconds'] / r['step_seconds']:>7.1f} {60 * r['epoch_hours']:>10.2f} "
                                f"{r['run_hours']:>7.2f} {r['gpu_hours']:>7.1f}" for r in rows)])


def describe(cfg: TrainConfig, train_hours: float, device: str, measurements: list[Measurement], row: dict,
             links: Links) -> str:
    m = cfg.model
    used = ", ".join(f"{x.label} ({x.parameters / 1e6:.1f} M): "
                     + " / ".join(f"B={r['batch_size']} {r['max_frames']} frames {r['pipeline']:.0f}" for r in x.rows)
                     for x in measurements)
    return (f"PREDICTED (a cost model, not a measurement): {cfg.epochs} epochs of {train_hours:g} h, "
            f"{m.layers}x{m.hidden} {'Bi' if m.bidirectional else ''}{m.cell.upper()} "
            f"{row['parameters'] / 1e6:.1f} M parameters, batch_frames {cfg.batch_frames} per GPU\n"
            f"per GPU {row['per_gpu']:.0f} audio-s/s, from {device} asr bench train pipeline rows (audio-s/s) {used}\n"
            f"all-reduce of fp32 gradients at {links.intra_gbs:g} GB/s within a node of {links.gpus_per_node}, "
            f"{links.inter_gbs:g} GB/s between nodes, not overlapped; dev passes and checkpoints not counted")


def plan_table(cfg: TrainConfig, gpu_counts: list[int], train_hours: float, throughput: str | Path | None = None,
               links: Links = Links()) -> tuple[str, list[dict]]:
    """The printed plan for each GPU count, and its rows."""
    device, measurements = read_measurements(throughput or DEFAULT_THROUGHPUT, cfg.features.dim)
    rows = [plan_run(cfg, n, train_hours, measurements, links) for n in gpu_counts]
    return describe(cfg, train_hours, device, measurements, rows[0], links) + "\n" + format_plan(rows), rows


def model_row_fields(cfg: TrainConfig) -> dict:
    """What `asr bench train` rows record of their model, so that a plan can read them alone."""
    return {"model": asdict(cfg.model), "parameters": parameters_of(cfg.model, cfg.features.dim)}
