"""Found by nnU-Net's trainer lookup (``-tr nnUNetTrainerCarbon``) through ``nnUNet_extTrainer``.

The class lives in :mod:`carbon_callbacks.integrations.nnunet`; this module only re-exports it,
so the trainer is the same class whichever way it is reached (by name, by import, by a
checkpoint's ``trainer_name`` at inference or ``--c`` resume).
"""

from carbon_callbacks.integrations.nnunet import nnUNetTrainerCarbon

__all__ = ["nnUNetTrainerCarbon"]
