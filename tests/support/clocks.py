"""Clocks for code that takes one (``clock=``), so that tests move time instead of sleeping.

- ``ManualClock`` stands still until ``advance``: for expiry and caches, where a test says
  exactly when time passes.
- ``SteppingClock`` reads a little later at every reading, as a real clock would (events
  keep their order in time), and jumps on ``advance``: for stores that stamp what they
  record, where a test needs distinct times between two changes. Thread-safe (the SQLite
  store reads it on its writer thread).
"""

from __future__ import annotations

import threading
import time


class ManualClock:
    """A clock for code that takes one (``clock=``): it stands still until ``advance``."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class SteppingClock:
    """A store's clock that a test moves: every reading is a little later than the one before,
    as a real clock's would be (so events keep their order in time), and ``advance`` jumps
    ahead, so a test needs no sleep to get distinct times. Safe to read from the SQLite
    writer thread."""

    #: How much later each reading is than the previous one.
    STEP = 0.001

    def __init__(self, start: float) -> None:
        self._latest = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._latest += self.STEP
            return self._latest

    @property
    def now(self) -> float:
        """The clock's time, read without moving it: every later write is after it."""
        with self._lock:
            return self._latest

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._latest += seconds
