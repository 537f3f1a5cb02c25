"""nnU-Net: energy and CO2eq per epoch next to Dice, in nnU-Net's own logger, log and checkpoints.

Three ways in, one behaviour (nnU-Net v2, ``nnunetv2`` 2.6 to 2.8):

* ``nnUNetTrainerCarbon``, a ``nnUNetTrainer``: ``nnUNetv2_train 4 2d 0 -tr nnUNetTrainerCarbon``
  once ``nnUNet_extTrainer`` names :data:`TRAINER_DIR` (nnU-Net 2.8+), or built through nnU-Net's
  Python API like any trainer.
* :class:`CarbonTrainerMixin` gives the same to any other variant:
  ``class MyCarbon(CarbonTrainerMixin, nnUNetTrainer_250epochs): pass``.
* :func:`patch` monkeypatches ``nnUNetTrainer`` itself, so the stock trainer and every variant that
  calls ``super()`` are measured with no trainer named; ``carbon-callbacks-nnunet-train`` (same
  arguments as ``nnUNetv2_train``) patches and then runs nnU-Net's own ``run_training_entry``.
  Where nnU-Net v1 (``nnunet`` 1.7.x) is installed instead, :func:`patch` patches its
  ``NetworkTrainer`` (:mod:`carbon_callbacks.integrations.nnunet_v1`).

Translation only. Line numbers are those of ``nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py``
in 2.8.1, where ``run_training`` (l.1417) calls, per epoch, ``on_epoch_start`` (l.1166) ...
``on_epoch_end`` (l.1169), then ``on_train_end`` (l.983):

============================  =================================================================
nnU-Net                       carbon_callbacks
============================  =================================================================
``__init__``                  settings validated, tracker built, keys registered in the logger
``on_train_start``            ``set_planned(epochs=num_epochs)``, ``start()``
``on_epoch_start``            ``epoch_start()`` (after nnU-Net's start timestamp)
``on_validation_epoch_*``     ``begin_phase("validation")`` / ``end_phase("validation")``
``on_epoch_end``              ``epoch_end()``; the metrics into ``self.logger`` **before** nnU-Net's
                              own ``on_epoch_end`` (which saves checkpoints and draws
                              ``progress.png``); one line in the training log; the prediction
                              once made
``on_train_end``              ``stop()``: the final statement, and a line in the training log
``load_checkpoint``           keys registered again (NaN for epochs without them); totals resumed
``run_training``              a budget stop ends the loop, then ``on_train_end`` as usual
============================  =================================================================

Resume: ``save_checkpoint`` (l.1195) stores ``self.logger.get_checkpoint()`` as
``checkpoint['logging']`` and ``load_checkpoint`` (l.1237) restores it. The tracker's
``state_dict()`` is logged there every epoch under :data:`STATE_KEY` (into the local logger only,
not W&B), so every checkpoint nnU-Net writes (latest, best, final) carries the totals of the
epochs it contains, with no second write of a file that can weigh hundreds of MB.

Budget stop: ``run_training``'s ``for epoch in range(...)`` is evaluated once and nnU-Net v2 has
no stop flag. When ``tracker.should_stop`` is set after an epoch, the next ``on_epoch_start``
raises a private exception before anything of that epoch runs; the ``run_training`` wrapper
catches it and calls ``on_train_end``, which writes ``checkpoint_final.pth`` exactly as at a
DDP (``-num_gpus`` > 1): nnU-Net's ``run_ddp`` creates the process group before it builds the
trainer, so every rank's tracker joins the ranks at ``on_train_start``, as under Lightning:
every rank measures its own GPU (named by UUID, ``set_gpu``), rank 0 also measures CPU and DRAM
(once per host), and each ``epoch_end()`` combines the ranks' measurements. Rank 0's run log
holds every rank's devices (``rank0/gpu:0``, ``rank1/gpu:1``...), i.e. the whole run; every
rank logs the same whole-run figures into nnU-Net's logger, like nnU-Net's own gathered losses,
and every rank's tracker takes the same budget decision on them. The integration only sums the
ranks' stop votes, so that a stop (a rank's own budget, rank 0's ``stop_and_confirm``) ends
every rank at the same epoch.

Modules: this one re-exports the public names; the hooks are in
:mod:`~carbon_callbacks.integrations._nnunet_hooks`, the mixin and the trainer class in
``_nnunet_trainer``, :func:`patch` and the console script in ``_nnunet_patch``, versions and
settings in ``_nnunet_settings``. The figures are drawn after training from the run log, which
is written to the trainer's output folder: ``carbon-callbacks plot <output folder>``.
"""

from __future__ import annotations

from typing import Any

from carbon_callbacks.integrations._nnunet_hooks import STATE_KEY
from carbon_callbacks.integrations._nnunet_patch import (
    is_patched,
    main,
    patch,
    split_args,
    unpatch,
)
from carbon_callbacks.integrations._nnunet_settings import (
    ENV_SETTINGS,
    SUPPORTED_TEXT,
    SUPPORTED_V1,
    SUPPORTED_V2,
    TRAINER_DIR,
    NnUNetVersionError,
    build_settings,
    check_v1_version,
    check_v2_version,
    settings_from_env,
)
from carbon_callbacks.integrations._nnunet_trainer import CarbonTrainerMixin, trainer_class

__all__ = [
    "CarbonTrainerMixin",
    "patch",
    "unpatch",
    "is_patched",
    "main",
    "TRAINER_DIR",
    "STATE_KEY",
    "ENV_SETTINGS",
    "NnUNetVersionError",
    # also importable from here (the names the tests, docs and nnunet_v1 use)
    "SUPPORTED_TEXT",
    "SUPPORTED_V1",
    "SUPPORTED_V2",
    "build_settings",
    "check_v1_version",
    "check_v2_version",
    "settings_from_env",
    "split_args",
]


def __getattr__(name: str) -> Any:
    """``nnUNetTrainerCarbon`` is created lazily: importing this module imports no nnU-Net."""
    if name == "nnUNetTrainerCarbon":
        return trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # spawned children re-import the main module: guarded
    # run the importable module's main, so that patch() and the trainer classes share one
    # module (``python -m`` would otherwise hold a second copy of this file as ``__main__``)
    from carbon_callbacks.integrations.nnunet import main as _main

    _main()
