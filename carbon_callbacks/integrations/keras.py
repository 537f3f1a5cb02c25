"""Keras 3 (any backend): ``model.fit(..., callbacks=[CarbonCallback(...), CSVLogger(...)])``.

Translation only: Keras hooks -> :class:`~carbon_callbacks.core.tracker.CarbonTracker` calls;
its metrics -> the epoch's ``logs`` dict, which Keras hands to the callbacks in list order: History
and the callbacks placed *after* this one (CSVLogger, EarlyStopping, TensorBoard, W&B) see them,
those before it do not (a warning at train begin says so); a budget -> ``model.stop_training``.

Every key this callback logs is in ``logs`` from the first epoch on (CSVLogger fixes its columns
there): a value not available yet (the prediction keys before the first prediction) is NaN.
Validation inside ``fit`` (``on_test_begin`` -> ``on_test_end``) is recorded as the epoch's
``"validation"`` phase; ``fit``'s ``validation_freq=k`` (k > 1), which Keras gives callbacks no
access to, is read from ``fit``'s own frame and becomes the tracker's validation plan.
Without TensorFlow (torch, JAX backends) ``keras.callbacks.TensorBoard`` cannot run; pass
``tensorboard_dir=`` to get the carbon curves, beside loss and the other epoch logs, anyway.
"""

from __future__ import annotations

import importlib.util
import math
import os
from types import FrameType
from typing import Any

import keras

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.config import CarbonConfig, ConfigError, check_writable_dir
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations._frames import find_up
from carbon_callbacks.integrations._tensorboard import ScalarWriter

#: Callbacks that read the epoch's logs: they must stand after this one.
_LOG_READERS = tuple(
    getattr(keras.callbacks, name)
    for name in "CSVLogger TensorBoard EarlyStopping ModelCheckpoint ReduceLROnPlateau".split()
)
#: Top-level packages whose Keras callbacks log metrics (W&B, MLflow, ...).
_LOGGER_PACKAGES = {"wandb", "mlflow", "comet_ml", "neptune", "clearml", "dvclive"}


class CarbonCallback(keras.callbacks.Callback):
    """Put energy and CO2eq per epoch into Keras' ``logs`` as ``carbon/...`` keys.

    Args:
        config: a ready :class:`CarbonConfig`, or pass its fields as keyword arguments
            (``pue``, ``zone``, ``log_dir``...). ``epochs`` defaults to ``fit``'s ``epochs``.
        tracker: a ready tracker (advanced; overrides the settings).
        tensorboard_dir: also write the epoch's logs (carbon keys, loss, ``val_*``...) as
            TensorBoard scalars there, step = epoch (0-based). Needs only the ``tensorboard``
            package, so it works on every backend.
    """

    def __init__(
        self,
        config: CarbonConfig | None = None,
        *,
        tracker: CarbonTracker | None = None,
        tensorboard_dir: str | os.PathLike[str] | None = None,
        **settings: Any,
    ):
        super().__init__()
        self.tracker = tracker or CarbonTracker(config=config, **settings)
        if tensorboard_dir is not None:
            _check_tensorboard_dir(str(tensorboard_dir))
        self.tensorboard_dir = None if tensorboard_dir is None else str(tensorboard_dir)
        self._writer: ScalarWriter | None = None
        self._keys: tuple[str, ...] = ()
        self._last_logs: dict[str, Any] = {}
        self._fitting = False  # validation is a phase of the run only inside fit

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        before = _log_readers_before(self)
        if before:
            self.tracker.events.record(
                "callback_order",
                f"callbacks placed before CarbonCallback ({', '.join(before)}) do not see the "
                "carbon/... keys: put CarbonCallback first in callbacks=[...]",
                "keras",
            )
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
        if self.tensorboard_dir is not None:
            try:
                self._writer = ScalarWriter(self.tensorboard_dir)
            except Exception as exc:  # noqa: BLE001 - never break training
                self._tensorboard_failed(exc)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.tracker.epoch_start()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = self.tracker.epoch_end(steps=(self.params or {}).get("steps"))
        carbon = {key: metrics.get(key, math.nan) for key in self._keys} | metrics
        if logs is not None:
            logs.update(carbon)  # the same dict object reaches every later callback
        self._last_logs = dict(logs) if logs is not None else carbon
        if self._writer is not None:
            try:
                self._writer.write(self._last_logs, step=epoch)
            except Exception as exc:  # noqa: BLE001
                self._tensorboard_failed(exc)
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
        if self._writer is not None:
            self._writer.close()

    def _plan_validation(self) -> None:
        """``fit(validation_freq=k)`` (k > 1) -> the tracker's validation plan.

        Keras passes callbacks neither ``validation_freq`` nor the validation data, so they are
        read from the frame of the ``fit`` that is calling this hook. Where that frame is not
        found (another trainer calling the hooks), no plan is made and the predictor reads the
        period from the validations it sees. A list of epochs is not a period: left to the
        phase records too.
        """
        fit = _fit_locals(self.model)
        if fit is None or fit.get("validation_data") is None:
            return
        every = fit.get("validation_freq")
        if isinstance(every, bool) or not isinstance(every, int) or every < 2:
            return
        train_batches = (self.params or {}).get("steps")
        val_batches = _validation_batches(fit)
        ratio = None
        if val_batches and isinstance(train_batches, int) and train_batches > 0:
            ratio = val_batches / train_batches
        self.tracker.plan_phase("validation", every, ratio, source="keras", strict=False)

    def _tensorboard_failed(self, exc: Exception) -> None:
        self._writer = None
        self.tracker.events.record(
            "tensorboard_failed",
            f"TensorBoard output to {self.tensorboard_dir!r} failed ({exc!r}); it stops, "
            "training and the other logs continue",
            "keras",
        )


def _check_tensorboard_dir(path: str) -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard_dir needs the tensorboard package: pip install tensorboard")
    try:
        check_writable_dir(path)
    except ConfigError as exc:  # the same check as log_dir's, named after this setting
        detail = str(exc).split(";")[0].replace("log_dir", "tensorboard_dir", 1)
        raise ConfigError(f"{detail}; use a writable folder or tensorboard_dir=None") from None


def _fit_locals(model: Any) -> dict[str, Any] | None:
    """The local variables of ``model.fit``, found up the stack from a callback hook, or None."""

    def fit_of_model(frame: FrameType) -> dict[str, Any] | None:
        local = frame.f_locals
        if frame.f_code.co_name == "fit" and "validation_freq" in local:
            return dict(local) if local.get("self") is model else None
        return None

    # hook <- CallbackList.on_train_begin <- fit
    return find_up(fit_of_model, 8)


def _validation_batches(fit: dict[str, Any]) -> int | None:
    """Batches in one validation of this ``fit``, from its settings, or None when unknowable.

    ``validation_steps`` when given; else the validation arrays' samples over the validation
    batch size (Keras' default batch size is 32); else ``len()`` of a batched source (a
    ``PyDataset``, a torch ``DataLoader``, a ``tf.data`` dataset of known size).
    """
    steps = fit.get("validation_steps")
    if isinstance(steps, int) and steps > 0:
        return steps
    val_x = fit.get("val_x")
    while isinstance(val_x, (list, tuple, dict)) and val_x:  # several inputs: the first one
        val_x = next(iter(val_x.values())) if isinstance(val_x, dict) else val_x[0]
    shape = getattr(val_x, "shape", None)
    if shape is not None and len(shape) > 0:
        try:
            samples = int(shape[0])
        except (TypeError, ValueError):  # a symbolic or unknown first dimension
            return None
        batch = fit.get("validation_batch_size") or fit.get("batch_size") or 32
        return math.ceil(samples / batch) if samples > 0 else None
    try:
        batches = len(val_x)  # type: ignore[arg-type]
    except TypeError:
        return None
    return batches if batches > 0 else None


def _log_readers_before(callback: CarbonCallback) -> list[str]:
    """Names of the log-reading callbacks ahead of ``callback`` in the running CallbackList."""

    def callback_list(frame: FrameType) -> Any:
        owner = frame.f_locals.get("self")
        return owner if isinstance(owner, keras.callbacks.CallbackList) else None

    owner = find_up(callback_list, 4)  # on_train_begin is called by CallbackList.on_train_begin
    if owner is None:
        return []
    names = []
    for other in owner.callbacks:
        if other is callback:
            return names
        package = type(other).__module__.split(".")[0]
        if isinstance(other, _LOG_READERS) or package in _LOGGER_PACKAGES:
            names.append(type(other).__name__)
    return []
