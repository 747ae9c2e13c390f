"""What the exporters (``ferroloop.prometheus``, ``ferroloop.opentelemetry``) share: which loops
there are, what each is called, and the snapshots they report.

A loop is called by its serial number: its place in the order ferroloop loops were made in this
process, from 0 (the key ``ferroloop._stats`` remembers it by). It is fixed for the loop's life
and never given to another loop, so a loop's series never jump from one loop to another; a
closed loop's series end. There are as many at once as there are live loops.

Each exporter reads the loops when it is collected (a scrape, a metric reader's collection), from
the thread that collects: ``ferroloop.stats()`` reads a loop without stopping it.
"""

from __future__ import annotations

from typing import NamedTuple

from . import _stats
from ._ferroloop import EventLoop
from ._stats import LoopStats

# The loop's counters, as both exporters name them: the LoopStats figure, its UCUM unit ("s", or
# what it counts) and what it counts.
COUNTERS = (
    ("busy", "s", "Time the loop ran callbacks and its own work."),
    ("idle", "s", "Time the loop waited in its poller for I/O or a timer."),
    ("iterations", "{iteration}", "Loop iterations."),
    ("callbacks", "{callback}", "Callbacks run (handles and native I/O callbacks)."),
    ("io_events", "{event}", "I/O readiness reports queued by the loop's polls."),
    ("timers", "{timer}", "Timers that fell due."),
    ("slow_callbacks", "{callback}", "Callbacks that ran longer than the loop's slow_callback_duration."),
)

# The order of the lag quantiles in both exporters, with the LoopStats.lag field of each.
LAG_QUANTILES = ("p50", "p90", "p99", "max")


class Reading(NamedTuple):
    """One loop's figures at a collection."""

    serial: int
    thread: str | None  # the name of the thread running the loop; None when it is not running
    stats: LoopStats


numbered_loops = _stats.numbered_loops


def serial_of(loop: EventLoop) -> int | None:
    """The serial number of a live ferroloop loop (None if it is closed or not a ferroloop loop)."""
    return next((serial for serial, live in numbered_loops() if live is loop), None)


def thread_name(loop: EventLoop) -> str | None:
    """The name of the thread running ``loop`` now, None if no thread is ("" if it is unnamed)."""
    ident = getattr(loop, "_thread_id", None)
    if ident is None:
        return None
    # A thread that the threading module does not know of (started by C code) has no name.
    return getattr(_stats.thread_of(ident), "name", "")


def readings() -> list[Reading]:
    """Every live loop's figures now, oldest loop first."""
    # A ferroloop Loop is an asyncio.AbstractEventLoop; the stub of its Rust base is not.
    return [
        Reading(serial, thread_name(loop), _stats.stats(loop))  # type: ignore[arg-type]
        for serial, loop in numbered_loops()
    ]
