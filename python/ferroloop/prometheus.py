"""Prometheus metrics of every ferroloop loop of the process (``pip install 'ferroloop[prometheus]'``).

::

    import ferroloop.prometheus
    ferroloop.prometheus.register()            # into prometheus_client's default REGISTRY
    prometheus_client.start_http_server(9100)  # or any way the registry is exposed

``LoopCollector`` is a ``prometheus_client`` custom collector: it keeps nothing and reads
``ferroloop.stats()`` of every live loop when the registry is scraped, from the scraping thread
(the loops are never stopped). Every series has a ``loop`` label, the loop's serial number (the
order ferroloop loops were made in the process, from 0; fixed for the loop's life, never reused);
a closed loop's series are no longer exported. docs/observability.md lists the metrics.

The lag is a histogram with the fixed bounds ``LAG_BOUNDS``. The loop keeps a finer histogram of
its own; each of its buckets counts under the smallest bound at or above the bucket's upper end,
so no lag is ever counted under a bound below its value: the count at a bound includes no lag
above it, and may leave out lags at or below it that share a native bucket with lags above it.
"""

from __future__ import annotations

import bisect
import math
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

try:
    from prometheus_client.core import (
        REGISTRY,
        CollectorRegistry,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.utils import floatToGoString
except ImportError as error:
    raise ImportError(
        "ferroloop.prometheus needs prometheus_client: install ferroloop's extra, pip install 'ferroloop[prometheus]'"
    ) from error

from . import _export

__all__ = ("LAG_BOUNDS", "LoopCollector", "fold_lag_buckets", "register")

# The lag histogram's bucket bounds (seconds; +Inf follows): a healthy loop's lags are a few
# microseconds, a blocked loop's up to its longest callback.
LAG_BOUNDS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# The loop's counters: name (prometheus_client adds _total), unit, help, figure.
_COUNTERS = tuple(
    (f"ferroloop_loop_{figure}{'_seconds' if unit == 's' else ''}", "seconds" if unit == "s" else "", text, figure)
    for figure, unit, text in _export.COUNTERS
)

# Transports by kind: name, unit, help, field of ferroloop's Transports.
_TRANSPORT_COUNTERS = (
    ("ferroloop_transports_opened", "", "Transports opened.", "opened"),
    ("ferroloop_transports_received_bytes", "bytes", "Bytes transports received.", "bytes_in"),
    ("ferroloop_transports_sent_bytes", "bytes", "Bytes transports sent.", "bytes_out"),
)


def fold_lag_buckets(
    native: Iterable[tuple[float, int]], bounds: Sequence[float] = LAG_BOUNDS
) -> list[tuple[float, int]]:
    """The loop's own lag buckets (ascending exclusive upper bounds, counts) as Prometheus'
    cumulative buckets at ``bounds`` and +Inf: each native bucket counts under the smallest
    bound at or above its upper bound."""
    counts = [0] * (len(bounds) + 1)
    for upper, count in native:
        counts[bisect.bisect_left(bounds, upper)] += count
    cumulative, total = [], 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        total += count
        cumulative.append((bound, total))
    return cumulative


class LoopCollector:
    """The figures of every live ferroloop loop, read at each scrape."""

    def describe(self) -> Iterable[Metric]:
        # The names alone, so that registering reads no loop.
        return self._families().values()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        for reading in _export.readings():
            self._add(families, reading)
        return families.values()

    @staticmethod
    def _families() -> dict[str, Any]:  # Any: each family's add_metric takes its own arguments
        loop, kind = ["loop"], ["loop", "kind"]
        families = [
            *(CounterMetricFamily(name, text, labels=loop, unit=unit) for name, unit, text, _ in _COUNTERS),
            GaugeMetricFamily(
                "ferroloop_loop_utilization_ratio",
                "busy / (busy + idle) since the loop was made.",
                labels=loop,
                unit="ratio",
            ),
            HistogramMetricFamily(
                "ferroloop_loop_lag_seconds",
                "Per iteration that ran callbacks, the longest any waited between becoming ready and starting.",
                labels=loop,
                unit="seconds",
            ),
            GaugeMetricFamily(
                "ferroloop_loop_lag_max_seconds",
                "The longest loop lag since the loop was made.",
                labels=loop,
                unit="seconds",
            ),
            GaugeMetricFamily(
                "ferroloop_loop_running",
                "1 while the loop runs (thread: the name of the thread running it), else 0.",
                labels=["loop", "thread"],
            ),
            GaugeMetricFamily("ferroloop_transports_open", "Transports open now.", labels=kind),
            *(CounterMetricFamily(name, text, labels=kind, unit=unit) for name, unit, text, _ in _TRANSPORT_COUNTERS),
        ]
        return {family.name: family for family in families}

    @staticmethod
    def _add(families: dict[str, Any], reading: _export.Reading) -> None:
        stats = reading.stats
        loop = [str(reading.serial)]
        for name, _, _, figure in _COUNTERS:
            families[name].add_metric(loop, getattr(stats, figure))
        families["ferroloop_loop_utilization_ratio"].add_metric(loop, stats.utilization)
        buckets = [(floatToGoString(bound), count) for bound, count in fold_lag_buckets(stats.lag_buckets)]
        families["ferroloop_loop_lag_seconds"].add_metric(loop, buckets, stats.lag_sum)
        families["ferroloop_loop_lag_max_seconds"].add_metric(loop, stats.lag.max)
        running = 0 if reading.thread is None else 1
        families["ferroloop_loop_running"].add_metric([*loop, reading.thread or ""], running)
        for kind, transports in stats.transports.items():
            families["ferroloop_transports_open"].add_metric([*loop, kind], transports.open)
            for name, _, _, field in _TRANSPORT_COUNTERS:
                families[name].add_metric([*loop, kind], getattr(transports, field))


_registered: weakref.WeakKeyDictionary[CollectorRegistry, LoopCollector] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def register(registry: CollectorRegistry = REGISTRY) -> LoopCollector:
    """Register a ``LoopCollector`` with ``registry`` (the default registry unless given) once,
    and return it: a second call with the same registry returns the first one's collector."""
    with _lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = LoopCollector()
            registry.register(collector)
            _registered[registry] = collector
        return collector
