"""A DDP rank for tests: two CPU processes (gloo) run the nnU-Net integration's reduction.

Spawned children import this module by name (the tests folder is on their ``sys.path``).
"""

from __future__ import annotations

import json
import time
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
        m1, s1, stop1, _ = _reduce(
            session, dict(RANK_METRICS[rank]), dict(RANK_STATE[rank]), rank == 1
        )
        if rank == 1:
            session = _Session(tracker=None, rank=rank, world_size=world_size)
            m2, s2, stop2, _ = _reduce(session, {}, None, False)
        else:
            m2, s2, stop2, _ = _reduce(session, dict(RANK_METRICS[0]), dict(RANK_STATE[0]), False)
        result = {"round1": [m1, s1, stop1], "round2": [m2, s2, stop2]}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


# -- the budget over two ranks, through the integration's epoch hooks ------------------------------
#: Each rank's GPU uses this much per epoch: its share of any limit below stays under it.
KWH_PER_EPOCH = 0.1
BUDGET_EPOCHS = 4
#: policy -> budget_kwh: spent by the sum after 3 epochs (0.6 kWh; each rank's share 0.3, and
#: 0.4 for the whole plan); predicted over by the sum after 2 (each rank's prediction 0.4).
BUDGETS = {"stop-when-spent": 0.5, "stop-when-predicted-over": 0.55}
#: A run where only rank 1 holds the budget (a trainer's own make_carbon_tracker can do that).
RANK1_ONLY = "rank1-only"


def _budget_trainer(rank: int, policy: str, out_dir: str, with_budget: bool = True):
    from carbon_callbacks.core.sensors.base import Sensor, SensorInfo
    from carbon_callbacks.core.tracker import CarbonTracker
    from carbon_callbacks.integrations import nnunet as integ

    class EpochCounter(Sensor):
        """A GPU energy counter that advances by exactly KWH_PER_EPOCH per epoch of work.

        Its power reads 0, so the meter's marks add nothing to the counter's last read: each
        epoch measures exactly what the counter advanced once the meter has read it."""

        is_counter = True
        cheap_power = True

        def __init__(self) -> None:
            self.info = SensorInfo(f"gpu:{rank}", "gpu", "epoch counter", "counter")
            self.work = 0
            self.read_work = -1

        def read_energy_j(self) -> float:
            self.read_work = self.work
            return 1000.0 + KWH_PER_EPOCH * 3.6e6 * self.work

        def read_power_w(self) -> float:
            return 0.0

        def do_epoch(self) -> None:
            self.work += 1
            deadline = time.monotonic() + 10.0
            while self.read_work < self.work and time.monotonic() < deadline:
                time.sleep(0.01)  # until the meter's thread has read the counter

    class Logger:
        def __init__(self) -> None:
            self.my_fantastic_logging: dict[str, list] = {}

        def log(self, key, value, epoch) -> None:
            values = self.my_fantastic_logging.setdefault(key, [])
            if len(values) > epoch:
                values[epoch] = value
            else:
                values.append(value)

    class Trainer:
        """What the integration's hooks read of an nnU-Net trainer under DDP."""

        is_ddp = True
        output_folder = None
        device = None
        num_iterations_per_epoch = 5
        num_epochs = BUDGET_EPOCHS

        def __init__(self) -> None:
            self.current_epoch = 0
            self.logger = Logger()
            self.lines: list[str] = []
            self.sensor = EpochCounter()
            settings = {
                "log_dir": str(Path(out_dir, policy if with_budget or rank else RANK1_ONLY)),
                "intensity_g_per_kwh": 100.0,
                "offline": True,
                "interval_s": 0.05,
                "counter_interval_s": 0.05,
            }
            if with_budget:
                settings.update(budget_kwh=BUDGETS[policy], budget_policy=policy)
            integ._attach(self, settings)

        def make_carbon_tracker(self, config):
            return CarbonTracker(config=config, sensors=[self.sensor])

        def print_to_log_file(self, *args) -> None:
            self.lines.append(" ".join(str(a) for a in args))

        def on_train_end(self) -> None:
            integ._on_train_end(self, lambda: None)

        def _next_epoch(self) -> None:
            self.current_epoch += 1

        def run_training(self) -> None:
            def loop() -> None:  # nnU-Net's run_training, in short
                integ._on_train_start(self, lambda: None)
                for _ in range(self.num_epochs):
                    integ._on_epoch_start(self, lambda: None)
                    self.sensor.do_epoch()
                    integ._on_epoch_end(self, self._next_epoch)
                self.on_train_end()

            integ._run_training(self, loop)

    return Trainer()


def run_budget_rank(rank: int, world_size: int, store: str, out_dir: str) -> None:
    """Train the fake trainer once per policy; write what each rank saw."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        result = {}
        runs = [(policy, policy, True) for policy in BUDGETS]
        runs.append((RANK1_ONLY, "stop-when-spent", rank == 1))
        for name, policy, with_budget in runs:
            trainer = _budget_trainer(rank, policy, out_dir, with_budget)
            trainer.run_training()
            tracker = trainer._carbon.tracker
            result[name] = {
                "epochs": trainer.current_epoch,
                "lines": trainer.lines,
                "own_kwh": tracker.state_dict()["energy_kwh"],
                "should_stop": tracker.should_stop,
                "stop_reason": tracker.stop_reason,
            }
        Path(out_dir, f"budget_rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
