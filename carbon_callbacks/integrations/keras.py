"""Keras 3 (any backend): ``model.fit(..., callbacks=[CarbonCallback(...), CSVLogger(...)])``.

Translation only: Keras hooks -> :class:`~carbon_callbacks.core.tracker.CarbonTracker` calls;
its metrics -> the epoch's ``logs`` dict, which Keras hands to the callbacks in list order: History
and the callbacks placed *after* this one (CSVLogger, EarlyStopping, TensorBoard, W&B) see them,
those before it do not; a budget -> ``model.stop_training``.

Every key this callback logs is in ``logs`` from the first epoch on (CSVLogger fixes its columns
there): a value not available yet (the prediction keys before the first prediction) is NaN.
Validation inside ``fit`` (``on_test_begin`` -> ``on_test_end``) is recorded as the epoch's
``"validation"`` phase. Keras does not tell its callbacks ``fit``'s ``validation_freq``: give the
same value to the callback (``validation_freq=``, and ``validation_steps=`` for its size) and it
becomes the tracker's validation plan; without it the predictor learns the period from the
validations it sees.
"""

from __future__ import annotations

import math
import os
from typing import Any

import keras

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.config import CarbonConfig, ConfigError
from carbon_callbacks.core.tracker import CarbonTracker


class CarbonCallback(keras.callbacks.Callback):
    """Put energy and CO2eq per epoch into Keras' ``logs`` as ``carbon/...`` keys.

    Args:
        config: a ready :class:`CarbonConfig`, or pass its fields as keyword arguments
            (``pue``, ``zone``, ``log_dir``...). ``epochs`` defaults to ``fit``'s ``epochs``.
        tracker: a ready tracker (advanced; overrides the settings).
        validation_freq: ``fit``'s ``validation_freq`` when it is a whole number above 1
            (validation after every k-th epoch): the prediction counts the validations to come
            before the first one runs. A list of epochs is left to the phase records.
        validation_steps: batches in one validation (``fit``'s ``validation_steps``, or the
            validation samples over the validation batch size): costs the planned validations
            before the first one is measured.
        tensorboard_dir: not written any more (one warning): the ``carbon/...`` keys are in
            the epoch's ``logs``, so ``keras.callbacks.TensorBoard`` placed after this callback
            writes them (TensorFlow backend); on other backends use CSVLogger or your logger's
            Keras callback.
    """

    def __init__(
        self,
        config: CarbonConfig | None = None,
        *,
        tracker: CarbonTracker | None = None,
        validation_freq: int | None = None,
        validation_steps: int | None = None,
        tensorboard_dir: str | os.PathLike[str] | None = None,
        **settings: Any,
    ):
        super().__init__()
        for name, value in (
            ("validation_freq", validation_freq),
            ("validation_steps", validation_steps),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(
                    f"{name} must be a whole number of at least 1 (fit's own value), got {value!r}"
                )
        self.tracker = tracker or CarbonTracker(config=config, **settings)
        self.validation_freq = validation_freq
        self.validation_steps = validation_steps
        self.tensorboard_dir = None if tensorboard_dir is None else str(tensorboard_dir)
        if tensorboard_dir is not None:
            self.tracker.events.record(
                "tensorboard_dir_ignored",
                f"CarbonCallback(tensorboard_dir={self.tensorboard_dir!r}) writes no TensorBoard "
                "files: the carbon/... keys are in the epoch logs, so put "
                "keras.callbacks.TensorBoard(log_dir) after CarbonCallback in callbacks=[...] "
                "(TensorFlow backend), or CSVLogger or your logger's Keras callback on others",
                "keras",
            )
        self._keys: tuple[str, ...] = ()
        self._last_logs: dict[str, Any] = {}
        self._fitting = False  # validation is a phase of the run only inside fit

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.tracker.set_planned(epochs=(self.params or {}).get("epochs"))
        self._plan_validation()
        self.tracker.start()
        self._fitting = True
        measured = {sensor.component for sensor in self.tracker.sensors}
        predicts = self.tracker.config.epochs_before_pred > 0
        self._keys = (
            *keys.EPOCH_KEYS,
            keys.POWER_W,
            *(key for comp, key in keys.COMPONENT_POWER.items() if comp in measured),
            *(keys.PREDICTION_KEYS if predicts else ()),
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.tracker.epoch_start()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = self.tracker.epoch_end(steps=(self.params or {}).get("steps"))
        carbon = {key: metrics.get(key, math.nan) for key in self._keys} | metrics
        if logs is not None:
            logs.update(carbon)  # the same dict object reaches every later callback
        self._last_logs = dict(logs) if logs is not None else carbon
        if self.tracker.should_stop and self.model is not None:
            self.model.stop_training = True
            if self.tracker.config.verbose >= 1:
                print(f"carbon_callbacks: stopping training: {self.tracker.stop_reason}")

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._fitting:  # fit's validation, not a model.evaluate() given this callback
            self.tracker.begin_phase("validation")

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._fitting:
            self.tracker.end_phase("validation")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._fitting = False
        name = self.tracker.config.monitor_metric
        if name is not None and isinstance(self._last_logs.get(name), (int, float)):
            self.tracker.record_metric(name, float(self._last_logs[name]))
        self.tracker.stop("interrupted" if self.tracker.should_stop else "completed")

    def _plan_validation(self) -> None:
        """``validation_freq=k`` (k > 1) -> the tracker's validation plan, sized by
        ``validation_steps`` over ``fit``'s training batches per epoch when both are known."""
        every = self.validation_freq
        if every is None or every < 2:
            return
        train_batches = (self.params or {}).get("steps")
        ratio = None
        if self.validation_steps and isinstance(train_batches, int) and train_batches > 0:
            ratio = self.validation_steps / train_batches
        self.tracker.plan_phase("validation", every, ratio, source="keras", strict=False)
