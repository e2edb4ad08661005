"""Multi-process training through PyTorch's own engine: torchrun + DistributedDataParallel.

    torchrun --nproc_per_node=8 -m asr train --config recipes/an4/conf/gpu.yaml      # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
             --rdzv_backend=c10d --rdzv_endpoint=host0:29500 -m asr train ...         # per machine

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op for a
single process. NCCL joins GPUs, gloo joins CPU processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes checkpoints and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(name: str) -> torch.device:
    """The device a config names: "auto" is the GPU where there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (if any); returns this process's place and device.

    On CUDA each process takes the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank), device


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_sum(d: Dist, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all ranks (one collective; identity for one process)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(d: Dist, obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def parameter_fingerprint(model: torch.nn.Module) -> list[tuple[str, float, float]]:
    """Per parameter: name, float64 sum and a position-weighted sum (differs if any element differs, in practice)."""
    out = []
    for name, p in model.named_parameters():
        flat = p.detach().double().flatten()
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device).sqrt()
        out.append((name, flat.sum().item(), (flat * weights).sum().item()))
    return out


def check_replicas_in_sync(d: Dist, model: torch.nn.Module) -> None:
    """Raise if any rank's parameters differ from rank 0's (DDP must keep them bit-identical)."""
    prints = gather_objects(d, parameter_fingerprint(model))
    for rank, p in enumerate(prints[1:], 1):
        if p != prints[0]:
            bad = next(a[0] for a, b in zip(prints[0], p) if a != b)
            raise RuntimeError(f"rank {rank}'s parameters differ from rank 0's (first: {bad})")
