"""``ferroloop.stats()``: what a loop has been doing, kept by the Rust loop at all times.

Every figure is counted by the loop's thread on paths it already runs (one more reading of the
CPU's time-stamp counter per callback); a snapshot reads them from any thread without stopping
the loop. What they mean (docs/observability.md has more, and what they cost):

``busy``, ``idle`` (seconds), ``utilization``
    As Node's event-loop utilization: idle is the time the loop waited in its poller for I/O or
    a timer; busy is the rest of the time it ran (callbacks and its own work); utilization is
    busy / (busy + idle). Time outside ``run_forever``/``run_until_complete`` is neither.
``iterations``, ``callbacks``, ``io_events``, ``timers``
    Loop iterations; callbacks run (handles and native I/O callbacks; not cancelled handles);
    I/O readiness reports queued; timers that fell due.
``lag``
    For each iteration that ran callbacks, the longest any of them waited between becoming
    ready (scheduled with ``call_soon``, its timer due, its descriptor ready) and starting: one
    sample per iteration, in a histogram of log-spaced buckets (each at most 12.5 % wide), read
    as ``p50``/``p90``/``p99`` (the upper bound of the bucket holding that rank, never above the
    maximum) and ``max`` (exact since the loop was made; over an interval, its bucket's bound).
``slow_callbacks``, ``slowest``
    Callbacks that ran longer than the loop's ``slow_callback_duration`` (asyncio's debug-mode
    threshold, 0.1 s by default; debug mode need not be on), and the slowest few: how long, when
    they ended, and what they were (a task's name and where its coroutine is, or the callback).

``lag_sum``, ``lag_buckets``
    The samples' sum (seconds) and the histogram itself: ``(upper bound, samples)`` of each
    bucket that has samples, ascending (exclusive bounds; the last may be infinite), for
    exporters that keep histograms of their own.
``transports``
    Per kind (``"tcp"``, ``"unix"``, ``"tls"``, ``"datagram"``, ``"pipe"``): transports open now,
    opened, and the bytes they received and sent (for TLS, the application's plaintext; the TCP
    transport under it counts the ciphertext), counted where the system call returned them.

A snapshot covers the loop's life; ``later.since(earlier)`` (or ``later - earlier``) covers the
interval between two snapshots of the same loop, so every reader keeps its own intervals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import types
import weakref
from collections.abc import Mapping

from ._ferroloop import EventLoop, StatsSnapshot


@dataclasses.dataclass(frozen=True)
class Lag:
    """Loop lag, in seconds (see the module documentation)."""

    p50: float
    p90: float
    p99: float
    max: float
    samples: int


@dataclasses.dataclass(frozen=True)
class SlowCallback:
    """A callback that ran longer than the loop's ``slow_callback_duration``."""

    seconds: float
    ended: float  # the loop's clock (time.monotonic()) when it returned
    what: str


@dataclasses.dataclass(frozen=True)
class Transports:
    """The loop's transports of one kind (see the module documentation)."""

    open: int  # open at the snapshot's time (in an interval too)
    opened: int
    bytes_in: int
    bytes_out: int


@dataclasses.dataclass(frozen=True)
class LoopStats:
    """A loop's statistics since it was made, or over an interval (``since``)."""

    busy: float
    idle: float
    iterations: int
    callbacks: int
    io_events: int
    timers: int
    slow_callbacks: int
    slowest: tuple[SlowCallback, ...]
    lag: Lag
    lag_sum: float  # seconds: the samples' sum
    lag_buckets: tuple[tuple[float, int], ...]  # (upper bound in seconds, samples), ascending
    transports: Mapping[str, Transports]
    taken: float  # the loop's clock (time.monotonic()) when the snapshot was taken
    _raw: StatsSnapshot = dataclasses.field(repr=False, compare=False)

    @property
    def utilization(self) -> float:
        """busy / (busy + idle); 0.0 before the loop has run."""
        total = self.busy + self.idle
        return self.busy / total if total > 0 else 0.0

    def since(self, earlier: LoopStats) -> LoopStats:
        """The figures of the interval from ``earlier`` (a snapshot of the same loop) to this one."""
        if not isinstance(earlier, LoopStats):
            raise TypeError(f"since() takes a LoopStats, not {type(earlier).__name__}")
        return _from_raw(self._raw.since(earlier._raw))

    def __sub__(self, earlier: LoopStats) -> LoopStats:
        if not isinstance(earlier, LoopStats):
            return NotImplemented
        return self.since(earlier)


def _from_raw(raw: StatsSnapshot) -> LoopStats:
    return LoopStats(
        busy=raw.busy,
        idle=raw.idle,
        iterations=raw.iterations,
        callbacks=raw.callbacks,
        io_events=raw.io_events,
        timers=raw.timers,
        slow_callbacks=raw.slow_callbacks,
        slowest=tuple(SlowCallback(seconds, ended, what) for seconds, ended, what in raw.slowest),
        lag=Lag(
            p50=raw.lag_quantile(0.5),
            p90=raw.lag_quantile(0.9),
            p99=raw.lag_quantile(0.99),
            max=raw.lag_max,
            samples=raw.lag_samples,
        ),
        lag_sum=raw.lag_sum,
        lag_buckets=tuple(raw.lag_buckets),
        transports=types.MappingProxyType({kind: Transports(*figures) for kind, *figures in raw.transports}),
        taken=raw.taken,
        _raw=raw,
    )


# Every ferroloop loop of the process, for readers that report them all (``top``, the exporters).
# Keyed by a serial number: the dictionary keeps them in the order they were made.
_loops: weakref.WeakValueDictionary[int, EventLoop] = weakref.WeakValueDictionary()
_serial = itertools.count()


def track(loop: EventLoop) -> None:
    """Remember a new loop (``Loop.__init__``; a weak reference, so it costs the loop nothing)."""
    _loops[next(_serial)] = loop


def numbered_loops() -> list[tuple[int, EventLoop]]:
    """The ferroloop loops of this process that are not closed, with their serial numbers (their
    place in the order loops were made: fixed for a loop's life, never reused), oldest first."""
    numbered: list[tuple[int, EventLoop]] = []
    for _ in range(100):  # another thread may make or drop a loop while the set is copied
        try:
            numbered = list(_loops.items())
            break
        except RuntimeError:
            continue
    return [(serial, loop) for serial, loop in numbered if not loop.is_closed()]


def loops() -> list[EventLoop]:
    """The ferroloop loops of this process that are not closed, oldest first."""
    return [loop for _, loop in numbered_loops()]


def thread_of(ident: int | None) -> threading.Thread | None:
    """The thread whose ``threading.get_ident()`` is ``ident`` (a loop's ``_thread_id``); None
    for None, or for a thread the threading module does not know (started by C code)."""
    if ident is None:
        return None
    return next((thread for thread in threading.enumerate() if thread.ident == ident), None)


def stats(loop: asyncio.AbstractEventLoop | None = None) -> LoopStats:
    """The statistics of ``loop`` (the running loop by default) since it was made, up to now
    (the callback running now, the caller's own included, counts as busy so far).

    Callable from any thread: a ferroloop loop is never stopped to read them.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    if not isinstance(loop, EventLoop):
        raise TypeError(f"ferroloop.stats() needs a ferroloop loop, not {type(loop).__name__}")
    return _from_raw(loop._stats())
