"""Ranks and hosts: who measures what, and the reduction of per-rank figures to rank 0.

``core`` imports no training framework: torch.distributed is used only when the training code
has already imported torch and initialised a process group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any


def _dist() -> Any | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dist = getattr(torch, "distributed", None)
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    dist = _dist()
    if dist is not None:
        return int(dist.get_rank())
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    dist = _dist()
    if dist is not None:
        return int(dist.get_world_size())
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_rank_zero() -> bool:
    """True on the process that logs and writes the run log."""
    return rank() == 0


def sum_across_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Sum each value over all ranks (a collective: every rank must call it, same keys).

    Without an initialised process group this returns the values unchanged.
    """
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return dict(values)
    import torch  # already imported by the training code (checked in _dist)

    keys = sorted(values)
    backend = str(dist.get_backend())
    device = "cuda" if backend == "nccl" and torch.cuda.is_available() else "cpu"
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return dict(zip(keys, tensor.cpu().tolist(), strict=True))
