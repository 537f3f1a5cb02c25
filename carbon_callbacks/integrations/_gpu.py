"""The NVML identity of the CUDA device a framework put this process (or DDP rank) on."""

from __future__ import annotations

import os
from typing import Any


def cuda_gpu_id(device: Any) -> str | None:
    """``"GPU-<uuid>"`` of the CUDA ``device`` (a ``torch.device``), for ``tracker.set_gpu``.

    Where torch cannot tell the UUID, the device's ``CUDA_VISIBLE_DEVICES`` entry (an index or a
    UUID, as the launcher wrote it), else its CUDA index as text. ``None`` for a device that is
    not CUDA. torch is imported here only for a CUDA device, which the framework made with it.
    """
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid).strip()
    except Exception:  # noqa: BLE001 - an older torch, or a device torch cannot describe
        uuid = ""
    if uuid:
        return uuid if uuid.upper().startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    visible = [t.strip() for t in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [t for t in visible if t]
    return visible[index] if index < len(visible) else str(index)
