"""loop.sendfile over TCP transports."""

import asyncio
import contextlib
import io
import os

import pytest

DATA = os.urandom(1024 * 1024 + 12345)


class Sink(asyncio.Protocol):
    """Collects everything until EOF."""

    def __init__(self, loop):
        self.data = bytearray()
        self.transport = None
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class Client(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    with open(path, "rb") as f:
        yield f


@contextlib.asynccontextmanager
async def connected(loop):
    """Yield ``(transport, sink)``: a client transport and the server's protocol; both closed
    on exit, whatever happened."""
    got = loop.create_future()

    def factory():
        s = Sink(loop)
        got.set_result(s)
        return s

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        tr, cli = await loop.create_connection(lambda: Client(loop), *server.sockets[0].getsockname())
        try:
            sink = await got
            yield tr, sink
        finally:
            tr.close()
            await cli.lost
            sink.transport.close()
            await sink.lost
    finally:
        server.close()
        await server.wait_closed()


async def send_and_collect(loop, tr, sink, coro):
    sent = await coro
    tr.write_eof()
    await sink.eof
    return sent, bytes(sink.data)


def test_sendfile_whole_file(loop, run, data_file):
    async def main():
        async with connected(loop) as (tr, sink):
            sent, got = await send_and_collect(loop, tr, sink, loop.sendfile(tr, data_file))
            assert sent == len(DATA)
            assert got == DATA
            assert data_file.tell() == len(DATA)

    run(main())


def test_sendfile_offset_count(loop, run, data_file):
    async def main():
        async with connected(loop) as (tr, sink):
            sent, got = await send_and_collect(loop, tr, sink, loop.sendfile(tr, data_file, 1000, 70000))
            assert sent == 70000
            assert got == DATA[1000:71000]
            assert data_file.tell() == 71000

    run(main())


def test_sendfile_offset_to_end(loop, run, data_file):
    async def main():
        async with connected(loop) as (tr, sink):
            offset = len(DATA) - 100
            sent, got = await send_and_collect(loop, tr, sink, loop.sendfile(tr, data_file, offset))
            assert sent == 100
            assert got == DATA[offset:]
            assert data_file.tell() == len(DATA)

    run(main())


def test_sendfile_then_write(loop, run, data_file):
    async def main():
        async with connected(loop) as (tr, sink):
            tr.write(b"head")
            sent = await loop.sendfile(tr, data_file, 0, 5000)
            tr.write(b"tail")
            tr.write_eof()
            await sink.eof
            assert sent == 5000
            assert bytes(sink.data) == b"head" + DATA[:5000] + b"tail"

    run(main())


def test_sendfile_fallback_for_non_regular_file(loop, run):
    async def main():
        async with connected(loop) as (tr, sink):
            # No fileno(): the native path is unavailable; fallback=True (the default) copies.
            f = io.BytesIO(DATA)
            sent, got = await send_and_collect(loop, tr, sink, loop.sendfile(tr, f, 10, 200000, fallback=True))
            assert sent == 200000
            assert got == DATA[10:200010]
            assert f.tell() == 200010

    run(main())


def test_sendfile_no_fallback_for_non_regular_file(loop, run):
    async def main():
        async with connected(loop) as (tr, sink):
            f = io.BytesIO(DATA)
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sendfile(tr, f, fallback=False)
            assert f.tell() == 0
            # The transport is still usable.
            tr.write(b"ok")
            tr.write_eof()
            await sink.eof
            assert bytes(sink.data) == b"ok"

    run(main())


def test_sendfile_argument_errors(loop, run, tmp_path, data_file):
    text = tmp_path / "t.txt"
    text.write_text("text")

    async def main(tf):
        async with connected(loop) as (tr, _):
            with pytest.raises(ValueError, match="binary mode"):
                await loop.sendfile(tr, tf)
            with pytest.raises(ValueError):
                await loop.sendfile(tr, data_file, -1)
            with pytest.raises(ValueError):
                await loop.sendfile(tr, data_file, 0, 0)
            with pytest.raises(TypeError):
                await loop.sendfile(tr, data_file, 0, "10")

    with open(text) as tf:
        run(main(tf))


def test_sendfile_on_closing_transport(loop, run, data_file):
    async def main():
        async with connected(loop) as (tr, _):
            tr.close()
            with pytest.raises(RuntimeError, match="closing"):
                await loop.sendfile(tr, data_file)

    run(main())


def test_sendfile_on_datagram_transport(loop, run, data_file):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(lambda: Client(loop), local_addr=("127.0.0.1", 0))
        try:
            with pytest.raises(RuntimeError, match="not supported"):
                await loop.sendfile(tr, data_file)
            with pytest.raises(RuntimeError, match="not supported"):
                await loop.sendfile(tr, data_file, fallback=False)
        finally:
            tr.close()
            await proto.lost

    run(main())
