"""PyTorch Lightning: ``Trainer(callbacks=[CarbonCallback(...)])``.

Translation only: Lightning hooks -> :class:`~carbon_callbacks.core.tracker.CarbonTracker`
calls; the tracker's metrics -> ``pl_module.log`` (so they reach every logger the user has:
TensorBoard, CSV, W&B, MLflow); checkpoint state -> the tracker's ``state_dict``.

Works with ``import lightning`` and with ``import pytorch_lightning`` (whichever is installed;
``lightning`` first). The epoch window is ``on_train_epoch_start`` -> ``on_train_epoch_end``,
which in Lightning includes that epoch's validation; validation and the sanity check are also
recorded as their own phases. A budget's stop decision (``tracker.should_stop``) becomes
``trainer.should_stop``, made collective under DDP (Lightning honours it once ``min_epochs`` is
reached).
"""

from __future__ import annotations

from typing import Any

import torch

from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations._gpu import cuda_gpu_id

try:  # the unified package first, then the standalone one
    from lightning.pytorch import Callback as _Callback
except ImportError:  # pragma: no cover - exercised where only pytorch_lightning is installed
    try:
        from pytorch_lightning import Callback as _Callback
    except ImportError as exc:  # pragma: no cover
        raise ImportError(
            "carbon_callbacks.integrations.lightning needs Lightning: "
            "pip install 'carbon-callbacks[lightning]'"
        ) from exc


class CarbonCallback(_Callback):
    """Log energy and CO2eq per epoch as ``carbon/...`` metrics.

    Args:
        config: a ready :class:`CarbonConfig`, or pass its fields as keyword arguments
            (``pue``, ``zone``, ``log_dir``, ``epochs``...). ``epochs`` defaults to the
            Trainer's ``max_epochs``.
        tracker: a ready tracker (advanced; overrides the settings).

    Several callbacks in one Trainer (say one per component) need distinct ``run_name``s: the
    name is part of the checkpoint key, so each resumes its own totals.
    """

    def __init__(
        self,
        config: CarbonConfig | None = None,
        *,
        tracker: CarbonTracker | None = None,
        **settings: Any,
    ):
        super().__init__()
        self.tracker = tracker or CarbonTracker(config=config, **settings)
        self._global_step_at_epoch_start = 0

    @property
    def state_key(self) -> str:
        # One key per run_name: several callbacks (say one per component) can share a Trainer
        # and each resume its own totals. Unnamed callbacks keep the plain key (old checkpoints).
        name = self.tracker.config.run_name
        return "CarbonCallback" if name is None else f"CarbonCallback[{name}]"

    # -- run ---------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        max_epochs = trainer.max_epochs if (trainer.max_epochs or 0) > 0 else None
        max_steps = trainer.max_steps if (trainer.max_steps or 0) > 0 else None
        self.tracker.set_planned(epochs=max_epochs, total_steps=max_steps)
        gpu = cuda_gpu_id(pl_module.device)
        if gpu is not None:  # measure the GPU this rank trains on
            self.tracker.set_gpu(gpu)
        # The tracker starts at the first sanity-check or training hook: after Lightning has
        # restored checkpoint state (some strategies do that after on_fit_start) and installed
        # its own SIGTERM handler, which the tracker's then chains in front of.

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self.tracker.begin_phase("sanity_check")

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        self.tracker.end_phase("sanity_check")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._plan_validation(trainer, pl_module)
        # Resumed from a mid-epoch checkpoint, Lightning skips on_train_epoch_start for that
        # epoch but still calls on_train_epoch_end: open the epoch here so its rest is measured.
        if getattr(trainer.fit_loop, "restarted_mid_epoch", False):
            self.on_train_epoch_start(trainer, pl_module)

    def _plan_validation(self, trainer: Any, pl_module: Any) -> None:
        """``check_val_every_n_epoch=k`` (k > 1) -> the tracker's validation plan.

        Its size (validation batches / training batches) is known once Lightning has set up
        the validation data: after the sanity check (on by default), else after the first
        validation. Validation within epochs (``val_check_interval`` < 1 or in steps) is left
        to the phase records.
        """
        every = getattr(trainer, "check_val_every_n_epoch", None)
        if not isinstance(every, int) or every < 2 or trainer.val_check_interval != 1.0:
            return
        if getattr(trainer, "limit_val_batches", 1) == 0 or not _overrides(
            pl_module, "validation_step"
        ):
            return
        val_batches = sum(getattr(trainer, "num_val_batches", None) or [])
        train_batches = getattr(trainer, "num_training_batches", 0)
        ratio = None
        if val_batches > 0 and 0 < train_batches < float("inf"):
            ratio = val_batches / train_batches
        self.tracker.plan_phase("validation", every, ratio, source="lightning", strict=False)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._global_step_at_epoch_start = trainer.global_step
        self.tracker.epoch_start()

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.tracker.begin_phase("validation")

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.tracker.end_phase("validation")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        steps = trainer.global_step - self._global_step_at_epoch_start
        metrics = self.tracker.epoch_end(steps=steps)
        # CPU tensors (a Python float would be copied to the GPU, a synchronising copy, and
        # rounded to float32), all made by one call: one float64 tensor, one element per key
        values = torch.tensor(list(metrics.values()), dtype=torch.float64).unbind()
        to_loggers = bool(trainer.loggers)
        for key, value in zip(metrics, values, strict=True):
            pl_module.log(key, value, on_step=False, on_epoch=True, logger=to_loggers)
        # a budget's decision -> Lightning's stop flag, collectively (any rank stops all ranks,
        # as EarlyStopping does); every rank calls the collective every epoch
        should_stop = trainer.strategy.reduce_boolean_decision(
            bool(self.tracker.should_stop), all=False
        )
        trainer.should_stop = trainer.should_stop or should_stop

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        name = self.tracker.config.monitor_metric
        if name is not None and name in trainer.callback_metrics:
            self.tracker.record_metric(name, float(trainer.callback_metrics[name]))
        self.tracker.stop("completed")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # Ctrl-C, and SIGTERM (Lightning raises its SIGTERMException, a SystemExit), interrupt
        interrupted = isinstance(exception, (KeyboardInterrupt, SystemExit))
        status = "interrupted" if interrupted else "failed"
        self.tracker.stop(status)

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict)


def _overrides(module: Any, method: str) -> bool:
    """True when ``module``'s class defines ``method`` itself, not only Lightning's default."""
    for cls in type(module).__mro__:
        if method in vars(cls):
            return cls.__module__.split(".")[0] not in ("lightning", "pytorch_lightning")
    return False
