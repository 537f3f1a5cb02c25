"""Trainers of ``bench/nnunet_ddp_proof.py``, found by name through ``nnUNet_extTrainer``.

``nnUNetTrainerCarbonProof`` is ``nnUNetTrainerCarbon`` with a short schedule (epochs and
iterations from the environment, see ``ENV_*``) and one addition for the proof only: a rank
other than 0, which writes no run log in normal use, writes one into ``carbon_rank<r>/`` of the
output folder (a witness of what that rank measured: its GPU, its epoch windows). Rank 0's run
log, the figures nnU-Net logs and everything else are those of the stock carbon trainer.

``nnUNetTrainerCarbonProofRank1Budget`` gives rank 1 alone an energy budget that is spent after
the first epoch (``stop-when-spent``): every rank must stop there, through the summed stop vote.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from carbon_callbacks.core import distributed
from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations.nnunet import nnUNetTrainerCarbon

#: Environment variables read by the proof trainers (set by the harness per training).
ENV_EPOCHS = "CARBON_PROOF_EPOCHS"
ENV_ITERATIONS = "CARBON_PROOF_ITERATIONS"
ENV_VAL_ITERATIONS = "CARBON_PROOF_VAL_ITERATIONS"
#: Folder (in the trainer's output folder) of rank ``r``'s witness run log: ``carbon_rank{r}``.
WITNESS_DIR = "carbon_rank{rank}"


class nnUNetTrainerCarbonProof(nnUNetTrainerCarbon):  # noqa: N801 - nnU-Net's naming
    """The carbon trainer with a short schedule and per-rank witness run logs."""

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

    def make_carbon_tracker(self, config: CarbonConfig) -> CarbonTracker:
        """The stock tracker; a rank > 0 also writes a witness run log; a budget if asked."""
        rank = distributed.rank() if getattr(self, "is_ddp", False) else 0
        changes: dict[str, Any] = {}
        if rank != 0 and config.log_dir is None and self.output_folder is not None:
            changes["log_dir"] = os.path.join(self.output_folder, WITNESS_DIR.format(rank=rank))
        if rank in self.rank_budget_kwh:
            changes.update(budget_kwh=self.rank_budget_kwh[rank], budget_policy="stop-when-spent")
        if changes:
            config = dataclasses.replace(config, **changes)
        return CarbonTracker(config=config)


class nnUNetTrainerCarbonProofRank1Budget(nnUNetTrainerCarbonProof):  # noqa: N801
    """Rank 1 alone holds a budget spent after the first epoch: every rank must stop there."""

    rank_budget_kwh = {1: 1e-9}
