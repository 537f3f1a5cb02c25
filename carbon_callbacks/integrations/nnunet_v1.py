"""nnU-Net v1 (package ``nnunet`` 1.7.x): what :func:`carbon_callbacks.integrations.nnunet.patch`
replaces in ``nnunet.training.network_training.network_trainer.NetworkTrainer``.

Read in nnunet 1.7.1 (``network_trainer.py``): ``run_training`` (l.414) loops
``while self.epoch < self.max_num_epochs``, prints ``"\\nepoch: "`` at the start of every epoch
(l.438) and ends each with ``continue_training = self.on_epoch_end()`` (l.484, early stop when
False). ``nnUNetTrainerV2.on_epoch_end`` ignores the base's return value and returns
``self.epoch < self.max_num_epochs`` instead, so a stop sets ``max_num_epochs`` too.

============================  =================================================================
nnU-Net v1                    carbon_callbacks
============================  =================================================================
``run_training``              tracker built and started (epochs = ``max_num_epochs``); stopped
                              at the end (final statement, a line in the training log)
``print_to_log_file``         the ``"\\nepoch: "`` line that opens an epoch: ``epoch_start()``
``on_epoch_end``              ``epoch_end()``; a line in the training log; the prediction once
                              made; a budget stop returns False
============================  =================================================================

Tested by ``tests/test_nnunet_v1.py`` where nnunet 1.7 is installed (not in CI). Not covered:
resumed runs count their totals from the resume on (the v1 checkpoint dict has no place for
extra state); ``nnUNetTrainerV2_DDP`` runs its own loop and is not measured (a warning says so).
"""

from __future__ import annotations

from typing import Any

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations import _nnunet_hooks as hooks
from carbon_callbacks.integrations._nnunet_settings import build_settings, settings_from_env

_ATTR = "_carbon"
_EPOCH_LINE = "\nepoch: "


def _session(trainer: Any) -> Any:
    return trainer.__dict__.get(_ATTR)


def _attach(trainer: Any) -> Any:
    resolved = build_settings(trainer, settings_from_env())
    tracker = CarbonTracker(config=CarbonConfig.from_kwargs(**resolved))
    session = hooks.Session(tracker=tracker)
    trainer.__dict__[_ATTR] = session
    return session


def wrappers() -> list[tuple[Any, str, Any]]:
    """(class, method name, replacement) for :func:`~carbon_callbacks.integrations.nnunet.patch`."""
    import functools

    from nnunet.training.network_training.network_trainer import NetworkTrainer

    run_training = NetworkTrainer.__dict__["run_training"]
    print_to_log_file = NetworkTrainer.__dict__["print_to_log_file"]
    on_epoch_end = NetworkTrainer.__dict__["on_epoch_end"]

    @functools.wraps(run_training)
    def patched_run_training(self: Any) -> Any:
        session = _session(self) or _attach(self)
        tracker = session.tracker
        tracker.set_planned(epochs=int(self.max_num_epochs))
        tracker.start()
        try:
            result = run_training(self)
        except BaseException as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            tracker.stop("interrupted" if interrupted else "failed")
            raise
        status = "interrupted" if session.stopped_by_budget else "completed"
        totals = tracker.stop(status)
        digits = tracker.config.decimal_precision
        print_to_log_file(
            self,
            f"Carbon: training {status}: {totals[keys.ENERGY_KWH]:.{digits}g} kWh, "
            f"{totals[keys.CO2_G]:.{digits}g} g CO2eq"
            + (f"; run log {tracker.log_path}" if tracker.log_path else ""),
        )
        return result

    @functools.wraps(print_to_log_file)
    def patched_print_to_log_file(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = print_to_log_file(self, *args, **kwargs)
        session = _session(self)
        if session is not None and args and args[0] == _EPOCH_LINE:
            session.tracker.epoch_start()
        return result

    @functools.wraps(on_epoch_end)
    def patched_on_epoch_end(self: Any) -> Any:
        session = _session(self)
        if session is None:
            if not self.__dict__.get("_carbon_warned"):
                self.__dict__["_carbon_warned"] = True
                import warnings

                warnings.warn(
                    f"carbon_callbacks: {type(self).__name__} runs its own training loop "
                    "(not NetworkTrainer.run_training), so it is not measured",
                    stacklevel=2,
                )
            return on_epoch_end(self)
        tracker = session.tracker
        metrics = tracker.epoch_end(steps=int(self.num_batches_per_epoch))
        try:
            hooks.print_epoch(self, session, metrics)
        except Exception as exc:  # noqa: BLE001 - never break training
            session.record("hook_failed", f"writing the carbon line failed: {exc!r}")
        result = on_epoch_end(self)
        if tracker.should_stop:
            session.stopped_by_budget = True
            self.max_num_epochs = self.epoch  # nnUNetTrainerV2 returns epoch < max_num_epochs
            print_to_log_file(
                self,
                f"Carbon: stopping after epoch {self.epoch}: "
                f"{tracker.stop_reason or 'budget reached'}",
            )
            return False
        return result

    return [
        (NetworkTrainer, "run_training", patched_run_training),
        (NetworkTrainer, "print_to_log_file", patched_print_to_log_file),
        (NetworkTrainer, "on_epoch_end", patched_on_epoch_end),
    ]
