"""pytest plugin for running anyio's own test suite on stock asyncio or on ferroloop (see run.py).

Loaded with `-p anyio_plugin` into a pytest run of the tests/ folder of anyio's sdist. It reads:

FERROLOOP_THIRDPARTY_LOOP
    `asyncio` or `ferroloop`. With `ferroloop`, every asyncio backend parametrisation of anyio's
    `anyio_backend` fixture gets ferroloop as its `loop_factory` (its eager-task variant gets
    ferroloop with `asyncio.eager_task_factory`); anyio_policy.py, loaded beside it, gives ferroloop
    to the tests that make a loop themselves. With `asyncio`, nothing is changed.
FERROLOOP_THIRDPARTY_EXCLUSIONS
    exclusions-anyio.txt: the tests listed there are deselected.

Deselected as well, on both loops: the trio backend's parametrisations (they never touch an
asyncio loop, so they would run the same code twice and compare nothing) and anyio's
`asyncio+uvloop` / `asyncio+winloop` ones (a third loop, not the one under test). So is the
`asyncio+eager` one (Python 3.12+), unless FERROLOOP_THIRDPARTY_EAGER=1: it runs every test a
second time on the same loop with stdlib's eager task factory, which is stdlib's code, not the
loop's; it doubles the suite's time.

On a machine whose "localhost" has no IPv6 address, anyio's IPv6 tests are skipped on both loops
(see NO_IPV6_LOCALHOST).

Before each test, on both loops, the worker threads that earlier tests told to stop are given time
to end (settle_worker_threads). anyio stops a run's worker threads from a done callback of its
root task; the thread then ends on its own, a little after `anyio.run()` returns, whichever the
loop. Two of anyio's tests count `threading.active_count()` before and after (or during) their own
run (TestBlockingPortalProvider::test_single_thread, TestRunAsyncFromThread::
test_run_sync_from_thread_pooling): an earlier test's worker that ends in between fails them. Under
load that happened on both loops: six runs of anyio's suite on 3.11 beside two CPU hogs failed
test_run_sync_from_thread_pooling four times on stock asyncio and once on ferroloop. A worker that
is never told to stop is not waited for, so a loop that failed to run anyio's done callbacks would
still fail these tests.

It reports each test's outcome to run.py (thirdparty_common.Reporter).
"""

import os
import socket
import threading
import time

import anyio_policy
import pytest
from thirdparty_common import Reporter, TestList

LOOP = os.environ.get("FERROLOOP_THIRDPARTY_LOOP", "asyncio")
# The ids anyio gives its parametrisations on other loops than stock asyncio's.
OTHER_LOOP_IDS = ("asyncio+uvloop", "asyncio+winloop")
# anyio's parametrisation with asyncio.eager_task_factory (3.12+), run only with FERROLOOP_THIRDPARTY_EAGER=1.
EAGER_ID = "asyncio+eager"
# anyio marks its IPv6 tests with a skipif of this reason, and runs them when "::1" can be bound.
IPV6_MARK_REASON = "IPv6 is not available"
NO_IPV6_LOCALHOST = (
    "'localhost' has no IPv6 address here, and anyio's IPv6 tests bind to it: they fail on both loops and leave"
    " sockets unclosed, whose ResourceWarnings then fail later tests at random"
)
# Enough of a failure's report to recognise it; the whole is in the log.
DETAIL_CHARS = 3000
# How long a test waits, at most, for the worker threads earlier tests stopped (settle_worker_threads).
SETTLE_SECONDS = 5.0


def on_ferroloop(backend):
    """The `anyio_backend` value that runs `backend` (anyio's own value) on ferroloop."""
    name, options = (backend, {}) if isinstance(backend, str) else backend
    if name != "asyncio":
        return backend
    factory = options.get("loop_factory")
    if factory is None:
        factory = anyio_policy.new_ferroloop
    elif getattr(factory, "__name__", "") == "eager_task_loop_factory":
        factory = anyio_policy.ferroloop_eager_loop
    else:
        raise pytest.UsageError(f"anyio_plugin: unknown asyncio loop_factory {factory!r} in anyio's tests")
    return name, dict(options, loop_factory=factory)


def localhost_has_ipv6():
    try:
        socket.getaddrinfo("localhost", 0, socket.AF_INET6)
    except OSError:
        return False
    return True


def backend_of(item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("anyio_backend") if callspec is not None else None


def deselected_backend(item):
    backend = backend_of(item)
    if backend is None:
        return False
    if (backend if isinstance(backend, str) else backend[0]) != "asyncio":
        return True
    skipped = OTHER_LOOP_IDS if os.environ.get("FERROLOOP_THIRDPARTY_EAGER") else (*OTHER_LOOP_IDS, EAGER_ID)
    return any(part in skipped for part in item.callspec.id.split("-"))


def settle_worker_threads():
    """Wait (at most SETTLE_SECONDS) for the anyio worker threads that were told to stop to end."""
    deadline = time.monotonic() + SETTLE_SECONDS
    for thread in threading.enumerate():
        if type(thread).__name__ == "WorkerThread" and getattr(thread, "stopping", False):
            thread.join(max(0.0, deadline - time.monotonic()))


class ThirdPartyPlugin:
    def __init__(self):
        self.reporter = Reporter()
        path = os.environ.get("FERROLOOP_THIRDPARTY_EXCLUSIONS")
        self.exclusions = TestList(path) if path else None
        self.phases = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        kept, dropped = [], []
        for item in items:
            excluded = self.exclusions is not None and self.exclusions.reason(item.nodeid) is not None
            (dropped if excluded or deselected_backend(item) else kept).append(item)
        mine = {id(item) for _, item in self.reporter.mine([(item.nodeid, item) for item in kept])}
        dropped += [item for item in kept if id(item) not in mine]
        kept = [item for item in kept if id(item) in mine]
        self.reporter.send(plan=[item.nodeid for item in kept])
        dropped += kept[: self.reporter.start]
        kept = kept[self.reporter.start :]
        if LOOP == "ferroloop":
            for item in kept:
                backend = backend_of(item)
                if backend is not None:
                    item.callspec.params["anyio_backend"] = on_ferroloop(backend)
        if not localhost_has_ipv6():
            for item in kept:
                if any(mark.kwargs.get("reason") == IPV6_MARK_REASON for mark in item.iter_markers("skipif")):
                    item.add_marker(pytest.mark.skip(reason=NO_IPV6_LOCALHOST))
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept

    def pytest_runtest_logstart(self, nodeid):
        settle_worker_threads()
        self.phases[nodeid] = []
        self.loops_before = anyio_policy.loops_made
        self.began = time.monotonic()
        self.reporter.send(start=nodeid)

    def pytest_runtest_logreport(self, report):
        self.phases.setdefault(report.nodeid, []).append(report)

    def pytest_runtest_logfinish(self, nodeid):
        outcome, detail = "passed", ""
        for report in self.phases.pop(nodeid, []):
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "failed"
                detail = detail or f"xfail: {report.wasxfail}"
            elif report.failed:
                outcome = "failed"
                detail = f"{report.when}: {report.longreprtext}"
                break
            elif report.skipped and outcome == "passed":
                outcome = "skipped"
                detail = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else report.longreprtext
        self.reporter.send(
            result=nodeid,
            outcome=outcome,
            detail=detail[-DETAIL_CHARS:],
            ferroloop=anyio_policy.loops_made > self.loops_before,
            seconds=round(time.monotonic() - self.began, 3),
        )

    def pytest_sessionfinish(self):
        self.reporter.send(done=True)


def pytest_configure(config):
    config.pluginmanager.register(ThirdPartyPlugin(), "ferroloop-thirdparty")
