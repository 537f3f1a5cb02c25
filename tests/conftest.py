"""Shared test set-up: the tests folder is importable (helpers such as power_traces), W&B
writes its offline files to a temporary folder, never into the checkout (a framework that
reports to W&B without a ``dir`` would otherwise create ``./wandb``), and the end of the run
cannot hang.

Each test is bounded by pytest-timeout and faulthandler (pyproject.toml); after the last test,
a thread or child process a test left running could still keep the interpreter from exiting,
so :func:`pytest_unconfigure` arms faulthandler's watchdog: past ``SHUTDOWN_LIMIT_S`` it prints
every thread's stack and ends the process with status 1.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="carbon_callbacks_wandb_"))
os.environ.setdefault("WANDB_MODE", "offline")

SHUTDOWN_LIMIT_S = 60.0


def pytest_unconfigure(config):
    faulthandler.dump_traceback_later(SHUTDOWN_LIMIT_S, exit=True, file=sys.__stderr__)


@pytest.fixture
def loopback_only(monkeypatch):
    """Refuse name lookups of anything but loopback; a test that tried fails at teardown."""
    from fake_intensity_api import LoopbackOnly

    guard = LoopbackOnly(monkeypatch)
    yield guard
    assert guard.refused == [], f"a test tried to reach {guard.refused}"


@pytest.fixture
def api():
    """A loopback server answering like the intensity APIs, closed after the test."""
    from fake_intensity_api import FakeApi

    server = FakeApi()
    yield server
    server.close()
