"""Shared test set-up: the tests folder is importable (helpers such as power_traces), and
W&B writes its offline files to a temporary folder, never into the checkout (a framework that
reports to W&B without a ``dir`` would otherwise create ``./wandb``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="carbon_callbacks_wandb_"))
os.environ.setdefault("WANDB_MODE", "offline")


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
