"""Carbon intensity of electricity: packaged tables, user values and (later) live providers."""

from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider

__all__ = ["IntensityEstimate", "IntensityProvider"]
