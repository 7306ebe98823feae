"""Reading metrics in tests: the text of ``/metrics`` parsed into samples, and this process's
own metrics (``moorage.metrics.current()``) read directly."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from moorage import metrics


@dataclass(frozen=True)
class Scrape:
    """The samples of one ``/metrics`` text, by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    #: The metric families' names and types (``counter``, ``histogram``...), by name.
    types: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(samples, types)

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 if the text has no such sample (nothing counted yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)


def sample(name: str, **labels: str) -> float:
    """A sample of this process's metrics, pending counts written first; 0 if absent."""
    own = metrics.current()
    own.flush()
    return own.registry.get_sample_value(name, labels) or 0.0
