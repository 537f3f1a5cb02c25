"""A DDP rank for tests: two CPU processes (gloo) run the nnU-Net integration's reduction.

Spawned children import this module by name (the tests folder is on their ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path

from carbon_callbacks.core import metrics as keys

#: What each rank "measured" in round 1 (rank 1 has no CPU power: GPU only, as on DDP ranks > 0).
RANK_METRICS = {
    0: {
        keys.EPOCH_ENERGY_KWH: 0.010,
        keys.EPOCH_CO2_G: 1.5,
        keys.ENERGY_KWH: 0.030,
        keys.CO2_G: 4.5,
        keys.POWER_W: 300.0,
        keys.GPU_POWER_W: 250.0,
        keys.CPU_POWER_W: 50.0,
        keys.EPOCH_DURATION_S: 120.0,
        keys.INTENSITY_G_PER_KWH: 150.0,
    },
    1: {
        keys.EPOCH_ENERGY_KWH: 0.008,
        keys.EPOCH_CO2_G: 1.2,
        keys.ENERGY_KWH: 0.024,
        keys.CO2_G: 3.6,
        keys.POWER_W: 240.0,
        keys.GPU_POWER_W: 240.0,
        keys.EPOCH_DURATION_S: 119.0,
        keys.INTENSITY_G_PER_KWH: 150.0,
    },
}
RANK_STATE = {
    0: {"version": 1, "energy_kwh": 0.030, "co2_g": 4.5, "duration_s": 360.0, "epochs": 3},
    1: {"version": 1, "energy_kwh": 0.024, "co2_g": 3.6, "duration_s": 357.0, "epochs": 3},
}


def run_rank(rank: int, world_size: int, store: str, out_dir: str) -> None:
    """Round 1: both ranks measure; only rank 1's budget says stop. Round 2: rank 1 has no
    tracker (it measures nothing, e.g. components='cpu' off rank 0)."""
    import torch.distributed as dist

    from carbon_callbacks.core.tracker import CarbonTracker
    from carbon_callbacks.integrations.nnunet import _reduce, _Session

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        tracker = CarbonTracker(log_dir=None, verbose=0, sensors=[], zone="DK")
        session = _Session(tracker=tracker, rank=rank, world_size=world_size)
        m1, s1, stop1 = _reduce(
            session, dict(RANK_METRICS[rank]), dict(RANK_STATE[rank]), rank == 1
        )
        if rank == 1:
            session = _Session(tracker=None, rank=rank, world_size=world_size)
            m2, s2, stop2 = _reduce(session, {}, None, False)
        else:
            m2, s2, stop2 = _reduce(session, dict(RANK_METRICS[0]), dict(RANK_STATE[0]), False)
        result = {"round1": [m1, s1, stop1], "round2": [m2, s2, stop2]}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
