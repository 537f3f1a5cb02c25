"""carbon_callbacks: energy and CO2eq of deep-learning training, per epoch, as metrics.

Importing this package imports no training framework, opens no socket, initialises no NVML and
starts no thread: the public names below are loaded lazily on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CarbonTracker",
    "CarbonConfig",
    "read_run_log",
    "aggregate_runs",
    "best_start",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from carbon_callbacks.core.config import CarbonConfig
    from carbon_callbacks.core.intensity.schedule import best_start
    from carbon_callbacks.core.runlog import aggregate_runs, read_run_log
    from carbon_callbacks.core.tracker import CarbonTracker

_LAZY = {
    "CarbonTracker": "carbon_callbacks.core.tracker",
    "CarbonConfig": "carbon_callbacks.core.config",
    "read_run_log": "carbon_callbacks.core.runlog",
    "aggregate_runs": "carbon_callbacks.core.runlog",
    "best_start": "carbon_callbacks.core.intensity.schedule",
}


def __getattr__(name: str) -> Any:
    """Load a public name on first access (keeps the package import free of side effects)."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'carbon_callbacks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
