"""run_in_executor and the default executor."""

import asyncio
import concurrent.futures
import functools
import multiprocessing
import threading

import pytest
from conftest import WAIT


def test_run_in_default_executor(loop, run):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    async def main():
        fut = loop.run_in_executor(None, work, 2, 3)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        return await fut

    result, tid = run(main())
    assert result == 5
    assert tid != main_thread


def test_run_in_executor_keyword_args_via_partial(loop, run):
    def work(a, *, b):
        return a * b

    assert run(loop.run_in_executor(None, functools.partial(work, 6, b=7))) == 42


def test_run_in_executor_exception(loop, run):
    def fail():
        raise LookupError("from thread")

    with pytest.raises(LookupError, match="from thread"):
        run(loop.run_in_executor(None, fail))


def test_run_in_custom_executor(loop, run):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom") as ex:

        def work():
            return threading.current_thread().name

        name = run(loop.run_in_executor(ex, work))
    assert name.startswith("custom")


def test_custom_executor_not_shut_down_by_close(loop, run):
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert run(loop.run_in_executor(ex, lambda: 1)) == 1
        loop.close()
        assert ex.submit(lambda: 2).result(WAIT) == 2


def test_many_concurrent_calls(loop, run):
    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, pow, i, 2) for i in range(50)))

    assert run(main()) == [i * i for i in range(50)]


def test_set_default_executor(loop, run):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mydefault")
    try:
        loop.set_default_executor(ex)
        name = run(loop.run_in_executor(None, lambda: threading.current_thread().name))
        assert name.startswith("mydefault")
        loop.close()
        # close() shuts the default executor down
        with pytest.raises(RuntimeError):
            ex.submit(print)
    finally:
        ex.shutdown(wait=True)


def _process_pool():
    # The first pool of a process starts multiprocessing's resource tracker (3.14's semaphores
    # register with it), whose pipe stays open for the rest of the run: started before the test's
    # file descriptors are counted, it is not the test's. spawn, because 3.14's default start
    # method on Linux, forkserver, likewise keeps a server process and a pipe to it.
    return concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker():
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.mark.parametrize(
    "make_executor",
    [
        pytest.param(_process_pool, id="process-pool"),
        pytest.param(lambda: object(), id="object"),
    ],
)
def test_set_default_executor_rejects_non_thread_pool(loop, make_executor):
    # Deprecated in 3.8, a TypeError since Python 3.11
    ex = make_executor()
    try:
        with pytest.raises(TypeError, match="ThreadPoolExecutor"):
            loop.set_default_executor(ex)
    finally:
        if isinstance(ex, concurrent.futures.Executor):
            ex.shutdown(wait=True)


def test_close_shuts_down_default_executor(loop, run):
    threads = []
    run(loop.run_in_executor(None, lambda: threads.append(threading.current_thread())))
    loop.close()
    threads[0].join(WAIT)
    assert not threads[0].is_alive()


def test_cancel_pending_executor_call(loop, run):
    release = threading.Event()
    ran = []

    def block():
        release.wait(WAIT)
        return "blocked"

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            first = loop.run_in_executor(ex, block)
            second = loop.run_in_executor(ex, ran.append, "second")
            second.cancel()
            await asyncio.sleep(0)  # let the cancellation reach the executor
            release.set()
            result = await first
        return result, second.cancelled()

    try:
        assert run(main()) == ("blocked", True)
    finally:
        release.set()
    assert ran == []


async def _coro_fn():
    pass


def test_run_in_executor_rejects_coroutine_function_in_debug(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError, match="coroutines cannot be used with run_in_executor"):
        loop.run_in_executor(None, _coro_fn)


def test_run_in_executor_after_shutdown_default_executor(loop, run):
    run(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, print)
    # an explicit executor is still fine
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert run(loop.run_in_executor(ex, lambda: "explicit")) == "explicit"
