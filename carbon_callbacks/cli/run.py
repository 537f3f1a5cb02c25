"""Measure a whole command and its child processes, start to end: ``carbon-callbacks run -- CMD``.

The command runs as a child process with the terminal, environment and working folder of the
caller. The tracker measures one epoch that spans it, from just before the child starts to just
after it ends, and writes a run log like any training run (``epochs = 1``, no prediction; the
command line is in the header's ``config.extra``). The sensors measure devices, not processes:
the GPUs in use and the whole machine's CPU and DRAM, so every process the command starts is
included (and so is anything else running on the machine; see the run log's sensor details).

Signals. SIGTERM and SIGHUP sent to this process are forwarded to the command and every process
below it (found with psutil), then the child is waited for, and the run log gets its footer with
status ``interrupted``. Ctrl-C in a terminal already reaches the whole foreground process group,
the command included, so a SIGINT is forwarded only when this process is not in the terminal's
foreground group (e.g. ``kill -INT`` from elsewhere). A second signal is forwarded again; nothing
is escalated to SIGKILL. The exit code is the command's (128 + N when it was killed by signal N;
127 when it could not be found, 126 when it could not be executed).

While the command runs, a progress line (elapsed time, energy and CO2eq so far) goes to a stream
every ``progress_interval_s`` seconds when one is given (the CLI does so when stderr is a
terminal).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.sensors.base import Sensor
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.report.statement import format_duration, sig

#: Signals forwarded to the command (those that exist on this platform).
FORWARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: Exit code when the command cannot be found / cannot be executed (shell conventions).
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


@dataclass
class CommandResult:
    """What happened to the command.

    Attributes:
        exit_code: what ``carbon-callbacks run`` exits with (the command's, see the module
            docstring).
        returncode: :attr:`subprocess.Popen.returncode` (negative: killed by that signal), or
            None when the command never started.
        status: the run log's footer status: ``completed`` (exit 0), ``failed`` (non-zero exit
            or not started) or ``interrupted`` (a signal was received).
        signals: signal numbers received, in order.
        log_path: the run log, or None.
        duration_s: seconds from the start of the command to its end.
        cpu_time_s: user + system CPU seconds of the command and every descendant it waited for
            (``getrusage(RUSAGE_CHILDREN)``), or None.
        error: why the command could not start, or None.
        totals: the tracker's totals (``carbon/energy_kwh``, ``carbon/co2_g``,
            ``carbon/duration_s``).
    """

    exit_code: int
    returncode: int | None
    status: str
    signals: list[int] = field(default_factory=list)
    log_path: str | None = None
    duration_s: float = 0.0
    cpu_time_s: float | None = None
    error: str | None = None
    totals: dict[str, float] = field(default_factory=dict)


class _Signals:
    """Signals received while the command runs, and the child to forward them to."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.child: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def handle(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        child = self.child
        if child is None or child.returncode is not None:
            return  # not started yet (it will not be) or already ended
        if signum == getattr(signal, "SIGINT", None) and _terminal_delivered_sigint():
            return  # Ctrl-C: the terminal sent it to the whole foreground group already
        signal_tree(child.pid, signum)


def _terminal_delivered_sigint() -> bool:
    """True when this process is in its terminal's foreground process group."""
    for stream in (sys.stdin, sys.stderr, sys.stdout):
        try:
            fd = stream.fileno()
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except (AttributeError, OSError, ValueError):
            continue
    return False


def signal_tree(pid: int, signum: int) -> list[int]:
    """Send ``signum`` to ``pid`` and every process below it; return the pids signalled.

    The descendants are listed before any is signalled, so processes orphaned by the first
    signal are still reached. Processes that have ended are skipped.
    """
    import psutil

    targets = [pid]
    try:
        targets += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except (psutil.Error, OSError):
        pass
    sent = []
    for target in targets:
        try:
            os.kill(target, signum)
            sent.append(target)
        except OSError:
            continue
    return sent


def _install(handler: _Signals) -> dict[int, Any]:
    """Install the handler for :data:`FORWARDED_SIGNALS`; returns the previous handlers.

    Outside the main thread signals cannot be handled; nothing is installed then.
    """
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in FORWARDED_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, handler.handle)
        except (OSError, ValueError):
            continue
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for signum, old in previous.items():
        try:
            signal.signal(signum, old)
        except (OSError, ValueError, TypeError):
            continue


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _progress_line(tracker: CarbonTracker, started: float) -> str:
    so_far = tracker.epoch_so_far()
    elapsed = format_duration(time.monotonic() - started)
    if so_far is None:
        return f"[carbon-callbacks] {elapsed} elapsed (energy not measured)"
    return (
        f"[carbon-callbacks] {elapsed} elapsed, {sig(so_far['energy_kwh'])} kWh, "
        f"{sig(so_far['co2_g'])} gCO2eq so far"
    )


def exit_code_of(returncode: int) -> int:
    """Shell convention: the code itself, or 128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run_command(
    command: Sequence[str],
    config: CarbonConfig | None = None,
    *,
    sensors: list[Sensor] | None = None,
    progress_interval_s: float | None = None,
    progress_stream: TextIO | None = None,
) -> CommandResult:
    """Run ``command`` to its end, measured as one epoch; see the module docstring.

    Args:
        command: the program and its arguments (no shell; use ``["sh", "-c", "..."]`` for one).
        config: the tracker's settings (log folder, zone, PUE, components...); ``epochs``,
            ``epochs_before_pred`` and ``verbose`` are set here (1, 0, 0) and the command line
            is stored in ``extra``.
        sensors: sensors to use instead of discovering them (tests, custom hardware).
        progress_interval_s: seconds between progress lines; None for none.
        progress_stream: where progress lines go (default ``sys.stderr``).

    Raises:
        ValueError: an empty command.
        ConfigError: bad settings.
    """
    argv = [str(part) for part in command]
    if not argv:
        raise ValueError("no command given: carbon-callbacks run [options] -- COMMAND [ARGS...]")
    base = config or CarbonConfig()
    extra = {**base.extra, "command": argv, "cwd": os.getcwd(), "mode": "command"}
    run_config = dataclasses.replace(
        base,
        epochs=1,
        epochs_before_pred=0,
        monitor_epochs=-1,
        verbose=0,
        run_name=base.run_name or os.path.basename(argv[0]),
        extra=extra,
    )
    tracker = CarbonTracker(config=run_config, sensors=sensors)
    stream = progress_stream or sys.stderr
    signals = _Signals()
    previous = _install(signals)
    result = CommandResult(exit_code=1, returncode=None, status="failed")
    started = time.monotonic()
    try:
        tracker.start()
        tracker.epoch_start()
        started = time.monotonic()
        _run_child(argv, signals, result, tracker, started, progress_interval_s, stream)
        result.duration_s = time.monotonic() - started
    finally:
        if signals.received:
            result.status = "interrupted"
        elif result.returncode == 0:
            result.status = "completed"
        else:
            result.status = "failed"
        result.signals = list(signals.received)
        tracker.epoch_end()
        message = _exit_message(argv, result)
        tracker.events.record("command_exit", message, "command", warn=False)
        result.totals = tracker.stop(result.status)
        result.log_path = tracker.log_path
        _restore(previous)
    return result


def _run_child(
    argv: list[str],
    signals: _Signals,
    result: CommandResult,
    tracker: CarbonTracker,
    started: float,
    progress_interval_s: float | None,
    stream: TextIO,
) -> None:
    """Start ``argv``, pass signals on to it, print progress, and fill ``result`` as it ends."""
    if signals.received:
        result.error = "interrupted before the command started"
        result.exit_code = 128 + signals.received[0]
        return
    cpu_before = _children_cpu_s()
    try:
        child = subprocess.Popen(argv)
    except FileNotFoundError as exc:
        result.error = f"command not found: {argv[0]} ({exc.strerror})"
        result.exit_code = EXIT_NOT_FOUND
        return
    except OSError as exc:
        result.error = f"cannot execute {argv[0]}: {exc.strerror or exc}"
        result.exit_code = EXIT_NOT_EXECUTABLE
        return
    signals.child = child
    if signals.received:  # arrived between the start and the line above
        signal_tree(child.pid, signals.received[-1])
    while True:
        try:
            child.wait(timeout=progress_interval_s)
            break
        except subprocess.TimeoutExpired:
            try:
                print(_progress_line(tracker, started), file=stream, flush=True)
            except (OSError, ValueError):
                progress_interval_s = None  # the stream is gone: stop printing
    result.returncode = child.returncode
    result.exit_code = exit_code_of(child.returncode)
    result.cpu_time_s = _children_cpu_s() - cpu_before


def _exit_message(argv: list[str], result: CommandResult) -> str:
    """The ``command_exit`` event's text: exit code, returncode, signals, CPU time, error."""
    names = ", ".join(signal.Signals(s).name for s in result.signals)
    return (
        f"command {argv!r} ended: exit code {result.exit_code}"
        + (f" (returncode {result.returncode})" if result.returncode is not None else "")
        + (f"; signals received: {names}" if names else "")
        + (
            f"; CPU time of the command tree {result.cpu_time_s:.3f} s"
            if result.cpu_time_s is not None
            else ""
        )
        + (f"; {result.error}" if result.error else "")
    )


__all__ = [
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "FORWARDED_SIGNALS",
    "CommandResult",
    "exit_code_of",
    "run_command",
    "signal_tree",
]
