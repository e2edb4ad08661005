"""Training throughput: is the input pipeline as fast as the model? `asr bench train ...`

    asr bench train --batch-sizes 32,64,128,256 model.hidden=800 model.layers=5

For each batch size, in one process, on the same model and the same batches:
  model-only  the training step (GPU features, model, CTC, backward, clipping, AdamW) on batches
              already on the device;
  pipeline    the same step fed from audio files on disk: DataLoader workers read and pad,
              pinned memory, non-blocking copies.
It prints audio-seconds per second for each, their ratio (1.0: the GPU never waits for data) and
peak memory. On a CPU, model-only is also timed with the recurrent stack run by torch.nn (asr.model's
`fast_rnn` off: the speed before asr.rnn), and the stack alone is timed both ways against one large sgemm
(asr.bench.rnn). Long utterances (10-15 s by default) are built by concatenating AN4 train
utterances with short silences, written as WAV files to a scratch folder.
"""
from __future__ import annotations

import bisect
import json
import random
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from ..audio import SAMPLE_RATE, load_audio
from ..config import TrainConfig
from ..data import AudioDataset, Utterance, collate, length_batches
from ..distributed import pick_device
from ..features import FeatureExtractor
from ..model import AcousticModel, count_parameters
from ..step import Stepper, make_optimizer
from ..tokens import Vocabulary
from .plan import model_row_fields
from .rnn import bench_stack

GAP_SECONDS = 0.3  # silence between concatenated utterances


def build_long_utterances(sources: list[Utterance], n: int, seconds: tuple[float, float], out_dir: Path,
                          seed: int = 0) -> list[Utterance]:
    """`n` WAV files of random source utterances joined by short silences, lasting a random length
    within `seconds` (up to the next source utterance's end when none fits exactly)."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_length = sorted(sources, key=lambda u: u.duration)
    durations = [u.duration for u in by_length]
    cache: dict[str, np.ndarray] = {}
    utts = []
    for k in range(n):
        target, length, pieces, texts = rng.uniform(*seconds), 0.0, [], []
        while length < target:
            room = seconds[1] - length - (GAP_SECONDS if pieces else 0.0)
            fits = bisect.bisect_right(durations, room)       # sources short enough to stay under the maximum
            u = by_length[rng.randrange(fits)] if fits else by_length[0]
            if u.audio not in cache:
                cache[u.audio] = load_audio(u.audio).numpy()
            if pieces:
                pieces.append(np.zeros(int(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32))
            pieces.append(cache[u.audio])
            texts.append(u.text)
            length = sum(map(len, pieces)) / SAMPLE_RATE
            if not fits:
                break
        wave = np.concatenate(pieces)
        path = out_dir / f"long{k:05d}.wav"
        sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
        utts.append(Utterance(f"long{k:05d}", str(path), len(wave) / SAMPLE_RATE, " ".join(texts)))
    return utts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Stepper, batches, warmup: int) -> float:
    """Audio seconds per wall second over the batches after the first `warmup` (which are untimed).

    Nothing in the loop waits for the GPU (audio seconds come from the manifest), in both modes.
    """
    audio, start = 0.0, None
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(step.device)
            start = time.perf_counter()
        if i >= warmup:
            audio += batch.audio_seconds
        step(batch.to(step.device, non_blocking=True))
    _sync(step.device)
    return audio / (time.perf_counter() - start)


def bench_batch_size(cfg: TrainConfig, utts: list[Utterance], batch_size: int, steps: int, warmup: int,
                     device: torch.device) -> dict:
    """Model-only and pipeline throughput for batches of `batch_size` long utterances."""
    vocab = Vocabulary()
    torch.manual_seed(cfg.seed)
    extractor = FeatureExtractor(cfg.features).to(device)
    model = AcousticModel(replace(cfg.model, n_features=cfg.features.dim, vocab_size=len(vocab))).to(device)
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step = Stepper(model, extractor, optimizer, scheduler, cfg, device, torch.Generator().manual_seed(cfg.seed))
    step.cache = None   # every timed step computes its features (training keeps them between epochs: FeatureCache)
    model.train()
    fps = cfg.features.frames_per_second
    groups = length_batches([u.duration for u in utts], 10**12, fps, batch_size)[:warmup + steps]
    if len(groups) < warmup + steps or len(groups[-1]) < batch_size:
        raise ValueError(f"{len(utts)} utterances are too few for {warmup + steps} batches of {batch_size}")
    dataset = AudioDataset(utts, vocab, cfg.features.sample_rate)
    loader = DataLoader(dataset, batch_sampler=groups, collate_fn=collate, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", prefetch_factor=2 if cfg.num_workers else None)

    resident = [collate([dataset[i] for i in g]).to(device) for g in groups]  # model-only: data already there
    # model-only before and after the pipeline, keeping the faster: the GPU's clocks ramp up over
    # the first seconds of work, which would otherwise favour whichever mode runs second
    model_only = _timed(step, resident, warmup)
    if device.type == "cuda":  # peak of the pipeline run, less the resident batches: what training needs
        torch.cuda.reset_peak_memory_stats(device)
    pipeline = _timed(step, loader, warmup)
    peak = (torch.cuda.max_memory_allocated(device) - sum(b.pcm.nbytes for b in resident) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    model_only = max(model_only, _timed(step, resident, warmup))
    torch_nn, stack = None, None
    if device.type == "cpu":                       # the same steps with torch.nn's recurrent stack, then the stack
        model.fast_rnn = False
        torch_nn = _timed(step, resident, warmup)
        model.fast_rnn = True
        stack = bench_stack(model.rnn, stack_inputs(model, extractor, resident[warmup:]), True, torch.get_num_threads())
    del resident
    frames = max(len(g) * max(utts[i].duration for i in g) for g in groups) * cfg.features.frames_per_second
    return {"batch_size": batch_size, "max_frames": int(frames), "model_only": model_only, "pipeline": pipeline,
            "ratio": pipeline / model_only, "peak_gib": peak / 2 ** 30,
            "peak_kind": "cuda allocated" if device.type == "cuda" else "process RSS",
            "model_only_torch_nn": torch_nn, "stack": stack}


@torch.no_grad()
def stack_inputs(model: AcousticModel, extractor: FeatureExtractor, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What the recurrent stack receives in training on these batches: (N, T', C) front-end outputs, (N,) lengths."""
    out = []
    for b in batches:
        feats, frames = extractor(b.waves, b.lengths)
        x, lengths, _ = model.front_end(feats, frames)
        out.append((x, lengths))
    return out


def bench_train(cfg: TrainConfig, sources: list[Utterance], batch_sizes: list[int], steps: int = 5, warmup: int = 2,
                seconds: tuple[float, float] = (10.0, 15.0), workdir: str | Path | None = None,
                log=print) -> list[dict]:
    """Run `bench_batch_size` for each batch size; returns one row per size (see the module doc)."""
    cfg = replace(cfg, speed_perturb=())  # equal shapes in both modes
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        t0 = time.time()
        utts = build_long_utterances(sources, max(batch_sizes) * (steps + warmup), seconds, Path(scratch))
        log(f"{len(utts)} utterances of {seconds[0]:g}-{seconds[1]:g} s built from {len(sources)} AN4 utterances "
            f"in {time.time() - t0:.1f}s")
        probe = AcousticModel(replace(cfg.model, n_features=cfg.features.dim, vocab_size=len(Vocabulary())))
        log(f"model: {cfg.model.layers}x{cfg.model.hidden} {'Bi' if cfg.model.bidirectional else ''}"
            f"{cfg.model.cell.upper()}, {count_parameters(probe) / 1e6:.2f} M parameters; device {device}"
            f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}; precision "
            f"{cfg.precision if device.type == 'cuda' else 'fp32'}; {cfg.num_workers} loader workers; "
            f"{steps} timed steps after {warmup} warm-up")
        rows, model = [], {**model_row_fields(cfg), "device": torch.cuda.get_device_name(device)
                           if device.type == "cuda" else "cpu"}   # what asr bench plan reads a rows file by
        for b in batch_sizes:
            rows.append({**bench_batch_size(cfg, utts, b, steps, warmup, device), **model})
            log(format_row(rows[-1]))
    return rows


HEADER = (f"{'batch':>6} {'frames':>8} {'model-only':>11} {'pipeline':>10} {'ratio':>6} {'peak GiB':>9} "
          f"{'torch.nn':>9} {'speed-up':>9}   (audio-s/s)")


def format_row(r: dict) -> str:
    nn_ = (f"{r['model_only_torch_nn']:>9.0f} {r['model_only'] / r['model_only_torch_nn']:>8.2f}x"
           if r.get("model_only_torch_nn") else f"{'-':>9} {'-':>9}")
    return (f"{r['batch_size']:>6} {r['max_frames']:>8} {r['model_only']:>11.0f} {r['pipeline']:>10.0f} "
            f"{r['ratio']:>6.2f} {r['peak_gib']:>9.2f} {nn_}")


def format_table(rows: list[dict]) -> str:
    from .rnn import format_stack

    best = max(rows, key=lambda r: r["pipeline"])
    lines = [HEADER, *map(format_row, rows),
             f"fastest pipeline: batch {best['batch_size']}, {best['pipeline']:.0f} audio-s/s, "
             f"{best['ratio']:.2f} of model-only; peak memory is {rows[0]['peak_kind']}"]
    if rows[0].get("model_only_torch_nn"):
        lines.append("torch.nn: model-only with the recurrent stack run by torch.nn (asr.rnn off), the same steps")
    lines += [f"batch {r['batch_size']}: {format_stack(r['stack'])}" for r in rows if r.get("stack")]
    return "\n".join(lines)


def write_rows(path: str | Path, rows: list[dict]) -> None:
    Path(path).write_text(json.dumps(rows, indent=1))
