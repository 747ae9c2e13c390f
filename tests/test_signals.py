"""add_signal_handler / remove_signal_handler (Unix only)."""

import asyncio
import os
import signal
import sys
import threading
import time

import pytest
from conftest import WAIT

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(signal, "SIGUSR1"),
    reason="Unix signals",
)

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT) if hasattr(signal, "SIGUSR1") else ()


@pytest.fixture(autouse=True)
def restore_signals():
    """Restore dispositions and the wakeup fd whatever the test did."""
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield wakeup
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    signal.set_wakeup_fd(wakeup)


def kill_self(sig=None):
    os.kill(os.getpid(), sig or signal.SIGUSR1)


def test_signal_handler_runs_in_loop(loop):
    calls = []

    def handler(*args):
        calls.append((args, threading.get_ident(), asyncio.get_running_loop()))
        loop.stop()

    assert loop.add_signal_handler(signal.SIGUSR1, handler, "arg1", 2) is None
    loop.call_soon(kill_self)
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert calls == [(("arg1", 2), threading.get_ident(), loop)]


def test_signal_before_loop_runs_is_delivered(loop):
    calls = []

    def handler():
        calls.append("signalled")
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    kill_self()
    assert calls == []  # not called outside the loop
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert calls == ["signalled"]


def test_signal_from_other_thread_wakes_loop(loop):
    calls = []
    running = threading.Event()

    def handler():
        calls.append(time.monotonic())
        loop.stop()

    def in_thread():
        assert running.wait(WAIT)
        time.sleep(0.05)  # let the loop block in its poller
        calls.append(time.monotonic())
        kill_self()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    safety = loop.call_later(3 * WAIT, loop.stop)
    loop.call_soon(running.set)
    t = threading.Thread(target=in_thread)
    t.start()
    try:
        loop.run_forever()
    finally:
        t.join(WAIT)
    safety.cancel()
    assert len(calls) == 2
    sent, handled = calls
    assert handled - sent < WAIT


def test_signal_delivered_each_time(loop, run):
    count = 0
    ev = None

    def handler():
        nonlocal count
        count += 1
        ev.set()

    async def main():
        nonlocal ev
        for _ in range(3):
            ev = asyncio.Event()
            kill_self()
            await ev.wait()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    run(main())
    assert count == 3


def test_two_signals(loop, run):
    got = []

    async def main():
        done = asyncio.Event()

        def handler(name):
            got.append(name)
            if len(got) == 2:
                done.set()

        loop.add_signal_handler(signal.SIGUSR1, handler, "usr1")
        loop.add_signal_handler(signal.SIGUSR2, handler, "usr2")
        kill_self(signal.SIGUSR1)
        kill_self(signal.SIGUSR2)
        await done.wait()

    run(main())
    assert sorted(got) == ["usr1", "usr2"]


def test_replace_signal_handler(loop):
    calls = []

    def old():
        calls.append("old")

    def new():
        calls.append("new")
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, old)
    loop.add_signal_handler(signal.SIGUSR1, new)
    loop.call_soon(kill_self)
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert calls == ["new"]


def test_signal_handler_exception_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def handler():
        loop.call_soon(loop.stop)
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, handler)
    loop.call_soon(kill_self)
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)


def test_remove_signal_handler(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert signal.getsignal(signal.SIGUSR1) != signal.SIG_DFL
    # removing while the loop is not running works
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_sigint_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, print)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_removed_handler_not_called(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, loop.stop)
    assert loop.remove_signal_handler(signal.SIGUSR1)
    # keep SIGUSR1 from killing the process now its handler is gone
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    loop.call_soon(kill_self, signal.SIGUSR1)
    loop.call_soon(kill_self, signal.SIGUSR2)
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert calls == []


def test_close_removes_signal_handlers(loop, restore_signals):
    if restore_signals != -1:
        pytest.skip("a wakeup fd was already set before the test")
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.add_signal_handler(signal.SIGUSR2, print)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    # no wakeup fd is left behind
    assert signal.set_wakeup_fd(-1) == -1


def test_wakeup_fd_reset_after_last_handler_removed(loop, restore_signals):
    if restore_signals != -1:
        pytest.skip("a wakeup fd was already set before the test")
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.add_signal_handler(signal.SIGUSR2, print)
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert loop.remove_signal_handler(signal.SIGUSR2)
    assert signal.set_wakeup_fd(-1) == -1


@pytest.mark.parametrize("sig", [0, 1000, -1], ids=["zero", "too-big", "negative"])
def test_invalid_signal_number(loop, sig):
    with pytest.raises(ValueError):
        loop.add_signal_handler(sig, print)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(sig)


def test_signal_not_an_int(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", print)
    with pytest.raises(TypeError):
        loop.remove_signal_handler(1.5)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSTOP"])
def test_uncatchable_signal(loop, sig):
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(getattr(signal, sig), print)
    assert loop.remove_signal_handler(getattr(signal, sig)) is False


async def _coro_handler():
    pass


def test_coroutine_handler_rejected(loop):
    with pytest.raises(TypeError, match="coroutines cannot be used with add_signal_handler"):
        loop.add_signal_handler(signal.SIGUSR1, _coro_handler)
    coro = _coro_handler()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used with add_signal_handler"):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_signal_handler(signal.SIGUSR1, print)


def test_add_signal_handler_from_non_main_thread(loop):
    errors = []

    def in_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(WAIT)
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_in_loop_of_other_thread(loop_factory, fd_guard):
    # A loop running in a worker thread cannot install signal handlers.
    result = {}

    def in_thread():
        lp = loop_factory()
        try:
            lp.add_signal_handler(signal.SIGUSR1, print)
        except BaseException as exc:
            result["exc"] = exc
        finally:
            lp.close()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(WAIT)
    assert isinstance(result.get("exc"), RuntimeError)
