"""ferroloop: Python's asyncio, with its event loop's engine written in Rust.

Switch with one line::

    ferroloop.run(main())
    asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # Python 3.12+
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)        # Python 3.11+
"""

import asyncio as _asyncio
import os as _os

from . import _compat
from ._blocking import report_blocking
from ._loop import Loop
from ._stats import LoopStats, stats

__all__ = ("Loop", "LoopStats", "enable_ps", "new_event_loop", "report_blocking", "run", "stats")
if not _compat.POLICIES_DEPRECATED:
    __all__ += ("EventLoopPolicy",)
__version__ = "0.1.0"


def new_event_loop():
    """Return a new ferroloop event loop."""
    return Loop()


def run(main, *, debug=None):
    """Run the coroutine ``main`` on a new ferroloop loop and return its result.

    Same semantics as ``asyncio.run``: leftover tasks are cancelled, asynchronous generators and
    the default executor are shut down, and the loop is closed.
    """
    if _compat.get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with _asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


def enable_ps():
    """Let ``python -m ferroloop ps PID`` and ``pstree PID`` list this process's tasks, and
    ``python -m ferroloop top PID`` show its loops.

    ``ps`` and ``pstree`` need it on Python 3.11-3.13, where asyncio has no such tool (3.14's
    ``python -m asyncio ps`` needs no opt-in); ``top`` on every version. The environment variable
    ``FERROLOOP_PS=1`` does the same at import. Returns the path of the Unix socket the process
    answers on; see ``ferroloop._ps``.
    """
    from . import _ps

    return _ps.enable()


if _os.environ.get("FERROLOOP_PS"):
    enable_ps()


def _report_blocking_from_environment():
    from . import _blocking

    value = _os.environ.get(_blocking.ENV)
    if not value:
        return
    try:
        report_blocking(float(value))
    except ValueError:
        import warnings

        warnings.warn(
            f"{_blocking.ENV}={value!r} is not a positive number of seconds; the blocked-loop report is off",
            RuntimeWarning,
            stacklevel=2,
        )


_report_blocking_from_environment()


def _policy_class():
    class EventLoopPolicy(_compat.DEFAULT_POLICY):
        """An event loop policy whose loops are ferroloop loops (for code that sets policies)."""

        def new_event_loop(self):
            return Loop()

    EventLoopPolicy.__module__ = __name__
    EventLoopPolicy.__qualname__ = "EventLoopPolicy"
    return EventLoopPolicy


if not _compat.POLICIES_DEPRECATED:
    EventLoopPolicy = _policy_class()
else:
    # As asyncio's policy names from 3.14 on: there while asyncio has policies, with its warning.
    def __getattr__(name):
        if name == "EventLoopPolicy" and _compat.DEFAULT_POLICY is not None:
            _compat.deprecated_policy_name(name)
            cls = globals().get("_EventLoopPolicy") or _policy_class()
            globals()["_EventLoopPolicy"] = cls
            return cls
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
