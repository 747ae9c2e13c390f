"""asyncio's streams (``open_connection``, ``start_server``, ``StreamReader``) on both loops.

ferroloop feeds asyncio's stock ``StreamReader`` without calling ``data_received`` when the
protocol and reader are exactly the stock classes with their stock methods (see
``crates/ferroloop-py/src/transports/streams.rs``). These tests hold it to asyncio's behaviour: the
reader's state after each delivery, the limit's pause and resume, errors, cancelled reads; and
they check that a subclass, a patched method (on the instance or on the class) or a replaced
buffer gets asyncio's own code, as on stock asyncio.
"""

import asyncio
import socket
import sys

import pytest
from test_tls import Certs


async def pair(limit=2**16):
    """A stream reader and writer on one end of a socket pair, and the raw other end."""
    a, b = socket.socketpair()
    b.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=a, limit=limit)
    return reader, writer, b


async def settle(n=5):
    for _ in range(n):
        await asyncio.sleep(0)


async def until(predicate, timeout=5.0):
    """Waits (by yielding to the loop) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.001)


def close(writer, peer):
    writer.close()
    peer.close()


# ---------------------------------------------------------------------------
# reading what arrives in odd pieces


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, 65537])
def test_reads_across_arbitrary_packet_boundaries(loop, run, chunk):
    lines = [b"x" * n + b"\n" for n in (0, 1, 5, 100, 4000, 70000)]
    blob = b"".join(lines) + b"AB--CD--tail"

    async def main():
        reader, writer, peer = await pair(limit=2**20)

        async def feed():
            for i in range(0, len(blob), chunk):
                await loop.sock_sendall(peer, blob[i : i + chunk])
                if i % (chunk * 8) == 0:
                    await asyncio.sleep(0)
            peer.shutdown(socket.SHUT_WR)

        sender = asyncio.ensure_future(feed())
        got = [await reader.readline() for _ in lines]
        assert got == lines
        assert await reader.readuntil(b"--") == b"AB--"
        assert await reader.readexactly(2) == b"CD"
        assert await reader.read(1) == b"-"
        assert await reader.read() == b"-tail"
        assert reader.at_eof()
        await sender
        close(writer, peer)

    run(main())


def test_reader_state_after_each_delivery(loop, run):
    """What a program can see of the reader: its buffer, its waiter, its repr."""

    async def main():
        reader, writer, peer = await pair()
        peer.send(b"abc")
        await until(lambda: len(reader._buffer) == 3)
        assert bytes(reader._buffer) == b"abc"
        assert reader._waiter is None
        assert "3 bytes" in repr(reader)
        read = asyncio.ensure_future(reader.read(100))
        assert await read == b"abc"
        read = asyncio.ensure_future(reader.readexactly(4))
        await settle()
        waiter = reader._waiter
        assert waiter is not None and not waiter.done()
        peer.send(b"de")
        await until(waiter.done)
        assert waiter.result() is None
        # The read took the two bytes' wake-up and waits again, on a new waiter.
        await until(lambda: reader._waiter is not None and reader._waiter is not waiter)
        assert not read.done()
        peer.send(b"fg")
        assert await read == b"defg"
        close(writer, peer)

    run(main())


# ---------------------------------------------------------------------------
# the limit: reading paused above twice the limit, resumed at or below it


def test_limit_pauses_and_resumes_reading(loop, run):
    limit = 1000

    async def main():
        reader, writer, peer = await pair(limit=limit)
        transport = writer.transport
        peer.send(b"x" * (2 * limit))
        await until(lambda: len(reader._buffer) == 2 * limit)
        await settle()
        assert not reader._paused and transport.is_reading()
        peer.send(b"y")
        await until(lambda: reader._paused)
        assert not transport.is_reading()
        assert len(reader._buffer) == 2 * limit + 1
        # Reading down to the limit resumes the transport, not before.
        await reader.readexactly(limit)
        assert reader._paused and not transport.is_reading()
        await reader.readexactly(1)
        assert not reader._paused and transport.is_reading()
        assert await reader.readexactly(limit) == b"x" * (limit - 1) + b"y"
        close(writer, peer)

    run(main())


def test_line_over_the_limit(loop, run):
    async def main():
        reader, writer, peer = await pair(limit=10)
        peer.send(b"0123456789ABCDEF\nok\n")
        with pytest.raises(ValueError, match="chunk"):
            await reader.readline()
        assert await reader.readline() == b"ok\n"
        peer.send(b"z" * 25)
        with pytest.raises(asyncio.LimitOverrunError) as info:
            await reader.readuntil(b"!")
        assert info.value.consumed > 10
        close(writer, peer)

    run(main())


def test_transport_that_cannot_pause(loop, run):
    """asyncio forgets a reader's transport whose pause_reading() raises NotImplementedError."""

    class Unpausable:
        def pause_reading(self):
            raise NotImplementedError

        def resume_reading(self):
            raise AssertionError("never paused")

    async def main():
        reader, writer, peer = await pair(limit=10)
        reader._transport = Unpausable()
        peer.send(b"x" * 21)
        await until(lambda: len(reader._buffer) == 21)
        assert reader._transport is None and not reader._paused
        assert writer.transport.is_reading()
        close(writer, peer)

    run(main())


# ---------------------------------------------------------------------------
# cancellation, errors, end of file


def test_cancelled_read_loses_no_bytes(loop, run):
    async def main():
        reader, writer, peer = await pair()
        read = asyncio.ensure_future(reader.readexactly(5))
        await settle()
        waiter = reader._waiter
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        assert waiter.cancelled() and reader._waiter is None
        peer.send(b"hello")
        await until(lambda: len(reader._buffer) == 5)
        assert await reader.readexactly(5) == b"hello"
        close(writer, peer)

    run(main())


def test_waiter_cancelled_directly_before_data(loop, run):
    """A waiter cancelled behind the reader's back is dropped, not given a result."""

    async def main():
        reader, writer, peer = await pair()
        read = asyncio.ensure_future(reader.read(10))
        await settle()
        reader._waiter.cancel()
        peer.send(b"data")
        with pytest.raises(asyncio.CancelledError):
            await read
        assert reader._waiter is None
        assert bytes(reader._buffer) == b"data"
        close(writer, peer)

    run(main())


@pytest.mark.parametrize("future_class", [asyncio.Future, asyncio.futures._PyFuture])
def test_waiter_done_behind_the_readers_back(loop, run, future_class):
    """A waiter given a result behind the reader's back makes the wake-up fail as in asyncio
    (set_result on a done future: InvalidStateError from data_received), whether it is asyncio's
    C future, which ferroloop wakes without asking cancelled() first, or another kind."""

    async def main():
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        reader, writer, peer = await pair()
        read = asyncio.ensure_future(reader.read(10))
        await settle()
        # The read awaits the waiter it made; the reader is handed another, already done.
        reader._waiter = future_class(loop=loop)
        reader._waiter.set_result(None)
        peer.send(b"data")
        await until(lambda: contexts)
        ctx = contexts[0]
        assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
        assert type(ctx["exception"]) is asyncio.InvalidStateError
        assert bytes(reader._buffer) == b"data"
        read.cancel()
        await asyncio.gather(read, return_exceptions=True)
        close(writer, peer)

    run(main())


def test_reads_wait_with_the_loops_create_future(loop_factory, run):
    """A loop class that replaces create_future makes every read's waiter, on both loops."""
    made = []

    class Loop(loop_factory.loop_class):
        def create_future(self):
            future = super().create_future()
            made.append(future)
            return future

    async def main():
        reader, writer, peer = await pair()
        for op in (lambda: reader.read(3), lambda: reader.readexactly(3), lambda: reader.readline()):
            before = len(made)
            pending = asyncio.ensure_future(op())
            await settle()
            assert len(made) == before + 1 and reader._waiter is made[-1]
            peer.send(b"ab\n")
            assert await pending == b"ab\n"
        close(writer, peer)

    lp = Loop()
    try:
        lp.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        lp.close()


def test_data_after_feed_eof_is_a_protocol_error(loop, run):
    """``feed_data`` after ``feed_eof`` fails its assertion inside data_received: the connection
    is closed and the exception handler told, as with asyncio."""

    async def main():
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        reader, writer, peer = await pair()
        reader.feed_eof()
        peer.send(b"late")
        await until(lambda: contexts)
        [ctx] = contexts
        assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
        assert isinstance(ctx["exception"], AssertionError)
        assert ctx["protocol"] is writer._protocol
        await until(lambda: writer.transport.is_closing())
        assert bytes(reader._buffer) == b""
        close(writer, peer)

    run(main())


def test_exported_buffer_is_a_protocol_error(loop, run):
    """A memoryview held on the reader's buffer makes the append fail with BufferError."""

    async def main():
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        reader, writer, peer = await pair()
        view = memoryview(reader._buffer)
        peer.send(b"x")
        await until(lambda: contexts)
        view.release()
        [ctx] = contexts
        assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
        assert type(ctx["exception"]) is BufferError
        assert str(ctx["exception"]) == "Existing exports of data: object cannot be re-sized"
        close(writer, peer)

    run(main())


def test_reader_gone(loop, run):
    """A protocol whose reader was collected drops what arrives."""

    async def main():
        a, b = socket.socketpair()
        protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(), loop=loop)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, a)
        assert protocol._stream_reader is None
        b.send(b"nobody reads this")
        await settle(10)
        assert not transport.is_closing()
        transport.close()
        b.close()

    run(main())


def test_eof_and_connection_reset(loop, run):
    async def main():
        reader, writer, peer = await pair()
        peer.send(b"last words")
        peer.shutdown(socket.SHUT_WR)
        assert await reader.read() == b"last words"
        assert reader.at_eof()
        close(writer, peer)

        # A reset (TCP; a socket pair's peer only ever ends with EOF) fails the waiting read.
        with socket.create_server(("127.0.0.1", 0)) as listener:
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            peer, _ = listener.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.send(b"partial")
        await until(lambda: len(reader._buffer) == 7)
        peer.close()
        with pytest.raises(ConnectionResetError):
            await reader.readexactly(100)
        assert bytes(reader._buffer) == b"partial"
        assert isinstance(reader.exception(), ConnectionResetError)
        writer.close()

    run(main())


# ---------------------------------------------------------------------------
# what is not the stock code gets asyncio's own path


def test_reader_subclass_gets_its_own_feed_data(loop, run):
    seen = []

    class Reader(asyncio.StreamReader):
        def feed_data(self, data):
            seen.append(bytes(data))
            super().feed_data(data.upper())

    async def main():
        a, b = socket.socketpair()
        reader = Reader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, a)
        b.send(b"abc")
        assert await reader.read(3) == b"ABC"
        assert seen == [b"abc"]
        transport.close()
        b.close()

    run(main())


def test_protocol_subclass_gets_its_own_data_received(loop, run):
    seen = []

    class Protocol(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(data)
            super().data_received(data[::-1])

    async def main():
        a, b = socket.socketpair()
        reader = asyncio.StreamReader(loop=loop)
        transport, _ = await loop.connect_accepted_socket(lambda: Protocol(reader, loop=loop), a)
        b.send(b"abc")
        assert await reader.read(3) == b"cba"
        assert seen == [b"abc"]
        transport.close()
        b.close()

    run(main())


@pytest.mark.parametrize("method", ["feed_data", "_wakeup_waiter", "read", "_maybe_resume_transport"])
def test_method_patched_on_the_reader(loop, run, method):
    calls = []

    async def main():
        reader, writer, peer = await pair()
        original = getattr(reader, method)

        def patched(*args):
            calls.append(args)
            return original(*args)

        setattr(reader, method, patched)
        peer.send(b"xyz")
        assert await reader.read(3) == b"xyz"
        assert calls
        close(writer, peer)

    run(main())


def test_data_received_patched_on_the_protocol(loop, run):
    async def main():
        reader, writer, peer = await pair()
        protocol = writer._protocol
        protocol.data_received = lambda data: reader.feed_data(b"<" + data + b">")
        peer.send(b"xyz")
        assert await reader.read(5) == b"<xyz>"
        close(writer, peer)

    run(main())


@pytest.mark.parametrize(
    "cls, method",
    [("StreamReader", "feed_data"), ("StreamReader", "_wakeup_waiter"), ("StreamReaderProtocol", "data_received")],
)
def test_method_patched_on_the_class(loop, run, monkeypatch, cls, method):
    calls = []
    klass = getattr(asyncio, cls)
    original = getattr(klass, method)

    def patched(self, *args):
        calls.append(args)
        return original(self, *args)

    async def main():
        reader, writer, peer = await pair()
        peer.send(b"one")
        assert await reader.read(3) == b"one"
        assert not calls
        # Patched after the connection is made, and then undone: each delivery obeys the class
        # as it is at that moment.
        monkeypatch.setattr(klass, method, patched)
        peer.send(b"two")
        assert await reader.read(3) == b"two"
        assert calls
        monkeypatch.undo()
        calls.clear()
        peer.send(b"three")
        assert await reader.read(5) == b"three"
        assert not calls
        close(writer, peer)

    run(main())


def test_replaced_buffer(loop, run):
    class Buffer(bytearray):
        def extend(self, data):
            super().extend(data * 2)

    async def main():
        reader, writer, peer = await pair()
        reader._buffer = Buffer()
        peer.send(b"ab")
        assert await reader.readexactly(4) == b"abab"
        close(writer, peer)

    run(main())


# ---------------------------------------------------------------------------
# TLS and pipes deliver the same way


def test_tls_streams_limit_and_lines(loop, run):
    certs = Certs()
    limit = 5000

    async def main():
        served = loop.create_future()

        async def handle(reader, writer):
            writer.write(b"x" * (3 * limit) + b"\nline two\n")
            await writer.drain()
            served.set_result(writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=certs.server_context())
        host, port = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(
            host, port, ssl=certs.client_context(), server_hostname="localhost", limit=limit
        )
        server_writer = await served
        await until(lambda: reader._paused)
        assert len(reader._buffer) > 2 * limit
        with pytest.raises(ValueError):
            await reader.readline()
        assert await reader.readline() == b"line two\n"
        assert not reader._paused
        writer.close()
        server_writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


def test_read_pipe_into_stream_reader(loop, run):
    import os

    async def main():
        rfd, wfd = os.pipe()
        reader = asyncio.StreamReader(loop=loop, limit=10)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(rfd, "rb", 0)
        )
        os.write(wfd, b"first\n" + b"y" * 30)
        assert await reader.readline() == b"first\n"
        await until(lambda: reader._paused)
        assert not transport.is_reading()
        assert await reader.readexactly(30) == b"y" * 30
        assert transport.is_reading()
        os.close(wfd)
        assert await reader.read() == b""
        transport.close()

    run(main())


# ---------------------------------------------------------------------------
# the reader a program gets: asyncio's in every way a program checks


def test_reader_is_asyncios(loop, run):
    async def main():
        reader, writer, peer = await pair()
        assert isinstance(reader, asyncio.StreamReader)
        assert type(reader).__name__ == "StreamReader"
        assert repr(reader).startswith("<StreamReader ")
        assert isinstance(writer, asyncio.StreamWriter)
        # Every read is a coroutine: create_task takes it.
        peer.send(b"abc\ndef")
        for make in (lambda: reader.readline(), lambda: reader.readexactly(2), lambda: reader.read(1)):
            coro = make()
            assert asyncio.iscoroutine(coro)
            await asyncio.create_task(coro)
        peer.send(b"gh")
        assert await reader.readuntil(b"h") == b"gh"
        close(writer, peer)

    run(main())


@pytest.mark.parametrize("op", ["read", "readexactly", "readuntil", "readline"])
def test_second_reader_while_one_waits(loop, run, op):
    calls = {
        "read": lambda r: r.read(5),
        "readexactly": lambda r: r.readexactly(5),
        "readuntil": lambda r: r.readuntil(b"!"),
        "readline": lambda r: r.readline(),
    }

    async def main():
        reader, writer, peer = await pair()
        first = asyncio.ensure_future(reader.read(5))
        await settle()
        with pytest.raises(RuntimeError) as info:
            await calls[op](reader)
        name = "readuntil" if op == "readline" else op
        assert str(info.value) == f"{name}() called while another coroutine is already waiting for incoming data"
        peer.send(b"12345")
        assert await first == b"12345"
        close(writer, peer)

    run(main())


@pytest.mark.parametrize("op", ["read", "readexactly", "readuntil"])
def test_cancelled_wait_of_each_read_loses_no_bytes(loop, run, op):
    calls = {
        "read": lambda r: r.read(100),
        "readexactly": lambda r: r.readexactly(6),
        "readuntil": lambda r: r.readuntil(b"!"),
    }

    async def main():
        reader, writer, peer = await pair()
        peer.send(b"ab")
        await until(lambda: len(reader._buffer) == 2)
        if op == "read":
            reader._buffer.clear()
        task = asyncio.ensure_future(calls[op](reader))
        await settle()
        assert reader._waiter is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reader._waiter is None
        peer.send(b"cd!efgh")
        assert await reader.readexactly(9 if op != "read" else 7) == (b"abcd!efgh" if op != "read" else b"cd!efgh")
        close(writer, peer)

    run(main())


def test_read_errors_and_odd_arguments(loop, run):
    async def main():
        reader, writer, peer = await pair()
        peer.send(b"data")
        await until(lambda: len(reader._buffer) == 4)
        with pytest.raises(ValueError, match="less than zero"):
            await reader.readexactly(-1)
        with pytest.raises(ValueError, match="one-byte"):
            await reader.readuntil(b"")
        with pytest.raises(TypeError):
            await reader.read(1.5)
        assert await reader.read(0) == b""
        assert await reader.readexactly(0) == b""
        assert await reader.readuntil(bytearray(b"t")) == b"dat"
        peer.send(b"xyz\n")
        await until(lambda: len(reader._buffer) == 5)
        assert await reader.readuntil(separator=b"y") == b"axy"
        assert await reader.read(n=1) == b"z"
        # Wrong calls fail when made, as a coroutine function's do.
        for call in (
            lambda: reader.readline(1),
            lambda: reader.readuntil(b"a", 1),
            lambda: reader.readexactly(),
            lambda: reader.read(m=1),
            lambda: reader.read(1, 2),
        ):
            with pytest.raises(TypeError):
                call()
        reader.set_exception(ConnectionResetError("gone"))
        for coro in (reader.read(1), reader.readexactly(1), reader.readuntil(b"a"), reader.readline()):
            with pytest.raises(ConnectionResetError, match="gone"):
                await coro
        close(writer, peer)

    run(main())


def test_eof_while_reading(loop, run):
    async def main():
        reader, writer, peer = await pair(limit=8)
        peer.send(b"abcdef")
        await until(lambda: len(reader._buffer) == 6)
        exactly = asyncio.ensure_future(reader.readexactly(10))
        await settle()
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await exactly
        assert (info.value.partial, info.value.expected) == (b"abcdef", 10)
        close(writer, peer)

        reader, writer, peer = await pair(limit=8)
        peer.send(b"ab-c")
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readuntil(b"--")
        assert (info.value.partial, info.value.expected) == (b"ab-c", None)
        assert await reader.read(5) == b""
        assert await reader.readline() == b""
        assert reader.at_eof()
        close(writer, peer)

    run(main())


def test_debug_mode_reader(loop, run):
    """A reader made in debug mode keeps a source traceback; it reads the same."""

    async def main():
        loop.set_debug(True)
        reader, writer, peer = await pair()
        assert reader._source_traceback
        peer.send(b"line\nrest")
        assert await reader.readline() == b"line\n"
        assert await reader.read(2) == b"re"
        close(writer, peer)

    run(main())


@pytest.mark.parametrize(
    "method", ["read", "readexactly", "readuntil", "readline", "_maybe_resume_transport", "_wait_for_data"]
)
def test_read_method_patched_on_the_class(loop, run, monkeypatch, method):
    calls = []
    original = getattr(asyncio.StreamReader, method)

    def patched(self, *args):
        calls.append(args)
        return original(self, *args)

    async def main():
        reader, writer, peer = await pair()
        monkeypatch.setattr(asyncio.StreamReader, method, patched)
        peer.send(b"one\n")
        await until(lambda: len(reader._buffer) == 4)
        if method == "read":
            assert await reader.read(4) == b"one\n"
        elif method == "readexactly":
            assert await reader.readexactly(4) == b"one\n"
        elif method in ("readuntil", "readline"):
            assert await reader.readline() == b"one\n"
        else:
            read = asyncio.ensure_future(reader.readexactly(6))
            await settle()
            peer.send(b"tw")
            assert await read == b"one\ntw"
        assert calls
        monkeypatch.undo()
        close(writer, peer)

    run(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="readuntil() takes a tuple of separators from 3.13")
def test_readuntil_several_separators(loop, run):
    async def main():
        reader, writer, peer = await pair(limit=8)
        peer.send(b"ab\r\ncd\nef")
        assert await reader.readuntil((b"\n", b"\r\n")) == b"ab\r\n"
        assert await reader.readuntil((b"\r\n", b"\n")) == b"cd\n"
        read = asyncio.ensure_future(reader.readuntil((b"XY", b"Z")))
        await settle()
        peer.send(b"gX")
        await settle()
        assert not read.done()
        peer.send(b"YZ")
        assert await read == b"efgXY"
        with pytest.raises(ValueError, match="at least one element"):
            await reader.readuntil(())
        close(writer, peer)

    run(main())


def test_readline_on_errors_set_on_the_reader(loop, run):
    """readline() answers the partial line of an IncompleteReadError, whatever raised it."""

    async def main():
        reader, writer, peer = await pair(limit=8)
        reader.set_exception(asyncio.IncompleteReadError(b"part", 10))
        assert await reader.readline() == b"part"
        reader._exception = asyncio.LimitOverrunError("too long", 2)
        reader._buffer.extend(b"ab\ncd")
        with pytest.raises(ValueError, match="^too long$"):
            await reader.readline()
        assert bytes(reader._buffer) == b"cd"
        reader._exception = None
        peer.send(b"xyz\n")
        assert await reader.readline() == b"cdxyz\n"
        close(writer, peer)

    run(main())


def test_stock_reader_gets_ferroloops_reads(loop_factory, loop, run):
    """On ferroloop, the stock reader of open_connection gets ferroloop's reads (a guard against
    the fast path silently never applying, say after a new CPython changes StreamReader's
    attributes); a customised one keeps asyncio's class."""
    if loop_factory.name == "asyncio":
        pytest.skip("ferroloop's own reader class: nothing to check on asyncio")

    async def main():
        reader, writer, peer = await pair()
        assert type(reader).__module__ == "ferroloop._streams"
        close(writer, peer)
        loop.set_debug(True)
        reader, writer, peer = await pair()
        assert type(reader).__module__ == "ferroloop._streams"
        close(writer, peer)
        a, b = socket.socketpair()
        custom = asyncio.StreamReader(loop=loop)
        custom.feed_data = custom.feed_data
        transport, _ = await loop.connect_accepted_socket(lambda: asyncio.StreamReaderProtocol(custom, loop=loop), a)
        assert type(custom) is asyncio.StreamReader
        transport.close()
        b.close()

    run(main())


# ---------------------------------------------------------------------------
# what read(), readexactly() and drain() return: awaitables that behave as asyncio's coroutines
# (on ferroloop, native ones; see crates/ferroloop-py/src/transports/streams/op.rs)


async def served():
    """A ``start_server`` connection: the server's reader and writer (the handler's, which
    ferroloop gives its own classes), the client's, and a function that closes it all."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()

    async def handle(reader, writer):
        got.set_result((reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.open_connection("127.0.0.1", port)
    ours = await got

    async def end():
        for writer in (client[1], ours[1]):
            writer.close()
        server.close()
        await server.wait_closed()

    return ours, client, end


def test_server_reads_and_drain_are_coroutines_to_asyncio(loop, run):
    async def main():
        (reader, writer), (_, cwriter), end = await served()
        assert isinstance(writer, asyncio.StreamWriter)
        assert repr(writer).startswith("<StreamWriter ")
        cwriter.write(b"abcdxy\nz:ef")
        for make in (
            lambda: reader.read(2),
            lambda: reader.readexactly(2),
            writer.drain,
            reader.readline,
            lambda: reader.readuntil(b":"),
        ):
            awaitable = make()
            assert asyncio.iscoroutine(awaitable)
            await asyncio.create_task(awaitable)
        assert await asyncio.gather(reader.read(1), writer.drain()) == [b"e", None]
        assert await asyncio.ensure_future(reader.read(1)) == b"f"
        with pytest.raises(TimeoutError if sys.version_info >= (3, 11) else asyncio.TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.05)
        cwriter.write(b"ghij")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ghij"
        await end()

    run(main())


def test_operations_never_awaited_warn(loop, run):
    import gc
    import warnings

    async def main():
        (reader, writer), _, end = await served()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader.read(1)
            reader.readexactly(1)
            reader.readuntil(b"x")
            reader.readline()
            writer.drain()
            gc.collect()
        messages = sorted(str(w.message) for w in caught if w.category is RuntimeWarning)
        assert messages == [
            f"coroutine 'StreamReader.{name}' was never awaited"
            for name in ("read", "readexactly", "readline", "readuntil")
        ] + ["coroutine 'StreamWriter.drain' was never awaited"]
        await end()

    run(main())


def test_read_driven_by_hand(loop, run):
    """send, throw and close, as a program (or a framework) driving the coroutine itself sees
    them: the waiter yielded, StopIteration with the data, the errors of a coroutine."""

    async def main():
        (reader, writer), (_, cwriter), end = await served()
        read = reader.read(3)
        with pytest.raises(TypeError, match="can't send non-None value to a just-started coroutine"):
            read.send(1)
        read.close()
        read = reader.read(3)
        waiter = read.send(None)
        assert isinstance(waiter, asyncio.Future)
        assert waiter is reader._waiter and waiter._asyncio_future_blocking
        with pytest.raises(ValueError, match="boom"):
            read.throw(ValueError("boom"))
        assert reader._waiter is None
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            read.send(None)
        read.close()
        # Closed while it waits: the waiter is forgotten, nothing is read.
        read = reader.readexactly(2)
        read.send(None)
        assert reader._waiter is not None
        read.close()
        assert reader._waiter is None
        cwriter.write(b"xyz")
        await until(lambda: len(reader._buffer) == 3)
        read = reader.read(2)
        with pytest.raises(StopIteration) as info:
            read.send(None)
        assert info.value.value == b"xy"
        drain = writer.drain()
        with pytest.raises(StopIteration) as info:
            drain.send(None)
        assert info.value.value is None
        # readline waits for each piece, the search going on where it stopped.
        line = reader.readline()
        waiter = line.send(None)
        assert waiter is reader._waiter
        cwriter.write(b"ab")
        await until(waiter.done)
        waiter = line.send(None)
        assert waiter is reader._waiter
        assert bytes(reader._buffer) == b"zab"
        cwriter.write(b"c\nd")
        await until(waiter.done)
        with pytest.raises(StopIteration) as info:
            line.send(None)
        assert info.value.value == b"zabc\n"
        assert reader._waiter is None
        assert await reader.read(5) == b"d"
        await end()

    run(main())


def test_abandoned_waiting_read_is_collected(loop, run):
    """A read abandoned while it waits, in a reference cycle with its waiter, is garbage the
    collector frees, as an abandoned coroutine is."""
    import gc
    import weakref

    async def main():
        (reader, _), _, end = await served()
        read = reader.read(1)
        waiter = read.send(None)
        gone = weakref.ref(waiter)
        holder = [read]
        waiter.add_done_callback(lambda _, held=holder: held)
        reader._waiter = None
        del read, waiter, holder
        gc.collect()
        assert gone() is None
        await end()

    run(main())


def test_drain_waits_while_writing_is_paused(loop, run):
    async def main():
        (_, writer), (creader, _), end = await served()
        writer.transport.set_write_buffer_limits(high=1)
        payload = b"x" * (1 << 22)
        writer.write(payload)
        drain = asyncio.ensure_future(writer.drain())
        await settle()
        assert not drain.done()
        assert await creader.readexactly(len(payload)) == payload
        await asyncio.wait_for(drain, 5)
        await end()

    run(main())


def test_drain_raises_the_readers_exception_then_the_lost_connection(loop, run):
    async def main():
        (reader, writer), _, end = await served()
        reader.set_exception(ValueError("broken"))
        with pytest.raises(ValueError, match="broken"):
            await writer.drain()
        reader._exception = None
        writer.close()
        with pytest.raises(ConnectionResetError, match="Connection lost"):
            await writer.drain()
        await end()

    run(main())


def test_drain_patched_on_the_writer_or_its_class(loop, run, monkeypatch):
    async def main():
        (_, writer), _, end = await served()
        calls = []

        async def on_instance():
            calls.append("instance")

        writer.drain = on_instance
        await writer.drain()
        del writer.drain
        original = asyncio.StreamWriter.drain

        async def on_class(self):
            calls.append("class")
            await original(self)

        monkeypatch.setattr(asyncio.StreamWriter, "drain", on_class)
        await writer.drain()
        monkeypatch.undo()
        await writer.drain()
        assert calls == ["instance", "class"]
        await end()

    run(main())


@pytest.mark.parametrize("method", ["read", "readexactly", "readuntil", "readline"])
def test_read_patched_with_a_function_returning_a_future(loop, run, monkeypatch, method):
    """A patch on asyncio's class runs when the method is called, as without ferroloop, and
    what it returns is what is awaited (here not a coroutine)."""

    async def main():
        (reader, _), _, end = await served()
        calls = []

        def patched(self, *args):
            calls.append(args)
            future = asyncio.get_running_loop().create_future()
            future.set_result(b"patched")
            return future

        monkeypatch.setattr(asyncio.StreamReader, method, patched)
        args = {"read": (3,), "readexactly": (3,), "readuntil": (b"!",), "readline": ()}[method]
        pending = getattr(reader, method)(*args)
        assert calls == [args]
        assert await pending == b"patched"
        monkeypatch.undo()
        await end()

    run(main())


def test_server_writer_write(loop, run, monkeypatch):
    """A server's writer's write: the transport's, by keyword too; a wrong call or data fails as
    asyncio's; a write patched on the class or the instance is called."""

    async def main():
        (_, writer), (creader, _), end = await served()
        writer.write(b"ab")
        writer.write(data=b"cd")
        writer.write(memoryview(b"ef"))
        assert await creader.readexactly(6) == b"abcdef"
        for call in (lambda: writer.write(), lambda: writer.write(b"x", b"y"), lambda: writer.write(date=b"x")):
            with pytest.raises(TypeError):
                call()
        with pytest.raises(TypeError, match="^data argument must be a .*, not 'str'$"):
            writer.write("text")
        calls = []
        original = asyncio.StreamWriter.write

        def on_class(self, data):
            calls.append(("class", data))
            original(self, data)

        monkeypatch.setattr(asyncio.StreamWriter, "write", on_class)
        writer.write(b"gh")
        monkeypatch.undo()
        writer.write = lambda data: calls.append(("instance", data))
        writer.write(b"ij")
        del writer.write
        writer.write(b"kl")
        assert calls == [("class", b"gh"), ("instance", b"ij")]
        assert await creader.readexactly(4) == b"ghkl"
        await end()

    run(main())


def test_stack_of_a_task_waiting_in_a_read(loop, run):
    """What a debugging program asks of a task waiting in a read: its stack, and on 3.14 its
    call graph."""
    import io

    async def main():
        (reader, _), (_, cwriter), end = await served()

        async def waits():
            return await reader.read(1)

        outer = asyncio.ensure_future(waits())
        direct = asyncio.ensure_future(reader.readexactly(1))
        await settle()
        assert [f.f_code.co_name for f in outer.get_stack()] == ["waits"]
        for task in (outer, direct):
            task.print_stack(file=io.StringIO())
            if sys.version_info >= (3, 14):
                assert asyncio.capture_call_graph(task).future is task
                text = io.StringIO()
                asyncio.print_call_graph(task, file=text)
                assert ("waits" in text.getvalue()) is (task is outer)
        direct.cancel()
        cwriter.write(b"x")
        assert await outer == b"x"
        await end()

    run(main())


def test_debug_mode_reads_and_drain_are_python_coroutines(loop, run):
    """In debug mode asyncio tracks where each coroutine was made; ferroloop then gives
    asyncio's own coroutines."""
    import inspect

    async def main():
        loop.set_debug(True)
        (reader, writer), (_, cwriter), end = await served()
        cwriter.write(b"ab")
        for make in (lambda: reader.read(1), lambda: reader.readexactly(1), writer.drain):
            coro = make()
            assert inspect.iscoroutine(coro)
            await coro
        await end()

    run(main())


def test_server_streams_get_ferroloops_operations(loop_factory, loop, run):
    """On ferroloop, a server's stock reader and (before 3.13) writer get ferroloop's classes,
    whose read, readexactly and drain are native awaitables (a guard against the fast path silently never
    applying); a writer made while its class's drain is patched keeps asyncio's class."""
    if loop_factory.name == "asyncio":
        pytest.skip("ferroloop's own classes: nothing to check on asyncio")

    async def main():
        (reader, writer), _, end = await served()
        # From 3.13 the protocol keeps no reference to the writer it made: out of reach.
        native_drain = sys.version_info < (3, 13)
        assert (type(writer).__module__ == "ferroloop._streams") is native_drain
        for awaitable in (reader.read(1), reader.readexactly(1), writer.drain()):
            native = awaitable is not None and type(awaitable).__name__ == "StreamOperation"
            assert native is (native_drain or awaitable.__qualname__ != "StreamWriter.drain")
            awaitable.close()
        await end()
        original = asyncio.StreamWriter.drain

        async def patched(self):
            await original(self)

        asyncio.StreamWriter.drain = patched
        try:
            (reader, writer), _, end = await served()
        finally:
            asyncio.StreamWriter.drain = original
        assert type(writer) is asyncio.StreamWriter
        await end()

    run(main())


def test_writer_patched_before_ferroloop_first_looks(loop_factory):
    """asyncio's StreamWriter.drain replaced before ferroloop first looks at asyncio's streams
    (say by an instrumentation library): no writer gets ferroloop's class, readers still do."""
    if loop_factory.name == "asyncio":
        pytest.skip("ferroloop's own classes: nothing to check on asyncio")
    import subprocess
    import textwrap

    code = textwrap.dedent(
        """
        import asyncio, ferroloop

        original = asyncio.StreamWriter.drain
        async def instrumented(self):
            await original(self)
        asyncio.StreamWriter.drain = instrumented

        async def main():
            got = asyncio.get_running_loop().create_future()
            async def handle(reader, writer):
                got.set_result((reader, writer))
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
            theirs = await got
            writer.write(b"ab")
            await theirs[1].drain()
            print(type(theirs[0]).__module__, type(theirs[1]).__module__, await theirs[0].readexactly(2))
            writer.close()
            theirs[1].close()
            server.close()
            await server.wait_closed()

        ferroloop.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["ferroloop._streams", "asyncio.streams", "b'ab'"]
