"""Trainers of ``python -m bench distributed nnunet``, found by name through ``nnUNet_extTrainer``.

``nnUNetTrainerCarbonProof`` is ``nnUNetTrainerCarbon`` with a short schedule (epochs and
iterations from the environment, see ``ENV_*``) and one addition for the proof only: a rank
other than 0 writes a witness, ``carbon_rank<r>/own_windows.jsonl`` in the output folder. Rank
0's run log holds every rank's energy (``rank1/gpu:1``), but over rank 0's epoch windows: the
tracker's combination keeps rank 0's edges. The witness has what rank r measured over its *own*
edges (one ``window`` record per epoch, taken just before the ranks are combined) and, after
each epoch, its tracker's stop decision (a ``decision`` record). Everything else is the stock
carbon trainer.

``nnUNetTrainerCarbonProofRank1Budget`` gives rank 1 alone an energy budget that is spent after
the first epoch (``stop-when-spent``): every rank must stop there, through the summed stop vote.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch

from carbon_callbacks.core import distributed
from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.meter import Measurement
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations.nnunet import nnUNetTrainerCarbon

#: Environment variables read by the proof trainers (set by the harness per training).
ENV_EPOCHS = "CARBON_PROOF_EPOCHS"
ENV_ITERATIONS = "CARBON_PROOF_ITERATIONS"
ENV_VAL_ITERATIONS = "CARBON_PROOF_VAL_ITERATIONS"
#: Rank ``r``'s witness, relative to the trainer's output folder.
WITNESS_PATH = os.path.join("carbon_rank{rank}", "own_windows.jsonl")


class WitnessTracker(CarbonTracker):
    """The stock tracker; it also appends this rank's own epoch measurement to a witness file.

    Hooks the tracker's private ``_combine`` (proof only): what it receives is this rank's
    measurement over this rank's own epoch edges, before rank 0's edges replace them.
    """

    def __init__(self, witness_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.witness_path = witness_path
        self._witness_epoch = 0

    def write_witness(self, record: dict[str, Any]) -> None:
        """Append one JSON line (the folder is made on first use)."""
        os.makedirs(os.path.dirname(self.witness_path), exist_ok=True)
        with open(self.witness_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _combine(self, m: Measurement) -> Measurement:
        self.write_witness(
            {
                "type": "window",
                "epoch": self._witness_epoch,
                "rank": self.ranks.rank,
                "start_unix_s": m.start_unix_s,
                "end_unix_s": m.end_unix_s,
                "duration_s": m.duration_s,
                "energy_j": dict(m.energy_j),
                "methods": dict(m.methods),
            }
        )
        self._witness_epoch += 1
        return super()._combine(m)


class nnUNetTrainerCarbonProof(nnUNetTrainerCarbon):  # noqa: N801 - nnU-Net's naming
    """The carbon trainer with a short schedule and per-rank witnesses of the own windows."""

    #: Rank -> energy budget in kWh given to that rank's tracker alone (stop-when-spent).
    rank_budget_kwh: dict[int, float] = {}

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get(ENV_EPOCHS, "4"))
        self.num_iterations_per_epoch = int(os.environ.get(ENV_ITERATIONS, "250"))
        self.num_val_iterations_per_epoch = int(os.environ.get(ENV_VAL_ITERATIONS, "10"))

    def _proof_rank(self) -> int:
        return distributed.rank() if getattr(self, "is_ddp", False) else 0

    def make_carbon_tracker(self, config: CarbonConfig) -> CarbonTracker:
        """The stock tracker; on a rank > 0 one that writes a witness; a budget if asked."""
        rank = self._proof_rank()
        if rank in self.rank_budget_kwh:
            config = dataclasses.replace(
                config, budget_kwh=self.rank_budget_kwh[rank], budget_policy="stop-when-spent"
            )
        if rank == 0 or self.output_folder is None:
            return CarbonTracker(config=config)
        path = os.path.join(self.output_folder, WITNESS_PATH.format(rank=rank))
        if os.path.exists(path):
            os.remove(path)  # one training per witness
        return WitnessTracker(path, config=config)

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        super().on_epoch_end()
        tracker = self.carbon_tracker
        if isinstance(tracker, WitnessTracker):
            tracker.write_witness(
                {
                    "type": "decision",
                    "epoch": epoch,
                    "rank": self._proof_rank(),
                    "should_stop": tracker.should_stop,
                    "stop_reason": tracker.stop_reason,
                }
            )


class nnUNetTrainerCarbonProofRank1Budget(nnUNetTrainerCarbonProof):  # noqa: N801
    """Rank 1 alone holds a budget spent after the first epoch: every rank must stop there."""

    rank_budget_kwh = {1: 1e-9}
