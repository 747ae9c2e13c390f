"""anyio on the loop under test, through its asyncio backend's ``loop_factory`` option."""

import asyncio
import sys
import threading

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
from anyio.abc import SocketAttribute

from ._support import SCENARIO_TIMEOUT, loop_class_name


async def task_group_part(out):
    results = []

    async def worker(i):
        await anyio.sleep(0.01 * (5 - i))
        results.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(worker, i)
    out["task_group"] = results  # by finishing time: reversed start order

    # An exception in one task cancels its siblings and surfaces as an ExceptionGroup.
    cancelled = []

    async def sleeper():
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    async def failer():
        await anyio.sleep(0.01)
        raise ValueError("boom")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            tg.start_soon(failer)
    except BaseExceptionGroup as group:
        out["group"] = [repr(e) for e in group.exceptions]
    out["siblings_cancelled"] = cancelled

    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(10)
    out["move_on_after"] = scope.cancelled_caught


async def stream_part(out):
    send, receive = anyio.create_memory_object_stream[int](max_buffer_size=2)
    got = []

    async def producer():
        async with send:
            for i in range(10):
                await send.send(i)

    async def consumer():
        async with receive:
            async for item in receive:
                got.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        tg.start_soon(consumer)
    out["memory_stream"] = got


async def tcp_part(out):
    async def handle(client: anyio.abc.SocketStream):
        async with client:
            async for chunk in client:
                await client.send(chunk.upper())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"hello anyio")
            reply = b""
            while len(reply) < len(b"hello anyio"):
                reply += await stream.receive()
            out["tcp"] = reply
            payload = bytes(range(256)) * 2048
            await stream.send(payload)
            received = bytearray()
            while len(received) < len(payload):
                received += await stream.receive()
            out["tcp_big"] = bytes(received) == payload.upper()
        tg.cancel_scope.cancel()


async def thread_part(out):
    main_thread = threading.get_ident()

    def in_worker():
        # Back into the event loop from the worker thread.
        loop_name = anyio.from_thread.run(current_loop_name)
        return threading.get_ident() != main_thread, loop_name

    out["to_thread"] = await anyio.to_thread.run_sync(in_worker)
    out["to_thread_many"] = sorted(
        await asyncio.gather(*(anyio.to_thread.run_sync(lambda i=i: i * i) for i in range(10)))
    )


async def current_loop_name():
    return loop_class_name(asyncio.get_running_loop())


async def process_part(out):
    result = await anyio.run_process([sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])"], input=b"abc")
    out["process"] = (result.returncode, result.stdout.strip())


async def main():
    out = {"loop": await current_loop_name()}
    with anyio.fail_after(SCENARIO_TIMEOUT):
        await task_group_part(out)
        await stream_part(out)
        await tcp_part(out)
        await thread_part(out)
        await process_part(out)
    return out


def test_anyio(loop_factory, fd_guard):
    out = anyio.run(main, backend="asyncio", backend_options={"loop_factory": loop_factory})
    expected_loop = loop_class_name(loop_factory.loop_class)
    assert out.pop("loop") == expected_loop
    assert out == {
        "task_group": [4, 3, 2, 1, 0],
        "group": ["ValueError('boom')"],
        "siblings_cancelled": [True],
        "move_on_after": True,
        "memory_stream": list(range(10)),
        "tcp": b"HELLO ANYIO",
        "tcp_big": True,
        "to_thread": (True, expected_loop),
        "to_thread_many": [i * i for i in range(10)],
        "process": (0, b"cba"),
    }
