"""Ranks and hosts: who measures what, and the reduction of per-rank figures to rank 0.

``core`` imports no training framework: torch.distributed is used only when the training code
has already imported torch and initialised a process group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
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


# -- ranks and hosts ---------------------------------------------------------------------------
#: Environment variable that overrides the host name (to simulate several hosts on one machine).
ENV_HOST = "CARBON_CALLBACKS_HOST"


class DistributedError(RuntimeError):
    """A collective failed or timed out (a rank died, or ranks disagree)."""


def host_name() -> str:
    """This process's host, as used to elect one CPU/DRAM measurer per host."""
    import socket

    return os.environ.get(ENV_HOST) or socket.gethostname()


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands among the ranks of a run.

    Attributes:
        rank / world_size: global rank and number of processes.
        host: this process's host name.
        host_leader: True on the lowest rank of each host; only it measures CPU and DRAM, which
            are per-host devices, so nothing is counted twice.
        hosts: number of distinct hosts.
    """

    rank: int = 0
    world_size: int = 1
    host: str = ""
    host_leader: bool = True
    hosts: int = 1

    @property
    def distributed(self) -> bool:
        """True when there is more than one rank."""
        return self.world_size > 1


class RankGroup:
    """Collectives of the tracker, on their own gloo group with a hard timeout.

    Built collectively (every rank constructs it at the same point, e.g. at fit start). Using a
    separate CPU group keeps the tracker's small exchanges off the training's NCCL streams and
    bounds a hang to ``timeout_s`` when a rank dies: the exchange raises
    :class:`DistributedError` and the tracker carries on with its own figures.
    """

    def __init__(self, timeout_s: float = 60.0):
        import datetime

        dist = _dist()
        if dist is None:
            raise DistributedError("torch.distributed is not initialised")
        self._dist = dist
        self.group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
        me = (host_name(), int(dist.get_rank()))
        everyone = self.gather(me)
        host = me[0]
        ranks_here = [r for h, r in everyone if h == host]
        self.info = RankInfo(
            rank=me[1],
            world_size=len(everyone),
            host=host,
            host_leader=me[1] == min(ranks_here),
            hosts=len({h for h, _ in everyone}),
        )

    def close(self) -> None:
        """Release the group's gloo resources (local; idempotent, never raises)."""
        group, self.group = self.group, None
        if group is not None:
            try:
                self._dist.destroy_process_group(group)
            except Exception:  # noqa: BLE001 - the default group may be gone already
                pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank (a collective; the others' ``obj`` is unused)."""
        if self.group is None:
            raise DistributedError("the tracker's process group is closed")
        box = [obj]
        try:
            self._dist.broadcast_object_list(box, src=src, group=self.group)
        except Exception as exc:  # noqa: BLE001 - any failure of the collective
            raise DistributedError(f"broadcast between ranks failed: {exc!r}") from exc
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (a collective)."""
        if self.group is None:
            raise DistributedError("the tracker's process group is closed")
        out: list[Any] = [None] * self._dist.get_world_size(group=self.group)
        try:
            self._dist.all_gather_object(out, obj, group=self.group)
        except Exception as exc:  # noqa: BLE001 - any failure of the collective
            raise DistributedError(f"exchange between ranks failed: {exc!r}") from exc
        return out


def local_rank_info() -> RankInfo:
    """Rank information without collectives (from torch.distributed or the environment)."""
    return RankInfo(rank=rank(), world_size=world_size(), host=host_name())


# -- the stop vote -------------------------------------------------------------------------------
def any_rank_stops(own: bool) -> bool:
    """True when this rank or any other says stop: the same answer on every rank.

    The ranks' votes are summed over the default process group, a collective that every rank
    calls at the same point (after every epoch, whatever its own vote), as Lightning's
    ``reduce_boolean_decision(all=False)``. Without a process group (or with one rank) it is
    ``own``.

    Raises:
        DistributedError: the collective failed; the caller records it as one event and goes on
            with its own vote.
    """
    try:
        votes = sum_across_ranks({"stop_votes": float(bool(own))})["stop_votes"]
    except Exception as exc:  # noqa: BLE001 - any failure of the collective
        raise DistributedError(f"the stop vote between ranks failed: {exc!r}") from exc
    return votes > 0
