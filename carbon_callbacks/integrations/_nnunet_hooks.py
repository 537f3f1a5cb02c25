"""nnU-Net integration: nnU-Net's trainer hooks -> tracker calls (shared by the mixin and patch).

Part of :mod:`carbon_callbacks.integrations.nnunet`, whose docstring has the hook table. Each
hook here takes the trainer and nnU-Net's own method (bound), and calls it where nnU-Net's order
needs it.

Under DDP (``-num_gpus`` > 1) every rank builds a tracker and names its own CUDA device
(:meth:`~carbon_callbacks.core.tracker.CarbonTracker.set_gpu`). nnU-Net's ``run_ddp`` creates
the process group before it builds the trainer, so the tracker joins the ranks at
``on_train_start`` like under any other framework: rank 0 also measures CPU and DRAM, every
``epoch_end()`` combines the ranks' measurements (rank 0's run log holds ``rank<r>/gpu:<k>``),
and every rank gets the whole run's figures, totals, prediction and budget decision. The one
thing left here is nnU-Net's side of a stop: the ranks' stop votes are summed (a collective
every rank calls after every epoch), so that ranks given different budgets, or rank 0's
``stop_and_confirm`` answer, stop every rank at the same epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from carbon_callbacks.core import distributed
from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.console import fmt, format_duration
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations._gpu import cuda_gpu_id
from carbon_callbacks.integrations._nnunet_settings import (
    SUPPORTED_TEXT,
    NnUNetVersionError,
    build_settings,
)

#: Logger key holding ``tracker.state_dict()`` per epoch (saved in ``checkpoint['logging']``).
STATE_KEY = "carbon/tracker_state"
_ATTR = "_carbon"


class BudgetStop(Exception):
    """Raised at the start of the epoch after a budget said stop; caught by run_training."""


@dataclass
class Session:
    """What the integration keeps on one trainer (``trainer._carbon``).

    Attributes:
        tracker: the trainer's tracker (every DDP rank has one).
        rank / world_size: the trainer's DDP rank and number of ranks (0 and 1 without DDP).
        registered: carbon keys nnU-Net's logger accepts from this session.
        in_run_training: inside the ``run_training`` wrapper (a budget stop can end the loop).
        stop_requested / stopped_by_budget: the ranks agreed to stop (the run ends early).
        predicted: the prediction line was written to the training log.
        warned_unwrapped: the warning about a stop that cannot end the loop was given.
    """

    tracker: CarbonTracker
    rank: int = 0
    world_size: int = 1
    registered: list[str] = field(default_factory=list)
    in_run_training: bool = False
    stop_requested: bool = False
    stopped_by_budget: bool = False
    predicted: bool = False
    warned_unwrapped: bool = False

    @property
    def logs(self) -> bool:
        """True on the process that writes the training log lines (rank 0)."""
        return self.rank == 0

    def record(self, kind: str, message: str) -> None:
        """One warning and a run-log event (never raises)."""
        self.tracker.events.record(kind, message, "nnunet")


def session(trainer: Any) -> Session | None:
    """The trainer's session, or ``None`` for a trainer the integration does not measure."""
    return trainer.__dict__.get(_ATTR)


def local_logger(trainer: Any) -> Any:
    """nnU-Net's LocalLogger (2.7+: ``logger.local_logger``; 2.6: the logger itself)."""
    return getattr(trainer.logger, "local_logger", trainer.logger)


def store(trainer: Any) -> dict[str, list[Any]]:
    """nnU-Net's logger lists (``my_fantastic_logging``): key -> one value per epoch."""
    return local_logger(trainer).my_fantastic_logging


def attach(trainer: Any, settings: Mapping[str, Any]) -> None:
    """Build the tracker (settings validated now) and register the keys in nnU-Net's logger."""
    try:
        store(trainer)
    except AttributeError:
        raise NnUNetVersionError(
            f"{type(trainer).__name__} has no nnU-Net v2 logger (logger.my_fantastic_logging); "
            f"carbon_callbacks supports {SUPPORTED_TEXT}"
        ) from None
    ddp = bool(getattr(trainer, "is_ddp", False))
    config = CarbonConfig.from_kwargs(**build_settings(trainer, settings))
    factory = getattr(trainer, "make_carbon_tracker", None)
    tracker = factory(config) if callable(factory) else CarbonTracker(config=config)
    gpu = cuda_gpu_id(getattr(trainer, "device", None))
    if gpu is not None:  # the rank's own device (nnU-Net puts rank r on cuda:r)
        tracker.set_gpu(gpu)
    found = Session(
        tracker=tracker,
        rank=distributed.rank() if ddp else 0,
        world_size=distributed.world_size() if ddp else 1,
    )
    trainer.__dict__[_ATTR] = found
    register(trainer, found, (*keys.EPOCH_KEYS, STATE_KEY))


def register(trainer: Any, found: Session, names: tuple[str, ...] | list[str]) -> None:
    """Make nnU-Net's logger accept ``names``; NaN for the epochs before (plots stay full)."""
    lists = store(trainer)
    epochs = int(getattr(trainer, "current_epoch", 0))
    for name in names:
        values = lists.setdefault(name, [])
        while len(values) < epochs:
            values.append(math.nan)
        if name not in found.registered:
            found.registered.append(name)


# -- hooks ---------------------------------------------------------------------------------------
def on_train_start(trainer: Any, original: Callable[[], Any]) -> None:
    """``set_planned`` (a bad plan fails here, before training) and ``start()``, then nnU-Net's.

    Under DDP, ``start()`` joins the ranks: a collective every rank reaches here.
    """
    found = session(trainer)
    if found is not None:
        found.tracker.set_planned(epochs=int(trainer.num_epochs), strict=True)
        found.tracker.start()
    original()


def on_epoch_start(trainer: Any, original: Callable[[], Any]) -> None:
    """End the loop if the ranks agreed to stop; else nnU-Net's, then ``epoch_start()``."""
    found = session(trainer)
    if found is not None and found.stop_requested:
        if found.in_run_training:
            raise BudgetStop()
        if not found.warned_unwrapped:
            found.warned_unwrapped = True
            found.record(
                "budget_stop_ignored",
                f"the carbon budget says stop, but {type(trainer).__name__}.run_training does "
                "not call nnUNetTrainer.run_training, so training cannot be ended cleanly here; "
                "it continues",
            )
    original()
    if found is not None:
        found.tracker.epoch_start()


def begin_validation(trainer: Any, original: Callable[[], Any]) -> None:
    """nnU-Net's, then a ``validation`` phase begins."""
    original()
    found = session(trainer)
    if found is not None:
        found.tracker.begin_phase("validation")


def end_validation(trainer: Any, original: Callable[..., Any], *args: Any) -> None:
    """nnU-Net's, then the ``validation`` phase ends."""
    original(*args)
    found = session(trainer)
    if found is not None:
        found.tracker.end_phase("validation")


def on_epoch_end(trainer: Any, original: Callable[[], Any]) -> None:
    """``epoch_end()``; the metrics into nnU-Net's logger before nnU-Net's own ``on_epoch_end``
    (checkpoints, ``progress.png``, ``current_epoch += 1``); then the stop."""
    found = session(trainer)
    if found is None:
        original()
        return
    epoch = int(trainer.current_epoch)
    tracker = found.tracker
    # under DDP a collective: the whole run's figures, the same on every rank
    metrics = tracker.epoch_end(steps=int(trainer.num_iterations_per_epoch))
    stop = agreed_stop(found)
    try:
        log_epoch(trainer, found, epoch, metrics, tracker.state_dict())
        if found.logs:
            print_epoch(trainer, found, metrics)
    except Exception as exc:  # noqa: BLE001 - never break training
        found.record("hook_failed", f"logging the carbon metrics to nnU-Net failed: {exc!r}")
    original()
    if stop and not found.stop_requested:
        found.stop_requested = found.stopped_by_budget = True
        if found.logs:
            reason = tracker.stop_reason or "the carbon budget of another rank said stop"
            combined = tracker.ranks_combined
            if tracker.stop_reason and combined > 1:
                reason += f" (the whole run: {combined} ranks combined)"
            trainer.print_to_log_file(
                f"carbon_callbacks: stopping after epoch {epoch}: {reason}; the final "
                "checkpoint is written as at a normal end"
            )


def agreed_stop(found: Session) -> bool:
    """The tracker's stop decision, agreed by every DDP rank (any rank's stop stops all).

    Every rank decides on the same combined figures, so the votes agree unless the ranks were
    given different budgets or rank 0's user answered ``stop_and_confirm``. A collective on
    every rank after every epoch, as Lightning's ``reduce_boolean_decision``.
    """
    own = bool(found.tracker.should_stop)
    if found.world_size <= 1:
        return own
    try:
        return distributed.any_rank_stops(own)
    except distributed.DistributedError as exc:
        found.record("stop_vote_failed", f"{exc}; this rank's own decision is used")
        return own


def log_epoch(
    trainer: Any,
    found: Session,
    epoch: int,
    metrics: Mapping[str, float],
    state: dict[str, Any],
) -> None:
    """One value per registered key for this epoch (NaN where not measured)."""
    local = local_logger(trainer)
    new = [k for k in keys.ALL_KEYS if k in metrics and k not in found.registered]
    if new:
        register(trainer, found, new)
    for name in found.registered:
        if name == STATE_KEY:
            local.log(name, state, epoch)  # the local logger only: not W&B
            continue
        value = metrics.get(name)
        if value is not None and math.isfinite(value):
            trainer.logger.log(name, float(value), epoch)  # W&B too, when nnU-Net has it on
        else:
            local.log(name, math.nan, epoch)


def print_epoch(trainer: Any, found: Session, metrics: Mapping[str, float]) -> None:
    """Lines in nnU-Net's training log: the epoch's energy and CO2; the prediction once made."""
    if not metrics:
        return
    digits = found.tracker.config.decimal_precision
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
    if found.predicted or keys.PRED_ENERGY_KWH not in metrics:
        return
    found.predicted = True
    pred = found.tracker.prediction
    epochs = pred.epochs if pred is not None else getattr(trainer, "num_epochs", "all")
    text = (
        f"Carbon: predicted for {epochs} epochs: "
        f"{fmt(metrics[keys.PRED_ENERGY_KWH], digits)} kWh, "
        f"{fmt(metrics.get(keys.PRED_CO2_G, math.nan), digits)} g CO2eq, "
        f"{format_duration(metrics.get(keys.PRED_DURATION_S, math.nan))}"
    )
    if pred is not None:
        text += (
            f" (energy {fmt(pred.energy_kwh_low, digits)} .. "
            f"{fmt(pred.energy_kwh_high, digits)} kWh; {pred.method})"
        )
    trainer.print_to_log_file(text)


def on_train_end(trainer: Any, original: Callable[[], Any]) -> None:
    """nnU-Net's (``checkpoint_final.pth``), then ``stop()`` and the totals' line."""
    original()
    found = session(trainer)
    if found is None:
        return
    status = "interrupted" if found.stopped_by_budget else "completed"
    epochs = int(trainer.current_epoch)
    totals = found.tracker.stop(status)  # the whole run's, on every rank
    if found.logs:
        where = found.tracker.log_path
        digits = found.tracker.config.decimal_precision
        trainer.print_to_log_file(
            f"Carbon: training {status} after {epochs} epochs: "
            f"{fmt(totals.get(keys.ENERGY_KWH, math.nan), digits)} kWh, "
            f"{fmt(totals.get(keys.CO2_G, math.nan), digits)} g CO2eq"
            + (f"; run log {where}" if where else "")
        )


def run_training(trainer: Any, original: Callable[[], Any]) -> None:
    """nnU-Net's loop; a budget stop ends it with ``on_train_end`` as at a normal end."""
    found = session(trainer)
    if found is None:
        original()
        return
    found.in_run_training = True
    try:
        original()
    except BudgetStop:
        trainer.on_train_end()
    except BaseException as exc:
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        found.tracker.stop("interrupted" if interrupted else "failed")
        raise
    finally:
        found.in_run_training = False


def load_checkpoint(trainer: Any, original: Callable[[Any], Any], checkpoint: Any) -> None:
    """nnU-Net's, then the keys registered again and the saved totals resumed."""
    original(checkpoint)
    found = session(trainer)
    if found is None:
        return
    # keys of this session, and carbon keys the checkpoint brings (e.g. GPU power from a GPU
    # run resumed elsewhere): all get one value per epoch from now on, or progress.png shrinks
    carried = [k for k in store(trainer) if k.startswith(keys.PREFIX)]
    register(trainer, found, list(dict.fromkeys([*found.registered, *carried])))
    tracker = found.tracker
    if tracker.epochs_completed:
        return  # loading checkpoint_best after training
    saved = store(trainer).get(STATE_KEY, [])[: int(trainer.current_epoch)]
    states = [s for s in saved if isinstance(s, dict)]
    if states:
        # the whole run's totals (under DDP, every rank saved and loads the same ones)
        tracker.load_state_dict(dict(states[-1]))
    elif trainer.current_epoch and found.logs:
        found.record(
            "resume_without_carbon_state",
            f"the checkpoint holds {trainer.current_epoch} epoch(s) but no carbon totals (it was "
            "written without carbon_callbacks); cumulative figures count from this resume on",
        )
