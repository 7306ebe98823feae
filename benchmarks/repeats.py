"""Repeated runs of a measurement: ``alternating`` orders them so that no registry always goes
first (the order reverses from one repeat to the next), and ``spread`` reduces one registry's
runs to the median, min and max of their rate plus the run closest to the median, the one
whose CPU split (and, for manifest PUTs, disk writes) the tables show."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def alternating(keys: list[str], repeat: int) -> Iterator[tuple[int, str]]:
    """(repeat index, key): the first key alternates between repeats."""
    for index in range(repeat):
        order = keys if index % 2 == 0 else list(reversed(keys))
        for key in order:
            yield index, key


@dataclass(frozen=True)
class Spread(Generic[T]):
    """The rates of a set of runs (in run order), their median, min and max, and the run whose
    rate is closest to the median."""

    rates: list[float]
    median: float
    low: float
    high: float
    closest: T


def spread(runs: Sequence[T], rate: Callable[[T], float]) -> Spread[T]:
    rates = [rate(run) for run in runs]
    median = statistics.median(rates)
    closest = min(runs, key=lambda run: abs(rate(run) - median))
    return Spread(rates, median, min(rates), max(rates), closest)
