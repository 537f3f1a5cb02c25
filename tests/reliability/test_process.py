"""Matrix row process: SIGKILL mid-run, SIGTERM, KeyboardInterrupt, an exception in the user's
training step, and a fault inside the tracker itself.

SIGKILL and SIGTERM with Python's default action end the process, so those cells run a real
tiny training in a child process (``child.py``) and signal it after a few epochs; the SIGTERM
cells whose handlers let the process live deliver a real signal in this process.
"""

from __future__ import annotations

import signal
import threading
import traceback

import pytest
from power_traces import ConstantCounterSensor

from carbon_callbacks.core.meter import Meter
from carbon_callbacks.core.runlog import aggregate_runs, read_run_log
from carbon_callbacks.core.tracker import CarbonTracker

from .harness import DRIVERS, base_settings, baseline, check_cell, train
from .processes import run_child, run_children

each_driver = pytest.mark.parametrize("driver", DRIVERS)


def _settings(tmp_path, **kw):
    return base_settings(tmp_path, sim_cpu="Test CPU", sim_cpu_tdp=100.0, components="cpu", **kw)


def _only_log(folder):
    (path,) = sorted(folder.glob("*.carbon.jsonl"))
    return read_run_log(path)


# -- the user's own faults ----------------------------------------------------------------
@each_driver
def test_exception_in_training_step_propagates_unchanged(driver, tmp_path):
    raised = []

    def bug(epoch, batch):
        if (epoch, batch) == (1, 2):
            error = ValueError("user bug in training_step")
            raised.append(error)
            raise error

    reference = train(driver, None, step_hook=bug)
    run = train(driver, _settings(tmp_path), step_hook=bug)
    log = check_cell(run, reference, warned=0)
    assert run.error is raised[-1]  # the very object the user raised, not a wrapper
    frames = [f.name for f in traceback.extract_tb(run.error.__traceback__)]
    assert frames[-1] == "bug"
    assert [e["epoch"] for e in log.epochs] == [0]  # the finished epoch; the partial one is not
    assert log.footer["status"] == "failed" and log.footer["epochs_completed"] == 1
    assert log.footer["duration_s"] > log.epochs[0]["duration_s"]  # the partial epoch is in
    assert not run.tracker._meter.running


@each_driver
def test_keyboard_interrupt(driver, tmp_path):
    def ctrl_c(epoch, batch):
        if (epoch, batch) == (1, 1):
            raise KeyboardInterrupt

    reference = train(driver, None, step_hook=ctrl_c)
    run = train(driver, _settings(tmp_path), step_hook=ctrl_c)
    log = check_cell(run, reference, warned=0)
    # Lightning turns Ctrl-C into a graceful shutdown and sys.exit(1); the core API lets it go
    expected = SystemExit if driver == "lightning" else KeyboardInterrupt
    assert type(run.error) is expected
    assert log.footer["status"] == "interrupted" and [e["epoch"] for e in log.epochs] == [0]


@each_driver
def test_fault_inside_the_tracker_never_reaches_training(driver, tmp_path, monkeypatch):
    real_mark = Meter.mark
    broken = threading.Event()

    def mark(self):
        if broken.is_set():
            raise RuntimeError("a bug in the tracker")
        return real_mark(self)

    monkeypatch.setattr(Meter, "mark", mark)

    def on_epoch_start(epoch):
        broken.set() if epoch == 1 else broken.clear()

    run = train(driver, _settings(tmp_path), on_epoch_start=on_epoch_start)
    log = check_cell(run, baseline(driver), warned=["epoch_start failed"])
    assert [e["epoch"] for e in log.epochs] == [0, 2]  # epoch 1 unmeasured, and said so
    assert log.footer["epochs_completed"] == 3 and log.footer["epochs_monitored"] == 2
    assert {e["kind"] for e in log.events} == {"hook_failed"}  # recorded per call, warned once


# -- SIGKILL ---------------------------------------------------------------------------------
def _check_killed_log(log, at_least):
    epochs = [e["epoch"] for e in log.epochs]
    assert len(epochs) >= at_least and epochs == list(range(len(epochs)))
    assert log.footer is None and log.corrupt_lines == 0
    totals = log.totals()
    assert totals["basis"] == "epochs" and totals["epochs"] == len(epochs)
    # what the tracker itself counted: its last epoch's cumulative, plus counted work after it
    last = log.epochs[-1]
    after = [p for p in log.phases if p.get("counted") and p["start_unix_s"] >= last["end_unix_s"]]
    expected_kwh = last["cumulative"]["energy_kwh"] + sum(p["energy_kwh"] for p in after)
    assert totals["energy_kwh"] == pytest.approx(expected_kwh)
    figure = aggregate_runs([log]).runs[0]
    assert figure.basis == "predicted" and "no footer" in figure.reason


def test_sigkill_lightning_keeps_every_finished_epoch(killed_lightning_run):
    root, _, result = killed_lightning_run
    assert result.returncode == -signal.SIGKILL
    _check_killed_log(_only_log(root / "carbon"), at_least=3)


def test_sigkill_core_keeps_every_finished_epoch(tmp_path):
    spec = {"driver": "core", "settings": _settings(tmp_path), "epochs": 50, "step_sleep_s": 0.02}
    result = run_child(spec, signal_at_epoch=3, signum=signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    _check_killed_log(_only_log(tmp_path / "carbon"), at_least=3)


# -- SIGTERM in a child: the process ends exactly as it would without the tracker ----------
@pytest.mark.parametrize(
    ("driver", "handler"), [("core", "default"), ("core", "exit3"), ("lightning", "default")]
)
def test_sigterm_writes_the_footer_and_exits_as_without_tracker(tmp_path, driver, handler):
    spec = {"driver": driver, "epochs": 50, "step_sleep_s": 0.02, "sigterm": handler}
    reference, result = run_children(
        [{**spec, "settings": None}, {**spec, "settings": _settings(tmp_path)}], signal_at_epoch=2
    )
    assert result.returncode == reference.returncode, (result.stderr, reference.stderr)
    expected = {"default": -signal.SIGTERM, "exit3": 3}[handler]
    if driver == "core":
        assert result.returncode == expected
    assert result.lines.count("USER_HANDLER") == reference.lines.count("USER_HANDLER")
    log = _only_log(tmp_path / "carbon")
    assert log.footer["status"] == "interrupted" and log.footer["signal"] == "SIGTERM"
    assert len(log.epochs) >= 2
    assert log.footer["epochs_completed"] >= len(log.epochs)
    # the totals: the epochs, plus the epoch cut short by the signal and tracked work between
    counted = sum(p["energy_kwh"] for p in log.phases if p.get("counted"))
    expected = sum(e["energy_kwh"] for e in log.epochs) + counted
    assert log.totals()["energy_kwh"] == pytest.approx(expected)


# -- SIGTERM in this process, with handlers that let the process live ----------------------
@pytest.fixture
def user_handler():
    """A user's SIGTERM handler that records its calls and lets the program go on."""
    calls = []

    def handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    yield handler, calls
    signal.signal(signal.SIGTERM, previous)


@each_driver
def test_sigterm_with_user_handler_in_process(driver, tmp_path, user_handler):
    handler, calls = user_handler

    def sigterm(epoch, batch):
        if (epoch, batch) == (1, 1):
            signal.raise_signal(signal.SIGTERM)

    reference = train(driver, None, step_hook=sigterm)
    assert calls == [signal.SIGTERM]
    run = train(driver, _settings(tmp_path), step_hook=sigterm)
    log = check_cell(run, reference, warned=0)
    assert calls == [signal.SIGTERM] * 2  # the user's handler ran once more, and only once
    assert signal.getsignal(signal.SIGTERM) is handler  # put back after the run
    footers = [r for r in log.other if r["type"] == "footer"] + [log.footer]
    assert footers[0]["status"] == "interrupted" and footers[0]["signal"] == "SIGTERM"
    if driver == "lightning":  # Lightning ends the fit gracefully (SIGTERMException)
        assert log.footer["status"] == "interrupted" and len(log.epochs) == 1
    else:  # the user's handler returned: training went on and completed, measured
        assert log.footer["status"] == "completed" and len(log.epochs) == 3
        assert footers[0]["epochs_completed"] == 1


class _SignallingSensor(ConstantCounterSensor):
    """Raises SIGTERM from inside a tracker call (a mark at the end of epoch 1)."""

    def __init__(self):
        super().__init__("gpu:0", 100.0)
        self.armed = False

    def read_power_w(self):
        if self.armed and threading.current_thread() is threading.main_thread():
            self.armed = False
            signal.raise_signal(signal.SIGTERM)
        return super().read_power_w()


def test_sigterm_inside_a_tracker_call_is_handled_after_it(tmp_path, user_handler):
    _, calls = user_handler
    sensor = _SignallingSensor()
    tracker = CarbonTracker(epochs=3, sensors=[sensor], **_settings(tmp_path))
    seen = []
    tracker.start()
    for epoch in range(3):
        tracker.epoch_start()
        sensor.armed = epoch == 1
        tracker.epoch_end()
        if epoch == 1:
            # the handler ran once epoch_end had returned: the epoch was whole by then
            seen.append((calls[:], tracker._sigterm._depth))
    tracker.stop()
    assert seen == [([signal.SIGTERM], 0)]
    log = read_run_log(tracker.log_path)
    first = [r for r in log.other if r["type"] == "footer"][0]
    assert first["epochs_completed"] == 2  # written after epoch 1 was recorded, not inside it
    assert [e["epoch"] for e in log.epochs] == [0, 1, 2] and log.corrupt_lines == 0


def test_two_trackers_chain_and_restore(tmp_path, user_handler):
    handler, calls = user_handler
    a = CarbonTracker(**_settings(tmp_path / "a", run_name="a")).start()
    b = CarbonTracker(**_settings(tmp_path / "b", run_name="b")).start()
    signal.raise_signal(signal.SIGTERM)
    assert calls == [signal.SIGTERM]  # once, not once per tracker
    for tracker in (a, b):
        footer = read_run_log(tracker.log_path).footer
        assert footer["status"] == "interrupted" and footer["signal"] == "SIGTERM"
    a.stop()  # out of order: a is under b
    assert signal.getsignal(signal.SIGTERM) == b._sigterm._handle
    b.stop()
    assert signal.getsignal(signal.SIGTERM) is handler


def test_not_installed_off_the_main_thread_or_when_ignored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    box = []
    thread = threading.Thread(
        target=lambda: box.append(CarbonTracker(**_settings(tmp_path)).start())
    )
    thread.start()
    thread.join()
    (tracker,) = box
    assert signal.getsignal(signal.SIGTERM) is before
    (event,) = [e for e in tracker.events.events if e.kind == "sigterm_not_handled"]
    assert "main thread" in event.message
    tracker.stop()

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        ignored = CarbonTracker(**_settings(tmp_path)).start()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert not [e for e in ignored.events.events if e.kind == "sigterm_not_handled"]
        ignored.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_handler_from_c_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(signal, "getsignal", lambda signum: None)
    installed = []
    monkeypatch.setattr(signal, "signal", lambda *a: installed.append(a))
    tracker = CarbonTracker(**_settings(tmp_path)).start()
    tracker.stop()
    assert installed == []
    assert [e.kind for e in tracker.events.events] == ["sigterm_not_handled"]


def test_every_thread_the_package_starts_is_named_for_it():
    """The matrix finds leaked threads by name (``carbon_callbacks-...``); a thread started
    under another name would escape it, so every ``Thread(...)`` in the package must name
    itself so (a string or f-string starting with the prefix)."""
    import ast
    from pathlib import Path

    import carbon_callbacks

    package = Path(carbon_callbacks.__file__).parent
    unnamed = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            called = getattr(func, "attr", None) or getattr(func, "id", None)
            if not isinstance(node, ast.Call) or called != "Thread":
                continue
            name = next((kw.value for kw in node.keywords if kw.arg == "name"), None)
            first = name.values[0] if isinstance(name, ast.JoinedStr) and name.values else name
            ok = isinstance(first, ast.Constant) and str(first.value).startswith("carbon_callbacks")
            if not ok:
                unnamed.append(f"{path.relative_to(package)}:{node.lineno}")
    assert unnamed == []
