"""Distances in beams, for an elongated beam at any angle on the pixel grid.

Two sources side by side across an elongated beam's minor axis are as well separated as
sources twice as far apart along its major axis; measured in major axes, such pairs look like
one source. The steps that ask "how many beams apart?" (deblending, one detection per peak, the
start of a measurement) ask it through this metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BeamMetric"]


@dataclass(frozen=True)
class BeamMetric:
    """Distances in beams: the separation over the beam's FWHM along the line joining two points.

    Points are mapped once into a frame where the beam is a unit circle (major axis along the
    first coordinate, each axis divided by its FWHM); Euclidean distances there, and so the
    k-d trees built on them, are in beams. For a round beam it is the distance over the FWHM.
    """

    major: float
    minor: float
    angle: float = 0.0  # major axis, degrees from +y towards -x (the measurement's convention)

    @classmethod
    def of(cls, major: float, minor: float | None = None, angle: float | None = None) -> "BeamMetric":
        """A metric for a beam in pixels; no minor axis or angle means a round beam of `major`."""
        major = max(1.0, float(major))
        if minor is None or not math.isfinite(minor) or minor <= 0:
            return cls(major, major, 0.0)
        angle = float(angle) if angle is not None and math.isfinite(angle) else 0.0
        return cls(major, max(1.0, min(major, float(minor))), angle)

    def whiten(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``[n, 2]`` coordinates in beams (pixel offsets keep their meaning as differences)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if self.major == self.minor:
            return np.c_[x / self.major, y / self.major]
        theta = math.radians(self.angle)
        along = -math.sin(theta) * x + math.cos(theta) * y
        across = math.cos(theta) * x + math.sin(theta) * y
        return np.c_[along / self.major, across / self.minor]

    def squared(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Squared distances in beams of pixel offsets ``(dx, dy)`` (broadcast together)."""
        if self.major == self.minor:
            return (np.square(dx) + np.square(dy)) / (self.major * self.major)
        theta = math.radians(self.angle)
        along = (-math.sin(theta) * dx + math.cos(theta) * dy) / self.major
        across = (math.cos(theta) * dx + math.sin(theta) * dy) / self.minor
        return np.square(along) + np.square(across)
