"""One fitted or predicted value with its interval, shared by the planner's fits.

``planner/_calibration.py`` (constants and predictions, 90% intervals) and ``planner/_hyperfit.py``
(hyperparameter laws, 95% intervals) both report a value with a low and a high end; the producer
states the coverage and how the interval was made. Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Interval"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """A value and its interval ``low <= value <= high`` (NaN ends: not identified by the data)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    @property
    def identified(self) -> bool:
        """False when the interval is NaN: the data could not pin the value down."""
        return self.low == self.low and self.high == self.high
