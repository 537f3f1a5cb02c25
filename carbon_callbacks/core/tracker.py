"""The framework-neutral tracking session: start, epochs, phases, prediction, stop.

:class:`CarbonTracker` is what every integration drives, and what users of carbontracker switch
to by changing an import: ``epochs``, ``epochs_before_pred``, ``monitor_epochs``, ``log_dir``,
``epoch_start()``, ``epoch_end()`` and ``stop()`` mean what they mean there. On top:

* ``epoch_end()`` returns the epoch's metrics (keys in :mod:`carbon_callbacks.core.metrics`);
* ``with tracker.phase("validation"):`` measures a named part of an epoch, and
  ``with tracker.track("inference"):`` any block of work outside training;
* every figure is written to a crash-safe run log with its provenance;
* nothing here ever raises into training after construction: failures are recorded and warned
  once (see :mod:`carbon_callbacks.core.events`).

The session delegates: the run's totals are one :class:`~carbon_callbacks.core.totals.Totals`
value, the ranks' exchange is :class:`~carbon_callbacks.core.ranks.RankExchange`, the intensity
applied is :class:`~carbon_callbacks.core.intensity.applied.AppliedIntensity`, records and
metrics are built by :mod:`carbon_callbacks.core.recording`, the ``stop_and_confirm`` question is
:mod:`carbon_callbacks.core.prompt` and SIGTERM is :mod:`carbon_callbacks.core.signals`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from carbon_callbacks.core.budget import Budget, BudgetDecision, check_budget
from carbon_callbacks.core.config import CarbonConfig, ConfigError, prepare_outputs
from carbon_callbacks.core.console import fmt, format_final, format_prediction
from carbon_callbacks.core.distributed import RankInfo
from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.intensity.applied import AppliedIntensity
from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider
from carbon_callbacks.core.intensity.resolve import resolve_intensity
from carbon_callbacks.core.meter import Measurement, Meter, Snapshot
from carbon_callbacks.core.predict import (
    EpochSample,
    PhasePlan,
    PhaseSample,
    Prediction,
    RunPredictor,
)
from carbon_callbacks.core.prompt import ask_to_continue
from carbon_callbacks.core.ranks import RankExchange
from carbon_callbacks.core.recording import (
    counted,
    energy_kwh_of,
    epoch_metrics,
    footer_record,
    header_record,
    measurement_record,
    plan_record,
    unmeasured_epoch,
)
from carbon_callbacks.core.runlog import new_run_id
from carbon_callbacks.core.sensors.base import Sensor
from carbon_callbacks.core.session_log import SessionLog
from carbon_callbacks.core.signals import SigtermChain
from carbon_callbacks.core.totals import Totals

#: Epochs kept for prediction (older ones are summed, not kept): memory stays bounded.
_HISTORY_LEN = 4096
_STATE_VERSION = 1


class CarbonTracker:
    """Measure, predict and log the energy and CO2eq of a run, per epoch.

    Args:
        epochs: epochs the run will train (for the prediction); ``None`` if unknown.
        config: a ready :class:`CarbonConfig`; or pass its fields as keyword arguments.
        sensors: sensors to use instead of discovering them (tests, custom hardware).
        intensity: an intensity provider instead of resolving one from the settings.
        **settings: any :class:`CarbonConfig` field (``pue``, ``zone``, ``log_dir``...).

    Raises:
        ConfigError: at construction, for any invalid or contradictory setting.
    """

    def __init__(
        self,
        epochs: int | None = None,
        *,
        config: CarbonConfig | None = None,
        sensors: list[Sensor] | None = None,
        intensity: IntensityProvider | None = None,
        **settings: Any,
    ):
        if config is None:
            config = CarbonConfig.from_kwargs(epochs=epochs, **settings)
        else:
            if settings:
                raise ConfigError(
                    f"pass either config=CarbonConfig(...) or settings {sorted(settings)}, not both"
                )
            if epochs is not None and epochs != config.epochs:
                config = dataclasses.replace(config, epochs=epochs)  # validated again
        self.config: CarbonConfig = config
        self._log = SessionLog()
        self.events = EventLog(listener=self._log.on_event)
        # resolving is cheap and validates the zone now; a live provider is only built here and
        # started at start(), on its own thread, and only on rank 0 when ranks combine (the
        # other ranks use rank 0's values: see RankExchange)
        self._intensity = AppliedIntensity(
            intensity or resolve_intensity(config, self.events, defer_live=intensity is None),
            owned=intensity is None,  # a provider made here is closed at stop()
        )
        self._ranks = RankExchange()
        self._given_sensors = sensors
        self.run_id = new_run_id()
        self._lock = threading.RLock()
        self._meter: Meter | None = None
        self._started = False
        self._stopped = False
        self._start_snap: Snapshot | None = None
        self._epoch_snap: Snapshot | None = None
        self._phases: list[tuple[str, Snapshot]] = []
        #: what earlier segments of a resumed run carried over (load_state_dict), this
        #: process's own sums, and the run's totals: their sum (see _count)
        self._earlier = Totals()
        self._running = Totals()
        self._total = Totals()
        self.epochs_monitored = 0
        self._prior_run_ids: list[str] = []
        self._history: deque[EpochSample] = deque(maxlen=_HISTORY_LEN)
        self._epoch_phases: list[PhaseSample] = []
        self.prediction: Prediction | None = None
        self._verbose = config.verbose
        #: True once a budget (or the user, with ``stop_and_confirm``) decided that training
        #: should stop; integrations translate it into their framework's own stop flag.
        #: ``stop_reason`` says why. Checked after every epoch.
        self.should_stop = False
        self.stop_reason: str | None = None
        self.budget: Budget | None = Budget.from_settings(
            {n: getattr(config, n) for n in ("budget_g", "budget_kwh", "budget_s")},
            config.budget_policy,
        )
        self._budget_said: set[tuple[str, str, str]] = set()
        self._confirm_asked = False
        self._no_prediction_noted = False
        # carried from epoch to epoch: predictions at a cost that does not grow with the run
        self._predictor = RunPredictor()
        # phases the framework scheduled, by name: (plan, where it came from)
        self._plans: dict[str, tuple[PhasePlan, str]] = {}
        self.last_metrics: dict[str, float] = {}
        self.last_measurement: Measurement | None = None
        #: The signal that ended or interrupted the run ("SIGTERM"), recorded in the footer.
        self._signal: str | None = None
        self._sigterm = SigtermChain(self._on_sigterm)

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> CarbonTracker:
        """Discover sensors, start the meter and write the run log's header. Idempotent.

        On the main thread this also chains a SIGTERM handler that writes the footer before
        the process goes (see :mod:`carbon_callbacks.core.signals`).
        """
        with self._sigterm.busy(), self._lock:
            if self._started:
                return self
            self._started = True
            try:
                self._start()
            except Exception as exc:  # noqa: BLE001 - never break training
                self.events.record(
                    "tracker_start_failed",
                    f"the tracker could not start ({exc!r}); training continues unmeasured",
                    "tracker",
                )
            why = self._sigterm.install()
            if why is not None:
                self.events.record("sigterm_not_handled", why, "tracker", warn=False)
        return self

    def _start(self) -> None:
        self.config = prepare_outputs(self.config, self.events)
        self._ranks.join(self.config, self.events)
        if self.ranks.rank != 0:
            self._verbose = 0  # rank 0 speaks and writes the run log
        self._ranks.settle_intensity(self._intensity, self.events)
        sensors = self._ranks.sensors(self.config, self._given_sensors, self.events)
        self._meter = Meter(
            sensors,
            self.events,
            interval_s=self.config.interval_s,
            counter_interval_s=self.config.counter_interval_s,
        )
        started_unix = time.time()
        if self.config.log_dir is not None and self.ranks.rank == 0:
            self._log.open(
                self.config.log_dir, self.config.log_file_prefix, self.run_id, started_unix,
                self.events,
            )  # fmt: skip
        self._start_snap = self._meter.start()
        infos = [i.to_dict() for i in self._meter.sensor_infos]
        infos = self._ranks.gather_sensors(infos, self._intensity, self.events)
        header = header_record(
            self.config, self.run_id, started_unix, infos,
            self._intensity_over(started_unix, started_unix), self._earlier,
            self._prior_run_ids, self._ranks.header(),
        )  # fmt: skip
        plans = [plan_record(plan, source) for plan, source in self._plans.values()]
        self._log.write_header(header, plans)  # with the phases planned before the start

    def stop(self, status: str = "completed") -> dict[str, float]:
        """Stop measuring, write the footer and print the final report. Idempotent.

        Args:
            status: ``"completed"``, ``"interrupted"`` (Ctrl-C, SIGTERM, budget) or ``"failed"``.

        Returns:
            The run's totals (``carbon/energy_kwh``, ``carbon/co2_g``, ``carbon/duration_s``).
        """
        with self._sigterm.busy(), self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                self._intensity.close(self.events)
                return self.totals()
            self._stopped = True
            if self.should_stop and status == "completed":
                status = "interrupted"  # ended early by a budget or the user, not by its plan
            try:
                self._stop(status)
            except Exception as exc:  # noqa: BLE001
                self.events.record(
                    "tracker_stop_failed", f"stopping the tracker failed: {exc!r}", "tracker"
                )
            finally:
                if self._meter is not None and self._meter.running:
                    with contextlib.suppress(Exception):
                        self._meter.stop()
                self._log.close()
                self._sigterm.uninstall()
                self._intensity.close(self.events)
                self._ranks.close()
        return self.totals()

    def _stop(self, status: str) -> None:
        if self._epoch_snap is not None and self._meter is not None:
            # an epoch was open (interrupted, failed): its energy counts, as a partial epoch
            start, self._epoch_snap = self._epoch_snap, None
            m = self._meter.measure(start, self._meter.mark())
            self._record_phase(m, "partial_epoch", in_epoch=False, counted=True)
        meter = self._meter
        if meter is None or self._start_snap is None:
            return
        end = meter.stop() or meter.mark()
        whole = meter.measure(self._start_snap, end)
        total = self._total
        self._write(self._footer(status, whole))
        if self._verbose >= 1:
            self._print(
                format_final(
                    status=status,
                    duration_s=total.duration_s,
                    energy_kwh=total.energy_kwh,
                    co2_g=total.co2_g,
                    energy_kwh_by_component=dict(total.energy_kwh_by_component),
                    epochs_completed=total.epochs,
                    sensors=meter.sensor_infos,
                    intensity=self._intensity_over(whole.start_unix_s, whole.end_unix_s),
                    pue=self.config.pue,
                    digits=self.config.decimal_precision,
                    log_path=self._log.path_for_report(),
                    events=len(self.events.events),
                )
            )

    def _footer(self, status: str, whole: Measurement) -> dict[str, Any]:
        """The footer record for the session measured by ``whole``."""
        return footer_record(
            status,
            whole,
            self._total,
            pue=self.config.pue,
            epochs_monitored=self.epochs_monitored,
            epochs_planned=self.config.epochs,
            stop_reason=self.stop_reason,
            events_dropped=self.events.dropped,
            signal=self._signal,
        )

    def _on_sigterm(self, terminating: bool) -> None:
        """SIGTERM arrived (called on the main thread, outside any tracker call).

        ``terminating``: the process ends right after this (SIGTERM's default action), so stop
        completely; else a previous handler decides, so write a footer and keep measuring (a
        later ``stop()`` writes a newer one). See :mod:`carbon_callbacks.core.signals`.
        """
        if self._stopped or not self._started:
            return
        self._signal = "SIGTERM"
        if terminating:
            self.stop("interrupted")
            return
        try:
            with self._lock:
                if self._meter is not None and self._start_snap is not None:
                    whole = self._meter.measure(self._start_snap, self._meter.mark())
                    self._write(self._footer("interrupted", whole))
        except Exception as exc:  # noqa: BLE001
            self.events.record("hook_failed", f"SIGTERM footer failed: {exc!r}", "tracker")

    def __enter__(self) -> CarbonTracker:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            status = "completed"
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            status = "interrupted"
        else:
            status = "failed"
        self.stop(status)

    # -- epochs ----------------------------------------------------------------------------------
    @property
    def monitoring(self) -> bool:
        """False once ``monitor_epochs`` epochs were measured (later epochs are only counted)."""
        limit = self.config.monitor_epochs
        return limit == -1 or self.epochs_monitored < limit

    @property
    def epochs_completed(self) -> int:
        """Epochs this process completed (measured or only counted; resumed ones not included)."""
        return self._running.epochs

    def epoch_start(self) -> None:
        """Mark the start of an epoch (starts the tracker on first use)."""
        with self._sigterm.busy():
            try:
                self.start()
                if not self.monitoring or self._meter is None:
                    return
                self._epoch_snap = self._meter.mark()
                self._epoch_phases = []
            except Exception as exc:  # noqa: BLE001
                self.events.record("hook_failed", f"epoch_start failed: {exc!r}", "tracker")

    def epoch_end(self, steps: int | None = None) -> dict[str, float]:
        """Mark the end of the epoch; record it; predict when due; return its metrics.

        Args:
            steps: optimisation steps done in this epoch (for step-based prediction).

        Returns:
            The metrics (see :mod:`carbon_callbacks.core.metrics`); empty when not measured.
        """
        with self._sigterm.busy():
            try:
                return self._epoch_end(steps)
            except Exception as exc:  # noqa: BLE001
                self.events.record("hook_failed", f"epoch_end failed: {exc!r}", "tracker")
                return {}

    def _epoch_end(self, steps: int | None) -> dict[str, float]:
        with self._lock:
            start = self._epoch_snap
            self._epoch_snap = None
            index = self._total.epochs
            self._count(Totals(epochs=1, steps=steps))
            if start is None or self._meter is None:
                return {}
            end = self._meter.mark()
            m = self._ranks.combine(self._meter.measure(start, end), self._intensity, self.events)
            self.last_measurement = m
            record, energy_kwh, co2_g, intensity = self._measurement_record(
                m, "epoch", index, self._ranks.take_epoch_intensity()
            )
            record["steps"] = steps
            self.epochs_monitored += 1
            if not m.energy_j:
                self.last_metrics = unmeasured_epoch(record, m, intensity)
                record["cumulative"] = self._total.cumulative()
                self._write(record)
                return self.last_metrics
            self._add_to_totals(m, energy_kwh, co2_g)
            record["cumulative"] = self._total.cumulative()
            self._write(record)
            phases = tuple(self._epoch_phases)
            self._epoch_phases = []
            self._history.append(EpochSample(m.duration_s, energy_kwh, co2_g, steps, phases))
            self._maybe_predict(intensity)
            self._check_budget(index)
            metrics = epoch_metrics(m, energy_kwh, co2_g, intensity, self._total, self.prediction)
            self.last_metrics = metrics
            if self._verbose >= 2:
                digits = self.config.decimal_precision
                self._print(
                    f"carbon_callbacks: epoch {index}: {m.duration_s:.2f} s, "
                    f"{fmt(energy_kwh, digits)} kWh, {fmt(co2_g, digits)} gCO2eq"
                )
            return metrics

    # -- totals ----------------------------------------------------------------------------------
    def _count(self, part: Totals) -> None:
        """Add ``part`` to this process's sums and to the run's totals."""
        self._running += part
        self._total += part

    def _add_to_totals(self, m: Measurement, energy_kwh: float, co2_g: float) -> None:
        self._count(counted(m, energy_kwh, co2_g, self.config.pue))

    def _measurement_record(
        self,
        m: Measurement,
        kind: str,
        epoch: int | None,
        intensity: IntensityEstimate | None = None,
    ) -> tuple[dict[str, Any], float, float, IntensityEstimate]:
        """The record of ``m`` with its energy (kWh), CO2eq (g) and the intensity applied.

        ``intensity``: the value agreed between ranks for this window; ``None``: ask the
        provider (see :meth:`_intensity_over`).
        """
        if intensity is None:
            intensity = self._intensity_over(m.start_unix_s, m.end_unix_s)
        record, energy_kwh, co2_g = measurement_record(m, kind, epoch, intensity, self.config.pue)
        return record, energy_kwh, co2_g, intensity

    # -- prediction ------------------------------------------------------------------------------
    def _maybe_predict(self, intensity: IntensityEstimate) -> None:
        """Predict the whole run from ``epochs_before_pred`` epochs on; log every prediction."""
        cfg = self.config
        if cfg.epochs_before_pred == 0 or self.epochs_monitored < cfg.epochs_before_pred:
            return
        first = self.prediction is None
        history = self._history  # read only, under the lock: no copy
        # epochs before the history: a resumed run's earlier segments, and any epochs that
        # fell out of the bounded history
        first_index = self._earlier.epochs + self.epochs_monitored - len(history)
        steps_done = self._total.steps if self._running.steps is not None else None
        pred = self._predictor.predict(  # predict_run's prediction, at a cost that does not grow
            history,
            total_epochs=cfg.epochs,
            intensity_g_per_kwh=intensity.intensity_g_per_kwh,
            total_steps=cfg.total_steps,
            steps_done=steps_done,
            first_epoch_index=first_index,
            plans=tuple(plan for plan, _ in self._plans.values()),
        )
        if pred is None:
            if not self._no_prediction_noted:
                self._no_prediction_noted = True
                self.events.record(
                    "no_prediction",
                    "no prediction can be made: the run's length is unknown (set epochs, or "
                    "total_steps with steps reported per epoch)",
                    "predict",
                )
            return
        applied = intensity
        forecast = self._ranks.prediction_forecast(
            pred.remaining_duration_s, self._intensity, self.events
        )
        if forecast is not None:
            pred = pred.with_intensity(forecast.intensity_g_per_kwh)
            applied = forecast
        if first_index:  # else nothing is unseen (and the history's sums are not needed)
            pred = self._add_unseen(pred, history)
        self.prediction = pred
        self._write({"type": "prediction", **pred.to_dict(), "intensity": applied.to_dict()})
        if first and self._verbose >= 1:
            self._print(format_prediction(pred, applied, cfg.pue, cfg.decimal_precision))
        if first and cfg.stop_and_confirm:
            self._ask_to_continue(pred)

    def _add_unseen(self, pred: Prediction, history: Sequence[EpochSample]) -> Prediction:
        """Add what was measured before the history (resumed segments, dropped epochs): the run's
        totals less the history's, which the predictor already sums as ``measured_*``."""
        measured = self._total
        unseen = {
            "energy_kwh": measured.energy_kwh - pred.measured_energy_kwh,
            "co2_g": measured.co2_g - pred.measured_co2_g,
            "duration_s": measured.duration_s - pred.measured_duration_s,
            "epochs": self._earlier.epochs + self.epochs_monitored - len(history),
        }
        if not unseen["epochs"]:
            return pred
        return _shift_prediction(pred, unseen)

    # -- budgets ---------------------------------------------------------------------------------
    def _check_budget(self, epoch: int) -> None:
        """Apply the budget after an epoch: warn, or set ``should_stop`` with a reason.

        Under a combined run these are the whole run's figures (every rank's energy, rank 0's
        time and intensity), the same on every rank, so every rank decides alike.
        """
        if self.budget is None:
            return
        spent = self._total.cumulative()
        self.apply_budget(check_budget(self.budget, spent, self.prediction), epoch)

    def apply_budget(self, decisions: list[BudgetDecision], epoch: int) -> None:
        """Act on budget decisions (:func:`~carbon_callbacks.core.budget.check_budget`'s).

        Each new decision is announced once (run log, print, warning); the first stop sets
        :attr:`should_stop` and :attr:`stop_reason`. Called after every epoch with this
        tracker's figures (the combined run's under data parallelism).
        """
        with self._lock:
            for decision in decisions:
                key = (decision.action, decision.quantity, decision.trigger)
                if key in self._budget_said or (decision.action == "stop" and self.should_stop):
                    continue
                self._budget_said.add(key)
                if decision.action == "stop":
                    self.should_stop = True
                    self.stop_reason = decision.reason
                self._announce(decision, epoch)

    def _announce(self, decision: BudgetDecision, epoch: int) -> None:
        """Log a budget decision in the run log, print it and raise it as a warning."""
        self._write({"type": "budget", "epoch": epoch, **decision.to_dict()})
        verb = "stopping training" if decision.action == "stop" else "warning"
        text = f"carbon_callbacks: budget {verb}: {decision.reason}"
        if self._verbose >= 1:  # rank 0 speaks (every rank takes the same decision)
            self._print(text)
        warnings.warn(text, CarbonCallbacksWarning, stacklevel=4)

    def _ask_to_continue(self, pred: Prediction) -> None:
        """carbontracker's ``stop_and_confirm``: ask once, on rank 0, after the first prediction."""
        if self._confirm_asked or self.ranks.rank != 0:
            return
        self._confirm_asked = True
        answer = ask_to_continue(pred, self.events)
        if answer.stop:
            self.should_stop = True
            self.stop_reason = answer.reason
        self._write(answer.record(self._total.epochs - 1, pred))
        if answer.stop:
            self._print(f"carbon_callbacks: stopping training: {self.stop_reason}")

    # -- phases and blocks -----------------------------------------------------------------------
    def begin_phase(self, name: str) -> None:
        """Start measuring a named phase (see :meth:`phase`); pair with :meth:`end_phase`."""
        if not isinstance(name, str) or not name:
            raise ValueError("a phase needs a non-empty name")
        with self._sigterm.busy():
            self.start()
            try:
                if self._meter is not None:
                    self._phases.append((name, self._meter.mark()))
            except Exception as exc:  # noqa: BLE001
                self.events.record(
                    "hook_failed", f"phase {name!r} start failed: {exc!r}", "tracker"
                )

    def end_phase(self, name: str) -> None:
        """End the innermost open phase called ``name`` and record it."""
        with self._sigterm.busy():
            for i in range(len(self._phases) - 1, -1, -1):
                if self._phases[i][0] == name:
                    _, start = self._phases.pop(i)
                    self._end_phase(
                        name,
                        start,
                        nested=any(
                            snap.time_monotonic_s <= start.time_monotonic_s
                            for _, snap in self._phases
                        ),
                    )
                    return

    def plan_phase(
        self,
        name: str,
        every_epochs: int | None = None,
        work_ratio: float | None = None,
        *,
        every_steps: int | None = None,
        at_last_step: bool = False,
        source: str = "",
        strict: bool = True,
    ) -> PhasePlan | None:
        """Tell the predictor a phase the training loop has scheduled, before it runs.

        Integrations call this from the framework's settings (Lightning's
        ``check_val_every_n_epoch``, Keras' ``validation_freq``, the Hugging Face Trainer's
        ``eval_steps``, with their validation batches). The prediction then counts the
        phase's runs to come from this schedule, and costs it before its first run from
        ``work_ratio`` (see :class:`~carbon_callbacks.core.predict.PhasePlan`). Recorded in the
        run log as a ``plan`` record. A later call for the same name replaces the plan.

        Args:
            name: the phase's name, as passed to :meth:`phase` (e.g. ``"validation"``).
            every_epochs: it runs at the 0-based epochs ``e`` with ``(e + 1) % every_epochs == 0``.
            work_ratio: its batches per run / training batches per epoch, when known.
            every_steps: instead of ``every_epochs``: it runs after every optimisation step
                ``s`` (1-based, over the whole run) with ``s % every_steps == 0``; its runs to
                come are counted from the steps reported at each ``epoch_end(steps=...)``.
            at_last_step: a step plan also runs after the run's last step when that is not one
                of its multiples.
            source: where the plan comes from (e.g. ``"lightning"``), for the run log.
            strict: with False (integrations, which read the plan from a running trainer and
                must never break it), a setting that is not a plan is recorded as a
                ``plan_ignored`` event and None is returned instead of raising.

        Raises:
            ValueError: a setting that is not a plan (``every_epochs`` below 1, a negative
                ``work_ratio``...), with what to pass instead.
        """
        try:
            plan = PhasePlan(name, every_epochs, work_ratio, every_steps, at_last_step)
        except ValueError as exc:
            if strict:
                raise
            self.events.record("plan_ignored", f"{name} plan ignored: {exc}", source)
            return None
        with self._lock:
            self._plans[name] = (plan, source)
            if self._log.header_written:  # else written with the header at start
                self._write(plan_record(plan, source))
        return plan

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Measure a named part of the work (``"validation"``, ``"synthesis"``...).

        Phases inside an epoch are part of the epoch's figures too; phases outside epochs are
        part of the run's totals (footer) only. Each is recorded with its own energy and CO2.
        """
        self.begin_phase(name)
        try:
            yield
        finally:
            self.end_phase(name)

    track = phase

    def _end_phase(self, name: str, start: Snapshot, nested: bool = False) -> None:
        try:
            with self._lock:
                if self._meter is None:
                    return
                m = self._meter.measure(start, self._meter.mark())
                epoch_snap = self._epoch_snap
                # work outside epochs (and outside other phases) counts in the run's totals;
                # phases inside an epoch are already part of it
                in_epoch = epoch_snap is not None
                counted = not in_epoch and not self._phases
                energy_kwh, co2_g = self._record_phase(m, name, in_epoch, counted)
                if (
                    epoch_snap is not None
                    and not nested
                    and start.time_monotonic_s >= epoch_snap.time_monotonic_s
                ):
                    # a top-level phase inside the epoch: the predictor forecasts it on its own
                    self._epoch_phases.append(PhaseSample(name, m.duration_s, energy_kwh, co2_g))
        except Exception as exc:  # noqa: BLE001
            self.events.record("hook_failed", f"phase {name!r} end failed: {exc!r}", "tracker")

    def _record_phase(
        self, m: Measurement, name: str, in_epoch: bool, counted: bool
    ) -> tuple[float, float]:
        """Write ``m`` as a phase record (added to the totals when ``counted``); its kWh and g."""
        record, energy_kwh, co2_g, _ = self._measurement_record(m, "phase", self._total.epochs)
        record.update(name=name, in_epoch=in_epoch, counted=counted)
        if counted:
            self._add_to_totals(m, energy_kwh, co2_g)
        self._write(record)
        return energy_kwh, co2_g

    def set_planned(
        self, epochs: int | None = None, total_steps: int | None = None, *, strict: bool = False
    ) -> None:
        """Tell the tracker the run's length once the framework knows it (before the run).

        Values the user gave at construction win; these fill gaps (e.g. Lightning's
        ``max_epochs``). A plan that contradicts the settings (e.g. fewer epochs than
        ``epochs_before_pred``) is not applied and is recorded; training is never stopped here.
        With ``strict=True`` (for integrations that know the plan when the trainer is built,
        before any training) it raises :class:`ConfigError` instead.
        """
        changes: dict[str, Any] = {}
        if epochs is not None and self.config.epochs is None:
            changes["epochs"] = epochs
        if total_steps is not None and self.config.total_steps is None:
            changes["total_steps"] = total_steps
        if not changes:
            return
        try:
            self.config = dataclasses.replace(self.config, **changes)
        except ConfigError as exc:  # the framework's plan contradicts a setting: say so, go on
            if strict:
                raise
            self.events.record(
                "plan_not_applied",
                f"the framework's plan {changes} was not applied: {exc}; predictions use the "
                "settings given",
                "tracker",
            )

    def record_metric(self, name: str, value: float, epoch: int | None = None) -> None:
        """Store a performance metric (e.g. final Dice) in the run log for model selection."""
        with self._sigterm.busy():
            self._write({"type": "metric", "name": name, "value": float(value), "epoch": epoch})

    # -- resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Cumulative totals to store in a checkpoint (JSON-ready; no tensors, no objects).

        Keys: ``version``, ``energy_kwh`` (kWh, PUE included), ``co2_g`` (g), ``duration_s``
        (s), ``epochs``, ``steps``, ``energy_kwh_by_component`` (kWh per component) and
        ``run_ids`` (this run's segments, oldest first).
        """
        return {
            "version": _STATE_VERSION,
            **self._total.to_state(),
            "run_ids": [*self._prior_run_ids, self.run_id],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the totals of a checkpointed run. Call before the first epoch."""
        if not state:
            return
        if state.get("version") != _STATE_VERSION:
            self.events.record(
                "resume_state_ignored",
                f"checkpointed carbon state has version {state.get('version')!r}, expected "
                f"{_STATE_VERSION}; totals restart from zero",
                "tracker",
            )
            return
        with self._lock:
            if self.epochs_completed:
                self.events.record(
                    "resume_state_late",
                    "load_state_dict() called after epochs were measured; ignored to avoid "
                    "counting epochs twice",
                    "tracker",
                )
                return
            self._earlier = Totals.from_state(state)
            self._total = self._earlier + self._running
            self._prior_run_ids = [str(r) for r in state.get("run_ids", [])]

    # -- ranks -----------------------------------------------------------------------------------
    def set_gpu(self, gpu: int | str) -> None:
        """Measure this GPU (NVML index or UUID): what the framework put this rank on.

        Integrations call it before ``start()`` under data parallelism, so each rank measures
        its own device. A ``gpu_ids`` setting given by the user wins.
        """
        if self.config.gpu_ids is None:
            self._ranks.gpu = gpu

    @property
    def ranks(self) -> RankInfo:
        """This process's rank, world size and hosts (known from ``start()``)."""
        return self._ranks.info

    @ranks.setter
    def ranks(self, info: RankInfo) -> None:
        self._ranks.info = info

    @property
    def ranks_combined(self) -> int:
        """Ranks whose measurements this tracker's epochs hold: the world size while the ranks
        are combined (see :class:`~carbon_callbacks.core.ranks.RankExchange`), else 1 (alone,
        or after an exchange failed)."""
        return self.ranks.world_size if self._ranks.combined else 1

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (spawned workers, ddp_spawn) is allowed before ``start()`` only."""
        if self._started:
            raise TypeError("a started CarbonTracker cannot be pickled")
        state = self.__dict__.copy()
        for key in ("_lock", "events"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self.events = EventLog(listener=self._log.on_event)

    # -- accessors -------------------------------------------------------------------------------
    def unwritten_records(self) -> list[dict[str, Any]]:
        """Run-log records that could not be written to disk, oldest first (kept in memory).

        Empty when the run log is complete or when there is none (``log_dir=None``). After a
        disk failure (full, read-only, removed) the tracker keeps measuring and keeps these
        records, up to ``MAX_PENDING``, retrying them on every write and at :meth:`stop`; what is
        still here after ``stop()`` exists nowhere else (save it, e.g. one ``json.dumps`` per
        line). :meth:`totals` and ``last_metrics`` stay available either way.
        """
        return self._log.unwritten()

    @property
    def log_path(self) -> str | None:
        """The run log's path (``None`` before ``start()``, without ``log_dir`` or off rank 0)."""
        return self._log.path

    def totals(self) -> dict[str, float]:
        """Cumulative figures over the measured epochs (resumed segments included)."""
        return self._total.metrics()

    def epoch_so_far(self) -> dict[str, float] | None:
        """Duration (s), energy (kWh, PUE included) and CO2eq (g) of the open epoch, read now.

        For progress displays: a meter mark (no slow I/O), nothing is recorded. ``None`` when
        no epoch is open or nothing is measured. Never raises.
        """
        try:
            with self._lock:
                start, meter = self._epoch_snap, self._meter
                if start is None or meter is None:
                    return None
                m = meter.measure(start, meter.mark())
            energy_kwh = energy_kwh_of(m, self.config.pue)
            intensity = self._intensity_over(m.start_unix_s, m.end_unix_s)
            return {
                "duration_s": m.duration_s,
                "energy_kwh": energy_kwh,
                "co2_g": energy_kwh * intensity.intensity_g_per_kwh,
            }
        except Exception:  # noqa: BLE001 - a progress read must never break anything
            return None

    @property
    def intensity(self) -> IntensityProvider:
        """The intensity provider in use."""
        return self._intensity.provider

    @property
    def sensors(self) -> list[Any]:
        """Provenance of the sensors in use (empty before ``start()``)."""
        return self._meter.sensor_infos if self._meter is not None else []

    # -- internals -------------------------------------------------------------------------------
    def _intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        """The intensity applied to the window (see :class:`AppliedIntensity`); never raises."""
        return self._intensity.over(start_unix_s, end_unix_s, self.events)

    def _write(self, record: dict[str, Any]) -> None:
        self._log.write(record)

    def _print(self, text: str) -> None:
        try:
            print(text, file=sys.stdout, flush=True)
        except Exception:  # noqa: BLE001 - a closed stdout must not break training
            pass


def _shift_prediction(pred: Prediction, unseen: dict[str, float]) -> Prediction:
    """Add figures measured before the prediction's history (resumed segments...)."""
    e, g, s = unseen["energy_kwh"], unseen["co2_g"], unseen["duration_s"]
    return dataclasses.replace(
        pred,
        after_epochs=pred.after_epochs + int(unseen["epochs"]),
        duration_s=pred.duration_s + s,
        duration_s_low=pred.duration_s_low + s,
        duration_s_high=pred.duration_s_high + s,
        energy_kwh=pred.energy_kwh + e,
        energy_kwh_low=pred.energy_kwh_low + e,
        energy_kwh_high=pred.energy_kwh_high + e,
        co2_g=pred.co2_g + g,
        co2_g_low=pred.co2_g_low + g,
        co2_g_high=pred.co2_g_high + g,
        measured_duration_s=pred.measured_duration_s + s,
        measured_energy_kwh=pred.measured_energy_kwh + e,
        measured_co2_g=pred.measured_co2_g + g,
    )
