"""Run ``child.py`` and signal it once it has finished a given number of epochs."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHILD = Path(__file__).resolve().parent / "child.py"
#: Seconds a child may take to import torch (and Lightning) and reach the wanted epoch.
START_TIMEOUT_S = 120.0


@dataclass
class ChildResult:
    """How a child process ended: its exit status and the lines it printed."""

    returncode: int
    lines: list[str] = field(default_factory=list)
    stderr: str = ""


def run_child(
    spec: dict[str, Any], *, signal_at_epoch: int | None = None, signum: int = signal.SIGTERM
) -> ChildResult:
    """Run a child training; with ``signal_at_epoch``, send ``signum`` once it prints that
    ``EPOCH`` line (that many epochs done and recorded)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    for name in ("CUDA_VISIBLE_DEVICES", "CARBON_CALLBACKS_ZONE", "CARBON_CALLBACKS_OFFLINE"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def pump_out() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def pump_err() -> None:
        stderr.append(proc.stderr.read())  # type: ignore[union-attr]

    threads = [threading.Thread(target=f, daemon=True) for f in (pump_out, pump_err)]
    for t in threads:
        t.start()
    seen: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"child too slow; printed {seen}") from None
            if line is None:
                break
            seen.append(line)
            if signal_at_epoch is not None and line == f"EPOCH {signal_at_epoch}":
                proc.send_signal(signum)
                signal_at_epoch = None
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for t in threads:
        t.join(timeout=10)
    return ChildResult(returncode, seen, "".join(stderr))


def run_children(
    specs: list[dict[str, Any]], *, signal_at_epoch: int | None = None, signum: int = signal.SIGTERM
) -> list[ChildResult]:
    """:func:`run_child` for several specs at once (in parallel: each waits mostly on imports)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        futures = [
            pool.submit(run_child, spec, signal_at_epoch=signal_at_epoch, signum=signum)
            for spec in specs
        ]
        return [future.result() for future in futures]
