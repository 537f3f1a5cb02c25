"""Fixtures shared by the reliability cells: a clean environment, restored signal handlers."""

from __future__ import annotations

import signal

import pytest

from .harness import carbon_threads


@pytest.fixture(autouse=True)
def _clean_process_state(monkeypatch):
    """No setting leaks in from the environment; signal handlers and threads are checked after."""
    for name in (
        "CUDA_VISIBLE_DEVICES",
        "CARBON_CALLBACKS_ZONE",
        "CARBON_CALLBACKS_INTENSITY_G_PER_KWH",
        "CARBON_CALLBACKS_OFFLINE",
        "CARBON_CALLBACKS_PUE",
    ):
        monkeypatch.delenv(name, raising=False)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    # Lightning ignores SIGINT after a KeyboardInterrupt; put pytest's handlers back
    for sig, handler in handlers.items():
        if signal.getsignal(sig) is not handler and handler is not None:
            signal.signal(sig, handler)
    assert carbon_threads() == [], "a carbon_callbacks thread outlived its test"
