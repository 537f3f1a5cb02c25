"""DDP ranks for tests: two CPU processes (gloo) run the nnU-Net integration's trainer hooks.

nnU-Net's own DDP needs CUDA (it puts rank r on ``cuda:r``), so each rank drives the
integration's hooks with a stand-in trainer (what the hooks read of an ``nnUNetTrainer``) and
stand-in sensors whose counters advance by a fixed energy per epoch. The process group exists
before the trainer is built, as in nnU-Net's ``run_ddp``.

Spawned children import this module by name (the tests folder is on their ``sys.path``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

J_PER_KWH = 3.6e6

# -- the whole run in rank 0's run log ---------------------------------------------------------
#: GPU energy per epoch of each rank's stand-in counter (kWh): different, so that a rank's
#: share, a sum and a sum counted twice are told apart.
SUM_GPU_KWH = {0: 0.1, 1: 0.25}
#: CPU energy per epoch (kWh). Every rank is given a CPU sensor; only rank 0 (the host's
#: leader) may measure it.
SUM_CPU_KWH = 0.05
SUM_EPOCHS = 3
SUM_RUN = "sum"

# -- the budget over two ranks -------------------------------------------------------------------
#: Each rank's GPU uses this much per epoch: its share of any limit below stays under it.
KWH_PER_EPOCH = 0.1
BUDGET_EPOCHS = 4
#: policy -> budget_kwh: spent by the sum after 3 epochs (0.6 kWh; each rank's share 0.3, and
#: 0.4 for the whole plan); predicted over by the sum after 2 (each rank's prediction 0.4).
BUDGETS = {"stop-when-spent": 0.5, "stop-when-predicted-over": 0.55}
#: A run where only rank 1 holds the budget (a trainer's own make_carbon_tracker can do that).
RANK1_ONLY = "rank1-only"


def _counter(name: str, component: str, kwh_per_epoch: float) -> Any:
    from carbon_callbacks.core.sensors.base import Sensor, SensorInfo

    class EpochCounter(Sensor):
        """An energy counter that advances by exactly ``kwh_per_epoch`` per epoch of work.

        Its power reads 0, so the meter's marks add nothing to the counter's last read: each
        epoch measures exactly what the counter advanced once the meter has read it."""

        is_counter = True
        cheap_power = True

        def __init__(self) -> None:
            self.info = SensorInfo(name, component, f"{component} epoch counter", "counter")
            self.work = 0
            self.read_work = -1

        def read_energy_j(self) -> float:
            self.read_work = self.work
            return 1000.0 + kwh_per_epoch * J_PER_KWH * self.work

        def read_power_w(self) -> float:
            return 0.0

        def do_epoch(self, wait: bool = True) -> None:
            self.work += 1
            deadline = time.monotonic() + 10.0
            while wait and self.read_work < self.work and time.monotonic() < deadline:
                time.sleep(0.01)  # until the meter's thread has read the counter

    return EpochCounter()


def _trainer(rank: int, settings: dict[str, Any], sensors: list[Any], epochs: int) -> Any:
    """A stand-in nnU-Net trainer under DDP, its tracker built by the integration."""
    from carbon_callbacks.core.tracker import CarbonTracker
    from carbon_callbacks.integrations import _nnunet_hooks as hooks

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
        num_epochs = epochs

        def __init__(self) -> None:
            self.current_epoch = 0
            self.logger = Logger()
            self.lines: list[str] = []
            self.sensors = sensors
            hooks.attach(self, settings)

        def make_carbon_tracker(self, config):
            return CarbonTracker(config=config, sensors=list(self.sensors))

        def print_to_log_file(self, *args) -> None:
            self.lines.append(" ".join(str(a) for a in args))

        def on_train_end(self) -> None:
            hooks.on_train_end(self, lambda: None)

        def _next_epoch(self) -> None:
            self.current_epoch += 1

        def run_training(self) -> None:
            def loop() -> None:  # nnU-Net's run_training, in short
                hooks.on_train_start(self, lambda: None)
                for _ in range(self.num_epochs):
                    hooks.on_epoch_start(self, lambda: None)
                    measured = hooks.session(self).tracker.sensors
                    for sensor in self.sensors:  # wait only for what this rank measures
                        sensor.do_epoch(wait=any(i.name == sensor.info.name for i in measured))
                    hooks.on_epoch_end(self, self._next_epoch)
                self.on_train_end()

            hooks.run_training(self, loop)

    return Trainer()


def _base_settings(log_dir: Path) -> dict[str, Any]:
    return {
        "log_dir": str(log_dir),
        "intensity_g_per_kwh": 100.0,
        "offline": True,
        "interval_s": 0.05,
        "counter_interval_s": 0.05,
    }


def _init(rank: int, world_size: int, store: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)


def _finite(values: list[Any]) -> list[Any]:
    """JSON-ready: NaN as None."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def run_sum_rank(rank: int, world_size: int, store: str, out_dir: str) -> None:
    """Train the stand-in trainer; write what nnU-Net's logger got on this rank."""
    import torch.distributed as dist

    _init(rank, world_size, store)
    try:
        settings = _base_settings(Path(out_dir, SUM_RUN))
        # a stated CPU, as a user might give to every rank: rank 1 must drop it, not fail
        settings.update(sim_cpu="stand-in CPU", sim_cpu_tdp=50.0)
        sensors = [
            _counter(f"gpu:{rank}", "gpu", SUM_GPU_KWH[rank]),
            _counter("cpu:0", "cpu", SUM_CPU_KWH),
        ]
        trainer = _trainer(rank, settings, sensors, SUM_EPOCHS)
        trainer.run_training()
        tracker = trainer._carbon.tracker
        lists = trainer.logger.my_fantastic_logging
        result = {
            "epochs": trainer.current_epoch,
            "logger": {k: _finite(v) for k, v in lists.items()},
            "lines": trainer.lines,
            "sensors": [i.name for i in tracker.sensors],
            "log_path": tracker.log_path,
            "events": [e.kind for e in tracker.events.events],
        }
        Path(out_dir, f"sum_rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run_budget_rank(rank: int, world_size: int, store: str, out_dir: str) -> None:
    """Train the stand-in trainer once per policy; write what each rank saw."""
    import torch.distributed as dist

    _init(rank, world_size, store)
    try:
        result = {}
        runs = [(policy, policy, True) for policy in BUDGETS]
        runs.append((RANK1_ONLY, "stop-when-spent", rank == 1))
        for name, policy, with_budget in runs:
            settings = _base_settings(Path(out_dir, name))
            if with_budget:
                settings.update(budget_kwh=BUDGETS[policy], budget_policy=policy)
            sensors = [_counter(f"gpu:{rank}", "gpu", KWH_PER_EPOCH)]
            trainer = _trainer(rank, settings, sensors, BUDGET_EPOCHS)
            trainer.run_training()
            tracker = trainer._carbon.tracker
            result[name] = {
                "epochs": trainer.current_epoch,
                "lines": trainer.lines,
                "run_kwh": tracker.state_dict()["energy_kwh"],
                "should_stop": tracker.should_stop,
                "stop_reason": tracker.stop_reason,
            }
        Path(out_dir, f"budget_rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
