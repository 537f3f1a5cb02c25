"""Carbon intensity of electricity: packaged tables, user values, live providers, location,
forecasts and carbon-aware start times (see ``docs/intensity.md``).

Importing this package opens no socket and starts no thread; the live providers' modules import
``requests`` only when they make a request.
"""

from carbon_callbacks.core.intensity.base import (
    IntensityEstimate,
    IntensityProvider,
    IntensitySegment,
)

__all__ = ["IntensityEstimate", "IntensityProvider", "IntensitySegment"]
