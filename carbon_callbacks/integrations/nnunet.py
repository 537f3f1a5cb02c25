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
                              once made; then ``carbon_progress.png`` beside ``progress.png``
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
normal end. ``nnUNetv2_train`` then runs its final validation as usual.

DDP (``-num_gpus`` > 1): every rank measures its own GPU (by UUID); rank 0 also measures CPU and
DRAM (once per host) and writes the run log; the per-epoch energy, CO2 and power figures are
summed over ranks with :func:`carbon_callbacks.core.distributed.sum_across_ranks` (a collective
every rank calls) and logged on every rank, like nnU-Net's own gathered losses. The budget is
decided on the whole run, identically on every rank: the ranks' trackers do not check it on their
own share; after each epoch every rank compares the limits with the summed totals (energy and CO2
over ranks, rank 0's time) and the summed prediction (the ranks' predictions added up, bounds
included; rank 0's duration), so a budget stop ends every rank at the same epoch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from carbon_callbacks.core import distributed
from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.budget import Budget, check_budget
from carbon_callbacks.core.config import CarbonConfig, ConfigError
from carbon_callbacks.core.predict import Prediction
from carbon_callbacks.core.report import fmt, format_duration
from carbon_callbacks.core.tracker import CarbonTracker

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
]

#: The folder to put in ``nnUNet_extTrainer`` so that ``-tr nnUNetTrainerCarbon`` is found.
TRAINER_DIR = str(Path(__file__).resolve().parent / "nnunet_trainers")
#: Logger key holding ``tracker.state_dict()`` per epoch (saved in ``checkpoint['logging']``).
STATE_KEY = "carbon/tracker_state"
#: Environment variable with the settings as a JSON object, e.g. ``{"zone": "DK", "pue": 1.2}``.
#: Read by every carbon trainer; :func:`patch` writes it so that DDP children see its settings.
ENV_SETTINGS = "CARBON_CALLBACKS_NNUNET_SETTINGS"
#: File written beside nnU-Net's ``progress.png``.
PNG_NAME = "carbon_progress.png"

SUPPORTED_V2 = ((2, 6), (2, 8))  # inclusive range of (major, minor)
SUPPORTED_V1 = (1, 7)
SUPPORTED_TEXT = "nnU-Net v2 (nnunetv2 2.6 to 2.8) and nnU-Net v1 (nnunet 1.7.x)"

#: Keys whose values add up over DDP ranks (each rank measures its own devices).
_SUMMED_KEYS = (
    keys.EPOCH_ENERGY_KWH,
    keys.EPOCH_CO2_G,
    keys.ENERGY_KWH,
    keys.CO2_G,
    keys.POWER_W,
    keys.GPU_POWER_W,
    keys.PRED_ENERGY_KWH,
    keys.PRED_CO2_G,
)
_STATE_SUMMED = ("energy_kwh", "co2_g")
#: Prediction fields that add up over ranks, and those taken from rank 0 (time is shared).
_PRED_SUMMED = (
    "energy_kwh",
    "energy_kwh_low",
    "energy_kwh_high",
    "co2_g",
    "co2_g_low",
    "co2_g_high",
)
_PRED_LEAD = ("duration_s", "duration_s_low", "duration_s_high")
_ATTR = "_carbon"


class NnUNetVersionError(ImportError):
    """nnU-Net is missing, or its version is not one this integration supports."""


class _BudgetStop(Exception):
    """Raised at the start of the epoch after a budget said stop; caught by run_training."""


# -- versions ------------------------------------------------------------------------------------
def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or "x")
    except (ValueError, IndexError):
        return None


def check_v2_version(version: str | None) -> str:
    """Return ``version`` if nnunetv2 ``version`` is supported, else raise NnUNetVersionError."""
    if version is None:
        raise NnUNetVersionError(
            f"nnU-Net is not installed; carbon_callbacks supports {SUPPORTED_TEXT}: "
            "pip install 'carbon-callbacks[nnunet]'"
        )
    mm = _major_minor(version)
    if mm is None or not SUPPORTED_V2[0] <= mm <= SUPPORTED_V2[1]:
        raise NnUNetVersionError(
            f"nnunetv2 {version} is installed, but carbon_callbacks supports {SUPPORTED_TEXT}: "
            "pip install 'nnunetv2>=2.6,<2.9'"
        )
    return version


def check_v1_version(version: str | None) -> str:
    """Return ``version`` if nnunet (v1) ``version`` is supported, else raise NnUNetVersionError."""
    if version is None:
        raise NnUNetVersionError(
            f"nnU-Net v1 (package nnunet) is not installed; carbon_callbacks supports "
            f"{SUPPORTED_TEXT}"
        )
    if _major_minor(version) != SUPPORTED_V1:
        raise NnUNetVersionError(
            f"nnunet {version} is installed, but carbon_callbacks supports {SUPPORTED_TEXT}: "
            "pip install 'nnunet==1.7.1'"
        )
    return version


# -- settings ------------------------------------------------------------------------------------
def settings_from_env() -> dict[str, Any]:
    """The settings in ``$CARBON_CALLBACKS_NNUNET_SETTINGS`` (a JSON object), or ``{}``."""
    raw = os.environ.get(ENV_SETTINGS)
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f'{ENV_SETTINGS} must hold a JSON object such as \'{{"zone": "DK"}}\' ({exc})'
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{ENV_SETTINGS} must hold a JSON object, got {raw!r}")
    return value


def _device_gpu_id(device: Any) -> str | None:
    """NVML identity (UUID, else index) of the CUDA device a trainer uses; None off CUDA."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch  # imported by nnU-Net already

    index = device.index if device.index is not None else torch.cuda.current_device()
    with contextlib.suppress(Exception):
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        if uuid:
            return uuid
    visible = [t.strip() for t in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [t for t in visible if t]
    return visible[index] if index < len(visible) else str(index)


# -- per-trainer session --------------------------------------------------------------------------
@dataclass
class _Session:
    """What the integration keeps on one trainer (``trainer._carbon``)."""

    tracker: CarbonTracker | None
    rank: int = 0
    world_size: int = 1
    budget: Budget | None = None  # under DDP: decided here on the whole run (see _whole_budget)
    registered: list[str] = field(default_factory=list)
    in_run_training: bool = False
    stop_requested: bool = False
    stopped_by_budget: bool = False
    predicted: bool = False
    warned_unwrapped: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # v1: per-epoch metrics

    @property
    def logs(self) -> bool:
        """True on the process that writes the training log, the PNG and the run log."""
        return self.rank == 0

    def record(self, kind: str, message: str) -> None:
        """One warning and a run-log event (never raises)."""
        if self.tracker is not None:
            self.tracker.events.record(kind, message, "nnunet")
        else:  # a rank that measures nothing
            import warnings

            warnings.warn(f"carbon_callbacks: {message}", stacklevel=3)


def _session(trainer: Any) -> _Session | None:
    return trainer.__dict__.get(_ATTR)


def _local_logger(trainer: Any) -> Any:
    """nnU-Net's LocalLogger (2.7+: ``logger.local_logger``; 2.6: the logger itself)."""
    return getattr(trainer.logger, "local_logger", trainer.logger)


def _store(trainer: Any) -> dict[str, list[Any]]:
    return _local_logger(trainer).my_fantastic_logging


def build_settings(trainer: Any, settings: Mapping[str, Any], rank: int) -> dict[str, Any] | None:
    """Tracker settings for one trainer and rank; ``None`` for a rank that measures nothing.

    Defaults: the run log in the trainer's output folder, a run name from it, and the trainer's
    own CUDA device as the GPU to measure. Ranks other than 0 measure their GPU only (CPU and
    DRAM are measured once per host, by rank 0), print nothing and write no run log.
    """
    out = dict(settings)
    # the ranks are summed here, per nnU-Net epoch (see _reduce), not by the tracker
    out.setdefault("distributed", False)
    output_folder = getattr(trainer, "output_folder", None)
    if output_folder is not None:  # None when nnUNet_results is unset: the core's default
        out.setdefault("log_dir", output_folder)
        out.setdefault("run_name", f"{Path(output_folder).parent.name}/{Path(output_folder).name}")
    if "gpu_ids" not in out and "sim_gpu" not in out:
        gpu = _device_gpu_id(getattr(trainer, "device", None))
        if gpu is not None:
            out["gpu_ids"] = [gpu]
    if rank != 0:
        out.update(log_dir=None, verbose=0)
        if out.get("components", "all") == "cpu":
            return None
        out["components"] = "gpu"
        for name in ("sim_cpu", "sim_cpu_tdp", "sim_cpu_util"):
            out.pop(name, None)
    return out


def _attach(trainer: Any, settings: Mapping[str, Any]) -> None:
    """Build the tracker (settings validated now) and register the keys in nnU-Net's logger."""
    try:
        _store(trainer)
    except AttributeError:
        raise NnUNetVersionError(
            f"{type(trainer).__name__} has no nnU-Net v2 logger (logger.my_fantastic_logging); "
            f"carbon_callbacks supports {SUPPORTED_TEXT}"
        ) from None
    ddp = bool(getattr(trainer, "is_ddp", False))
    rank = distributed.rank() if ddp else 0
    world = distributed.world_size() if ddp else 1
    resolved = build_settings(trainer, settings, rank)
    tracker = None
    budget = None
    if resolved is not None:
        config = CarbonConfig.from_kwargs(**resolved)
        factory = getattr(trainer, "make_carbon_tracker", None)
        tracker = factory(config) if callable(factory) else CarbonTracker(config=config)
        budget = tracker.budget
    elif world > 1:  # a rank that measures nothing still takes part in the budget decision
        budget = Budget.from_settings(settings, settings.get("budget_policy"))
    if world > 1 and tracker is not None:
        tracker.budget_on_own_figures = False  # its share is not the run: decided on the sum
    session = _Session(tracker=tracker, rank=rank, world_size=world, budget=budget)
    trainer.__dict__[_ATTR] = session
    _register(trainer, session, (*keys.EPOCH_KEYS, STATE_KEY))


def _register(trainer: Any, session: _Session, names: tuple[str, ...] | list[str]) -> None:
    """Make nnU-Net's logger accept ``names``; NaN for the epochs before (plots stay full)."""
    store = _store(trainer)
    epochs = int(getattr(trainer, "current_epoch", 0))
    for name in names:
        values = store.setdefault(name, [])
        while len(values) < epochs:
            values.append(math.nan)
        if name not in session.registered:
            session.registered.append(name)


# -- hooks (shared by the mixin and the patch) ---------------------------------------------------
def _on_train_start(trainer: Any, original: Callable[[], Any]) -> None:
    session = _session(trainer)
    if session is not None and session.tracker is not None:
        session.tracker.set_planned(epochs=int(trainer.num_epochs), strict=True)  # before training
        session.tracker.start()
    original()


def _on_epoch_start(trainer: Any, original: Callable[[], Any]) -> None:
    session = _session(trainer)
    if session is not None and session.stop_requested:
        if session.in_run_training:
            raise _BudgetStop()
        if not session.warned_unwrapped:
            session.warned_unwrapped = True
            session.record(
                "budget_stop_ignored",
                f"the carbon budget says stop, but {type(trainer).__name__}.run_training does "
                "not call nnUNetTrainer.run_training, so training cannot be ended cleanly here; "
                "it continues",
            )
    original()
    if session is not None and session.tracker is not None:
        session.tracker.epoch_start()


def _begin_validation(trainer: Any, original: Callable[[], Any]) -> None:
    original()
    session = _session(trainer)
    if session is not None and session.tracker is not None:
        session.tracker.begin_phase("validation")


def _end_validation(trainer: Any, original: Callable[..., Any], *args: Any) -> None:
    original(*args)
    session = _session(trainer)
    if session is not None and session.tracker is not None:
        session.tracker.end_phase("validation")


def _on_epoch_end(trainer: Any, original: Callable[[], Any]) -> None:
    session = _session(trainer)
    if session is None:
        original()
        return
    epoch = int(trainer.current_epoch)
    tracker = session.tracker
    metrics: dict[str, float] = {}
    state: dict[str, Any] | None = None
    stop = False
    if tracker is not None:
        metrics = tracker.epoch_end(steps=int(trainer.num_iterations_per_epoch))
        state = tracker.state_dict()
        stop = bool(tracker.should_stop)
    metrics, state, stop, whole = _reduce(session, metrics, state, stop)
    budget_reason = _whole_budget(session, whole, epoch)
    stop = stop or budget_reason is not None
    try:
        _log_epoch(trainer, session, epoch, metrics, state)
        if session.logs:
            _print_epoch(trainer, session, metrics)
    except Exception as exc:  # noqa: BLE001 - never break training
        session.record("hook_failed", f"logging the carbon metrics to nnU-Net failed: {exc!r}")
    original()  # nnU-Net: checkpoints, progress.png, current_epoch += 1
    if session.logs and trainer.output_folder is not None:
        plot_carbon_progress(_store(trainer), Path(trainer.output_folder) / PNG_NAME, session)
    if stop and not session.stop_requested:
        session.stop_requested = True
        session.stopped_by_budget = True
        if session.logs:
            reason = (tracker.stop_reason if tracker is not None else None) or budget_reason
            reason = reason or "budget reached"
            if reason == budget_reason:
                reason += f" (the whole run: summed over {session.world_size} ranks)"
            trainer.print_to_log_file(
                f"carbon_callbacks: stopping after epoch {epoch}: {reason}; the final "
                "checkpoint is written as at a normal end"
            )


def _reduce(
    session: _Session, metrics: dict[str, float], state: dict[str, Any] | None, stop: bool
) -> tuple[dict[str, float], dict[str, Any] | None, bool, dict[str, float] | None]:
    """Under DDP: sum the additive figures over ranks (every rank calls this, same keys).

    Returns the metrics and state with the sums, the stop vote of any rank, and the summed
    figures the whole-run budget is decided on (``None`` when not summed).
    """
    if session.world_size <= 1:
        return metrics, state, stop, None
    measured = session.tracker is not None
    lead = session.rank == 0
    values = {k: float(metrics.get(k, math.nan)) if measured else 0.0 for k in _SUMMED_KEYS}
    for name in _STATE_SUMMED:
        values[f"state/{name}"] = float(state[name]) if state is not None else 0.0
    values["stop"] = 1.0 if stop else 0.0
    # the whole run's time and predicted time are rank 0's; the others add 0
    pred = session.tracker.prediction if measured else None
    missing = math.nan if measured else 0.0  # a rank without a prediction: none for the run
    for name in (*_PRED_SUMMED, *_PRED_LEAD):
        mine = float(getattr(pred, name)) if pred is not None else missing
        values[f"pred/{name}"] = mine if lead or name in _PRED_SUMMED else 0.0
    values["lead/duration_s"] = 0.0
    if lead:
        values["lead/duration_s"] = float(state["duration_s"]) if state is not None else math.nan
    try:
        summed = distributed.sum_across_ranks(values)
    except Exception as exc:  # noqa: BLE001
        session.record(
            "rank_sum_failed",
            f"summing the carbon figures over ranks failed ({exc!r}); this rank's own are logged",
        )
        return metrics, state, stop, None
    out = dict(metrics)
    for k in _SUMMED_KEYS:
        if k in metrics or math.isfinite(summed[k]):
            out[k] = summed[k]  # NaN when a rank lacked it: shown as unknown, never as zero
    if state is not None:
        state = dict(state)
        for name in _STATE_SUMMED:
            state[name] = summed[f"state/{name}"]
    return out, state, summed["stop"] > 0, summed


def _whole_budget(session: _Session, summed: dict[str, float] | None, epoch: int) -> str | None:
    """Under DDP: the budget decided on the summed figures, by every rank alike.

    Every rank gets the same sums from the collective and, with the same budget, decides alike;
    the stop is still summed over ranks (a collective every rank calls), so that ranks given
    different budgets (a trainer's own ``make_carbon_tracker``) stop together too. Each rank's
    tracker announces its decisions (rank 0's: run log, training output). Returns the reason of
    a stop (``"budget reached"`` where only another rank's budget said stop), else ``None``.
    """
    if summed is None:
        return None
    reason = _budget_on_sums(session, summed, epoch)
    try:
        votes = distributed.sum_across_ranks({"stop": 1.0 if reason else 0.0})["stop"]
    except Exception as exc:  # noqa: BLE001
        session.record(
            "rank_sum_failed",
            f"summing the budget decision over ranks failed ({exc!r}); this rank's own is used",
        )
        return reason
    return (reason or "budget reached") if votes > 0 else None


def _budget_on_sums(session: _Session, summed: dict[str, float], epoch: int) -> str | None:
    if session.budget is None:
        return None
    spent = {
        "energy_kwh": summed["state/energy_kwh"],
        "co2_g": summed["state/co2_g"],
        "duration_s": summed["lead/duration_s"],
    }
    figures = {name: summed[f"pred/{name}"] for name in (*_PRED_SUMMED, *_PRED_LEAD)}
    prediction = None
    if all(math.isfinite(v) for v in figures.values()):
        prediction = Prediction(
            after_epochs=epoch + 1,
            epochs=None,
            intensity_g_per_kwh=math.nan,
            method=f"sum of the {session.world_size} ranks' predictions",
            **figures,
        )
    decisions = check_budget(session.budget, spent, prediction)
    if session.tracker is not None:
        session.tracker.apply_budget(decisions, epoch)
    return next((d.reason for d in decisions if d.action == "stop"), None)


def _log_epoch(
    trainer: Any,
    session: _Session,
    epoch: int,
    metrics: Mapping[str, float],
    state: dict[str, Any] | None,
) -> None:
    """One value per registered key for this epoch (NaN where not measured)."""
    local = _local_logger(trainer)
    new = [k for k in keys.ALL_KEYS if k in metrics and k not in session.registered]
    if new:
        _register(trainer, session, new)
    for name in session.registered:
        if name == STATE_KEY:
            local.log(name, state if state is not None else math.nan, epoch)
            continue
        value = metrics.get(name)
        if value is not None and math.isfinite(value):
            trainer.logger.log(name, float(value), epoch)  # W&B too, when nnU-Net has it on
        else:
            local.log(name, math.nan, epoch)


def _print_epoch(trainer: Any, session: _Session, metrics: Mapping[str, float]) -> None:
    """Lines in nnU-Net's training log: the epoch's energy and CO2; the prediction once made."""
    if not metrics:
        return
    digits = session.tracker.config.decimal_precision if session.tracker is not None else 4
    line = (
        f"Carbon: epoch energy {fmt(metrics.get(keys.EPOCH_ENERGY_KWH, math.nan), digits)} kWh, "
        f"CO2eq {fmt(metrics.get(keys.EPOCH_CO2_G, math.nan), digits)} g"
    )
    if keys.POWER_W in metrics:
        line += f", mean power {metrics[keys.POWER_W]:.1f} W"
    line += (
        f" (run: {fmt(metrics.get(keys.ENERGY_KWH, math.nan), digits)} kWh, "
        f"{fmt(metrics.get(keys.CO2_G, math.nan), digits)} g)"
    )
    trainer.print_to_log_file(line)
    if session.predicted or keys.PRED_ENERGY_KWH not in metrics:
        return
    session.predicted = True
    pred = session.tracker.prediction if session.tracker is not None else None
    epochs = pred.epochs if pred is not None else getattr(trainer, "num_epochs", "all")
    text = (
        f"Carbon: predicted for {epochs} epochs: "
        f"{fmt(metrics[keys.PRED_ENERGY_KWH], digits)} kWh, "
        f"{fmt(metrics.get(keys.PRED_CO2_G, math.nan), digits)} g CO2eq, "
        f"{format_duration(metrics.get(keys.PRED_DURATION_S, math.nan))}"
    )
    if pred is not None and session.world_size == 1:
        text += (
            f" (energy {fmt(pred.energy_kwh_low, digits)} .. "
            f"{fmt(pred.energy_kwh_high, digits)} kWh; {pred.method})"
        )
    trainer.print_to_log_file(text)


def _on_train_end(trainer: Any, original: Callable[[], Any]) -> None:
    original()  # nnU-Net: checkpoint_final.pth
    session = _session(trainer)
    if session is None:
        return
    status = "interrupted" if session.stopped_by_budget else "completed"
    totals: dict[str, float] = {}
    epochs = int(trainer.current_epoch)
    if session.tracker is not None:
        totals = session.tracker.stop(status)
    if session.world_size > 1:
        wanted = (keys.ENERGY_KWH, keys.CO2_G)
        with contextlib.suppress(Exception):
            totals = distributed.sum_across_ranks({k: totals.get(k, 0.0) for k in wanted})
    if session.logs and totals:
        digits = session.tracker.config.decimal_precision if session.tracker else 4
        where = session.tracker.log_path if session.tracker is not None else None
        trainer.print_to_log_file(
            f"Carbon: training {status} after {epochs} epochs: "
            f"{fmt(totals.get(keys.ENERGY_KWH, math.nan), digits)} kWh, "
            f"{fmt(totals.get(keys.CO2_G, math.nan), digits)} g CO2eq"
            + (f"; run log {where}" if where else "")
        )


def _run_training(trainer: Any, original: Callable[[], Any]) -> None:
    session = _session(trainer)
    if session is None:
        original()
        return
    session.in_run_training = True
    try:
        original()
    except _BudgetStop:
        trainer.on_train_end()
    except BaseException as exc:
        if session.tracker is not None:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            session.tracker.stop("interrupted" if interrupted else "failed")
        raise
    finally:
        session.in_run_training = False


def _load_checkpoint(trainer: Any, original: Callable[[Any], Any], checkpoint: Any) -> None:
    original(checkpoint)
    session = _session(trainer)
    if session is None:
        return
    # keys of this session, and carbon keys the checkpoint brings (e.g. GPU power from a GPU
    # run resumed elsewhere): all get one value per epoch from now on, or progress.png shrinks
    carried = [k for k in _store(trainer) if k.startswith(keys.PREFIX)]
    _register(trainer, session, list(dict.fromkeys([*session.registered, *carried])))
    tracker = session.tracker
    if tracker is None or tracker.epochs_completed:
        return  # a rank that measures nothing; or loading checkpoint_best after training
    saved = _store(trainer).get(STATE_KEY, [])[: int(trainer.current_epoch)]
    states = [s for s in saved if isinstance(s, dict)]
    if states:
        state = dict(states[-1])
        if session.rank != 0:
            # the saved totals are already the sum over ranks and rank 0 carries them on; the
            # other ranks continue its epoch count (for their prediction) and add their own
            # energy from here
            state.update(energy_kwh=0.0, co2_g=0.0)
        tracker.load_state_dict(state)
    elif trainer.current_epoch and session.logs:
        session.record(
            "resume_without_carbon_state",
            f"the checkpoint holds {trainer.current_epoch} epoch(s) but no carbon totals (it was "
            "written without carbon_callbacks); cumulative figures count from this resume on",
        )


# -- plotting ------------------------------------------------------------------------------------
def plot_carbon_progress(
    store: Mapping[str, list[Any]], path: Path, session: _Session | None = None
) -> None:
    """Draw the carbon curves from nnU-Net's logger lists into ``path`` (PNG). Never raises.

    Panels: energy per epoch (kWh); cumulative CO2eq (g) with the latest predicted total; mean
    power per measured component (W). Plotting only: every value comes from the logger.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        def series(key: str) -> list[float]:
            values = store.get(key, [])
            return [float(v) if isinstance(v, (int, float)) else math.nan for v in values]

        energy = series(keys.EPOCH_ENERGY_KWH)
        if not energy:
            return
        x = list(range(len(energy)))
        style = {"marker": "o", "markersize": 3} if len(x) <= 100 else {}
        fig = Figure(figsize=(8, 9), dpi=72)
        FigureCanvasAgg(fig)
        ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
        ax1.plot(x, energy, color="tab:blue", **style)
        ax1.set_ylabel("energy per epoch (kWh)")
        ax2.plot(x, series(keys.CO2_G), color="tab:green", label="measured, cumulative", **style)
        predicted = [v for v in series(keys.PRED_CO2_G) if math.isfinite(v)]
        if predicted:
            ax2.axhline(predicted[-1], color="tab:green", ls=":", label="predicted total")
        ax2.set_ylabel("CO2eq (g)")
        ax2.legend(loc="upper left")
        for key, label in (
            (keys.POWER_W, "total"),
            (keys.GPU_POWER_W, "GPU"),
            (keys.CPU_POWER_W, "CPU"),
            (keys.DRAM_POWER_W, "DRAM"),
        ):
            values = series(key)
            if any(math.isfinite(v) for v in values):
                ax3.plot(x[: len(values)], values, label=label, **style)
        ax3.set_ylabel("mean power (W)")
        ax3.set_xlabel("epoch")
        if ax3.lines:
            ax3.legend(loc="lower left")
        for ax in (ax1, ax2, ax3):
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.12, right=0.97, top=0.98, bottom=0.06, hspace=0.08)
        fig.savefig(str(path))
    except Exception as exc:  # noqa: BLE001 - a plot must never break training
        if session is not None:
            session.record("plot_failed", f"drawing {path.name} failed: {exc!r}")


# -- the mixin and the trainer class --------------------------------------------------------------
class CarbonTrainerMixin:
    """Energy and CO2eq per epoch for any nnU-Net v2 trainer: put it first in the bases.

    ``class MyTrainer(CarbonTrainerMixin, nnUNetTrainer_250epochs): pass``

    Settings: :attr:`carbon_settings` (a class attribute; any
    :class:`~carbon_callbacks.core.config.CarbonConfig` field) over
    ``$CARBON_CALLBACKS_NNUNET_SETTINGS`` (JSON) over the core's own environment variables
    (``CARBON_CALLBACKS_ZONE``, ``..._PUE``...). They are validated when the trainer is built,
    so a bad one fails before training starts. Override :meth:`make_carbon_tracker` to build
    the tracker differently (custom sensors).
    """

    #: Tracker settings for this trainer class (override in a subclass).
    carbon_settings: dict[str, Any] = {}

    # nnU-Net records its init arguments by introspecting self.__init__'s signature
    # (nnUNetTrainer.__init__), so the mixin keeps nnU-Net's exact parameter names.
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: Any = None,
    ):
        if device is None:  # nnU-Net's own default (torch.device('cuda'))
            super().__init__(plans, configuration, fold, dataset_json)  # type: ignore[call-arg]
        else:
            super().__init__(plans, configuration, fold, dataset_json, device)  # type: ignore[call-arg]
        _attach(self, {**settings_from_env(), **self.carbon_settings})

    def make_carbon_tracker(self, config: CarbonConfig) -> CarbonTracker:
        """Build the tracker from the validated settings (override for custom sensors)."""
        return CarbonTracker(config=config)

    @property
    def carbon_tracker(self) -> CarbonTracker | None:
        """This trainer's tracker (``None`` on a DDP rank that measures nothing)."""
        session = _session(self)
        return session.tracker if session is not None else None

    def on_train_start(self) -> None:
        _on_train_start(self, super().on_train_start)  # type: ignore[misc]

    def on_epoch_start(self) -> None:
        _on_epoch_start(self, super().on_epoch_start)  # type: ignore[misc]

    def on_validation_epoch_start(self) -> None:
        _begin_validation(self, super().on_validation_epoch_start)  # type: ignore[misc]

    def on_validation_epoch_end(self, val_outputs: list) -> None:
        _end_validation(self, super().on_validation_epoch_end, val_outputs)  # type: ignore[misc]

    def on_epoch_end(self) -> None:
        _on_epoch_end(self, super().on_epoch_end)  # type: ignore[misc]

    def on_train_end(self) -> None:
        _on_train_end(self, super().on_train_end)  # type: ignore[misc]

    def run_training(self) -> None:
        _run_training(self, super().run_training)  # type: ignore[misc]

    def load_checkpoint(self, filename_or_checkpoint: Any) -> None:
        _load_checkpoint(self, super().load_checkpoint, filename_or_checkpoint)  # type: ignore[misc]


_CLASS_CACHE: dict[str, type] = {}


def _trainer_class() -> type:
    """``nnUNetTrainerCarbon``, built on first use (importing nnunetv2 only then)."""
    cls = _CLASS_CACHE.get("nnUNetTrainerCarbon")
    if cls is None:
        check_v2_version(_installed_version("nnunetv2"))
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        cls = type(
            "nnUNetTrainerCarbon",
            (CarbonTrainerMixin, nnUNetTrainer),
            {
                "__module__": __name__,
                "__doc__": "nnU-Net's default trainer with energy and CO2eq per epoch "
                "(see carbon_callbacks.integrations.nnunet).",
            },
        )
        _CLASS_CACHE["nnUNetTrainerCarbon"] = cls
    return cls


def __getattr__(name: str) -> Any:
    """``nnUNetTrainerCarbon`` is created lazily: importing this module imports no nnU-Net."""
    if name == "nnUNetTrainerCarbon":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- patching ------------------------------------------------------------------------------------
_originals: dict[tuple[Any, str], Any] = {}
_patched_state: dict[str, Any] = {}


def _v2_wrappers(base: type) -> dict[str, Callable[..., Any]]:
    """Replacement methods for ``nnUNetTrainer`` that call the originals (kept for unpatch)."""

    def skip(self: Any) -> bool:
        # a carbon subclass measures itself; a second session would count everything twice
        return isinstance(self, CarbonTrainerMixin)

    orig = {name: getattr(base, name) for name in _V2_METHODS}

    @functools.wraps(orig["__init__"])  # keeps the signature nnU-Net introspects
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig["__init__"](self, *args, **kwargs)
        if not skip(self):
            _attach(self, settings_from_env())

    def simple(name: str, hook: Callable[..., None]) -> Callable[..., Any]:
        @functools.wraps(orig[name])
        def method(self: Any, *args: Any) -> Any:
            bound = functools.partial(orig[name], self)
            if skip(self) or _session(self) is None:
                return bound(*args)
            return hook(self, bound, *args)

        return method

    return {
        "__init__": __init__,
        "on_train_start": simple("on_train_start", _on_train_start),
        "on_epoch_start": simple("on_epoch_start", _on_epoch_start),
        "on_validation_epoch_start": simple("on_validation_epoch_start", _begin_validation),
        "on_validation_epoch_end": simple("on_validation_epoch_end", _end_validation),
        "on_epoch_end": simple("on_epoch_end", _on_epoch_end),
        "on_train_end": simple("on_train_end", _on_train_end),
        "run_training": simple("run_training", _run_training),
        "load_checkpoint": simple("load_checkpoint", _load_checkpoint),
    }


_V2_METHODS = (
    "__init__",
    "on_train_start",
    "on_epoch_start",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_epoch_end",
    "on_train_end",
    "run_training",
    "load_checkpoint",
)


def _set(owner: Any, name: str, value: Any) -> None:
    if (owner, name) not in _originals:
        _originals[(owner, name)] = (
            owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        )
    setattr(owner, name, value)


def _run_ddp_patched(*args: Any, **kwargs: Any) -> Any:
    """nnU-Net's ``run_ddp`` in a DDP child: patch here too (spawned children start clean)."""
    _patch_from_env()
    from nnunetv2.run import run_training as module

    original = _originals.get((module, "run_ddp"), module.run_ddp)
    return original(*args, **kwargs)


def _patch_from_env() -> None:
    """Apply :func:`patch` with the settings a parent process left in the environment."""
    if not is_patched():
        patch(**settings_from_env())


def patch(*, target: str = "auto", **settings: Any) -> str:
    """Measure every nnU-Net trainer of this process (and of its DDP children). Idempotent.

    Args:
        target: ``"auto"`` patches nnU-Net v2 (``nnunetv2`` 2.6 to 2.8) where installed, else
            nnU-Net v1 (``nnunet`` 1.7.x); ``"nnunetv2"`` or ``"nnunet"`` picks one.
        **settings: any :class:`~carbon_callbacks.core.config.CarbonConfig` field,
            JSON-serialisable (they travel to DDP children in
            ``$CARBON_CALLBACKS_NNUNET_SETTINGS``); validated now.

    Returns:
        ``"nnunetv2 <version>"`` or ``"nnunet <version>"``: what was patched.

    Raises:
        NnUNetVersionError: nnU-Net is missing or its version is not supported.
        ConfigError: a setting is invalid.
    """
    if target not in ("auto", "nnunetv2", "nnunet"):
        raise ConfigError(f"target must be 'auto', 'nnunetv2' or 'nnunet', got {target!r}")
    v2 = _installed_version("nnunetv2")
    v1 = _installed_version("nnunet")
    if target == "nnunetv2" or (target == "auto" and (v2 is not None or v1 is None)):
        check_v2_version(v2)
        flavour = "nnunetv2"
    else:
        check_v1_version(v1)
        flavour = "nnunet"
    merged = {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v
        for k, v in {**settings_from_env(), **settings}.items()
    }
    probe = dict(merged)
    probe.setdefault("log_dir", None)  # the real folder is the trainer's output folder
    CarbonConfig.from_kwargs(**probe)  # ConfigError now, not after an epoch
    try:
        encoded = json.dumps(merged)
    except TypeError as exc:
        raise ConfigError(
            f"patch() settings must be JSON-serialisable (they reach DDP children through "
            f"{ENV_SETTINGS}): {exc}"
        ) from None
    if is_patched():
        if _patched_state["flavour"] != flavour:
            raise RuntimeError(
                f"{_patched_state['what']} is patched already; call unpatch() before patching "
                f"{flavour}"
            )
        if _patched_state.get("settings") != merged:
            os.environ[ENV_SETTINGS] = encoded
            _patched_state["settings"] = merged
        return _patched_state["what"]
    try:
        if flavour == "nnunetv2":
            from nnunetv2.run import run_training as run_module
            from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

            for name, method in _v2_wrappers(nnUNetTrainer).items():
                _set(nnUNetTrainer, name, method)
            _set(run_module, "run_ddp", _run_ddp_patched)
            what = f"nnunetv2 {v2}"
        else:
            from carbon_callbacks.integrations import nnunet_v1

            for owner, name, method in nnunet_v1.wrappers():
                _set(owner, name, method)
            what = f"nnunet {v1}"
    except BaseException:
        unpatch()  # nothing half-patched
        raise
    _patched_state.update(
        what=what, settings=merged, flavour=flavour, env_before=os.environ.get(ENV_SETTINGS)
    )
    os.environ[ENV_SETTINGS] = encoded
    return what


def unpatch() -> None:
    """Restore every method :func:`patch` replaced. Idempotent."""
    for (owner, name), original in list(_originals.items()):
        setattr(owner, name, original)
    _originals.clear()
    if _patched_state:
        before = _patched_state.get("env_before")
        if before is None:
            os.environ.pop(ENV_SETTINGS, None)
        else:
            os.environ[ENV_SETTINGS] = before
    _patched_state.clear()


def is_patched() -> bool:
    """True between :func:`patch` and :func:`unpatch`."""
    return bool(_patched_state)


# -- console script ------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_args(argv: list[str]) -> tuple[dict[str, Any], list[str], bool]:
    """Split the console script's arguments: (carbon settings, nnU-Net's arguments, print dir).

    ``--carbon KEY=VALUE`` / ``--carbon=KEY=VALUE`` (repeatable) set any CarbonConfig field,
    VALUE read as JSON where it parses (``pue=1.2`` is a number, ``zone=DK`` a string);
    ``--carbon-trainer-dir`` asks for :data:`TRAINER_DIR`. Everything else is nnU-Net's.
    """
    settings: dict[str, Any] = {}
    rest: list[str] = []
    print_dir = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--carbon-trainer-dir":
            print_dir = True
            continue
        if arg != "--carbon" and not arg.startswith("--carbon="):
            rest.append(arg)
            continue
        if arg == "--carbon":
            if i >= len(argv):
                raise ConfigError("--carbon needs KEY=VALUE, e.g. --carbon zone=DK")
            item = argv[i]
            i += 1
        else:
            item = arg.split("=", 1)[1]
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--carbon needs KEY=VALUE, e.g. --carbon zone=DK; got {item!r}")
        settings[key.strip()] = _parse_value(value)
    return settings, rest, print_dir


def main(argv: list[str] | None = None) -> None:
    """``carbon-callbacks-nnunet-train``: ``nnUNetv2_train`` with every trainer measured.

    Takes ``nnUNetv2_train``'s arguments (nnU-Net v1: ``nnUNet_train``'s), plus
    ``--carbon KEY=VALUE`` settings and ``--carbon-trainer-dir`` (see :func:`split_args`).
    """
    try:
        settings, rest, print_dir = split_args(list(sys.argv[1:] if argv is None else argv))
        if print_dir:
            print(TRAINER_DIR)
            return
        what = patch(**settings)
    except (ConfigError, NnUNetVersionError) as exc:
        raise SystemExit(f"carbon-callbacks-nnunet-train: {exc}") from None
    print(f"carbon_callbacks: measuring every trainer of {what}")
    sys.argv = [sys.argv[0], *rest]
    if what.startswith("nnunetv2"):
        from nnunetv2.run.run_training import run_training_entry

        run_training_entry()
    else:
        from nnunet.run.run_training import main as v1_main

        v1_main()


if __name__ == "__main__":  # spawned children re-import the main module: guarded
    # run the importable module's main, so that patch() and the trainer classes share one
    # module (``python -m`` would otherwise hold a second copy of this file as ``__main__``)
    from carbon_callbacks.integrations.nnunet import main as _main

    _main()
