"""A stepping energy counter read in a helper process, where the training's GIL cannot delay it.

The default reader of NVML's counter (``CARBON_CALLBACKS_COUNTER_MODE=thread`` leaves it to the
meter's thread, see :func:`carbon_callbacks.core.sensors.nvidia.counter_mode`). A thread's reads
wait for Python's GIL, which a training loop holds for tens to hundreds of milliseconds at the
moments marks are taken (the loader restarting, epoch-end work, the gradient sync), so its last
counter value before a mark can be a few steps old and the mark is bridged by power over that
span. A helper process has its own interpreter: it reads the counter mid-way between steps on
its own cadence, dates each value at its step with a
:class:`~carbon_callbacks.core.sensors.step_clock.SteppedCounterClock`, and writes one line per
new step to a pipe. The meter drains the pipe on its thread and at every mark (a non-blocking
read): when a value arrives no longer matters, only when the counter reached it, and that was
measured outside the GIL.
``time.monotonic()`` is one system-wide clock (``CLOCK_MONOTONIC`` on Linux), so the dates are
comparable across the two processes.

The helper is started with the parent's own interpreter and ``sys.path``, in a session of its
own (a Ctrl-C in the terminal reaches the training, not the helper), and ends when its standard
input closes: on :meth:`CounterFeed.close`, or when the training process dies, whatever the way.

Protocol (text lines). Parent to helper: ``c SECONDS`` sets the cadence (the helper reads at the
first mid-step at least ``SECONDS - half a step`` after its previous read). Helper to parent:
``v T VALUE`` (a value and the monotonic time of its step), ``e MESSAGE`` (a failure; the helper
then exits).

Run as ``python -m carbon_callbacks.core.sensors.counter_feed MODULE UUID`` where ``MODULE`` is
an importable NVML binding (``pynvml``, or a stand-in in the tests).
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from carbon_callbacks.core.sensors.step_clock import SteppedCounterClock

#: Longest wait (s) in :meth:`CounterFeed.close` for the helper to exit before it is killed.
CLOSE_WAIT_S = 1.0
#: Cadence (s) the helper starts at: every step of an NVML counter (~0.1 s).
START_CADENCE_S = 0.1
#: Wait (s) between reads while the counter's steps are not known yet.
UNLOCKED_WAIT_S = 0.05
#: How long (s) before a predicted step the helper starts a poll that measures the step phase
#: again: a few of NVML's ~4 ms reads (a poll started mid-step would miss that step's value).
RELOCK_LEAD_S = 0.025
#: Longest gap (s) between two poll reads across which the helper accepts a step: NVML's read
#: can take ~10 ms right at a step, and a step skipped for that is a step unread (the poll then
#: waits for the next one); dated between the two reads, it is within ~10 ms.
POLL_GAP_S = 0.02
#: Bytes of the helper's standard error kept to explain its failure.
_STDERR_KEEP = 2000


class CounterFeed:
    """The parent's end: starts the helper, drains its dated values, stops it.

    Args:
        module: name of the NVML binding the helper imports (``"pynvml"``).
        uuid: the GPU's NVML UUID (NVML ignores ``CUDA_VISIBLE_DEVICES``; a UUID is unambiguous).
        python: the interpreter to run (default: this one).
    """

    def __init__(self, module: str, uuid: str, *, python: str | None = None) -> None:
        self.module = module
        self.uuid = uuid
        self.python = python if python is not None else sys.executable
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._stderr = b""
        self._values = 0
        self._cadence_s: float | None = None
        self.failure: str | None = None  # why the feed ended, once it has

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the helper (does not wait for it); False, with :attr:`failure`, if it cannot."""
        if self._process is not None or self.failure is not None:
            return self.failure is None
        if not self.python:
            self.failure = "no Python interpreter to start the helper with (sys.executable empty)"
            return False
        env = dict(os.environ)
        # this process's own import path ('' is the working directory), made absolute
        paths = dict.fromkeys(os.path.abspath(p or os.curdir) for p in sys.path)
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if os.path.isdir(p))
        command = [self.python, "-m", __name__, self.module, self.uuid]
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except Exception as exc:  # noqa: BLE001 - the thread reads the counter instead
            self.failure = f"the helper process could not start ({exc!r})"
            return False
        assert self._process.stdout is not None and self._process.stderr is not None
        os.set_blocking(self._process.stdout.fileno(), False)
        os.set_blocking(self._process.stderr.fileno(), False)
        return True

    @property
    def live(self) -> bool:
        """True once the helper has delivered a value and until it ends."""
        return self.failure is None and self._values > 0

    @property
    def pid(self) -> int | None:
        """The helper's process id (None before it started)."""
        return None if self._process is None else self._process.pid

    def set_cadence(self, seconds: float) -> None:
        """Ask the helper to read about every ``seconds`` (sent only when it changes)."""
        seconds = round(seconds, 2)  # the cadence drifts while an epoch runs: 10 ms is enough
        if self._process is None or self.failure is not None or seconds == self._cadence_s:
            return
        self._cadence_s = seconds
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(f"c {seconds:.6f}\n".encode())
            self._process.stdin.flush()
        except Exception as exc:  # noqa: BLE001
            self._end(f"the helper process stopped listening ({exc!r})")

    def drain(self) -> list[tuple[float, float]] | None:
        """(step time in monotonic s, raw counter value) received since the last drain, oldest
        first; None once the feed has failed (:attr:`failure` says why).

        Never blocks.
        """
        process = self._process
        if process is None or self.failure is not None:
            return None
        eof = False
        chunks = []
        assert process.stdout is not None
        while True:
            try:
                chunk = os.read(process.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                self._end(f"the helper's pipe failed ({exc!r})")
                return None
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
        data = self._buffer + b"".join(chunks)
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        values: list[tuple[float, float]] = []
        for line in lines:
            fields = line.split(b" ", 2)
            if fields[0] == b"v" and len(fields) == 3:
                try:
                    values.append((float(fields[1]), float(fields[2])))
                except ValueError:
                    continue
            elif fields[0] == b"e":
                message = line[2:].decode(errors="replace")
                self._end(f"the helper process failed: {message}")
                return None
        self._values += len(values)
        if eof:
            self._end(self._exit_reason())
            return None
        return values

    def close(self) -> None:
        """Stop the helper (closes its input, waits up to :data:`CLOSE_WAIT_S`, then kills)."""
        process = self._process
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
        except Exception:  # noqa: BLE001 - the helper may be gone already
            pass
        try:
            process.wait(timeout=CLOSE_WAIT_S)
        except Exception:  # noqa: BLE001
            process.kill()
            try:
                process.wait(timeout=CLOSE_WAIT_S)
            except Exception:  # noqa: BLE001
                pass
        for stream in (process.stdout, process.stderr):
            try:
                if stream is not None:
                    stream.close()
            except Exception:  # noqa: BLE001
                pass
        if self.failure is None:
            self.failure = "closed"

    def cpu_s(self) -> float | None:
        """CPU seconds the helper has used so far (Linux ``/proc``; None elsewhere or after)."""
        if self._process is None:
            return None
        try:
            with open(f"/proc/{self._process.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        except Exception:  # noqa: BLE001 - a figure for benchmarks only
            return None

    # -- failures ------------------------------------------------------------------------------
    def _exit_reason(self) -> str:
        process = self._process
        assert process is not None
        try:
            code = process.wait(timeout=CLOSE_WAIT_S)
        except Exception:  # noqa: BLE001
            code = None
        stderr = self._read_stderr().strip().splitlines()
        last = f": {stderr[-1]}" if stderr else ""
        return f"the helper process exited (code {code}){last}"

    def _read_stderr(self) -> str:
        process = self._process
        if process is None or process.stderr is None:
            return ""
        try:
            while chunk := os.read(process.stderr.fileno(), 65536):
                self._stderr = (self._stderr + chunk)[-_STDERR_KEEP:]
        except Exception:  # noqa: BLE001 - empty (BlockingIOError) or closed
            pass
        return self._stderr.decode(errors="replace")

    def _end(self, reason: str) -> None:
        self.failure = reason
        self.close()


# -- the helper (child process) ----------------------------------------------------------------
def _listen(cadence: list[float]) -> None:
    """Apply cadence commands from standard input; end the process when it closes."""
    for line in sys.stdin.buffer:
        fields = line.split()
        if len(fields) == 2 and fields[0] == b"c":
            try:
                value = float(fields[1])
            except ValueError:
                continue
            if math.isfinite(value) and value > 0:
                cadence[0] = value
    os._exit(0)


def serve(
    clock: SteppedCounterClock,
    deliver: Callable[[float, float], None],
    cadence: list[float],
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Read the counter mid-way between steps, about every ``cadence[0]`` s; ``deliver(step
    time, value)`` once per new step; a poll that measures the step phase again starts just
    before a predicted step. Returns when ``until()`` is true (the helper: never)."""
    last_t = -math.inf
    relock = False
    while not until():
        dated = clock.relock() if relock else clock.read_dated()
        read_at = time.monotonic()
        if dated is not None and dated[1] > last_t:
            value, last_t = dated
            deliver(last_t, value)
        half_step = 0.5 * (clock.period_s or START_CADENCE_S)
        after = read_at + max(0.0, cadence[0] - half_step)
        when = clock.next_mid_step(after)
        # a poll due before the next read after this one starts just before the step: one
        # started mid-step (by read_dated) would let that step's value go unread
        relock = when is not None and clock.relock_due(when + 2 * half_step)
        if when is None:
            when = read_at + UNLOCKED_WAIT_S
        elif relock:
            when -= half_step + RELOCK_LEAD_S
        time.sleep(max(1e-3, when - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    """The helper: read the counter on the cadence, write each new step's value and date."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m carbon_callbacks.core.sensors.counter_feed MODULE UUID")
        return 2
    module_name, uuid = args
    out = sys.stdout
    cadence = [START_CADENCE_S]
    threading.Thread(
        target=_listen, args=(cadence,), name="carbon_callbacks-counter-feed-input", daemon=True
    ).start()
    try:
        nvml = importlib.import_module(module_name)
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        clock = SteppedCounterClock(
            lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)), poll_gap_s=POLL_GAP_S
        )

        def deliver(t_step: float, value: float) -> None:
            out.write(f"v {t_step:.6f} {value!r}\n")
            out.flush()

        serve(clock, deliver, cadence)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which reads it itself
        try:
            message = repr(exc).replace("\n", " ")
            out.write(f"e {message}\n")
            out.flush()
        except Exception:  # noqa: BLE001
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
