"""What a pool did: hand-outs, waits, hand-out and recycle times, the high-water mark.

Plain data (stdlib only): a worker sends :meth:`PoolStats.to_dict` to the xdist controller
through ``config.workeroutput``, which merges the workers' figures for the summary.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PoolStats:
    """One pool's figures (or several pools', merged)."""

    handouts: int = 0
    waits: int = 0
    handout_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)  # hand-outs that found a ready database
    recycle_ms: list[float] = field(default_factory=list)
    high_water: int = 0
    kept: list[str] = field(default_factory=list)  # masked URLs of failed tests' databases
    claimed: int = 0  # spares the controller cloned ahead, taken instead of cloning
    reclaimed: int = 0  # databases of crashed workers this pool dropped when it started

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolStats:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    @classmethod
    def merged(cls, parts: Iterable[PoolStats]) -> PoolStats:
        """The run's figures: counts add up, timings pool, high-water marks add up (pools coexist)."""
        total = cls()
        for part in parts:
            total.handouts += part.handouts
            total.waits += part.waits
            total.handout_ms += part.handout_ms
            total.warm_ms += part.warm_ms
            total.recycle_ms += part.recycle_ms
            total.high_water += part.high_water
            total.kept += part.kept
            total.reclaimed += part.reclaimed
            total.claimed += part.claimed
        return total

    def summary(self) -> str:
        """One line for the terminal summary (bench/fresh.py parses it: keep its shape)."""
        share = 100.0 * self.waits / self.handouts if self.handouts else 0.0
        return (
            f"{self.handouts} hand-outs, {self.waits} waits ({share:.1f}%),"
            f" hand-out p50 {percentile(self.handout_ms, 50):.2f} ms"
            f" p95 {percentile(self.handout_ms, 95):.2f} ms (warm p95 {percentile(self.warm_ms, 95):.2f} ms),"
            f" recycle p50 {percentile(self.recycle_ms, 50):.0f} ms,"
            f" high-water {self.high_water}"
            + (f", {self.claimed} spares claimed" if self.claimed else "")
            + (f", reclaimed {self.reclaimed} of crashed workers" if self.reclaimed else "")
        )


def percentile(samples: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method); 0 for no samples."""
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]
