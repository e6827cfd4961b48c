"""The Prometheus text format (0.0.4) of a registry: the bytes ``prometheus_client.generate_latest`` writes, for a
fraction of its CPU.

``generate_latest`` validates and escapes every label name and value of every sample again on each scrape, about
10 µs a sample: 0.6 ms of the API's 0.7 ms per ``/metrics`` request (``benchmarks/README.md``). The label sets of a
registry repeat from one scrape to the next, so here each one is rendered once and kept. A test holds the output
byte for byte to ``generate_latest``'s on the same registry. Metric and label names are written as they are: this
API's are all in Prometheus' classic character set, where ``generate_latest`` leaves them unchanged too.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Prometheus format names of OpenMetrics types (``generate_latest`` munges them the same way).
_TYPE_NAMES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_NAME_SUFFIXES = {"counter": "_total", "info": "_info"}
# OpenMetrics-only samples, written after the family as gauges of their own (as ``generate_latest`` does).
_GAUGE_SUFFIXES = ("_created", "_gsum", "_gcount")
_MAX_LABEL_SETS = 10_000  # a bound on the cache, should a label ever take unbounded values


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class TextExposition:
    def __init__(self) -> None:
        self._label_text: dict[tuple[tuple[str, str], ...], str] = {}

    def render(self, registry: Collector) -> bytes:
        output: list[str] = []
        for metric in registry.collect():
            name = metric.name + _NAME_SUFFIXES.get(metric.type, "")
            documentation = _escape_help(metric.documentation)
            output.append(f"# HELP {name} {documentation}\n# TYPE {name} {_TYPE_NAMES.get(metric.type, metric.type)}\n")
            gauges: dict[str, list[str]] = {}
            for sample in metric.samples:
                line = self._line(sample)
                suffix = sample.name[len(metric.name) :] if sample.name.startswith(metric.name) else ""
                if suffix in _GAUGE_SUFFIXES:
                    gauges.setdefault(suffix, []).append(line)
                else:
                    output.append(line)
            for suffix, lines in sorted(gauges.items()):
                output.append(f"# HELP {metric.name}{suffix} {documentation}\n# TYPE {metric.name}{suffix} gauge\n")
                output.extend(lines)
        return "".join(output).encode()

    def _line(self, sample: Any) -> str:
        labels = self._labels(sample.labels)
        timestamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
        return f"{sample.name}{labels} {floatToGoString(sample.value)}{timestamp}\n"

    def _labels(self, labels: dict[str, str]) -> str:
        if not labels:
            return ""
        key = tuple(labels.items())
        text = self._label_text.get(key)
        if text is None:
            text = "{" + ",".join(f'{name}="{_escape_value(value)}"' for name, value in sorted(labels.items())) + "}"
            if len(self._label_text) >= _MAX_LABEL_SETS:
                self._label_text.clear()
            self._label_text[key] = text
        return text
