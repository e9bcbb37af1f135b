"""torchrun support: each rank encodes its own batches, every rank gets the rows back in order.

Batches are dealt round-robin (batch b goes to rank b % world), so every batch
holds exactly the images it holds in a single-process run: the numbers are the
same kernels on the same inputs, hence identical features, and there is no
padding and no duplicated sample to distort metrics.
"""
from __future__ import annotations

import os

import numpy as np


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (no-op otherwise)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return rank_world()


def rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def local_device(device: str) -> str:
    """`cuda` under torchrun means this rank's GPU."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def shard_indices(n: int, batch_size: int, rank: int, world: int) -> list[int]:
    """The sample indices of the batches this rank owns, in order."""
    out: list[int] = []
    for b, start in enumerate(range(0, n, batch_size)):
        if b % world == rank:
            out.extend(range(start, min(start + batch_size, n)))
    return out


def gather_rows(indices: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Every rank's (indices, rows) → the full [n, D] array on every rank, placed by index."""
    import torch.distributed as dist

    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (indices, rows))
    out = np.empty((n, rows.shape[1]), dtype=np.float32)
    seen = np.zeros(n, dtype=bool)
    for idx, block in parts:
        out[idx] = block
        seen[idx] = True
    if not seen.all():
        raise RuntimeError(f"distributed extraction lost {int((~seen).sum())} rows")
    return out


def finish() -> None:
    """End of a torchrun command: every rank waits until rank 0 has written its files, then the group is torn
    down. A rank leaving with the group alive aborts (SIGABRT in gloo's threads), and torchrun then kills the
    ranks still working. Objects still holding the group (a DDP wrapper caught in a reference cycle, its last
    gradient all-reduce) are collected first: freed later, during interpreter shutdown, gloo's worker threads
    take the GIL of a dying interpreter and the rank aborts after its work is done (seen under load in CI)."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
