"""add_reader / remove_reader / add_writer / remove_writer."""

import os
import socket
import time

import pytest
from conftest import WAIT


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def run_until(loop, predicate, timeout=WAIT):
    """Run the loop until predicate() is true (checked after each iteration)."""
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        # a timer keeps each iteration from blocking forever
        h = loop.call_later(0.01, lambda: None)
        loop.stop()
        loop.run_forever()
        h.cancel()


def test_add_reader(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable(sock, tag):
        got.append((tag, sock.recv(100)))
        loop.stop()

    loop.add_reader(a.fileno(), on_readable, a, "tag")
    loop.call_soon(b.send, b"hello")
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert got == [("tag", b"hello")]
    assert loop.remove_reader(a.fileno()) is True


def test_reader_not_called_without_data(loop, sockpair):
    a, _ = sockpair
    called = []
    loop.add_reader(a, called.append, 1)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert called == []
    assert loop.remove_reader(a)


def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_readable():
        # deliberately do not consume the data
        calls.append(len(calls))
        if len(calls) == 3:
            loop.remove_reader(a)
            loop.stop()

    b.send(b"x")
    loop.add_reader(a, on_readable)
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert calls == [0, 1, 2]
    assert a.recv(10) == b"x"


def test_reader_called_once_per_iteration(loop, sockpair):
    a, b = sockpair
    calls = []
    b.send(b"x")
    loop.add_reader(a, calls.append, 1)
    loop.stop()
    loop.run_forever()  # a single iteration
    assert calls == [1]
    loop.stop()
    loop.run_forever()
    assert calls == [1, 1]
    assert loop.remove_reader(a)


def test_reader_runs_once_per_report_while_the_loop_is_busy(loop, sockpair):
    # 200 callbacks of 5 µs each are queued before the reader's report: ferroloop's fairness
    # budget cuts that batch short, so the report waits in the queue over several polls that
    # find the socket still readable. Each report must run once, as asyncio runs it: a second
    # call would find nothing to read (and a blocking read there would block the loop).
    a, b = sockpair
    calls = []

    def on_readable():
        try:
            calls.append(a.recv(100))
        except BlockingIOError:
            calls.append("nothing to read")

    def spin():
        end = time.perf_counter() + 5e-6
        while time.perf_counter() < end:
            pass

    for _ in range(200):
        loop.call_soon(spin)
    b.send(b"x")
    loop.add_reader(a, on_readable)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == [b"x"]
    assert loop.remove_reader(a)


def test_remove_reader_return_values(loop, sockpair):
    a, _ = sockpair
    assert loop.remove_reader(a) is False
    loop.add_reader(a, print)
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


def test_remove_writer_return_values(loop, sockpair):
    a, _ = sockpair
    assert loop.remove_writer(a) is False
    loop.add_writer(a, print)
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False


def test_removed_reader_not_called(loop, sockpair):
    a, b = sockpair
    called = []
    loop.add_reader(a, called.append, 1)
    assert loop.remove_reader(a)
    b.send(b"data")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert called == []


def test_replace_reader(loop, sockpair):
    a, b = sockpair
    called = []
    loop.add_reader(a, called.append, "old")
    loop.add_reader(a, called.append, "new")
    b.send(b"x")
    loop.stop()
    loop.run_forever()
    assert called == ["new"]
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


def test_replacing_reader_cancels_pending_old_handle(loop, sockpair):
    # The fd becomes readable; the old reader's handle is queued in the same
    # iteration as a callback that replaces the reader.  asyncio cancels the
    # old handle, so the old reader never runs.
    a, b = sockpair
    called = []

    def replace():
        loop.add_reader(a, on_new)

    def on_new():
        called.append("new")
        loop.remove_reader(a)
        loop.stop()

    b.send(b"x")
    loop.add_reader(a, called.append, "old")
    loop.call_soon(replace)
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert called == ["new"]


def test_removing_reader_cancels_pending_handle(loop, sockpair):
    a, b = sockpair
    called = []
    b.send(b"x")
    loop.add_reader(a, called.append, "reader")
    loop.call_soon(loop.remove_reader, a)
    loop.stop()
    loop.run_forever()
    loop.stop()
    loop.run_forever()
    assert called == []


def test_add_writer(loop, sockpair):
    a, b = sockpair
    got = []

    def on_writable():
        a.send(b"written")
        loop.remove_writer(a)
        got.append(True)

    loop.add_writer(a, on_writable)
    run_until(loop, lambda: got)
    assert got == [True]
    assert b.recv(100) == b"written"
    assert loop.remove_writer(a) is False


def test_writer_is_level_triggered(loop, sockpair):
    a, _ = sockpair
    calls = []

    def on_writable(tag):
        calls.append(tag)
        if len(calls) == 3:
            loop.remove_writer(a)
            loop.stop()

    loop.add_writer(a, on_writable, "w")
    loop.call_later(WAIT, loop.stop)
    loop.run_forever()
    assert calls == ["w", "w", "w"]


def test_reader_and_writer_same_fd(loop, sockpair):
    a, b = sockpair
    reads, writes = [], []
    b.send(b"x")
    loop.add_reader(a, reads.append, 1)
    loop.add_writer(a, writes.append, 1)
    loop.stop()
    loop.run_forever()
    assert reads == [1] and writes == [1]
    # removing the writer keeps the reader
    assert loop.remove_writer(a)
    loop.stop()
    loop.run_forever()
    assert reads == [1, 1] and writes == [1]
    assert loop.remove_reader(a)
    assert not loop.remove_writer(a)


def test_file_object_with_fileno(loop, sockpair):
    a, b = sockpair
    called = []
    # register with the socket object, remove with the fd number
    loop.add_reader(a, called.append, "obj")
    b.send(b"x")
    loop.stop()
    loop.run_forever()
    assert called == ["obj"]
    assert loop.remove_reader(a.fileno()) is True


def test_pipe_reader_sees_eof(loop, fd_guard):
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    rfile = os.fdopen(rfd, "rb", buffering=0)
    chunks = []

    def on_readable():
        data = rfile.read(100)
        chunks.append(data)
        if not data:
            loop.remove_reader(rfile)
            loop.stop()

    try:
        loop.add_reader(rfile, on_readable)
        loop.call_soon(os.write, wfd, b"pipe data")
        loop.call_soon(os.close, wfd)
        loop.call_later(WAIT, loop.stop)
        loop.run_forever()
    finally:
        rfile.close()
    assert b"".join(chunks) == b"pipe data"
    assert chunks[-1] == b""


def test_reader_exception_goes_to_handler(loop, sockpair):
    a, b = sockpair
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def bad():
        a.recv(100)
        raise RuntimeError("reader failed")

    loop.add_reader(a, bad)
    b.send(b"x")
    loop.stop()
    loop.run_forever()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], RuntimeError)
    assert "handle" in contexts[0]
    # the reader stays registered
    assert loop.remove_reader(a)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_invalid_fd(loop, method):
    with pytest.raises(ValueError):
        getattr(loop, method)(-1, print)


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
@pytest.mark.parametrize("bad", [object(), "3", 1.5, None], ids=["object", "str", "float", "None"])
def test_object_without_fileno(loop, method, bad):
    args = (bad, print) if method.startswith("add") else (bad,)
    with pytest.raises(ValueError, match="Invalid file object"):
        getattr(loop, method)(*args)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_invalid_fd(loop, method):
    with pytest.raises(ValueError):
        getattr(loop, method)(-1)


def test_fileno_method_returning_garbage(loop):
    class Bad:
        def fileno(self):
            return "not an int"

    with pytest.raises(ValueError):
        loop.add_reader(Bad(), print)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_add_on_closed_loop(loop, sockpair, method):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        getattr(loop, method)(sockpair[0], print)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_on_closed_loop(loop, sockpair, method):
    loop.close()
    assert getattr(loop, method)(sockpair[0]) is False


def test_close_with_registered_reader(loop, sockpair):
    a, _ = sockpair
    loop.add_reader(a, print)
    loop.add_writer(a, print)
    loop.close()
    # the sockets themselves are not closed by the loop
    assert a.fileno() != -1
