"""A stand-in for the `uvloop` package, for running uvloop's own tests without its compiled extension.

tests/thirdparty/run.py puts the folder above this one first on PYTHONPATH (so subprocesses the
tests start find it too) and sets:

FERROLOOP_UVLOOP_SOURCE
    The `uvloop/` folder of uvloop's sdist. It is appended to this package's path, so
    `uvloop._testbase` (the test base classes, `UVTestCase` and `AIOTestCase`) comes from the
    sdist, unchanged. `uvloop.loop`, the Cython extension, does not exist here: a test module that
    imports from it fails to import, and is listed in exclusions-uvloop.txt.
FERROLOOP_UVLOOP_LOOP
    The loop that "uvloop" stands for: `ferroloop` (the run under test) or `asyncio` (the
    baseline for tests that only uvloop's UV classes have).

`new_event_loop`, `Loop`, `EventLoopPolicy` and `run` then give that loop.
"""

import asyncio
import os

__version__ = "0+ferroloop.shim"
# The sdist's uvloop/ folder after this one: `uvloop._testbase` and the other pure-Python parts.
__path__.append(os.environ["FERROLOOP_UVLOOP_SOURCE"])

if os.environ.get("FERROLOOP_UVLOOP_LOOP", "ferroloop") == "ferroloop":
    import ferroloop

    Loop = ferroloop.Loop
    _Policy = ferroloop.EventLoopPolicy
else:
    Loop = asyncio.SelectorEventLoop
    _Policy = asyncio.DefaultEventLoopPolicy

# Loops made through new_event_loop() and the policy, so that uvloop_child.py can tell which tests ran on one.
loops_made = 0


def new_event_loop():
    global loops_made
    loops_made += 1
    return Loop()


class EventLoopPolicy(_Policy):
    def new_event_loop(self):
        return new_event_loop()


__all__ = ("EventLoopPolicy", "Loop", "new_event_loop", "run")


def run(main, *, loop_factory=new_event_loop, debug=None, **run_kwargs):
    """`uvloop.run()`: `asyncio.run()` with this loop, refusing a loop of another kind, as uvloop does."""

    async def wrapper():
        if not isinstance(asyncio.get_running_loop(), Loop):
            raise TypeError("uvloop.run() uses a non-uvloop event loop")
        return await main

    with asyncio.Runner(loop_factory=loop_factory, debug=debug, **run_kwargs) as runner:
        return runner.run(wrapper())
