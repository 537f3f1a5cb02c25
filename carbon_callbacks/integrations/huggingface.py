"""Hugging Face transformers: ``trainer.add_callback(CarbonCallback(trainer=trainer, ...))``.

Translation only: Trainer hooks -> :class:`~carbon_callbacks.core.tracker.CarbonTracker` calls;
the tracker's metrics -> ``trainer.log`` (so they reach ``state.log_history`` and every
``report_to`` integration: TensorBoard, W&B, MLflow...); a budget decision ->
``control.should_training_stop``.

The epoch window is ``on_epoch_begin`` -> that epoch's evaluation, when one runs after the
epoch (``eval_strategy="epoch"``; the Trainer runs it after ``on_epoch_end``), else
``on_epoch_end``; evaluation is also recorded as its own ``"evaluation"`` phase, and
``eval_strategy="steps"`` becomes the tracker's evaluation plan (every ``eval_steps`` steps). Under
``torch.distributed`` every rank measures its own GPU (named here from ``args.device``); the
tracker combines the ranks, world process zero logs the sums and writes the run log, and a budget
stop on any rank stops every rank.

The Trainer does not pass itself to its callbacks, and only ``trainer.log`` reaches the
``report_to`` integrations: give it to the callback (``trainer=``). Without it the metrics go to
``state.log_history`` (saved in ``trainer_state.json`` with every checkpoint) and the run log, and
one warning says so.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from transformers import Trainer, TrainerCallback, TrainerControl
from transformers.trainer_callback import DefaultFlowCallback

from carbon_callbacks.core import distributed
from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations._gpu import cuda_gpu_id


class CarbonCallback(TrainerCallback):
    """Log energy and CO2eq per epoch as ``carbon/...`` metrics through ``trainer.log``.

    Args:
        config: a ready :class:`CarbonConfig`, or pass its fields as keyword arguments
            (``pue``, ``zone``, ``log_dir``...). ``epochs``/``total_steps`` default to the
            Trainer's plan.
        tracker: a ready tracker (advanced; overrides the settings).
        trainer: the Trainer, whose ``log`` reaches ``state.log_history`` and every
            ``report_to`` integration (or set ``callback.trainer`` before ``train()``):
            ``trainer.add_callback(CarbonCallback(trainer=trainer, zone="DK"))``. Without it
            the metrics go to ``state.log_history`` and the run log only.
    """

    def __init__(
        self,
        config: CarbonConfig | None = None,
        *,
        tracker: CarbonTracker | None = None,
        trainer: Trainer | None = None,
        **settings: Any,
    ):
        self.tracker = tracker or CarbonTracker(config=config, **settings)
        self.trainer = trainer
        self._epoch_first_step = 0
        self._epoch_steps: int | None = None  # set while the epoch waits for its evaluation
        self._budget_stopped = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None and state.is_world_process_zero:
            self.tracker.events.record(
                "no_trainer",
                "CarbonCallback was not given the Trainer: the carbon metrics go to "
                "state.log_history and the run log, not to the report_to integrations "
                "(TensorBoard, W&B...); use trainer.add_callback(CarbonCallback(trainer=trainer))",
                "huggingface",
            )
        if args.max_steps > 0 or not float(args.num_train_epochs).is_integer():
            self.tracker.set_planned(total_steps=state.max_steps)  # predict from steps
        else:
            self.tracker.set_planned(epochs=state.num_train_epochs, total_steps=state.max_steps)
        gpu = cuda_gpu_id(getattr(args, "device", None))
        if gpu is not None:  # measure the GPU this rank trains on
            self.tracker.set_gpu(gpu)
        self._plan_evaluation(args, state, kwargs.get("train_dataloader"))
        self.tracker.start()
        if args.eval_on_start:
            self.tracker.begin_phase("evaluation")

    def _plan_evaluation(self, args: Any, state: Any, train_dataloader: Any) -> None:
        """``eval_strategy="steps"`` -> the tracker's evaluation plan, every ``eval_steps`` steps.

        The Trainer evaluates after every step that is a multiple of ``state.eval_steps`` (set
        from ``eval_steps``, a share of ``max_steps`` when below 1), and after the last step
        when that is off the period (transformers >= 5). Its size is the evaluation batches per
        rank over the training batches of an epoch. With ``eval_delay`` the first evaluations
        are skipped: no plan then, the phase records say when it runs.
        """
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        every = getattr(state, "eval_steps", None)
        if strategy != "steps" or not isinstance(every, int) or every < 1 or args.eval_delay:
            return
        ratio = None
        eval_batches = _eval_batches(args, getattr(self.trainer, "eval_dataset", None))
        try:
            train_batches = len(train_dataloader) if train_dataloader is not None else 0
        except TypeError:  # an iterable dataset of unknown length
            train_batches = 0
        if eval_batches and train_batches > 0:
            ratio = eval_batches / train_batches
        self.tracker.plan_phase(
            "evaluation",
            every_steps=every,
            work_ratio=ratio,
            at_last_step=_evaluates_at_last_step(args, state),
            source="huggingface",
            strict=False,
        )

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._end_waiting_epoch(state, control)  # its evaluation never came
        self._epoch_first_step = state.global_step
        self.tracker.epoch_start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_evaluate:  # set by DefaultFlowCallback, which runs first
            self.tracker.begin_phase("evaluation")

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        steps = state.global_step - self._epoch_first_step
        if control.should_evaluate:  # this epoch's evaluation comes next: it belongs to it
            self._epoch_steps = steps
            self.tracker.begin_phase("evaluation")
        else:
            self._end_epoch(steps, state, control)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tracker.end_phase("evaluation")
        self._end_waiting_epoch(state, control)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._end_waiting_epoch(state, control)
        name = self.tracker.config.monitor_metric
        values = [log[name] for log in state.log_history if name is not None and name in log]
        if values and state.is_world_process_zero:
            self.tracker.record_metric(name, float(values[-1]))
        self.tracker.stop("interrupted" if self._budget_stopped else "completed")

    def _end_waiting_epoch(self, state: Any, control: Any) -> None:
        if self._epoch_steps is not None:
            steps, self._epoch_steps = self._epoch_steps, None
            self._end_epoch(steps, state, control)

    def _end_epoch(self, steps: int, state: Any, control: Any) -> None:
        metrics = self.tracker.epoch_end(steps=steps)  # already combined over the ranks
        if self._any_rank_stops():  # any rank's budget stops every rank (the same decision)
            control.should_training_stop = self._budget_stopped = True
            if state.is_world_process_zero and self.tracker.config.verbose >= 1:
                reason = self.tracker.stop_reason or "the budget of another rank"
                print(f"carbon_callbacks: stopping training: {reason}")
        if not state.is_world_process_zero or not metrics:
            return
        logged = {key: value for key, value in metrics.items() if not math.isnan(value)}
        if self.trainer is None:  # what trainer.log keeps, without the report_to integrations
            state.log_history.append({**logged, "epoch": state.epoch, "step": state.global_step})
            return
        should_log = control.should_log  # trainer.log resets it: keep the epoch's loss log
        self.trainer.log(logged)
        control.should_log = self.trainer.control.should_log = should_log

    def _any_rank_stops(self) -> bool:
        """The budget's stop, agreed by every rank (a collective every rank calls per epoch)."""
        own = bool(self.tracker.should_stop)
        try:
            return distributed.any_rank_stops(own)
        except distributed.DistributedError as exc:
            self.tracker.events.record(
                "stop_vote_failed", f"{exc}; this rank's own decision is used", "huggingface"
            )
            return own


def _eval_batches(args: Any, eval_dataset: Any) -> int | None:
    """Batches of one evaluation on this rank (the Trainer shards it over the ranks), or None.

    ``eval_dataset`` may be a dict of named datasets, each evaluated in turn.
    """
    if eval_dataset is None:
        return None
    datasets = eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]
    batch = max(1, int(args.eval_batch_size))
    world = max(1, int(getattr(args, "world_size", 1) or 1))
    total = 0
    for dataset in datasets:
        try:
            samples = len(dataset)
        except TypeError:  # an iterable dataset: its size is not known before it runs
            return None
        total += math.ceil(math.ceil(samples / world) / batch)
    return total or None


def _evaluates_at_last_step(args: Any, state: Any) -> bool:
    """Whether this Trainer also evaluates after the last step when it is off ``eval_steps``.

    transformers 5 does, earlier versions did not: the installed ``DefaultFlowCallback`` is asked
    what it does at a last step one past a multiple of ``eval_steps`` (on copies; nothing of the
    running Trainer is touched).
    """
    every = int(state.eval_steps)
    if every < 2:
        return False
    probe = copy.copy(state)
    probe.global_step = probe.max_steps = every + 1
    try:
        control = DefaultFlowCallback().on_step_end(args, probe, TrainerControl())
    except Exception:  # noqa: BLE001 - an unexpected Trainer: no plan for the last step
        return False
    return bool(getattr(control, "should_evaluate", False))
