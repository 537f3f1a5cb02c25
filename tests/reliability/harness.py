"""One tiny training, driven through Lightning or through the core API, with or without a tracker.

Every cell of the fault matrix runs :func:`train` twice: once without the tracker (the
baseline, cached) and once with it and the fault, and checks that training ended the same way
(same exception or none, same epochs, bit-identical weights), that the tracker's threads are
gone, and what the run log and the warnings say.

The two drivers:

``lightning``
    ``Trainer.fit`` with :class:`~carbon_callbacks.integrations.lightning.CarbonCallback`, an
    in-memory Lightning logger (the metrics the user would see in TensorBoard/CSV) and a
    validation loader.
``core``
    a plain PyTorch loop with ``with CarbonTracker(...) as tracker``, ``epoch_start()``,
    ``with tracker.phase("validation")`` and ``epoch_end(steps=...)``, as the README shows.

Faults are injected through ``on_epoch_start(epoch)`` (called before the tracker's
``epoch_start``; for hardware and disk faults) and ``step_hook(epoch, batch)`` (called inside
the training step; for the user's own exceptions).
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.events import CarbonCallbacksWarning
from carbon_callbacks.core.runlog import RunLog, read_run_log
from carbon_callbacks.core.tracker import CarbonTracker

DRIVERS = ("lightning", "core")
EPOCHS = 3
BATCHES = 4
#: Prefix of every thread the package starts (the meter's, and any later background worker).
THREAD_PREFIX = "carbon_callbacks"

EpochHook = Callable[[int], None]
StepHook = Callable[[int, int], None]


def _data(seed: int) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCHES * 8, 4, generator=g)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(ds, batch_size=8)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def carbon_threads() -> list[str]:
    """Names of the package's threads that are alive now."""
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def base_settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Settings every cell starts from: a fresh log_dir, a fixed zone, fast sampling, quiet.

    ``rapl_root`` points at a folder that does not exist unless a cell builds a powercap tree,
    so the result never depends on this machine's hardware.
    """
    settings: dict[str, Any] = {
        "log_dir": str(tmp_path / "carbon"),
        "zone": "DK",
        "interval_s": 0.02,
        "verbose": 0,
        "_endpoints": {"rapl_root": str(tmp_path / "no-powercap")},
    }
    settings.update(overrides)
    return settings


@dataclass
class Run:
    """How one training ended, and what the tracker left behind.

    Attributes:
        error: the exception that left ``fit``/the loop, or None.
        weights: the model's parameters at the end (exact floats).
        epochs_trained: epochs the training loop completed.
        tracker: the tracker used (None for a baseline).
        carbon_warnings: messages of the :class:`CarbonCallbacksWarning` raised during the run.
        epoch_metrics: per epoch, the ``carbon/...`` metrics the user's logger received.
        threads_after: the package's threads still alive after the run.
        seconds: wall time of the run.
    """

    error: BaseException | None
    weights: tuple[float, ...]
    epochs_trained: int
    tracker: CarbonTracker | None
    carbon_warnings: list[str] = field(default_factory=list)
    epoch_metrics: list[dict[str, float]] = field(default_factory=list)
    threads_after: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def log(self) -> RunLog:
        """The run log as read from disk."""
        assert self.tracker is not None and self.tracker.log_path is not None
        return read_run_log(self.tracker.log_path)

    def event_kinds(self) -> list[str]:
        """Kinds of the events the tracker recorded (in memory)."""
        assert self.tracker is not None
        return [e.kind for e in self.tracker.events.events]


def same_training(a: Run, b: Run) -> None:
    """Assert that two runs trained identically and ended the same way."""
    assert type(a.error) is type(b.error), (a.error, b.error)
    if a.error is not None:
        assert a.error.args == b.error.args
    assert a.epochs_trained == b.epochs_trained
    assert a.weights == b.weights


# -- drivers -------------------------------------------------------------------------------------
def train(
    driver: str,
    settings: dict[str, Any] | None,
    *,
    epochs: int = EPOCHS,
    on_epoch_start: EpochHook | None = None,
    step_hook: StepHook | None = None,
    step_sleep_s: float = 0.0,
    callback_kwargs: dict[str, Any] | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    fit_kwargs: dict[str, Any] | None = None,
    tracker_state: dict[str, Any] | None = None,
) -> Run:
    """Train the tiny model; ``settings=None`` trains without any tracker (the baseline).

    Args:
        driver: ``"lightning"`` or ``"core"``.
        settings: tracker settings (:class:`CarbonConfig` fields), or None for no tracker.
        epochs: epochs to train (Lightning's ``max_epochs``).
        on_epoch_start: called with the epoch index before the tracker sees the epoch start.
        step_hook: called with (epoch, batch) at the start of every training step.
        step_sleep_s: seconds each training step sleeps (to make epochs long enough to matter).
        callback_kwargs: extra arguments for ``CarbonCallback`` (Lightning only).
        trainer_kwargs / fit_kwargs: extra arguments for ``Trainer`` / ``fit`` (Lightning only).
        tracker_state: a ``state_dict()`` to resume from (core only).
    """
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if driver == "lightning":
            run = _train_lightning(
                settings,
                epochs,
                on_epoch_start,
                step_hook,
                step_sleep_s,
                callback_kwargs or {},
                trainer_kwargs or {},
                fit_kwargs or {},
            )
        elif driver == "core":
            run = _train_core(
                settings, epochs, on_epoch_start, step_hook, step_sleep_s, tracker_state
            )
        else:  # pragma: no cover
            raise ValueError(driver)
    run.seconds = time.monotonic() - start
    run.carbon_warnings = [
        str(w.message) for w in caught if issubclass(w.category, CarbonCallbacksWarning)
    ]
    run.threads_after = carbon_threads()
    return run


def _weights(model: torch.nn.Module) -> tuple[float, ...]:
    return tuple(float(v) for p in model.parameters() for v in p.detach().flatten())


def _train_core(
    settings: dict[str, Any] | None,
    epochs: int,
    on_epoch_start: EpochHook | None,
    step_hook: StepHook | None,
    step_sleep_s: float,
    tracker_state: dict[str, Any] | None,
) -> Run:
    model = _net()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    train_loader, val_loader = _data(0), _data(1)
    tracker = CarbonTracker(epochs=epochs, **settings) if settings is not None else None
    if tracker is not None and tracker_state is not None:
        tracker.load_state_dict(tracker_state)
    done = 0
    metrics: list[dict[str, float]] = []
    error: BaseException | None = None
    try:
        with tracker if tracker is not None else contextlib.nullcontext():
            for epoch in range(epochs):
                if on_epoch_start is not None:
                    on_epoch_start(epoch)
                if tracker is not None:
                    tracker.epoch_start()
                steps = 0
                for batch, (x, y) in enumerate(train_loader):
                    if step_hook is not None:
                        step_hook(epoch, batch)
                    if step_sleep_s:
                        time.sleep(step_sleep_s)
                    optimiser.zero_grad()
                    loss = torch.nn.functional.mse_loss(model(x), y)
                    loss.backward()
                    optimiser.step()
                    steps += 1
                with tracker.phase("validation") if tracker else contextlib.nullcontext():
                    with torch.no_grad():
                        for x, y in val_loader:
                            torch.nn.functional.mse_loss(model(x), y)
                if tracker is not None:
                    metrics.append(tracker.epoch_end(steps=steps))
                done += 1
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        error = exc
    return Run(error, _weights(model), done, tracker, epoch_metrics=metrics)


def _train_lightning(
    settings: dict[str, Any] | None,
    epochs: int,
    on_epoch_start: EpochHook | None,
    step_hook: StepHook | None,
    step_sleep_s: float,
    callback_kwargs: dict[str, Any],
    trainer_kwargs: dict[str, Any],
    fit_kwargs: dict[str, Any],
) -> Run:
    import lightning.pytorch as pl

    from carbon_callbacks.integrations.lightning import CarbonCallback

    tiny_module, memory_logger, epoch_start_hook = lightning_classes()
    module = tiny_module(step_hook, step_sleep_s)
    logger = memory_logger()
    callbacks: list[Any] = []
    if on_epoch_start is not None:
        callbacks.append(epoch_start_hook(on_epoch_start))
    callback = None
    if settings is not None or "tracker" in callback_kwargs:
        callback = CarbonCallback(**(settings or {}), **callback_kwargs)
        callbacks.append(callback)
    options: dict[str, Any] = {
        "max_epochs": epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": logger,
        "callbacks": callbacks,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "num_sanity_val_steps": 1,
    }
    options.update(trainer_kwargs)
    if "callbacks" in trainer_kwargs:
        options["callbacks"] = callbacks + list(trainer_kwargs["callbacks"])
    trainer = pl.Trainer(**options)
    error: BaseException | None = None
    try:
        trainer.fit(module, _data(0), _data(1), **fit_kwargs)
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        error = exc
    metrics = [
        {k: float(v) for k, v in row.items() if k.startswith(keys.PREFIX)}
        for row in logger.rows
        if keys.EPOCH_DURATION_S in row
    ]
    tracker = callback.tracker if callback is not None else None
    run = Run(error, _weights(module), trainer.current_epoch, tracker, epoch_metrics=metrics)
    run.trainer = trainer  # type: ignore[attr-defined]
    return run


def _lightning_classes() -> tuple[type, type, type]:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import Logger

    class _TinyModule(pl.LightningModule):
        """Linear(4, 1) on x -> sum(x); a step hook for the user's own faults."""

        def __init__(self, step_hook: StepHook | None = None, step_sleep_s: float = 0.0):
            super().__init__()
            self.layer = _net()
            self.step_hook = step_hook
            self.step_sleep_s = step_sleep_s

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.step_hook is not None:
                self.step_hook(self.current_epoch, batch_idx)
            if self.step_sleep_s:
                time.sleep(self.step_sleep_s)
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class _MemoryLogger(Logger):
        """Keeps every ``log_metrics`` call: what TensorBoard or a CSV file would receive."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, float]] = []

        @property
        def name(self) -> str:
            return "memory"

        @property
        def version(self) -> int:
            return 0

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.rows.append(dict(metrics))

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    class _EpochStartHook(pl.Callback):
        def __init__(self, hook: EpochHook):
            super().__init__()
            self.hook = hook

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.hook(trainer.current_epoch)

    return _TinyModule, _MemoryLogger, _EpochStartHook


_CLASSES: tuple[type, type, type] | None = None


def lightning_classes() -> tuple[type, type, type]:
    """``(TinyModule, MemoryLogger, EpochStartHook)``; Lightning is imported on first use."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _lightning_classes()
    return _CLASSES


_BASELINES: dict[tuple[str, int], Run] = {}


def baseline(driver: str, epochs: int = EPOCHS) -> Run:
    """The run without any tracker and without faults (cached per driver and length)."""
    key = (driver, epochs)
    if key not in _BASELINES:
        _BASELINES[key] = train(driver, None, epochs=epochs)
    return _BASELINES[key]


def check_cell(
    run: Run, reference: Run, *, warned: list[str] | int, read_log: bool = True
) -> RunLog | None:
    """The promises every cell keeps, asserted together.

    - training ended exactly as ``reference`` (no tracker) did;
    - the package's threads are gone;
    - the warnings: ``warned`` is the number of carbon warnings, or a list of substrings, one per
      expected warning (each matched exactly once, nothing else warned).

    Returns the run log (None when the run wrote none, or with ``read_log=False``).
    """
    same_training(run, reference)
    assert run.threads_after == [], run.threads_after
    if isinstance(warned, int):
        assert len(run.carbon_warnings) == warned, run.carbon_warnings
    else:
        assert len(run.carbon_warnings) == len(warned), run.carbon_warnings
        for needle in warned:
            hits = [w for w in run.carbon_warnings if needle in w]
            assert len(hits) == 1, (needle, run.carbon_warnings)
    if read_log and run.tracker is not None and run.tracker.log_path is not None:
        return run.log
    return None


def assert_switched(methods: list[str], before: str, after: str) -> None:
    """Per-epoch methods: ``before`` first, one epoch ``before>after`` (the fault landed inside
    it; injected during epoch 1, it shows there unless the meter's read came only after that
    epoch ended), then ``after``."""
    switch = f"{before}>{after}"
    assert methods[0] == before, methods
    assert methods.count(switch) == 1, methods
    i = methods.index(switch)
    assert all(m == before for m in methods[:i]) and all(m == after for m in methods[i + 1 :])
