"""The one exception of the benchmark: ``BenchmarkError`` says that a registry misbehaved or a
tool failed, so the run stops (exit status 1) instead of reporting numbers that cannot be
trusted."""


class BenchmarkError(Exception):
    """A registry misbehaved or a tool failed; the run's numbers cannot be trusted."""
