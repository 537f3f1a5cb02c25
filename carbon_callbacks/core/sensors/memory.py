"""DRAM power modelled from the memory in use, for machines without a RAPL ``dram`` domain.

The model is ``power_w = used_gb x DRAM_W_PER_GB`` where ``used_gb`` is the *machine's* memory
in use (``psutil.virtual_memory()``: ``total - available``, in GB of 2**30 bytes as memory is
sized), not this process's RSS: RAPL's dram domain, which this model stands in for, measures
every DIMM of the machine too, and the page cache and other processes' memory are refreshed
whether or not this process owns them.

The figure, 0.375 W/GB (3 W per 8 GB), is an approximation, not a measurement:

- it is the value used by eco2AI ("3/8 W per GB") and by CodeCarbon before v3 ("3 W per
  8 GB"), so results stay comparable with those tools (see ../shared/notes/codecarbon_zeus.md);
- the Green Algorithms calculator (Lannelongue, Grealey & Inouye, "Green Algorithms:
  Quantifying the Carbon Footprint of Computation", Advanced Science 8(12):2100707, 2021,
  doi:10.1002/advs.202100707) used 0.3725 W/GB in its data up to v2.2
  (``data/v2.2/referenceValues.csv`` of GreenAlgorithms/green-algorithms-tool), citing
  doi:10.1145/3076113.3076117 (Karyakin & Salem, DaMoN 2017, on memory power in database
  systems) and a Tom's Hardware review of an Intel i7-5960X system; the tool's later data
  (``data/latest/referenceValues.csv``) lowers the figure to 0.08 W/GB citing the same paper.
  We have not re-derived either number from the primary measurements.

So the true DRAM power per GB in use is uncertain by a factor of about four; the value is
configurable (``w_per_gb``) and every record says ``modelled``. Prefer RAPL's dram domain
where it exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from carbon_callbacks.core.sensors.base import Sensor, SensorError, SensorInfo

#: Modelled DRAM power in watts per GB (2**30 bytes) of memory in use (see module docstring).
DRAM_W_PER_GB: float = 0.375
#: Bytes in one GB as memory is sized (GiB).
BYTES_PER_GB: int = 2**30


def used_memory_bytes() -> int:
    """The machine's memory in use, in bytes: ``total - available`` from psutil."""
    import psutil

    memory = psutil.virtual_memory()
    return int(memory.total - memory.available)


class DramModelSensor(Sensor):
    """Modelled DRAM power: used memory (GB) x ``w_per_gb`` (method ``"modelled"``).

    Args:
        name: sensor key (default ``"dram:model"``; a RAPL dram domain's fallback keeps its
            own name, e.g. ``"dram:package-0"``).
        w_per_gb: watts per GB (2**30 bytes) in use; default :data:`DRAM_W_PER_GB`.
        share: fraction of the machine's memory this sensor stands for (a fallback for one of
            two RAPL dram domains uses 0.5 so the machine is not counted twice).
        used_bytes_fn: returns the memory in use in bytes (default :func:`used_memory_bytes`;
            tests pass a stand-in).
    """

    cheap_power = False

    def __init__(
        self,
        *,
        name: str = "dram:model",
        w_per_gb: float = DRAM_W_PER_GB,
        share: float = 1.0,
        used_bytes_fn: Callable[[], int] | None = None,
    ) -> None:
        if not math.isfinite(w_per_gb) or w_per_gb < 0:
            raise ValueError(f"w_per_gb must be a finite number >= 0, got {w_per_gb!r}")
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        self.w_per_gb = float(w_per_gb)
        self.share = float(share)
        self._used_bytes_fn = used_bytes_fn or used_memory_bytes
        self.is_counter = False
        share_text = f" x share {share:g}" if share != 1 else ""
        self.info = SensorInfo(
            name=name,
            component="dram",
            device="system memory",
            method="modelled",
            detail=(
                f"machine memory in use (total - available, GB of 2**30 B) x {w_per_gb:g} W/GB"
                f"{share_text} (approximation; no RAPL dram counter)"
            ),
        )

    def read_power_w(self) -> float:
        """Modelled DRAM power now, in watts."""
        try:
            used_b = float(self._used_bytes_fn())
        except Exception as exc:  # noqa: BLE001 - psutil failures become a sensor error
            raise SensorError(f"cannot read memory in use: {exc!r}") from exc
        return max(0.0, used_b) / BYTES_PER_GB * self.w_per_gb * self.share
