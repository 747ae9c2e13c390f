"""Futures, tasks, task factories and the high-level asyncio API on the loop."""

import asyncio
import concurrent.futures
import contextvars
import threading

import pytest
from conftest import WAIT

VAR = contextvars.ContextVar("VAR", default="default")


# ---------------------------------------------------------------------------
# futures


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_future_result_and_callbacks(loop, run):
    fut = loop.create_future()
    seen = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    loop.call_soon(fut.set_result, "value")

    async def main():
        return await fut

    assert run(main()) == "value"
    assert seen == ["value"]


def test_future_done_callback_context(loop, run):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "cb ctx")
    seen = []
    fut = loop.create_future()
    fut.add_done_callback(lambda f: seen.append(VAR.get()), context=ctx)
    fut.set_result(None)
    run(asyncio.sleep(0))
    assert seen == ["cb ctx"]


def test_future_exception(loop, run):
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, OSError("bad"))

    async def main():
        await fut

    with pytest.raises(OSError, match="bad"):
        run(main())


def test_wrap_concurrent_future(loop, run):
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        cf = ex.submit(lambda: 99)

        async def main():
            return await asyncio.wrap_future(cf)

        assert run(main()) == 99


# ---------------------------------------------------------------------------
# tasks


def test_create_task(loop, run):
    async def work():
        await asyncio.sleep(0)
        return "result"

    task = loop.create_task(work())
    assert isinstance(task, asyncio.Task)
    assert isinstance(task, asyncio.Future)
    assert task.get_loop() is loop
    assert task.get_name().startswith("Task-")
    assert run(task) == "result"


def test_create_task_name(loop, run):
    async def work():
        return asyncio.current_task().get_name()

    task = loop.create_task(work(), name="my-task")
    assert task.get_name() == "my-task"
    assert "my-task" in repr(task)
    assert run(task) == "my-task"


def test_create_task_context(loop, run):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task ctx")

    async def work():
        seen = VAR.get()
        VAR.set("changed in task")
        return seen

    task = loop.create_task(work(), context=ctx)
    assert run(task) == "task ctx"
    assert ctx[VAR] == "changed in task"
    assert VAR.get() == "default"


def test_create_task_copies_context(loop, run):
    async def child():
        seen = VAR.get()
        VAR.set("child")
        return seen

    async def main():
        VAR.set("parent")
        seen = await loop.create_task(child())
        return seen, VAR.get()

    assert run(main()) == ("parent", "parent")


def test_create_task_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(42)


def test_task_cancel(loop, run):
    started = asyncio.Event()
    events = []

    async def sleeper():
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main():
        task = loop.create_task(sleeper())
        await started.wait()
        assert task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    task = run(main())
    assert task.cancelled()
    assert events == ["cancelled"]


def test_current_task_and_all_tasks(loop, run):
    assert asyncio.current_task(loop) is None

    async def other():
        await asyncio.sleep(3600)

    async def main():
        me = asyncio.current_task()
        assert me is not None
        assert asyncio.current_task(loop) is me
        t = loop.create_task(other())
        await asyncio.sleep(0)
        tasks = asyncio.all_tasks()
        assert me in tasks and t in tasks
        assert asyncio.all_tasks(loop) == tasks
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return me

    me = run(main())
    assert me.done()
    assert asyncio.current_task(loop) is None
    assert asyncio.all_tasks(loop) == set()


def test_current_task_in_plain_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.current_task()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [None]


def test_run_coroutine_threadsafe(loop):
    async def add(a, b):
        await asyncio.sleep(0)
        return a + b

    results = []

    def in_thread():
        fut = asyncio.run_coroutine_threadsafe(add(1, 2), loop)
        results.append(fut.result(WAIT))
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=in_thread)
    loop.call_soon(t.start)
    loop.call_later(WAIT, loop.stop)
    try:
        loop.run_forever()
    finally:
        t.join(WAIT)
    assert results == [3]


# ---------------------------------------------------------------------------
# task factories


def test_task_factory(loop, run):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def work():
        return 1

    task = loop.create_task(work())
    assert isinstance(task, asyncio.Task)
    assert run(task) == 1
    assert calls[0][0] is loop
    assert "context" not in calls[0][1]

    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "factory ctx")

    async def read_var():
        return VAR.get()

    task = loop.create_task(read_var(), context=ctx)
    assert calls[-1][1].get("context") is ctx
    assert run(task) == "factory ctx"

    task = loop.create_task(work(), name="named")
    assert task.get_name() == "named"
    run(task)

    # tasks created by asyncio helpers go through the factory too
    n = len(calls)

    async def gather():
        return await asyncio.gather(work(), work())

    assert run(gather()) == [1, 1]
    assert len(calls) >= n + 2

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    n = len(calls)
    run(loop.create_task(work()))
    assert len(calls) == n


def test_task_factory_custom_task_class(loop, run):
    class MyTask(asyncio.Task):
        pass

    loop.set_task_factory(lambda lp, coro, **kw: MyTask(coro, loop=lp, **kw))

    async def main():
        return type(asyncio.current_task())

    assert run(loop.create_task(main())) is MyTask


def test_task_factory_not_callable(loop):
    with pytest.raises(TypeError):
        loop.set_task_factory(42)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(
    not hasattr(asyncio, "eager_task_factory"),
    reason="asyncio.eager_task_factory needs Python 3.12",
)
def test_eager_task_factory(loop, run):
    order = []

    async def eager():
        order.append("eager body")
        return "eager result"

    async def main():
        task = loop.create_task(eager())
        order.append("after create_task")
        # the coroutine completed synchronously, before create_task returned
        assert task.done()
        return await task

    loop.set_task_factory(asyncio.eager_task_factory)
    assert run(main()) == "eager result"
    assert order == ["eager body", "after create_task"]


@pytest.mark.skipif(
    not hasattr(asyncio, "eager_task_factory"),
    reason="asyncio.eager_task_factory needs Python 3.12",
)
def test_eager_task_that_blocks(loop, run):
    async def blocks():
        await asyncio.sleep(0)
        return asyncio.current_task()

    async def main():
        task = loop.create_task(blocks())
        assert not task.done()
        return task, await task

    loop.set_task_factory(asyncio.eager_task_factory)
    task, current = run(main())
    assert current is task


# ---------------------------------------------------------------------------
# high-level primitives


def test_sleep(loop, run):
    async def main():
        t0 = loop.time()
        result = await asyncio.sleep(0.02, result="slept")
        return result, loop.time() - t0

    result, elapsed = run(main())
    assert result == "slept"
    assert elapsed >= 0.02 - 0.002


def test_gather(loop, run):
    async def value(x, delay):
        await asyncio.sleep(delay)
        return x

    async def fail():
        await asyncio.sleep(0)
        raise ValueError("gather")

    async def main():
        res = await asyncio.gather(value(1, 0.02), value(2, 0.01), value(3, 0))
        exc = await asyncio.gather(fail(), value(4, 0), return_exceptions=True)
        with pytest.raises(ValueError, match="gather"):
            await asyncio.gather(fail(), value(5, 0))
        return res, exc

    res, exc = run(main())
    assert res == [1, 2, 3]
    assert isinstance(exc[0], ValueError) and exc[1] == 4


def test_wait_for(loop, run):
    async def main():
        assert await asyncio.wait_for(asyncio.sleep(0, "fast"), WAIT) == "fast"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), 0.01)
        return True

    assert run(main())


def test_wait(loop, run):
    async def main():
        fast = loop.create_task(asyncio.sleep(0, "fast"))
        slow = loop.create_task(asyncio.sleep(3600))
        done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {fast} and pending == {slow}
        slow.cancel()
        done, pending = await asyncio.wait({slow}, timeout=WAIT)
        assert done == {slow} and slow.cancelled()

    run(main())


def test_as_completed(loop, run):
    async def value(x, delay):
        await asyncio.sleep(delay)
        return x

    async def main():
        out = []
        for fut in asyncio.as_completed([value("b", 0.02), value("a", 0.0)]):
            out.append(await fut)
        return out

    assert run(main()) == ["a", "b"]


def test_timeout(loop, run):
    async def main():
        async with asyncio.timeout(WAIT):
            await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01) as cm:
                await asyncio.sleep(3600)
        assert cm.expired()
        async with asyncio.timeout_at(loop.time() + WAIT):
            await asyncio.sleep(0)
        return True

    assert run(main())


def test_taskgroup(loop, run):
    async def value(x):
        await asyncio.sleep(0)
        return x

    async def fail():
        await asyncio.sleep(0)
        raise ValueError("tg")

    async def main():
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(value(1))
            t2 = tg.create_task(value(2))
        assert (t1.result(), t2.result()) == (1, 2)

        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                slow = tg.create_task(asyncio.sleep(3600))
                tg.create_task(fail())
        assert slow.cancelled()
        assert [type(e) for e in info.value.exceptions] == [ValueError]
        return True

    assert run(main())


def test_queue(loop, run):
    async def producer(q):
        for i in range(20):
            await q.put(i)
        await q.put(None)

    async def consumer(q):
        items = []
        while (item := await q.get()) is not None:
            items.append(item)
            q.task_done()
        q.task_done()
        return items

    async def main():
        q = asyncio.Queue(maxsize=3)
        prod = loop.create_task(producer(q))
        items = await consumer(q)
        await prod
        await q.join()
        with pytest.raises(asyncio.QueueEmpty):
            q.get_nowait()
        return items

    assert run(main()) == list(range(20))


def test_lock(loop, run):
    async def main():
        lock = asyncio.Lock()
        order = []

        async def worker(i):
            async with lock:
                order.append(("in", i))
                await asyncio.sleep(0)
                order.append(("out", i))

        await asyncio.gather(*(worker(i) for i in range(3)))
        assert not lock.locked()
        return order

    order = run(main())
    # never interleaved
    for k in range(0, len(order), 2):
        assert order[k][0] == "in" and order[k + 1] == ("out", order[k][1])


def test_event(loop, run):
    async def main():
        ev = asyncio.Event()
        waiter = loop.create_task(ev.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        loop.call_soon(ev.set)
        assert await waiter is True
        assert ev.is_set()

    run(main())


def test_semaphore(loop, run):
    async def main():
        sem = asyncio.Semaphore(2)
        active = 0
        peak = 0

        async def worker():
            nonlocal active, peak
            async with sem:
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.001)
                active -= 1

        await asyncio.gather(*(worker() for _ in range(6)))
        return peak

    assert run(main()) == 2


def test_bounded_semaphore_over_release(loop, run):
    async def main():
        sem = asyncio.BoundedSemaphore(1)
        async with sem:
            pass
        with pytest.raises(ValueError):
            sem.release()

    run(main())


def test_condition(loop, run):
    async def main():
        cond = asyncio.Condition()
        state = []

        async def waiter():
            async with cond:
                await cond.wait_for(lambda: state)
                return state[0]

        task = loop.create_task(waiter())
        await asyncio.sleep(0)
        async with cond:
            state.append("ready")
            cond.notify_all()
        return await task

    assert run(main()) == "ready"


def test_shield(loop, run):
    async def main():
        inner = loop.create_task(asyncio.sleep(0.01, "inner"))
        outer = asyncio.ensure_future(asyncio.shield(inner))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner

    assert run(main()) == "inner"


def test_uncancel_counts(loop, run):
    async def main():
        task = asyncio.current_task()
        task.cancel()
        assert task.cancelling() == 1
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            assert task.uncancel() == 0
        return "survived"

    assert run(main()) == "survived"
