"""nnU-Net integration: :class:`CarbonTrainerMixin` and the ``nnUNetTrainerCarbon`` class.

Part of :mod:`carbon_callbacks.integrations.nnunet` (which re-exports both; the class is built
on first use, so that importing the integration imports no nnU-Net).
"""

from __future__ import annotations

from typing import Any

from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations import _nnunet_hooks as hooks
from carbon_callbacks.integrations._nnunet_settings import (
    check_v2_version,
    installed_version,
    settings_from_env,
)

#: The module users import the trainer class from (its ``__module__``, for pickling and docs).
PUBLIC_MODULE = "carbon_callbacks.integrations.nnunet"


class CarbonTrainerMixin:
    """Energy and CO2eq per epoch for any nnU-Net v2 trainer: put it first in the bases.

    ``class MyTrainer(CarbonTrainerMixin, nnUNetTrainer_250epochs): pass``

    Settings: :attr:`carbon_settings` (a class attribute; any
    :class:`~carbon_callbacks.core.config.CarbonConfig` field) over
    ``$CARBON_CALLBACKS_NNUNET_SETTINGS`` (JSON) over the core's own environment variables
    (``CARBON_CALLBACKS_ZONE``, ``..._PUE``...). They are validated when the trainer is built,
    so a bad one fails before training starts. Override :meth:`make_carbon_tracker` to build
    the tracker differently (custom sensors).
    """

    #: Tracker settings for this trainer class (override in a subclass).
    carbon_settings: dict[str, Any] = {}

    # nnU-Net records its init arguments by introspecting self.__init__'s signature
    # (nnUNetTrainer.__init__), so the mixin keeps nnU-Net's exact parameter names.
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: Any = None,
    ):
        if device is None:  # nnU-Net's own default (torch.device('cuda'))
            super().__init__(plans, configuration, fold, dataset_json)  # type: ignore[call-arg]
        else:
            super().__init__(plans, configuration, fold, dataset_json, device)  # type: ignore[call-arg]
        hooks.attach(self, {**settings_from_env(), **self.carbon_settings})

    def make_carbon_tracker(self, config: CarbonConfig) -> CarbonTracker:
        """Build the tracker from the validated settings (override for custom sensors)."""
        return CarbonTracker(config=config)

    @property
    def carbon_tracker(self) -> CarbonTracker | None:
        """This trainer's tracker (``None`` only before the mixin's ``__init__`` has run)."""
        found = hooks.session(self)
        return found.tracker if found is not None else None

    def on_train_start(self) -> None:
        hooks.on_train_start(self, super().on_train_start)  # type: ignore[misc]

    def on_epoch_start(self) -> None:
        hooks.on_epoch_start(self, super().on_epoch_start)  # type: ignore[misc]

    def on_validation_epoch_start(self) -> None:
        hooks.begin_validation(self, super().on_validation_epoch_start)  # type: ignore[misc]

    def on_validation_epoch_end(self, val_outputs: list) -> None:
        hooks.end_validation(self, super().on_validation_epoch_end, val_outputs)  # type: ignore[misc]

    def on_epoch_end(self) -> None:
        hooks.on_epoch_end(self, super().on_epoch_end)  # type: ignore[misc]

    def on_train_end(self) -> None:
        hooks.on_train_end(self, super().on_train_end)  # type: ignore[misc]

    def run_training(self) -> None:
        hooks.run_training(self, super().run_training)  # type: ignore[misc]

    def load_checkpoint(self, filename_or_checkpoint: Any) -> None:
        hooks.load_checkpoint(self, super().load_checkpoint, filename_or_checkpoint)  # type: ignore[misc]


_CLASS_CACHE: dict[str, type] = {}


def trainer_class() -> type:
    """``nnUNetTrainerCarbon``, built on first use (importing nnunetv2 only then)."""
    cls = _CLASS_CACHE.get("nnUNetTrainerCarbon")
    if cls is None:
        check_v2_version(installed_version("nnunetv2"))
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        cls = type(
            "nnUNetTrainerCarbon",
            (CarbonTrainerMixin, nnUNetTrainer),
            {
                "__module__": PUBLIC_MODULE,
                "__doc__": "nnU-Net's default trainer with energy and CO2eq per epoch "
                f"(see {PUBLIC_MODULE}).",
            },
        )
        _CLASS_CACHE["nnUNetTrainerCarbon"] = cls
    return cls
