"""``ferroloop.report_blocking(threshold)``: the stack that blocked the loop, logged.

The watchdog is native (``crates/ferroloop-py/src/event_loop/blocking.rs`` has how it works and
what it costs): it notices a callback still running past the threshold without taking the GIL,
then calls :func:`blocked` here from its own thread, with the GIL, to take the loop thread's
stack and log it. When the callback returns, the loop's thread calls :func:`ended`. Both log
through the ``ferroloop`` logger, at WARNING:

* while it blocks, once per episode: how long so far, the thread, and the stack (most recent
  call last), whose last line is the one blocking;
* when it ends: how long it blocked in all, and what the callback was (a task's name and where
  its coroutine is, a callback's repr, or a transport's protocol). A callback that ended before
  the watchdog looked (it looks every quarter of the threshold) gets this line only.

``FERROLOOP_REPORT_BLOCKING=<seconds>`` in the environment turns it on when ferroloop is imported.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback

from . import _ferroloop, _stats

ENV = "FERROLOOP_REPORT_BLOCKING"

logger = logging.getLogger("ferroloop")

# One episode's lines in order: the report of a callback still running is logged whole before
# the line of its end.
_lock = threading.Lock()


def report_blocking(threshold: float | None) -> float | None:
    """Log the stack of any callback that blocks a ferroloop loop longer than ``threshold``
    seconds, while it blocks, and how long it blocked when it ends (see ``ferroloop._blocking``).

    Applies to every ferroloop loop of the process, running or not yet made. ``None`` or ``0``
    turns it off. Returns the previous threshold (``None`` if it was off).
    """
    return _ferroloop._report_blocking(threshold)


_LOOP_FILE = __file__.replace("_blocking.py", "_loop.py")


def _callback_frames(stack):
    """The frames of the callback running: those above the loop's ``run_forever`` (all of them
    if the loop was not run by it)."""
    starts = [i for i, f in enumerate(stack) if f.name == "run_forever" and f.filename == _LOOP_FILE]
    if starts and starts[-1] + 1 < len(stack):
        return traceback.StackSummary.from_list(stack[starts[-1] + 1 :])
    return stack


def blocked(loop, ident: int, stamp: int, seconds: float) -> None:
    """The watchdog found ``loop`` blocked for ``seconds`` by the callback that started at ``stamp``."""
    frame = sys._current_frames().get(ident)
    if frame is None:
        return
    # The frames as they are now, without reading source files (which could let the loop go on).
    stack = traceback.StackSummary.extract(traceback.walk_stack(frame), lookup_lines=False)
    del frame
    stack.reverse()
    stack = _callback_frames(stack)
    with _lock:
        # Still the same callback? (Waiting for the lock may have let it end.)
        if not loop._blocking_mark(stamp):
            return
        logger.warning(
            "Event loop in %s blocked for %.3f s so far by a callback still running;"
            " its stack (most recent call last):\n%s",
            getattr(_stats.thread_of(ident), "name", f"thread {ident}"),
            seconds,
            "".join(stack.format()).rstrip("\n"),
        )


def ended(seconds: float, what: str, reported: bool) -> None:
    """A callback blocked the loop for ``seconds``; ``reported``: its stack was logged."""
    with _lock:
        logger.warning(
            "Event loop blocked for %.3f s by %s%s",
            seconds,
            what,
            " (its stack is logged above)" if reported else "",
        )
