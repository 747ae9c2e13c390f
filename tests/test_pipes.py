"""Pipe transports: connect_read_pipe and connect_write_pipe over pipes, FIFOs, PTYs and sockets."""

import asyncio
import errno
import gc
import logging
import os
import socket
import sys
import tty
import warnings

import pytest
from conftest import WAIT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix pipes")


class ReadProto(asyncio.Protocol):
    """Records every call, in order, and lets a test wait for data or the end."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.calls = []
        self.data = bytearray()
        self.lost = loop.create_future()
        self._changed = None

    def _wake(self):
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.calls.append("data")
        self.data += data
        self._wake()

    def eof_received(self):
        self.calls.append("eof")
        return True  # ignored by pipe transports

    def connection_lost(self, exc):
        self.calls.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)
        self._wake()

    async def wait_bytes(self, n):
        while len(self.data) < n and not self.lost.done():
            self._changed = self.loop.create_future()
            await self._changed
        return bytes(self.data)


class WriteProto(asyncio.BaseProtocol):
    def __init__(self, loop):
        self.transport = None
        self.calls = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("made")

    def pause_writing(self):
        self.calls.append("pause")

    def resume_writing(self):
        self.calls.append("resume")

    def connection_lost(self, exc):
        self.calls.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


def pipe_file(fd, mode):
    """An unbuffered file object for fd, as connect_*_pipe take; the transport closes it."""
    return open(fd, mode, buffering=0)


def read_all(fd, n):
    """Blocking read of exactly n bytes from fd (or until EOF)."""
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


@pytest.fixture
def fifo_path(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


# ---------------------------------------------------------------------------
# read side


def test_read_pipe_data_eof_and_lost(loop, run):
    rfd, wfd = os.pipe()
    pipeobj = pipe_file(rfd, "rb")

    async def main():
        proto = ReadProto(loop)
        tr, pr = await loop.connect_read_pipe(lambda: proto, pipeobj)
        assert pr is proto and proto.transport is tr
        assert proto.calls == ["made"]
        assert tr.get_extra_info("pipe") is pipeobj
        assert tr.get_extra_info("nothing", 42) == 42
        assert tr.get_protocol() is proto
        assert tr.is_reading() and not tr.is_closing()
        assert not os.get_blocking(rfd)
        os.write(wfd, b"1")
        assert await proto.wait_bytes(1) == b"1"
        os.write(wfd, b"2345")
        assert await proto.wait_bytes(5) == b"12345"
        os.close(wfd)
        assert await proto.lost is None
        assert proto.calls[0] == "made" and proto.calls[-2:] == ["eof", "lost"]
        assert tr.is_closing() and not tr.is_reading()
        assert pipeobj.closed
        assert tr.get_extra_info("pipe") is pipeobj

    run(main())


def test_read_pipe_isinstance(loop, run):
    rfd, wfd = os.pipe()

    async def main():
        tr, _ = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe_file(rfd, "rb"))
        assert isinstance(tr, asyncio.ReadTransport)
        assert isinstance(tr, asyncio.BaseTransport)
        assert not isinstance(tr, asyncio.WriteTransport)
        tr.close()
        await tr.get_protocol().lost

    run(main())
    os.close(wfd)


def test_read_pipe_large_reads(loop, run):
    rfd, wfd = os.pipe()
    payload = os.urandom(1024 * 1024)

    async def main():
        proto = ReadProto(loop)
        await loop.connect_read_pipe(lambda: proto, pipe_file(rfd, "rb"))
        writer = loop.run_in_executor(None, os.write, wfd, payload)
        data = await proto.wait_bytes(len(payload))
        written = await writer
        # os.write on a blocking pipe writes everything.
        assert written == len(payload)
        assert data == payload
        os.close(wfd)
        await proto.lost

    run(main())


def test_pause_resume_reading(loop, run):
    rfd, wfd = os.pipe()

    async def main():
        proto = ReadProto(loop)
        tr, _ = await loop.connect_read_pipe(lambda: proto, pipe_file(rfd, "rb"))
        tr.pause_reading()
        tr.pause_reading()  # no-op
        assert not tr.is_reading()
        os.write(wfd, b"abc")
        for _ in range(5):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert proto.data == b""
        tr.resume_reading()
        tr.resume_reading()  # no-op
        assert tr.is_reading()
        assert await proto.wait_bytes(3) == b"abc"
        tr.close()
        assert not tr.is_reading()
        tr.pause_reading()  # no-ops once closing
        tr.resume_reading()
        assert not tr.is_reading()
        assert await proto.lost is None
        # close() does not report end of file
        assert proto.calls == ["made", "data", "lost"]

    run(main())
    os.close(wfd)


def test_pause_before_start_then_resume(loop, run):
    """pause_reading() before reading starts keeps it from starting until resume_reading()."""
    rfd, wfd = os.pipe()

    async def main():
        proto = ReadProto(loop)
        proto.connection_made = lambda tr: tr.pause_reading()
        tr, _ = await loop.connect_read_pipe(lambda: proto, pipe_file(rfd, "rb"))
        os.write(wfd, b"x")
        await asyncio.sleep(0.02)
        assert proto.data == b""
        tr.resume_reading()
        assert await proto.wait_bytes(1) == b"x"
        tr.close()
        await proto.lost

    run(main())
    os.close(wfd)


def test_read_close_is_idempotent_and_lost_once(loop, run):
    rfd, wfd = os.pipe()

    async def main():
        proto = ReadProto(loop)
        tr, _ = await loop.connect_read_pipe(lambda: proto, pipe_file(rfd, "rb"))
        tr.close()
        tr.close()
        assert await proto.lost is None
        await asyncio.sleep(0.01)
        assert proto.calls == ["made", "lost"]
        assert tr.get_extra_info("pipe").closed

    run(main())
    os.close(wfd)


def test_data_received_error_goes_to_handler_and_keeps_reading(loop, run):
    rfd, wfd = os.pipe()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proto = ReadProto(loop)
        boom = ZeroDivisionError("boom")

        def data_received(data):
            proto.data += data
            if len(proto.data) == 1:
                raise boom
            proto._wake()

        proto.data_received = data_received
        tr, _ = await loop.connect_read_pipe(lambda: proto, pipe_file(rfd, "rb"))
        os.write(wfd, b"a")
        while not errors:
            await asyncio.sleep(0.001)
        assert errors[0]["exception"] is boom
        assert not tr.is_closing()
        os.write(wfd, b"b")
        assert await proto.wait_bytes(2) == b"ab"
        tr.close()
        await proto.lost

    run(main())
    os.close(wfd)


def test_read_error_goes_to_handler_and_closes(loop, run):
    """A read error other than EIO is reported, then the transport closes with it."""
    rfd, wfd = os.pipe()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proto = ReadProto(loop)
        # The write end of a pipe: it polls "readable" (an error) once the read end is closed, and
        # read(2) on it fails with EBADF.
        tr, _ = await loop.connect_read_pipe(lambda: proto, pipe_file(wfd, "wb"))
        os.close(rfd)
        exc = await proto.lost
        assert isinstance(exc, OSError) and exc.errno == errno.EBADF
        assert len(errors) == 1
        assert errors[0]["message"] == "Fatal read error on pipe transport"
        assert errors[0]["exception"] is exc
        assert errors[0]["transport"] is tr
        assert errors[0]["protocol"] is proto
        assert tr.is_closing()

    run(main())


def test_set_protocol(loop, run):
    rfd, wfd = os.pipe()

    async def main():
        first, second = ReadProto(loop), ReadProto(loop)
        tr, _ = await loop.connect_read_pipe(lambda: first, pipe_file(rfd, "rb"))
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        os.write(wfd, b"z")
        assert await second.wait_bytes(1) == b"z"
        os.close(wfd)
        assert await second.lost is None
        assert first.calls == ["made"]
        assert second.calls == ["data", "eof", "lost"]

    run(main())


def test_debug_logs_eof(loop, run, caplog):
    loop.set_debug(True)
    rfd, wfd = os.pipe()

    async def main():
        proto = ReadProto(loop)
        await loop.connect_read_pipe(lambda: proto, pipe_file(rfd, "rb"))
        os.close(wfd)
        await proto.lost

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(main())
    assert any("was closed by peer" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


# ---------------------------------------------------------------------------
# write side


def test_write_pipe_write_and_close(loop, run):
    rfd, wfd = os.pipe()
    pipeobj = pipe_file(wfd, "wb")

    async def main():
        proto = WriteProto(loop)
        tr, pr = await loop.connect_write_pipe(lambda: proto, pipeobj)
        assert pr is proto and proto.transport is tr
        assert isinstance(tr, asyncio.WriteTransport)
        assert isinstance(tr, asyncio.BaseTransport)
        # asyncio's write pipe transport is a _FlowControlMixin, hence an asyncio.Transport.
        assert isinstance(tr, asyncio.transports._FlowControlMixin)
        assert tr.get_extra_info("pipe") is pipeobj
        assert tr.can_write_eof()
        assert not os.get_blocking(wfd)
        tr.write(b"1")
        tr.write(bytearray(b"23"))
        tr.write(memoryview(b"xx45xx")[2:4])
        tr.write(b"")
        tr.writelines([b"6", bytearray(b"7"), memoryview(b"8")])
        assert tr.get_write_buffer_size() == 0
        assert read_all(rfd, 8) == b"12345678"
        tr.close()
        assert tr.is_closing()
        assert await proto.lost is None
        assert proto.calls == ["made", "lost"]
        assert pipeobj.closed

    run(main())
    os.close(rfd)


def test_write_eof_closes_after_drain(loop, run):
    rfd, wfd = os.pipe()
    payload = os.urandom(512 * 1024)

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0
        tr.write_eof()
        assert tr.is_closing()
        reader = loop.run_in_executor(None, read_all, rfd, len(payload) + 1)
        assert await proto.lost is None
        assert await reader == payload

    run(main())
    os.close(rfd)


def test_write_type_errors(loop_factory, loop, run):
    rfd, wfd = os.pipe()
    # asyncio only asserts the type; ferroloop raises TypeError.
    expected = AssertionError if loop_factory.name == "asyncio" else TypeError

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), pipe_file(wfd, "wb"))
        for bad in ("text", 1, None, [b"x"]):
            with pytest.raises(expected):
                tr.write(bad)
        with pytest.raises(TypeError):
            tr.writelines(["text"])
        assert not tr.is_closing()
        tr.close()
        await proto.lost

    run(main())
    os.close(rfd)


def test_writes_after_close_are_counted_and_warned(loop, run, caplog):
    rfd, wfd = os.pipe()
    message = "pipe closed by peer or os.write(pipe, data) raised exception."

    async def main():
        tr, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), pipe_file(wfd, "wb"))
        tr.close()
        await proto.lost
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(5):
                tr.write(b"x")
            assert not [r for r in caplog.records if r.getMessage() == message]
            tr.write(b"x")
            tr.write(b"x")
        assert len([r for r in caplog.records if r.getMessage() == message]) == 2

    run(main())
    os.close(rfd)


def test_flow_control(loop, run):
    rfd, wfd = os.pipe()
    payload = os.urandom(1024 * 1024)

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        tr.set_write_buffer_limits(high=1000)
        assert tr.get_write_buffer_limits() == (250, 1000)
        tr.set_write_buffer_limits(low=100)
        assert tr.get_write_buffer_limits() == (100, 400)
        tr.set_write_buffer_limits(high=1000, low=100)
        assert tr.get_write_buffer_limits() == (100, 1000)
        with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
            tr.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=-1)

        tr.write(payload)
        assert tr.get_write_buffer_size() > 1000
        assert proto.calls == ["made", "pause"]
        tr.write(b"more")  # already paused: no second call
        assert proto.calls == ["made", "pause"]

        reader = ReadProto(loop)
        await loop.connect_read_pipe(lambda: reader, pipe_file(rfd, "rb"))
        assert await reader.wait_bytes(len(payload) + 4) == payload + b"more"
        assert tr.get_write_buffer_size() == 0
        assert proto.calls == ["made", "pause", "resume"]
        tr.close()
        await proto.lost
        await reader.lost

    run(main())


def test_set_write_buffer_limits_pauses_at_once(loop, run):
    rfd, wfd = os.pipe()

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        tr.set_write_buffer_limits(high=10**7)
        tr.write(os.urandom(256 * 1024))
        size = tr.get_write_buffer_size()
        assert 0 < size
        tr.set_write_buffer_limits(high=size + 1)
        assert "pause" not in proto.calls
        tr.set_write_buffer_limits(high=size - 1)
        assert proto.calls == ["made", "pause"]
        tr.abort()
        assert tr.get_write_buffer_size() == 0
        assert await proto.lost is None

    run(main())
    os.close(rfd)


def test_pause_writing_error_goes_to_handler(loop, run):
    rfd, wfd = os.pipe()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proto = WriteProto(loop)
        boom = RuntimeError("boom")

        def pause_writing():
            raise boom

        proto.pause_writing = pause_writing
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        tr.write(os.urandom(256 * 1024))
        assert len(errors) == 1
        assert errors[0]["message"] == "protocol.pause_writing() failed"
        assert errors[0]["exception"] is boom
        assert errors[0]["transport"] is tr
        assert errors[0]["protocol"] is proto
        tr.abort()
        await proto.lost

    run(main())
    os.close(rfd)


def test_reader_closed_with_buffered_data(loop, run):
    """The reader goes while data is buffered: connection_lost(BrokenPipeError)."""
    rfd, wfd = os.pipe()

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        tr.write(os.urandom(1024 * 1024))
        assert tr.get_write_buffer_size() > 0
        os.close(rfd)
        exc = await proto.lost
        assert isinstance(exc, BrokenPipeError)
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0
        assert tr.get_extra_info("pipe").closed
        assert proto.calls == ["made", "pause", "lost"]

    run(main())


def test_reader_closed_when_idle(loop, run):
    """A pipe's writer notices the reader going even when it has nothing to write."""
    rfd, wfd = os.pipe()

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        os.close(rfd)
        assert await proto.lost is None
        assert tr.is_closing()

    run(main())


def test_write_to_closed_reader_is_quiet(loop, run):
    """write() to a pipe whose reader is gone: connection_lost(BrokenPipeError), no handler call."""
    rfd, wfd = os.pipe()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        tr.write(b"x")
        os.close(rfd)
        tr.write(b"y")  # fails at once, before the loop sees the reader go
        exc = await proto.lost
        assert isinstance(exc, BrokenPipeError)
        assert exc.errno == errno.EPIPE
        assert errors == []
        tr.write(b"z")  # dropped, counted

    run(main())


def test_write_pipe_over_socket(loop, run):
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    pipeobj = pipe_file(wsock.detach(), "wb")

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipeobj)
        tr.write(b"1")
        assert await loop.sock_recv(rsock, 1024) == b"1"
        rsock.close()
        assert await proto.lost is None
        assert pipeobj.closed

    run(main())


def test_read_pipe_over_socket(loop, run):
    rsock, wsock = socket.socketpair()
    pipeobj = pipe_file(rsock.detach(), "rb")

    async def main():
        proto = ReadProto(loop)
        await loop.connect_read_pipe(lambda: proto, pipeobj)
        wsock.sendall(b"hello")
        assert await proto.wait_bytes(5) == b"hello"
        wsock.close()
        assert await proto.lost is None
        assert proto.calls[-2:] == ["eof", "lost"]

    run(main())


def test_abort_and_close_lose_connection_once(loop, run):
    rfd, wfd = os.pipe()

    async def main():
        proto = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        tr.write(os.urandom(256 * 1024))
        tr.abort()
        tr.close()
        assert await proto.lost is None
        await asyncio.sleep(0.01)
        assert proto.calls.count("lost") == 1

    run(main())
    os.close(rfd)


def test_write_debug_logs_reader_gone(loop, run, caplog):
    loop.set_debug(True)
    rfd, wfd = os.pipe()

    async def main():
        proto = WriteProto(loop)
        await loop.connect_write_pipe(lambda: proto, pipe_file(wfd, "wb"))
        os.close(rfd)
        await proto.lost

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(main())
    assert any("was closed by peer" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------
# FIFOs and PTYs


def test_fifo_read_and_write(loop, run, fifo_path):
    rfd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(fifo_path, os.O_WRONLY)

    async def main():
        reader = ReadProto(loop)
        writer = WriteProto(loop)
        await loop.connect_read_pipe(lambda: reader, pipe_file(rfd, "rb"))
        wtr, _ = await loop.connect_write_pipe(lambda: writer, pipe_file(wfd, "wb"))
        payload = os.urandom(300 * 1024)
        wtr.write(payload)
        assert await reader.wait_bytes(len(payload)) == payload
        wtr.close()
        assert await writer.lost is None
        assert await reader.lost is None
        assert reader.calls[-2:] == ["eof", "lost"]

    run(main())


def test_fifo_writer_sees_reader_close(loop, run, fifo_path):
    rfd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(fifo_path, os.O_WRONLY)

    async def main():
        writer = WriteProto(loop)
        tr, _ = await loop.connect_write_pipe(lambda: writer, pipe_file(wfd, "wb"))
        tr.write(b"abc")
        assert read_all(rfd, 3) == b"abc"
        tr.write(os.urandom(1024 * 1024))
        os.close(rfd)
        assert isinstance(await writer.lost, BrokenPipeError)

    run(main())


def test_pty_read(loop, run):
    master, slave = os.openpty()
    tty.setraw(slave)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proto = ReadProto(loop)
        tr, _ = await loop.connect_read_pipe(lambda: proto, pipe_file(master, "rb"))
        os.write(slave, b"1")
        assert await proto.wait_bytes(1) == b"1"
        os.write(slave, b"2345")
        assert await proto.wait_bytes(5) == b"12345"
        os.close(slave)
        # Linux: reading a PTY master whose other side is closed fails with EIO, which closes the
        # transport quietly.
        exc = await proto.lost
        assert isinstance(exc, OSError) and exc.errno == errno.EIO
        assert tr.get_extra_info("pipe").closed
        assert errors == []

    run(main())


def test_pty_eio_logged_in_debug_mode(loop, run, caplog):
    loop.set_debug(True)
    master, slave = os.openpty()

    async def main():
        proto = ReadProto(loop)
        await loop.connect_read_pipe(lambda: proto, pipe_file(master, "rb"))
        os.close(slave)
        await proto.lost

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(main())
    records = [r for r in caplog.records if "Fatal read error on pipe transport" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG
    assert records[0].exc_info is not None and records[0].exc_info[1].errno == errno.EIO


def test_pty_write_and_bidirectional(loop, run):
    master, read_slave = os.openpty()
    write_slave = os.dup(read_slave)
    tty.setraw(read_slave)

    async def main():
        to_master = ReadProto(loop)
        slave_reader = ReadProto(loop)
        writer = WriteProto(loop)
        mtr, _ = await loop.connect_read_pipe(lambda: to_master, pipe_file(master, "rb"))
        str_, _ = await loop.connect_read_pipe(lambda: slave_reader, pipe_file(read_slave, "rb"))
        wtr, _ = await loop.connect_write_pipe(lambda: writer, pipe_file(write_slave, "wb"))
        wtr.write(b"ping")
        assert await to_master.wait_bytes(4) == b"ping"
        os.write(master, b"pong")
        assert await slave_reader.wait_bytes(4) == b"pong"
        wtr.close()
        assert await writer.lost is None
        str_.close()
        await slave_reader.lost
        mtr.close()
        await to_master.lost

    run(main())


# ---------------------------------------------------------------------------
# refusals, repr, ResourceWarning


def test_regular_file_is_refused(loop, run, tmp_path):
    path = str(tmp_path / "file")
    with open(path, "wb") as f:
        f.write(b"data")

    made = []

    async def main(rfile, wfile):
        with pytest.raises(ValueError, match=r"^Pipe transport is for pipes/sockets only\.$"):
            await loop.connect_read_pipe(lambda: made.append(1) or ReadProto(loop), rfile)
        with pytest.raises(ValueError, match=r"^Pipe transport is only for pipes, sockets and character devices$"):
            await loop.connect_write_pipe(lambda: WriteProto(loop), wfile)
        await asyncio.sleep(0.01)

    with open(path, "rb") as rfile, open(path + "2", "wb") as wfile:
        run(main(rfile, wfile))
        assert not rfile.closed and not wfile.closed
    assert made == [1]


def test_repr(loop, run):
    rfd, wfd = os.pipe()

    async def main():
        rproto = ReadProto(loop)
        wproto = WriteProto(loop)
        rtr, _ = await loop.connect_read_pipe(lambda: rproto, pipe_file(rfd, "rb"))
        wtr, _ = await loop.connect_write_pipe(lambda: wproto, pipe_file(wfd, "wb"))
        assert f"fd={rfd}" in repr(rtr) and "polling" in repr(rtr)
        rtr.pause_reading()
        assert "idle" in repr(rtr)
        assert f"fd={wfd}" in repr(wtr) and "idle" in repr(wtr) and "bufsize=0" in repr(wtr)
        wtr.write(os.urandom(256 * 1024))
        assert "polling" in repr(wtr) and "bufsize=" in repr(wtr) and "bufsize=0" not in repr(wtr)
        wtr.abort()
        assert "closing" in repr(wtr)
        await wproto.lost
        assert "closed" in repr(wtr)
        rtr.close()
        assert "closing" in repr(rtr)
        await rproto.lost
        assert "closed" in repr(rtr)

    run(main())


def test_unclosed_transports_warn_and_close_the_pipe(loop_factory, fd_guard):
    loop = loop_factory()
    rfd, wfd = os.pipe()
    rpipe = pipe_file(rfd, "rb")
    wpipe = pipe_file(wfd, "wb")

    async def connect():
        rtr, _ = await loop.connect_read_pipe(lambda: asyncio.Protocol(), rpipe)
        wtr, _ = await loop.connect_write_pipe(lambda: asyncio.BaseProtocol(), wpipe)
        return rtr, wtr

    rtr, wtr = loop.run_until_complete(connect())
    loop.close()
    assert "open" in repr(rtr) and "open" in repr(wtr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del rtr, wtr
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len([m for m in messages if m.startswith("unclosed transport")]) == 2, messages
    assert rpipe.closed and wpipe.closed


def test_pipe_attribute_can_be_cleared(loop_factory, fd_guard):
    """Setting _pipe to None (as asyncio's tests do) silences the warning."""
    loop = loop_factory()
    rfd, wfd = os.pipe()
    rpipe = pipe_file(rfd, "rb")

    async def connect():
        tr, _ = await loop.connect_read_pipe(lambda: asyncio.Protocol(), rpipe)
        return tr

    tr = loop.run_until_complete(connect())
    loop.close()
    assert tr._pipe is rpipe
    rpipe.close()
    os.close(wfd)
    tr._pipe = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del tr
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_waiter_after_connection_made(loop, run):
    """connect_*_pipe returns once connection_made has run."""
    rfd, wfd = os.pipe()

    async def main():
        order = []

        class P(asyncio.Protocol):
            def connection_made(self, tr):
                order.append("made")

        tr, _ = await loop.connect_read_pipe(P, pipe_file(rfd, "rb"))
        order.append("returned")
        wtr, _ = await loop.connect_write_pipe(P, pipe_file(wfd, "wb"))
        order.append("returned")
        assert order == ["made", "returned", "made", "returned"]
        tr.close()
        wtr.close()
        await asyncio.sleep(0.01)

    run(main(), timeout=WAIT)
