"""nnU-Net integration: supported versions, the settings a trainer's tracker is built from.

Part of :mod:`carbon_callbacks.integrations.nnunet` (which re-exports the public names); imports
no nnU-Net and no torch at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from carbon_callbacks.core.config import ConfigError

#: The folder to put in ``nnUNet_extTrainer`` so that ``-tr nnUNetTrainerCarbon`` is found.
TRAINER_DIR = str(Path(__file__).resolve().parent / "nnunet_trainers")
#: Environment variable with the settings as a JSON object, e.g. ``{"zone": "DK", "pue": 1.2}``.
#: Read by every carbon trainer; :func:`~carbon_callbacks.integrations.nnunet.patch` writes it
#: so that DDP children see its settings.
ENV_SETTINGS = "CARBON_CALLBACKS_NNUNET_SETTINGS"

SUPPORTED_V2 = ((2, 6), (2, 8))  # inclusive range of (major, minor)
SUPPORTED_V1 = (1, 7)
SUPPORTED_TEXT = "nnU-Net v2 (nnunetv2 2.6 to 2.8) and nnU-Net v1 (nnunet 1.7.x)"


class NnUNetVersionError(ImportError):
    """nnU-Net is missing, or its version is not one this integration supports."""


# -- versions ------------------------------------------------------------------------------------
def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (``"nnunetv2"``, ``"nnunet"``), or ``None``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or "x")
    except (ValueError, IndexError):
        return None


def check_v2_version(version: str | None) -> str:
    """Return ``version`` if nnunetv2 ``version`` is supported, else raise NnUNetVersionError."""
    if version is None:
        raise NnUNetVersionError(
            f"nnU-Net is not installed; carbon_callbacks supports {SUPPORTED_TEXT}: "
            "pip install 'carbon-callbacks[nnunet]'"
        )
    mm = _major_minor(version)
    if mm is None or not SUPPORTED_V2[0] <= mm <= SUPPORTED_V2[1]:
        raise NnUNetVersionError(
            f"nnunetv2 {version} is installed, but carbon_callbacks supports {SUPPORTED_TEXT}: "
            "pip install 'nnunetv2>=2.6,<2.9'"
        )
    return version


def check_v1_version(version: str | None) -> str:
    """Return ``version`` if nnunet (v1) ``version`` is supported, else raise NnUNetVersionError."""
    if version is None:
        raise NnUNetVersionError(
            f"nnU-Net v1 (package nnunet) is not installed; carbon_callbacks supports "
            f"{SUPPORTED_TEXT}"
        )
    if _major_minor(version) != SUPPORTED_V1:
        raise NnUNetVersionError(
            f"nnunet {version} is installed, but carbon_callbacks supports {SUPPORTED_TEXT}: "
            "pip install 'nnunet==1.7.1'"
        )
    return version


# -- settings ------------------------------------------------------------------------------------
def settings_from_env() -> dict[str, Any]:
    """The settings in ``$CARBON_CALLBACKS_NNUNET_SETTINGS`` (a JSON object), or ``{}``."""
    raw = os.environ.get(ENV_SETTINGS)
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f'{ENV_SETTINGS} must hold a JSON object such as \'{{"zone": "DK"}}\' ({exc})'
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{ENV_SETTINGS} must hold a JSON object, got {raw!r}")
    return value


def build_settings(trainer: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Tracker settings for one trainer: ``settings`` plus the defaults a trainer gives.

    Defaults: the run log in the trainer's output folder and a run name from it. Everything
    that differs between DDP ranks (each rank's own GPU, CPU and DRAM on rank 0 only, the run
    log and the reports on rank 0 only) is the tracker's, once the ranks are joined.
    """
    out = dict(settings)
    output_folder = getattr(trainer, "output_folder", None)
    if output_folder is not None:  # None when nnUNet_results is unset: the core's default
        out.setdefault("log_dir", output_folder)
        out.setdefault("run_name", f"{Path(output_folder).parent.name}/{Path(output_folder).name}")
    return out
