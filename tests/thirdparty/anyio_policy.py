"""pytest plugin: with FERROLOOP_THIRDPARTY_LOOP=ferroloop, ferroloop's loops for what anyio's tests start.

run.py names it in PYTEST_PLUGINS, so it is loaded by the pytest run of anyio's suite and by the pytest
runs that anyio's own tests start in subprocesses (the tests of its pytest plugin). It installs
ferroloop as asyncio's default loop, so the loops the tests make themselves (`anyio.run()` without
options, `asyncio.new_event_loop()`) are ferroloop's. With FERROLOOP_THIRDPARTY_LOOP=asyncio it
does nothing. Where asyncio's policies are deprecated (3.14+), it makes ferroloop asyncio's default
loop as `python -m ferroloop` does (`ferroloop._compat.install_default_loop`), with no policy.
"""

import asyncio
import os

# ferroloop loops made so far in this process, so that each test's report can say whether it ran on one.
loops_made = 0


def new_ferroloop():
    global loops_made
    import ferroloop

    loops_made += 1
    return ferroloop.new_event_loop()


def ferroloop_eager_loop():
    loop = new_ferroloop()
    loop.set_task_factory(asyncio.eager_task_factory)
    return loop


def pytest_configure(config):
    if os.environ.get("FERROLOOP_THIRDPARTY_LOOP") != "ferroloop":
        return
    import ferroloop
    from ferroloop import _compat

    def policy():
        class Policy(ferroloop.EventLoopPolicy):
            def new_event_loop(self):
                return new_ferroloop()

        return Policy()

    _compat.install_default_loop(new_ferroloop, policy)
