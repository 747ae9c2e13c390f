"""OpenTelemetry metrics of every ferroloop loop of the process (``pip install 'ferroloop[opentelemetry]'``).

::

    import ferroloop.opentelemetry
    ferroloop.opentelemetry.instrument()           # the global MeterProvider, or pass one

``instrument()`` creates observable instruments (needing only ``opentelemetry-api``) on a Meter
named ``ferroloop``. Their callbacks keep nothing: at each collection they read
``ferroloop.stats()`` of every live loop, from the collecting thread (the loops are never
stopped). Every measurement has the attribute ``ferroloop.loop.id``, the loop's serial number (the
order ferroloop loops were made in the process, from 0; fixed for the loop's life, never reused),
as the Prometheus exporter's ``loop`` label; a closed loop is no longer observed.
docs/observability.md lists the instruments.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Instrument, MeterProvider, Observation
except ImportError as error:
    raise ImportError(
        "ferroloop.opentelemetry needs opentelemetry-api: install ferroloop's extra, "
        "pip install 'ferroloop[opentelemetry]'"
    ) from error

from . import __version__, _export

__all__ = ("instrument",)

LOOP = "ferroloop.loop.id"
QUANTILE = "ferroloop.lag.quantile"
KIND = "ferroloop.transport.kind"
DIRECTION = "network.io.direction"
THREAD = "thread.name"

# The loop's counters: name, unit, description, figure (busy and idle are times: `_time`).
_COUNTERS = tuple(
    (f"ferroloop.loop.{figure}{'_time' if unit == 's' else ''}", unit, text, figure)
    for figure, unit, text in _export.COUNTERS
)

# A reading's measurements for one instrument: (value, attributes besides the loop's).
Measurements = Iterable[tuple[float, dict[str, str]]]
Observe = Callable[[_export.Reading], Measurements]


def _counter(figure: str) -> Observe:
    return lambda reading: [(getattr(reading.stats, figure), {})]


def _utilization(reading: _export.Reading) -> Measurements:
    return [(reading.stats.utilization, {})]


def _lag(reading: _export.Reading) -> Measurements:
    lag = reading.stats.lag
    return [(getattr(lag, quantile), {QUANTILE: quantile}) for quantile in _export.LAG_QUANTILES]


def _running(reading: _export.Reading) -> Measurements:
    return [(0 if reading.thread is None else 1, {THREAD: reading.thread or ""})]


def _transports_open(reading: _export.Reading) -> Measurements:
    return [(transports.open, {KIND: kind}) for kind, transports in reading.stats.transports.items()]


def _transports_opened(reading: _export.Reading) -> Measurements:
    return [(transports.opened, {KIND: kind}) for kind, transports in reading.stats.transports.items()]


def _transports_io(reading: _export.Reading) -> Measurements:
    return [
        (count, {KIND: kind, DIRECTION: direction})
        for kind, transports in reading.stats.transports.items()
        for direction, count in (("receive", transports.bytes_in), ("transmit", transports.bytes_out))
    ]


def _callback(observe: Observe) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {LOOP: reading.serial, **attributes})
            for reading in _export.readings()
            for value, attributes in observe(reading)
        ]

    return callback


_instrumented: weakref.WeakKeyDictionary[MeterProvider, tuple[Instrument, ...]] = weakref.WeakKeyDictionary()
_global: tuple[Instrument, ...] | None = None
_lock = threading.Lock()


def instrument(meter_provider: MeterProvider | None = None) -> tuple[Instrument, ...]:
    """Create ferroloop's observable instruments with ``meter_provider`` (the global one unless
    given) once, and return them: a second call with the same provider returns the first's."""
    global _global
    with _lock:
        made = _global if meter_provider is None else _instrumented.get(meter_provider)
        if made is None:
            made = _create(metrics.get_meter("ferroloop", __version__, meter_provider))
            if meter_provider is None:
                _global = made
            else:
                _instrumented[meter_provider] = made
        return made


def _create(meter: metrics.Meter) -> tuple[Instrument, ...]:
    def counter(name: str, unit: str, description: str, observe: Observe) -> Instrument:
        return meter.create_observable_counter(name, [_callback(observe)], unit, description)

    def gauge(name: str, unit: str, description: str, observe: Observe) -> Instrument:
        return meter.create_observable_gauge(name, [_callback(observe)], unit, description)

    return (
        *(counter(name, unit, text, _counter(figure)) for name, unit, text, figure in _COUNTERS),
        gauge("ferroloop.loop.utilization", "1", "busy / (busy + idle) since the loop was made.", _utilization),
        gauge(
            "ferroloop.loop.lag",
            "s",
            "Loop lag percentiles (ferroloop.lag.quantile: p50, p90, p99) and maximum (max) since the loop was made.",
            _lag,
        ),
        gauge("ferroloop.loop.running", "1", "1 while the loop runs (thread.name: its thread), else 0.", _running),
        meter.create_observable_up_down_counter(
            "ferroloop.transport.count", [_callback(_transports_open)], "{transport}", "Transports open now."
        ),
        counter("ferroloop.transport.opened", "{transport}", "Transports opened.", _transports_opened),
        counter("ferroloop.transport.io", "By", "Bytes transports received and sent.", _transports_io),
    )
