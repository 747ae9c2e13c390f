"""Shared fixtures for the ferroloop behaviour suite.

Every test that uses ``loop_factory`` (directly or through ``loop``) runs
twice: once on stock asyncio (``asyncio.SelectorEventLoop``, the loop the
default policy creates on Unix) and once on ferroloop.  The tests assert
asyncio's behaviour, so the "asyncio" parametrisation is the reference and
the "ferroloop" parametrisation checks compatibility.

If ``import ferroloop`` fails, the ferroloop parametrisations fail with the
import error instead of being skipped: a missing build is a defect.
"""

import asyncio
import gc
import os
import sys

import pytest

# tests/cpython is a separate suite (CPython's own asyncio tests) with its own
# runner; do not collect it here.
collect_ignore = ["cpython"]

try:
    import ferroloop
except Exception as exc:
    ferroloop = None
    FERROLOOP_IMPORT_ERROR = exc
else:
    FERROLOOP_IMPORT_ERROR = None

LOOP_NAMES = ["asyncio", "ferroloop"]

# Generous bound used when waiting for something that should happen "soon".
# Tests never assert tight durations; this only keeps a broken loop from
# hanging a test until the global pytest-timeout fires. Under valgrind
# (tests/memcheck/run.sh) everything runs tens of times slower: the runner
# scales the bound with FERROLOOP_TEST_TIME_SCALE.
WAIT = 10.0 * float(os.environ.get("FERROLOOP_TEST_TIME_SCALE", "1"))


# ---------------------------------------------------------------------------
# file descriptor bookkeeping


def _fd_is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def open_fds():
    """Return the set of file descriptors open in this process."""
    # os.listdir() itself opens a descriptor for the directory; it is closed
    # again by the time we look at the result, so filter closed ones out.
    return {int(name) for name in os.listdir("/proc/self/fd") if _fd_is_open(int(name))}


def _describe_fd(fd):
    try:
        return f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
    except OSError:
        return f"{fd} -> ?"


class FdGuard:
    """Snapshot open fds and report descriptors opened since the snapshot."""

    def __init__(self):
        self.before = open_fds()

    def leaked(self):
        # Unreferenced sockets/loops caught in reference cycles are only
        # closed once the garbage collector runs; a full collection costs tens
        # of milliseconds, so it runs only when something looks leaked.
        leaked = open_fds() - self.before
        for _ in range(3):
            if not leaked:
                return set()
            gc.collect()
            leaked = open_fds() - self.before
        return leaked

    def check(self):
        leaked = self.leaked()
        if leaked:
            desc = ", ".join(_describe_fd(fd) for fd in sorted(leaked))
            pytest.fail(f"file descriptors leaked by the test: {desc}", pytrace=False)


@pytest.fixture
def fd_guard():
    """Fail the test if it leaves file descriptors open."""
    if not os.path.isdir("/proc/self/fd"):
        yield None
        return
    guard = FdGuard()
    yield guard
    guard.check()


# ---------------------------------------------------------------------------
# loop factories


def _asyncio_loop():
    # Explicitly the stock loop, whatever event loop policy is installed.
    return asyncio.SelectorEventLoop()


def _asyncio_run(main, *, debug=None):
    """asyncio.run(main, debug=debug) on the stock loop."""
    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=_asyncio_loop)
    # Python 3.11's asyncio.run() has no loop_factory; this is its body.
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=_asyncio_loop) as runner:
        return runner.run(main)


class LoopFactory:
    """Callable creating a new event loop of one implementation.

    ``name`` is "asyncio" or "ferroloop"; ``loop_class`` the class of the
    loops created; ``run(main, debug=None)`` the implementation's
    ``asyncio.run`` equivalent (``asyncio.run`` for stock asyncio,
    ``ferroloop.run`` for ferroloop).
    """

    def __init__(self, name, factory, loop_class, run):
        self.name = name
        self._factory = factory
        self.loop_class = loop_class
        self.run = run

    def __call__(self):
        return self._factory()

    def __repr__(self):
        return f"<LoopFactory {self.name}>"


def make_loop_factory(name):
    if name == "asyncio":
        return LoopFactory(name, _asyncio_loop, asyncio.SelectorEventLoop, _asyncio_run)
    if ferroloop is None:
        pytest.fail(
            f"import ferroloop failed: {FERROLOOP_IMPORT_ERROR!r}",
            pytrace=False,
        )
    return LoopFactory(name, ferroloop.new_event_loop, ferroloop.Loop, ferroloop.run)


@pytest.fixture(params=LOOP_NAMES)
def loop_factory(request):
    """A ``LoopFactory`` for stock asyncio and for ferroloop."""
    return make_loop_factory(request.param)


@pytest.fixture
def loop(loop_factory, fd_guard):
    """A fresh event loop, closed after the test; fds must not leak. In a leak-check build
    (`make test-debug`) with FERROLOOP_LEAK_CHECK_PER_TEST=1, no handle or transport may outlive
    it (strict: an object the test itself still references, say in a logged record, counts)."""
    before = live_objects() if os.environ.get("FERROLOOP_LEAK_CHECK_PER_TEST") else None
    lp = loop_factory()
    try:
        yield lp
    finally:
        if not lp.is_closed():
            lp.close()
        assert lp.is_closed()
        asyncio.set_event_loop(None)
        del lp
        if before is not None:
            for _ in range(3):
                gc.collect()
            leaked = {k: v - before[k] for k, v in live_objects().items() if v != before[k]}
            assert not leaked, f"objects outlived the loop: {leaked}"


def live_objects():
    """ferroloop's live handle and transport counts, in a leak-check build only (else None)."""
    try:
        from ferroloop import _ferroloop
    except ImportError:
        return None
    return _ferroloop._live_objects()


@pytest.fixture
def run(loop):
    """``run(coro, timeout=WAIT)``: run ``coro`` to completion on ``loop``.

    The coroutine is wrapped in ``asyncio.wait_for`` so a loop that never
    wakes up fails the test instead of hanging it.
    """

    def run_coro(coro, timeout=WAIT):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    return run_coro


def pytest_sessionfinish(session, exitstatus):
    """In a leak-check build, every handle and transport must be freed by the end of the run."""
    counts = live_objects()
    if counts is None:
        return
    for _ in range(3):
        gc.collect()
    counts = live_objects()
    leaked = {k: v for k, v in counts.items() if v}
    print(f"\nleak check: live ferroloop objects at the end of the run: {counts}")
    if leaked:
        print(f"leak check FAILED: {leaked}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
