"""call_soon / call_later / call_at / call_soon_threadsafe and handles."""

import asyncio
import contextvars
import threading
import time
import weakref

import pytest
from conftest import WAIT

VAR = contextvars.ContextVar("VAR", default="default")


def stop_after(loop, seconds=WAIT):
    """Safety net: stop the loop after `seconds` if the test did not."""
    return loop.call_later(seconds, loop.stop)


# ---------------------------------------------------------------------------
# call_soon


def test_call_soon_fifo(loop):
    order = []
    for i in range(100):
        loop.call_soon(order.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == list(range(100))


def test_call_soon_args(loop):
    got = []

    def cb(*args):
        got.append(args)

    loop.call_soon(cb)
    loop.call_soon(cb, 1, "two", None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == [(), (1, "two", None)]


def test_call_soon_rejects_keyword_arguments(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, end="")


def test_call_soon_from_callback_runs_next_iteration(loop):
    order = []

    def first():
        order.append("first")
        loop.call_soon(order.append, "nested")

    loop.call_soon(first)
    loop.call_soon(order.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # "nested" was scheduled during the iteration: it runs in the next one,
    # after stop() has ended this run
    assert order == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["first", "second", "nested"]


def test_call_soon_returns_handle(loop):
    h = loop.call_soon(print)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    h.cancel()


# ---------------------------------------------------------------------------
# contexts


def test_call_soon_explicit_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    seen = []

    def cb():
        seen.append(VAR.get())
        VAR.set("changed by cb")

    loop.call_soon(cb, context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["in ctx"]
    # the callback ran in ctx itself, not in a copy
    assert ctx[VAR] == "changed by cb"
    assert VAR.get() == "default"


def test_call_soon_copies_current_context(loop):
    seen = []

    def cb(tag):
        seen.append((tag, VAR.get()))
        VAR.set(f"set by {tag}")

    token = VAR.set("outer")
    try:
        loop.call_soon(cb, "a")
        loop.call_soon(cb, "b")
        VAR.set("after scheduling")
        loop.call_soon(loop.stop)
        loop.run_forever()
        # each callback got its own copy of the context current at scheduling
        assert seen == [("a", "outer"), ("b", "outer")]
        # and their changes did not leak out
        assert VAR.get() == "after scheduling"
    finally:
        VAR.reset(token)


def test_call_later_and_call_at_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "timer ctx")
    seen = []
    loop.call_later(0.001, lambda: seen.append(VAR.get()), context=ctx)
    loop.call_at(loop.time() + 0.002, lambda: seen.append(VAR.get()), context=ctx)
    loop.call_at(loop.time() + 0.003, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert seen == ["timer ctx", "timer ctx"]


def test_call_soon_threadsafe_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "ts ctx")
    seen = []
    loop.call_soon_threadsafe(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["ts ctx"]


# ---------------------------------------------------------------------------
# call_soon_threadsafe


def test_call_soon_threadsafe_wakes_blocked_loop(loop):
    running = threading.Event()
    result = {}

    def in_thread():
        # wait until the loop runs; give it a moment to block in its poller
        assert running.wait(WAIT)
        time.sleep(0.05)
        result["sent"] = time.monotonic()
        loop.call_soon_threadsafe(on_wakeup, "from thread")

    def on_wakeup(arg):
        result["received"] = time.monotonic()
        result["arg"] = arg
        result["thread"] = threading.get_ident()
        loop.stop()

    # the only timer is the far-away safety net, so the loop blocks
    safety = loop.call_later(3 * WAIT, loop.stop)
    loop.call_soon(running.set)
    t = threading.Thread(target=in_thread)
    t.start()
    try:
        loop.run_forever()
    finally:
        t.join(WAIT)
    safety.cancel()
    assert result["arg"] == "from thread"
    assert result["thread"] == threading.get_ident()
    # woken by the call, not by the safety timer
    assert result["received"] - result["sent"] < WAIT


def test_call_soon_threadsafe_many_threads(loop):
    n_threads, per_thread = 4, 200
    got = []
    done = loop.create_future()

    def cb(i):
        got.append(i)
        if len(got) == n_threads * per_thread and not done.done():
            done.set_result(None)

    def producer(base):
        for i in range(per_thread):
            loop.call_soon_threadsafe(cb, base + i)

    threads = [threading.Thread(target=producer, args=(k * per_thread,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    try:
        loop.run_until_complete(asyncio.wait_for(done, WAIT))
    finally:
        for t in threads:
            t.join(WAIT)
    assert sorted(got) == list(range(n_threads * per_thread))
    # per-thread FIFO order is preserved
    for k in range(n_threads):
        mine = [i for i in got if k * per_thread <= i < (k + 1) * per_thread]
        assert mine == sorted(mine)


def test_call_soon_from_other_thread_in_debug_mode(loop):
    loop.set_debug(True)
    errors = []
    threads = []

    def in_thread():
        try:
            loop.call_soon(print)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            loop.call_soon_threadsafe(loop.stop)

    def start():
        t = threading.Thread(target=in_thread)
        threads.append(t)
        t.start()

    loop.call_soon(start)
    stop_after(loop)
    try:
        loop.run_forever()
    finally:
        for t in threads:
            t.join(WAIT)
    assert len(errors) == 1
    assert "Non-thread-safe operation" in errors[0]


# ---------------------------------------------------------------------------
# timers


def test_call_later_ordering(loop):
    order = []
    loop.call_later(0.03, order.append, "c")
    loop.call_later(0.01, order.append, "a")
    loop.call_later(0.02, order.append, "b")
    loop.call_later(0.04, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert order == ["a", "b", "c"]


def test_call_at_ordering(loop):
    order = []
    now = loop.time()
    loop.call_at(now + 0.02, order.append, 2)
    loop.call_at(now + 0.01, order.append, 1)
    loop.call_at(now + 0.005, order.append, 0)
    loop.call_at(now + 0.03, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert order == [0, 1, 2]


def test_call_later_fires_after_delay(loop):
    fired = []
    start = loop.time()
    loop.call_later(0.05, lambda: fired.append(loop.time()))
    loop.call_later(0.06, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert len(fired) == 1
    # never early (allowing for the loop's clock resolution)
    assert fired[0] - start >= 0.05 - 0.002


def test_equal_deadlines_in_scheduling_order(loop):
    # asyncio only keeps scheduling order for timers with equal deadlines in
    # simple cases (its heap is not stable for >= 3 equal entries), so this
    # checks two timers with the very same `when`.
    order = []
    when = loop.time() + 0.01

    def second():
        order.append("second")
        loop.stop()

    loop.call_at(when, order.append, "first")
    loop.call_at(when, second)
    loop.run_forever()
    assert order == ["first", "second"]


def test_same_delay_in_scheduling_order(loop):
    order = []
    for i in range(20):
        loop.call_later(0.01, order.append, i)
    loop.call_later(0.05, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert order == list(range(20))


def test_zero_and_negative_delay_run_after_queued_callbacks(loop):
    order = []
    loop.call_soon(order.append, "soon-1")
    loop.call_later(0, order.append, "later-0")
    loop.call_later(-1, order.append, "later-neg")
    loop.call_at(loop.time() - 10, order.append, "at-past")
    loop.call_soon(order.append, "soon-2")
    loop.call_soon(loop.stop)
    stop_after(loop)
    loop.run_forever()
    # callbacks queued with call_soon run first, then expired timers in
    # deadline order
    assert order == ["soon-1", "soon-2", "at-past", "later-neg", "later-0"]


def test_call_later_none_delay(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, print)


def test_call_at_none_when(loop):
    with pytest.raises(TypeError):
        loop.call_at(None, print)


def test_call_later_bad_delay_type(loop):
    with pytest.raises(TypeError):
        loop.call_later("1", print)


def test_timer_handle_when(loop):
    when = loop.time() + 100
    th = loop.call_at(when, print)
    assert isinstance(th, asyncio.TimerHandle)
    assert th.when() == when

    before = loop.time()
    th2 = loop.call_later(5, print)
    after = loop.time()
    assert before + 5 <= th2.when() <= after + 5
    th.cancel()
    th2.cancel()


# ---------------------------------------------------------------------------
# cancellation


def test_handle_cancel(loop):
    called = []
    h = loop.call_soon(called.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()  # idempotent
    assert h.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert called == []


def test_timer_handle_cancel(loop):
    called = []
    th = loop.call_later(0.01, called.append, 1)
    th.cancel()
    assert th.cancelled()
    loop.call_later(0.03, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert called == []


def test_cancel_later_callback_from_earlier_one(loop):
    called = []
    h2 = None

    def first():
        called.append(1)
        h2.cancel()

    loop.call_soon(first)
    h2 = loop.call_soon(called.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert called == [1]


def test_cancel_expired_timer_from_callback(loop):
    # both timers expire in the same iteration; the first cancels the second
    called = []
    when = loop.time() + 0.01
    h2 = None

    def first():
        called.append(1)
        h2.cancel()

    loop.call_at(when, first)
    h2 = loop.call_at(when + 0.000001, called.append, 2)
    loop.call_at(when + 0.02, loop.stop)
    stop_after(loop)
    # block long enough that both are due together
    loop.call_soon(time.sleep, 0.02)
    loop.run_forever()
    assert called == [1]


def test_many_cancelled_timers(loop):
    handles = [loop.call_later(10 + i, print) for i in range(1000)]
    for h in handles:
        h.cancel()
    fired = []
    loop.call_later(0.001, fired.append, True)
    loop.call_later(0.002, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert fired == [True]


# ---------------------------------------------------------------------------
# handle API


@pytest.mark.skipif(
    not hasattr(asyncio.Handle, "get_context"),
    reason="asyncio.Handle.get_context() needs Python 3.12",
)
def test_handle_get_context(loop):
    ctx = contextvars.copy_context()
    h = loop.call_soon(print, context=ctx)
    assert h.get_context() is ctx
    th = loop.call_later(1, print, context=ctx)
    assert th.get_context() is ctx
    h2 = loop.call_soon(print)
    assert isinstance(h2.get_context(), contextvars.Context)
    for x in (h, th, h2):
        x.cancel()


def test_handle_repr(loop):
    def my_callback():
        pass

    h = loop.call_soon(my_callback)
    assert "my_callback" in repr(h)
    th = loop.call_later(10, my_callback)
    assert "my_callback" in repr(th)
    assert "when=" in repr(th)
    h.cancel()
    th.cancel()
    assert "cancelled" in repr(h)
    assert "cancelled" in repr(th)


def run_iterations(loop, n):
    """Runs `n` loop iterations (each `call_soon` made by a callback waits for the next one)."""
    for _ in range(n):
        loop.call_soon(loop.stop)
        loop.run_forever()


class Payload:
    """Something a callback, its arguments or its context keep alive."""


def test_a_held_handle_keeps_its_state_after_running(loop):
    # ferroloop refills the handles it ran for later call_soon calls; one somebody holds must
    # never be among them.
    ran = []
    held = loop.call_soon(ran.append, "held")
    run_iterations(loop, 2)
    others = [loop.call_soon(ran.append, i) for i in range(5)]
    run_iterations(loop, 2)
    assert ran == ["held", 0, 1, 2, 3, 4]
    assert all(h is not held for h in others)
    assert not held.cancelled()
    assert held._callback == ran.append and held._args == ("held",)


def test_a_handle_only_a_weak_reference_sees_dies_after_running(loop):
    ref = weakref.ref(loop.call_soon(len, ()))
    assert ref() is not None
    run_iterations(loop, 2)
    for _ in range(5):
        loop.call_soon(len, ())
    run_iterations(loop, 2)
    assert ref() is None


def test_what_a_callback_holds_is_released_once_it_ran(loop):
    refs = []
    for _ in range(3):
        payload, arg, value = Payload(), Payload(), Payload()
        refs += [weakref.ref(payload), weakref.ref(arg), weakref.ref(value)]
        ctx = contextvars.copy_context()
        ctx.run(VAR.set, value)
        loop.call_soon(lambda p=payload, *a: None, arg, context=ctx)
        del payload, arg, value, ctx
        run_iterations(loop, 1)
    loop.call_soon(len, ())  # what a reused handle held is gone too
    run_iterations(loop, 1)
    assert [r() for r in refs] == [None] * len(refs)


def test_each_callback_runs_in_its_own_context_and_uncancelled(loop):
    seen = []
    for i in range(4):
        ctx = contextvars.copy_context()
        ctx.run(VAR.set, f"ctx{i}")
        loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
        loop.call_soon(seen.append, "never").cancel()
        run_iterations(loop, 1)
    loop.call_soon(lambda: seen.append(VAR.get()))
    run_iterations(loop, 1)
    assert seen == ["ctx0", "ctx1", "ctx2", "ctx3", "default"]


# ---------------------------------------------------------------------------
# time()


def test_time_is_monotonic_clock(loop):
    for _ in range(10):
        t0 = time.monotonic()
        lt = loop.time()
        t1 = time.monotonic()
        assert isinstance(lt, float)
        assert t0 <= lt <= t1


def test_time_advances(loop):
    t0 = loop.time()
    time.sleep(0.01)
    assert loop.time() > t0


# ---------------------------------------------------------------------------
# debug-mode argument checks


async def _coro_fn():
    pass


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_debug_rejects_coroutines(loop, method):
    loop.set_debug(True)
    call = {
        "call_soon": loop.call_soon,
        "call_soon_threadsafe": loop.call_soon_threadsafe,
        "call_later": lambda cb: loop.call_later(1, cb),
        "call_at": lambda cb: loop.call_at(loop.time() + 1, cb),
    }[method]
    coro = _coro_fn()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            call(coro)
    finally:
        coro.close()
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        call(_coro_fn)


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_debug_rejects_non_callable(loop, method):
    loop.set_debug(True)
    call = {
        "call_soon": loop.call_soon,
        "call_soon_threadsafe": loop.call_soon_threadsafe,
        "call_later": lambda cb: loop.call_later(1, cb),
        "call_at": lambda cb: loop.call_at(loop.time() + 1, cb),
    }[method]
    with pytest.raises(TypeError, match="a callable object was expected"):
        call(42)


# ---------------------------------------------------------------------------
# exceptions in callbacks


def test_callback_exception_goes_to_handler(loop):
    contexts = []
    after = []

    def bad():
        raise ZeroDivisionError("oops")

    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))
    h = loop.call_soon(bad)
    loop.call_soon(after.append, "still running")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert after == ["still running"]
    assert len(contexts) == 1
    lp, ctx = contexts[0]
    assert lp is loop
    assert {"message", "exception", "handle"} <= set(ctx)
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is h
    assert "Exception in callback" in ctx["message"]


def test_timer_callback_exception_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def bad():
        raise ValueError("timer")

    th = loop.call_later(0.001, bad)
    loop.call_later(0.01, loop.stop)
    stop_after(loop)
    loop.run_forever()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["handle"] is th


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_propagate(loop, exc_type):
    after = []

    def bad():
        raise exc_type()

    loop.call_soon(bad)
    loop.call_soon(after.append, "next")
    stop_after(loop)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    # the remaining callbacks were not lost; the loop can run again
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert after == ["next"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_propagate_from_run_until_complete(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert not loop.is_running()
