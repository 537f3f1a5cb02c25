"""nnU-Net integration: :func:`patch` / :func:`unpatch` and the console script's entry.

Part of :mod:`carbon_callbacks.integrations.nnunet` (which re-exports the public names).
:func:`patch` replaces methods of ``nnUNetTrainer`` itself (nnU-Net v2) or of v1's
``NetworkTrainer`` (:mod:`carbon_callbacks.integrations.nnunet_v1`), keeping the originals for
:func:`unpatch`, and nnU-Net's ``run_ddp``, so that the children ``-num_gpus`` spawns (clean
interpreters) patch themselves with the settings left in ``$CARBON_CALLBACKS_NNUNET_SETTINGS``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from carbon_callbacks.core.config import CarbonConfig, ConfigError
from carbon_callbacks.integrations import _nnunet_hooks as hooks
from carbon_callbacks.integrations._nnunet_settings import (
    ENV_SETTINGS,
    TRAINER_DIR,
    NnUNetVersionError,
    check_v1_version,
    check_v2_version,
    installed_version,
    settings_from_env,
)
from carbon_callbacks.integrations._nnunet_trainer import CarbonTrainerMixin

#: The ``nnUNetTrainer`` methods :func:`patch` replaces (nnU-Net v2).
V2_METHODS = (
    "__init__",
    "on_train_start",
    "on_epoch_start",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_epoch_end",
    "on_train_end",
    "run_training",
    "load_checkpoint",
)
_HOOKS: dict[str, Callable[..., None]] = {
    "on_train_start": hooks.on_train_start,
    "on_epoch_start": hooks.on_epoch_start,
    "on_validation_epoch_start": hooks.begin_validation,
    "on_validation_epoch_end": hooks.end_validation,
    "on_epoch_end": hooks.on_epoch_end,
    "on_train_end": hooks.on_train_end,
    "run_training": hooks.run_training,
    "load_checkpoint": hooks.load_checkpoint,
}

_originals: dict[tuple[Any, str], Any] = {}
_patched_state: dict[str, Any] = {}


def _v2_wrappers(base: type) -> dict[str, Callable[..., Any]]:
    """Replacement methods for ``nnUNetTrainer`` that call the originals (kept for unpatch)."""

    def skip(self: Any) -> bool:
        # a carbon subclass measures itself; a second session would count everything twice
        return isinstance(self, CarbonTrainerMixin)

    orig = {name: getattr(base, name) for name in V2_METHODS}

    @functools.wraps(orig["__init__"])  # keeps the signature nnU-Net introspects
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig["__init__"](self, *args, **kwargs)
        if not skip(self):
            hooks.attach(self, settings_from_env())

    def simple(name: str, hook: Callable[..., None]) -> Callable[..., Any]:
        @functools.wraps(orig[name])
        def method(self: Any, *args: Any) -> Any:
            bound = functools.partial(orig[name], self)
            if skip(self) or hooks.session(self) is None:
                return bound(*args)
            return hook(self, bound, *args)

        return method

    return {"__init__": __init__, **{name: simple(name, h) for name, h in _HOOKS.items()}}


def _set(owner: Any, name: str, value: Any) -> None:
    if (owner, name) not in _originals:
        _originals[(owner, name)] = (
            owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        )
    setattr(owner, name, value)


def _run_ddp_patched(*args: Any, **kwargs: Any) -> Any:
    """nnU-Net's ``run_ddp`` in a DDP child: patch here too (spawned children start clean)."""
    _patch_from_env()
    from nnunetv2.run import run_training as module

    original = _originals.get((module, "run_ddp"), module.run_ddp)
    return original(*args, **kwargs)


def _patch_from_env() -> None:
    """Apply :func:`patch` with the settings a parent process left in the environment."""
    if not is_patched():
        patch(**settings_from_env())


def patch(*, target: str = "auto", **settings: Any) -> str:
    """Measure every nnU-Net trainer of this process (and of its DDP children). Idempotent.

    Args:
        target: ``"auto"`` patches nnU-Net v2 (``nnunetv2`` 2.6 to 2.8) where installed, else
            nnU-Net v1 (``nnunet`` 1.7.x); ``"nnunetv2"`` or ``"nnunet"`` picks one.
        **settings: any :class:`~carbon_callbacks.core.config.CarbonConfig` field,
            JSON-serialisable (they travel to DDP children in
            ``$CARBON_CALLBACKS_NNUNET_SETTINGS``); validated now.

    Returns:
        ``"nnunetv2 <version>"`` or ``"nnunet <version>"``: what was patched.

    Raises:
        NnUNetVersionError: nnU-Net is missing or its version is not supported.
        ConfigError: a setting is invalid.
    """
    if target not in ("auto", "nnunetv2", "nnunet"):
        raise ConfigError(f"target must be 'auto', 'nnunetv2' or 'nnunet', got {target!r}")
    v2 = installed_version("nnunetv2")
    v1 = installed_version("nnunet")
    if target == "nnunetv2" or (target == "auto" and (v2 is not None or v1 is None)):
        check_v2_version(v2)
        flavour = "nnunetv2"
    else:
        check_v1_version(v1)
        flavour = "nnunet"
    merged = {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v
        for k, v in {**settings_from_env(), **settings}.items()
    }
    probe = dict(merged)
    probe.setdefault("log_dir", None)  # the real folder is the trainer's output folder
    CarbonConfig.from_kwargs(**probe)  # ConfigError now, not after an epoch
    try:
        encoded = json.dumps(merged)
    except TypeError as exc:
        raise ConfigError(
            f"patch() settings must be JSON-serialisable (they reach DDP children through "
            f"{ENV_SETTINGS}): {exc}"
        ) from None
    if is_patched():
        if _patched_state["flavour"] != flavour:
            raise RuntimeError(
                f"{_patched_state['what']} is patched already; call unpatch() before patching "
                f"{flavour}"
            )
        if _patched_state.get("settings") != merged:
            os.environ[ENV_SETTINGS] = encoded
            _patched_state["settings"] = merged
        return _patched_state["what"]
    try:
        if flavour == "nnunetv2":
            from nnunetv2.run import run_training as run_module
            from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

            for name, method in _v2_wrappers(nnUNetTrainer).items():
                _set(nnUNetTrainer, name, method)
            _set(run_module, "run_ddp", _run_ddp_patched)
            what = f"nnunetv2 {v2}"
        else:
            from carbon_callbacks.integrations import nnunet_v1

            for owner, name, method in nnunet_v1.wrappers():
                _set(owner, name, method)
            what = f"nnunet {v1}"
    except BaseException:
        unpatch()  # nothing half-patched
        raise
    _patched_state.update(
        what=what, settings=merged, flavour=flavour, env_before=os.environ.get(ENV_SETTINGS)
    )
    os.environ[ENV_SETTINGS] = encoded
    return what


def unpatch() -> None:
    """Restore every method :func:`patch` replaced. Idempotent."""
    for (owner, name), original in list(_originals.items()):
        setattr(owner, name, original)
    _originals.clear()
    if _patched_state:
        before = _patched_state.get("env_before")
        if before is None:
            os.environ.pop(ENV_SETTINGS, None)
        else:
            os.environ[ENV_SETTINGS] = before
    _patched_state.clear()


def is_patched() -> bool:
    """True between :func:`patch` and :func:`unpatch`."""
    return bool(_patched_state)


# -- console script ------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_args(argv: list[str]) -> tuple[dict[str, Any], list[str], bool]:
    """Split the console script's arguments: (carbon settings, nnU-Net's arguments, print dir).

    ``--carbon KEY=VALUE`` / ``--carbon=KEY=VALUE`` (repeatable) set any CarbonConfig field,
    VALUE read as JSON where it parses (``pue=1.2`` is a number, ``zone=DK`` a string);
    ``--carbon-trainer-dir`` asks for :data:`TRAINER_DIR`. Everything else is nnU-Net's.
    """
    settings: dict[str, Any] = {}
    rest: list[str] = []
    print_dir = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--carbon-trainer-dir":
            print_dir = True
            continue
        if arg != "--carbon" and not arg.startswith("--carbon="):
            rest.append(arg)
            continue
        if arg == "--carbon":
            if i >= len(argv):
                raise ConfigError("--carbon needs KEY=VALUE, e.g. --carbon zone=DK")
            item = argv[i]
            i += 1
        else:
            item = arg.split("=", 1)[1]
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--carbon needs KEY=VALUE, e.g. --carbon zone=DK; got {item!r}")
        settings[key.strip()] = _parse_value(value)
    return settings, rest, print_dir


def main(argv: list[str] | None = None) -> None:
    """``carbon-callbacks-nnunet-train``: ``nnUNetv2_train`` with every trainer measured.

    Takes ``nnUNetv2_train``'s arguments (nnU-Net v1: ``nnUNet_train``'s), plus
    ``--carbon KEY=VALUE`` settings and ``--carbon-trainer-dir`` (see :func:`split_args`).
    """
    try:
        settings, rest, print_dir = split_args(list(sys.argv[1:] if argv is None else argv))
        if print_dir:
            print(TRAINER_DIR)
            return
        what = patch(**settings)
    except (ConfigError, NnUNetVersionError) as exc:
        raise SystemExit(f"carbon-callbacks-nnunet-train: {exc}") from None
    print(f"carbon_callbacks: measuring every trainer of {what}")
    sys.argv = [sys.argv[0], *rest]
    if what.startswith("nnunetv2"):
        from nnunetv2.run.run_training import run_training_entry

        run_training_entry()
    else:
        from nnunet.run.run_training import main as v1_main

        v1_main()
