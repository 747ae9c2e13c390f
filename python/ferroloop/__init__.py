"""ferroloop: Python's asyncio, with its event loop's engine written in Rust.

Switch with one line::

    ferroloop.run(main())
    asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # Python 3.12+
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)        # Python 3.11+
"""

import asyncio as _asyncio
from asyncio import events as _events

from ._loop import Loop

__all__ = ("EventLoopPolicy", "Loop", "new_event_loop", "run")
__version__ = "0.1.0"


def new_event_loop():
    """Return a new ferroloop event loop."""
    return Loop()


def run(main, *, debug=None):
    """Run the coroutine ``main`` on a new ferroloop loop and return its result.

    Same semantics as ``asyncio.run``: leftover tasks are cancelled, asynchronous generators and
    the default executor are shut down, and the loop is closed.
    """
    if _events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with _asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


class EventLoopPolicy(_asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are ferroloop loops (for code that sets policies)."""

    def new_event_loop(self):
        return Loop()
