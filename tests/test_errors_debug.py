"""Exception handlers, default logging and debug mode."""

import asyncio
import gc
import logging
import os
import subprocess
import sys
import time
import warnings

import pytest
from conftest import WAIT


def env_debug():
    return sys.flags.dev_mode or (not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG")))


def asyncio_errors(caplog):
    return [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


# ---------------------------------------------------------------------------
# exception handler API


def test_exception_handler_get_set(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass

    assert loop.set_exception_handler(handler) is None
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("bad", [42, "handler", object()], ids=["int", "str", "object"])
def test_set_exception_handler_not_callable(loop, bad):
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        loop.set_exception_handler(bad)
    assert loop.get_exception_handler() is None


def test_call_exception_handler_custom(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    exc = ValueError("x")
    context = {"message": "custom message", "exception": exc, "extra": 1}
    assert loop.call_exception_handler(context) is None
    assert len(calls) == 1
    lp, ctx = calls[0]
    assert lp is loop
    assert ctx["message"] == "custom message"
    assert ctx["exception"] is exc
    assert ctx["extra"] == 1


def test_default_exception_handler_logs(loop, caplog):
    exc = ZeroDivisionError("logged")
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.default_exception_handler({"message": "Something failed", "exception": exc, "key": "value"})
    records = asyncio_errors(caplog)
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    msg = rec.getMessage()
    assert msg.startswith("Something failed")
    assert "key: 'value'" in msg
    assert rec.exc_info[1] is exc


def test_default_exception_handler_without_exception(loop, caplog):
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.default_exception_handler({"message": "no exception here"})
    records = asyncio_errors(caplog)
    assert len(records) == 1
    assert records[0].getMessage() == "no exception here"
    assert not records[0].exc_info


def test_call_exception_handler_uses_default(loop, caplog):
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_exception_handler({"message": "via call_exception_handler", "exception": KeyError("k")})
    records = asyncio_errors(caplog)
    assert len(records) == 1
    assert "via call_exception_handler" in records[0].getMessage()
    assert isinstance(records[0].exc_info[1], KeyError)


def test_callback_exception_logged_by_default_handler(loop, caplog):
    def bad_callback():
        raise ValueError("from callback")

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(bad_callback)
        loop.call_soon(loop.stop)
        loop.run_forever()
    records = asyncio_errors(caplog)
    assert len(records) == 1
    msg = records[0].getMessage()
    assert msg.startswith("Exception in callback")
    assert "bad_callback" in msg
    assert "handle:" in msg
    assert isinstance(records[0].exc_info[1], ValueError)


def test_failing_custom_handler_falls_back_to_default(loop, caplog):
    def bad_handler(lp, ctx):
        raise RuntimeError("handler is broken")

    loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_exception_handler({"message": "original problem", "exception": KeyError("orig")})
    records = asyncio_errors(caplog)
    assert len(records) == 1
    msg = records[0].getMessage()
    assert "Unhandled error in exception handler" in msg
    assert "original problem" in msg
    exc = records[0].exc_info[1]
    assert isinstance(exc, RuntimeError) and str(exc) == "handler is broken"


def test_failing_custom_handler_from_callback_keeps_loop_running(loop, caplog):
    def bad_handler(lp, ctx):
        raise RuntimeError("handler is broken")

    after = []
    loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(lambda: 1 / 0)
        loop.call_soon(after.append, "after")
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert after == ["after"]
    assert any("Unhandled error in exception handler" in r.getMessage() for r in asyncio_errors(caplog))


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_custom_handler_base_exceptions_propagate(loop, exc_type):
    def handler(lp, ctx):
        raise exc_type()

    loop.set_exception_handler(handler)
    with pytest.raises(exc_type):
        loop.call_exception_handler({"message": "m"})


def test_custom_handler_can_delegate_to_default(loop, caplog):
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_exception_handler({"message": "delegated"})
    assert seen == ["delegated"]
    assert [r.getMessage() for r in asyncio_errors(caplog)] == ["delegated"]


# ---------------------------------------------------------------------------
# unretrieved exceptions


def test_future_exception_never_retrieved(loop, caplog):
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        fut = loop.create_future()
        fut.set_exception(ValueError("never retrieved"))
        del fut
        gc.collect()
    records = asyncio_errors(caplog)
    assert len(records) == 1
    assert "Future exception was never retrieved" in records[0].getMessage()
    assert isinstance(records[0].exc_info[1], ValueError)


def test_future_exception_never_retrieved_context(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    fut = loop.create_future()
    fut.set_exception(ValueError("never retrieved"))
    fut_repr = repr(fut)
    del fut
    gc.collect()
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"] == "Future exception was never retrieved"
    assert isinstance(ctx["exception"], ValueError)
    assert repr(ctx["future"]) == fut_repr


def test_retrieved_exception_not_logged(loop, caplog):
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        fut = loop.create_future()
        fut.set_exception(ValueError("retrieved"))
        assert isinstance(fut.exception(), ValueError)
        del fut
        gc.collect()
    assert asyncio_errors(caplog) == []


def test_task_exception_never_retrieved(loop, caplog):
    async def fail():
        raise ValueError("task failed")

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        task = loop.create_task(fail())
        loop.run_until_complete(asyncio.wait([task]))
        del task
        gc.collect()
    records = asyncio_errors(caplog)
    assert len(records) == 1
    assert "Task exception was never retrieved" in records[0].getMessage()
    assert isinstance(records[0].exc_info[1], ValueError)


def test_pending_task_destroyed(loop, caplog):
    async def forever():
        await asyncio.sleep(3600)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.create_task(forever())
        loop.stop()
        loop.run_forever()  # the task starts and blocks in sleep()
        loop.close()  # drops the timer that keeps the task alive
        gc.collect()
    messages = [r.getMessage() for r in asyncio_errors(caplog)]
    assert any("Task was destroyed but it is pending!" in m for m in messages), messages


# ---------------------------------------------------------------------------
# debug mode


def test_get_set_debug(loop):
    assert loop.get_debug() == env_debug()
    assert loop.set_debug(True) is None
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


_SNIPPETS = {
    "asyncio": "import asyncio; loop = asyncio.SelectorEventLoop()",
    "ferroloop": "import ferroloop; loop = ferroloop.new_event_loop()",
}


@pytest.mark.parametrize(
    "env_value, flags, expected",
    [
        ("1", [], True),
        ("", [], False),
        (None, [], False),
        (None, ["-X", "dev"], True),
        ("1", ["-E"], False),
    ],
    ids=["env-1", "env-empty", "env-unset", "dev-mode", "ignore-environment"],
)
def test_debug_from_environment(loop_factory, env_value, flags, expected):
    env = dict(os.environ)
    env.pop("PYTHONDEVMODE", None)
    env.pop("PYTHONASYNCIODEBUG", None)
    if env_value is not None:
        env["PYTHONASYNCIODEBUG"] = env_value
    # -E ignores PYTHONPATH, so pass the import path explicitly
    code = (
        f"import sys; sys.path[:0] = {[p for p in sys.path if p]!r}; "
        f"{_SNIPPETS[loop_factory.name]}; print(loop.get_debug()); loop.close()"
    )
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=3 * WAIT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(expected)


def test_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    def slow_callback():
        time.sleep(0.2)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(slow_callback)
        loop.call_soon(loop.stop)
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    # (on a loaded machine another callback may occasionally be slow too)
    slow = [m for m in msgs if "slow_callback" in m]
    assert len(slow) == 1, msgs
    assert slow[0].startswith("Executing <Handle")
    assert "took" in slow[0] and slow[0].endswith("seconds")


def test_slow_task_step_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    async def slow_coro():
        time.sleep(0.2)  # noqa: ASYNC251 - deliberately blocks the loop

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.run_until_complete(slow_coro())
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any(m.startswith("Executing <Task") and "took" in m for m in msgs), msgs


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(time.sleep, 0.05)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == pytest.approx(0.1)


def test_debug_source_traceback(loop):
    loop.set_debug(True)
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def bad():
        raise ValueError("x")

    loop.call_soon(bad)  # the traceback must point at this line
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    tb = contexts[0]["source_traceback"]
    assert tb, "debug mode records where the handle was created"
    assert tb[-1].filename == __file__
    assert tb[-1].name == "test_debug_source_traceback"


def test_debug_handle_traceback_of_running_callback(loop, caplog):
    """In debug mode, what a callback reports is logged with where its handle was made."""
    loop.set_debug(True)
    seen = []

    def report():
        seen.append(loop._current_handle)
        loop.call_exception_handler({"message": "reported from a callback"})

    loop.call_soon(report)  # the handle traceback must point at this line
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    assert seen[0] is not None
    assert loop._current_handle is None
    text = caplog.text
    assert "reported from a callback" in text
    assert "handle_traceback: Handle created at (most recent call last):" in text
    assert "test_debug_handle_traceback_of_running_callback" in text


async def _never_awaited():
    pass


def _create_and_drop_coroutine():
    _never_awaited()


def test_never_awaited_coroutine_warning(loop, run):
    async def main():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _create_and_drop_coroutine()
            gc.collect()
        return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]

    messages = run(main())
    assert len(messages) == 1
    assert "was never awaited" in messages[0]


def test_debug_mode_tracks_coroutine_origin(loop, run):
    loop.set_debug(True)
    assert sys.get_coroutine_origin_tracking_depth() == 0

    async def main():
        depth = sys.get_coroutine_origin_tracking_depth()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _create_and_drop_coroutine()
            gc.collect()
        return depth, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]

    depth, messages = run(main())
    assert depth > 0
    assert len(messages) == 1
    assert "was never awaited" in messages[0]
    assert "Coroutine created at" in messages[0]
    assert "_create_and_drop_coroutine" in messages[0]
    # restored once the loop stops
    assert sys.get_coroutine_origin_tracking_depth() == 0


def test_no_coroutine_origin_tracking_without_debug(loop, run):
    loop.set_debug(False)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert run(main()) == 0
