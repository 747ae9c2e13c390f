"""Low-level socket coroutines: sock_recv, sock_sendall, sock_connect, ..."""

import asyncio
import contextlib
import errno
import gc
import hashlib
import io
import os
import socket
import ssl
import struct
import weakref

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


@pytest.fixture
def udp_pair():
    s1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (s1, s2):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    yield s1, s2
    s1.close()
    s2.close()


@pytest.fixture
def tcp_server():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


@pytest.fixture
def tcp_client():
    cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.setblocking(False)
    yield cli
    cli.close()


async def connected_pair(loop, server, client):
    """Connect client to server; return the accepted server-side socket."""
    accept = loop.create_task(loop.sock_accept(server))
    await loop.sock_connect(client, server.getsockname())
    conn, _ = await accept
    return conn


async def recv_exactly(loop, sock, n):
    chunks = []
    received = 0
    while received < n:
        data = await loop.sock_recv(sock, min(65536, n - received))
        if not data:
            break
        chunks.append(data)
        received += len(data)
    return b"".join(chunks)


async def recv_until_eof(loop, sock):
    chunks = []
    while data := await loop.sock_recv(sock, 65536):
        chunks.append(data)
    return b"".join(chunks)


# ---------------------------------------------------------------------------
# receiving


def test_sock_recv(loop, run, sockpair):
    a, b = sockpair

    async def main():
        loop.call_later(0.01, b.send, b"hello")
        return await loop.sock_recv(a, 100)

    assert run(main()) == b"hello"


def test_sock_recv_data_already_available(loop, run, sockpair):
    a, b = sockpair
    b.send(b"ready")
    assert run(loop.sock_recv(a, 100)) == b"ready"


def test_sock_recv_respects_size(loop, run, sockpair):
    a, b = sockpair
    b.send(b"0123456789")
    assert run(loop.sock_recv(a, 4)) == b"0123"
    assert run(loop.sock_recv(a, 100)) == b"456789"


def test_sock_recv_eof(loop, run, sockpair):
    a, b = sockpair

    async def main():
        loop.call_later(0.01, b.shutdown, socket.SHUT_WR)
        return await loop.sock_recv(a, 100)

    assert run(main()) == b""


def test_sock_recv_into(loop, run, sockpair):
    a, b = sockpair
    buf = bytearray(10)

    async def main():
        loop.call_later(0.01, b.send, b"abc")
        return await loop.sock_recv_into(a, buf)

    assert run(main()) == 3
    assert buf[:3] == b"abc"

    b.send(b"defghijklmnop")
    view = memoryview(buf)[5:]
    assert run(loop.sock_recv_into(a, view)) == 5
    assert bytes(buf) == b"abc\x00\x00defgh"


def test_concurrent_recv_on_different_sockets(loop, run):
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        for x, y in pairs:
            x.setblocking(False)
            y.setblocking(False)

        async def main():
            tasks = [loop.create_task(loop.sock_recv(x, 100)) for x, _ in pairs]
            await asyncio.sleep(0)
            for i, (_, y) in enumerate(reversed(pairs)):
                y.send(b"msg%d" % (len(pairs) - 1 - i))
            return await asyncio.gather(*tasks)

        assert run(main()) == [b"msg%d" % i for i in range(5)]
    finally:
        for x, y in pairs:
            x.close()
            y.close()


# ---------------------------------------------------------------------------
# UDP


def test_sock_sendto_recvfrom(loop, run, udp_pair):
    s1, s2 = udp_pair

    async def main():
        recv = loop.create_task(loop.sock_recvfrom(s2, 100))
        await asyncio.sleep(0)
        sent = await loop.sock_sendto(s1, b"datagram", s2.getsockname())
        return sent, await recv

    sent, (data, addr) = run(main())
    assert sent == len(b"datagram")
    assert data == b"datagram"
    assert addr == s1.getsockname()


def test_sock_recvfrom_into(loop, run, udp_pair):
    s1, s2 = udp_pair
    buf = bytearray(64)

    async def main():
        recv = loop.create_task(loop.sock_recvfrom_into(s2, buf))
        await asyncio.sleep(0)
        await loop.sock_sendto(s1, b"into", s2.getsockname())
        return await recv

    nbytes, addr = run(main())
    assert nbytes == 4
    assert buf[:4] == b"into"
    assert addr == s1.getsockname()


def test_sock_recvfrom_into_nbytes(loop, run, udp_pair):
    s1, s2 = udp_pair
    buf = bytearray(64)
    s1.sendto(b"0123456789", s2.getsockname())

    async def main():
        return await loop.sock_recvfrom_into(s2, buf, 4)

    nbytes, addr = run(main())
    assert nbytes == 4
    assert buf[:4] == b"0123"
    assert addr == s1.getsockname()


# ---------------------------------------------------------------------------
# sending


def test_sock_sendall_large(loop, run, sockpair):
    a, b = sockpair
    payload = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB

    async def main():
        reader = loop.create_task(recv_exactly(loop, b, len(payload)))
        result = await loop.sock_sendall(a, payload)
        data = await reader
        return result, data

    result, data = run(main(), timeout=3 * WAIT)
    assert result is None
    assert len(data) == len(payload)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()


def test_sock_sendall_memoryview(loop, run, sockpair):
    a, b = sockpair
    payload = memoryview(bytearray(b"xyz" * 1000))

    async def main():
        reader = loop.create_task(recv_exactly(loop, b, len(payload)))
        await loop.sock_sendall(a, payload)
        return await reader

    assert run(main()) == bytes(payload)


def test_sock_sendall_empty(loop, run, sockpair):
    a, _ = sockpair
    assert run(loop.sock_sendall(a, b"")) is None


def test_sock_sendall_to_closed_peer(loop, run, sockpair):
    a, b = sockpair
    b.close()
    with pytest.raises(OSError):
        run(loop.sock_sendall(a, b"x" * (4 * 1024 * 1024)))


# ---------------------------------------------------------------------------
# connect / accept


def test_sock_connect_and_accept(loop, run, tcp_server, tcp_client):
    async def main():
        accept = loop.create_task(loop.sock_accept(tcp_server))
        await asyncio.sleep(0)
        assert await loop.sock_connect(tcp_client, tcp_server.getsockname()) is None
        conn, addr = await accept
        with conn:
            assert isinstance(conn, socket.socket)
            assert not conn.getblocking()
            assert addr == tcp_client.getsockname()
            await loop.sock_sendall(tcp_client, b"ping")
            assert await loop.sock_recv(conn, 100) == b"ping"
            await loop.sock_sendall(conn, b"pong")
            assert await loop.sock_recv(tcp_client, 100) == b"pong"
        return True

    assert run(main())
    assert tcp_client.getpeername() == tcp_server.getsockname()


def test_sock_connect_resolves_host(loop, run, tcp_server, tcp_client):
    port = tcp_server.getsockname()[1]

    async def main():
        conn = None
        accept = loop.create_task(loop.sock_accept(tcp_server))
        try:
            await loop.sock_connect(tcp_client, ("localhost", port))
            conn, _ = await accept
        finally:
            if conn is not None:
                conn.close()
        return tcp_client.getpeername()

    assert run(main()) == ("127.0.0.1", port)


def test_sock_connect_refused(loop, run, tcp_client):
    # a bound but not listening TCP socket refuses connections
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        closed.bind(("127.0.0.1", 0))
        with pytest.raises(ConnectionRefusedError):
            run(loop.sock_connect(tcp_client, closed.getsockname()))
    finally:
        closed.close()


def test_sock_accept_waits_for_client(loop, run, tcp_server):
    client = socket.socket()

    async def main():
        accept = loop.create_task(loop.sock_accept(tcp_server))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not accept.done()
        client.setblocking(False)
        await loop.sock_connect(client, tcp_server.getsockname())
        conn, addr = await accept
        conn.close()
        return addr

    try:
        assert run(main()) == client.getsockname()
    finally:
        client.close()


# ---------------------------------------------------------------------------
# sendfile


@pytest.fixture
def data_file(tmp_path):
    content = bytes(range(256)) * 4096  # 1 MiB
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with open(path, "rb") as f:
        yield f, content


def sendfile_scenario(loop, run, server, client, file, **kwargs):
    async def main():
        conn = await connected_pair(loop, server, client)
        with conn:
            reader = loop.create_task(recv_until_eof(loop, conn))
            sent = await loop.sock_sendfile(client, file, **kwargs)
            client.shutdown(socket.SHUT_WR)
            return sent, await reader

    return run(main(), timeout=3 * WAIT)


def test_sock_sendfile(loop, run, tcp_server, tcp_client, data_file):
    f, content = data_file
    sent, received = sendfile_scenario(loop, run, tcp_server, tcp_client, f)
    assert sent == len(content)
    assert received == content
    assert f.tell() == len(content)


def test_sock_sendfile_offset_count(loop, run, tcp_server, tcp_client, data_file):
    f, content = data_file
    sent, received = sendfile_scenario(loop, run, tcp_server, tcp_client, f, offset=1000, count=70000)
    assert sent == 70000
    assert received == content[1000:71000]
    assert f.tell() == 71000


def test_sock_sendfile_offset_only(loop, run, tcp_server, tcp_client, data_file):
    f, content = data_file
    sent, received = sendfile_scenario(loop, run, tcp_server, tcp_client, f, offset=len(content) - 10)
    assert sent == 10
    assert received == content[-10:]


def test_sock_sendfile_non_regular_file_fallback(loop, run, tcp_server, tcp_client):
    content = b"in memory" * 1000
    f = io.BytesIO(content)
    sent, received = sendfile_scenario(loop, run, tcp_server, tcp_client, f)
    assert sent == len(content)
    assert received == content


def test_sock_sendfile_no_fallback(loop, run, tcp_server, tcp_client):
    f = io.BytesIO(b"in memory")

    async def main():
        conn = await connected_pair(loop, server=tcp_server, client=tcp_client)
        with conn:
            await loop.sock_sendfile(tcp_client, f, fallback=False)

    with pytest.raises(asyncio.SendfileNotAvailableError):
        run(main())


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"offset": -1}, ValueError),
        ({"offset": "0"}, TypeError),
        ({"count": 0}, ValueError),
        ({"count": 1.5}, TypeError),
    ],
    ids=["neg-offset", "str-offset", "zero-count", "float-count"],
)
def test_sock_sendfile_bad_params(loop, run, tcp_client, data_file, kwargs, exc):
    f, _ = data_file
    with pytest.raises(exc):
        run(loop.sock_sendfile(tcp_client, f, **kwargs))


def test_sock_sendfile_text_file(loop, run, tcp_client, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("text")
    with open(path) as f, pytest.raises(ValueError, match="binary mode"):
        run(loop.sock_sendfile(tcp_client, f))


def test_sock_sendfile_udp_socket(loop, run, udp_pair, data_file):
    f, _ = data_file
    with pytest.raises(ValueError, match="SOCK_STREAM"):
        run(loop.sock_sendfile(udp_pair[0], f))


# ---------------------------------------------------------------------------
# blocking sockets are rejected (asyncio checks this in debug mode)


def _blocking_ops(loop, sock, tmpfile):
    addr = ("127.0.0.1", 1)
    return {
        "sock_recv": lambda: loop.sock_recv(sock, 10),
        "sock_recv_into": lambda: loop.sock_recv_into(sock, bytearray(10)),
        "sock_recvfrom": lambda: loop.sock_recvfrom(sock, 10),
        "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(sock, bytearray(10)),
        "sock_sendall": lambda: loop.sock_sendall(sock, b"x"),
        "sock_sendto": lambda: loop.sock_sendto(sock, b"x", addr),
        "sock_connect": lambda: loop.sock_connect(sock, addr),
        "sock_accept": lambda: loop.sock_accept(sock),
        "sock_sendfile": lambda: loop.sock_sendfile(sock, tmpfile),
    }


SOCK_METHODS = [
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendto",
    "sock_connect",
    "sock_accept",
    "sock_sendfile",
]


@pytest.mark.parametrize("method", SOCK_METHODS)
def test_blocking_socket_rejected(loop, run, method, data_file):
    loop.set_debug(True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert sock.getblocking()
        coro = _blocking_ops(loop, sock, data_file[0])[method]()
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            run(coro)
    finally:
        sock.close()


@pytest.mark.parametrize("method", SOCK_METHODS)
def test_ssl_socket_rejected(loop, run, method, data_file):
    ctx = ssl.create_default_context()
    sock = ctx.wrap_socket(
        socket.socket(socket.AF_INET, socket.SOCK_STREAM),
        server_hostname="localhost",
        do_handshake_on_connect=False,
    )
    try:
        sock.setblocking(False)
        coro = _blocking_ops(loop, sock, data_file[0])[method]()
        with pytest.raises(TypeError, match="SSLSocket"):
            run(coro)
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# cancellation


def test_cancel_sock_recv_leaves_socket_usable(loop, run, sockpair):
    a, b = sockpair

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # nothing is left registered for the fd
        assert not loop.remove_reader(a)
        b.send(b"after cancel")
        return await loop.sock_recv(a, 100)

    assert run(main()) == b"after cancel"


def test_cancel_sock_recv_does_not_consume_data(loop, run, sockpair):
    a, b = sockpair

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        b.send(b"data")
        task.cancel()  # cancelled before it got a chance to read
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if task.cancelled():
            return await loop.sock_recv(a, 100)
        return task.result()

    assert run(main()) == b"data"


def test_cancel_sock_accept(loop, run, tcp_server, tcp_client):
    async def main():
        task = loop.create_task(loop.sock_accept(tcp_server))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        conn = await connected_pair(loop, tcp_server, tcp_client)
        conn.close()
        return True

    assert run(main())


def test_sock_recv_timeout_via_wait_for(loop, run, sockpair):
    a, b = sockpair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 100), 0.01)
        b.send(b"later")
        return await loop.sock_recv(a, 100)

    assert run(main()) == b"later"


# ---------------------------------------------------------------------------
# edge cases of the waits


async def cancel_while_waiting(loop, coro):
    task = loop.create_task(coro)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def recv_until(loop, sock, end):
    data = b""
    while not data.endswith(end):
        chunk = await loop.sock_recv(sock, 256 * 1024)
        assert chunk, "unexpected EOF"
        data += chunk
    return data


def test_cancel_each_operation_then_reuse(loop, run, tcp_server, tcp_client):
    async def main():
        await cancel_while_waiting(loop, loop.sock_accept(tcp_server))
        assert not loop.remove_reader(tcp_server)
        conn = await connected_pair(loop, tcp_server, tcp_client)
        with conn:
            await cancel_while_waiting(loop, loop.sock_recv(conn, 100))
            await cancel_while_waiting(loop, loop.sock_recv_into(conn, bytearray(100)))
            assert not loop.remove_reader(conn)
            # Nobody reads the other end: sendall waits once the buffers are full.
            await cancel_while_waiting(loop, loop.sock_sendall(conn, b"x" * (16 * 1024 * 1024)))
            assert not loop.remove_writer(conn)
            reader = loop.create_task(recv_until(loop, tcp_client, b"END"))
            await loop.sock_sendall(conn, b"END")
            assert (await reader).endswith(b"END")
            await loop.sock_sendall(tcp_client, b"ping")
            assert await loop.sock_recv(conn, 100) == b"ping"

    run(main())


def _pair_on_number(fd):
    """A non-blocking socketpair, (the end numbered fd, the other end)."""
    c, d = socket.socketpair()
    c.setblocking(False)
    d.setblocking(False)
    if d.fileno() == fd:
        c, d = d, c
    assert c.fileno() == fd, "the freed descriptor number was not reused"
    return c, d


@pytest.mark.parametrize("how", ["completed", "cancelled", "replaced-by-add_reader"])
def test_socket_closed_after_a_wait_and_number_reused(loop, run, how):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    fd = a.fileno()

    async def main():
        task = loop.create_task(loop.sock_recv(a, 10))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        if how == "completed":
            b.send(b"1")
            assert await task == b"1"
        elif how == "cancelled":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            loop.add_reader(a, lambda: None)
            assert loop.remove_reader(a)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        a.close()
        b.close()
        c, d = _pair_on_number(fd)
        with c, d:
            # Each kind of wait on the new socket: it must be registered afresh.
            recv = loop.create_task(loop.sock_recv(c, 10))
            for _ in range(3):
                await asyncio.sleep(0)
            assert not recv.done()
            d.send(b"2")
            assert await recv == b"2"
            got = loop.create_future()
            loop.add_reader(c, lambda: got.done() or got.set_result(c.recv(10)))
            d.send(b"3")
            assert await got == b"3"
            assert loop.remove_reader(c)

    try:
        run(main())
    finally:
        a.close()
        b.close()


def test_socket_closed_while_waiting_and_number_reused(loop_factory, fd_guard):
    # asyncio's selector keeps the closed socket's registration (the new socket's wait is then
    # never registered and hangs): ferroloop registers every new wait for real.
    if loop_factory.name == "asyncio":
        pytest.skip("hangs on asyncio's selector loop")
    loop = loop_factory()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    fd = a.fileno()

    async def main():
        abandoned = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        a.close()
        b.close()
        c, d = _pair_on_number(fd)
        with c, d:
            recv = loop.create_task(loop.sock_recv(c, 10))
            await asyncio.sleep(0)
            d.send(b"new")
            assert await recv == b"new"
        abandoned.cancel()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), WAIT))
    finally:
        a.close()
        b.close()
        loop.close()


def test_cancel_removes_only_its_own_wait(loop, run, sockpair):
    a, b = sockpair

    async def main():
        first = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        # A second wait on the same socket replaces the first one's, as on asyncio.
        second = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        b.send(b"for the second")
        assert await second == b"for the second"

        # add_reader replaces a wait too; cancelling the wait keeps the reader.
        third = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        got = loop.create_future()
        loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(100)))
        third.cancel()
        with pytest.raises(asyncio.CancelledError):
            await third
        b.send(b"for the reader")
        assert await got == b"for the reader"
        assert loop.remove_reader(a)

    run(main())


def test_recv_and_sendall_at_once_on_each_end(loop, run, sockpair):
    a, b = sockpair
    to_b = hashlib.sha256(b"a").digest() * (4 * 1024 * 1024 // 32)
    to_a = hashlib.sha256(b"b").digest() * (3 * 1024 * 1024 // 32)

    async def main():
        tasks = [
            loop.create_task(recv_exactly(loop, a, len(to_a))),
            loop.create_task(recv_exactly(loop, b, len(to_b))),
            loop.create_task(loop.sock_sendall(a, to_b)),
            loop.create_task(loop.sock_sendall(b, to_a)),
        ]
        return await asyncio.gather(*tasks)

    got_a, got_b, sent_a, sent_b = run(main(), timeout=3 * WAIT)
    assert got_a == to_a
    assert got_b == to_b
    assert sent_a is None and sent_b is None


def test_sendall_8mb_on_two_sockets_concurrently(loop, run):
    pairs = [socket.socketpair() for _ in range(2)]
    payloads = [hashlib.sha256(b"%d" % i).digest() * (8 * 1024 * 1024 // 32) for i in range(2)]
    try:
        for x, y in pairs:
            x.setblocking(False)
            y.setblocking(False)

        async def main():
            readers = [loop.create_task(recv_exactly(loop, y, len(p))) for (_, y), p in zip(pairs, payloads)]
            await asyncio.gather(*(loop.sock_sendall(x, p) for (x, _), p in zip(pairs, payloads)))
            return await asyncio.gather(*readers)

        received = run(main(), timeout=3 * WAIT)
        assert [hashlib.sha256(r).digest() for r in received] == [hashlib.sha256(p).digest() for p in payloads]
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def test_sendall_bytearray_and_memoryview_slices(loop, run, sockpair):
    a, b = sockpair
    data = bytearray(range(256)) * 4096  # 1 MiB

    async def main():
        reader = loop.create_task(recv_exactly(loop, b, 768 * 1024 + 100))
        await loop.sock_sendall(a, data[: 256 * 1024])
        await loop.sock_sendall(a, memoryview(data)[256 * 1024 : 768 * 1024])
        await loop.sock_sendall(a, memoryview(bytes(data))[768 * 1024 : 768 * 1024 + 100])
        return await reader

    assert run(main()) == bytes(data[: 768 * 1024 + 100])


def test_sock_recv_large_size(loop, run, sockpair):
    a, b = sockpair

    async def main():
        recv = loop.create_task(loop.sock_recv(a, 4 * 1024 * 1024))
        await asyncio.sleep(0)
        b.send(b"small")
        return await recv

    assert run(main()) == b"small"


def _error_of(call):
    try:
        call()
    except Exception as exc:
        return type(exc), str(exc)
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "method, arg, direct",
    [
        ("sock_recv", -1, lambda s: s.recv(-1)),
        ("sock_recv", 1.5, lambda s: s.recv(1.5)),
        ("sock_recv", "10", lambda s: s.recv("10")),
        ("sock_recv_into", b"read-only", lambda s: s.recv_into(b"read-only")),
        ("sock_recv_into", "text", lambda s: s.recv_into("text")),
        ("sock_sendall", "text", lambda s: s.send("text")),
        ("sock_sendall", 42, lambda s: s.send(42)),
        ("sock_sendall", memoryview(bytearray(10))[::2], lambda s: s.send(memoryview(bytearray(10))[::2])),
    ],
    ids=[
        "recv-negative",
        "recv-float",
        "recv-str",
        "recv_into-bytes",
        "recv_into-str",
        "send-str",
        "send-int",
        "send-noncontiguous",
    ],
)
def test_argument_errors_are_the_socket_modules(loop, run, sockpair, method, arg, direct):
    a, _ = sockpair
    expected = _error_of(lambda: direct(a))
    assert _error_of(lambda: run(getattr(loop, method)(a, arg))) == expected


def test_errors_carry_errno(loop, run, sockpair, tcp_server, tcp_client):
    a, b = sockpair

    async def main():
        # At once: a closed socket.
        closed = socket.socket()
        closed.close()
        with pytest.raises(OSError) as info:
            await loop.sock_recv(closed, 10)
        assert (info.value.errno, info.value.strerror) == (errno.EBADF, os.strerror(errno.EBADF))

        # While waiting: the peer goes away.
        b.close()
        with pytest.raises(BrokenPipeError) as info:
            await loop.sock_sendall(a, b"x" * (16 * 1024 * 1024))
        assert (info.value.errno, info.value.strerror) == (errno.EPIPE, os.strerror(errno.EPIPE))

        conn = await connected_pair(loop, tcp_server, tcp_client)
        with conn:
            recv = loop.create_task(loop.sock_recv(conn, 10))
            await asyncio.sleep(0)
            tcp_client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tcp_client.close()  # reset
            with pytest.raises(ConnectionResetError) as info:
                await recv
            assert info.value.errno == errno.ECONNRESET

    run(main())


def test_sock_connect_refused_message(loop, run, tcp_client):
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        closed.bind(("127.0.0.1", 0))
        address = closed.getsockname()
        with pytest.raises(ConnectionRefusedError) as info:
            run(loop.sock_connect(tcp_client, address))
        assert info.value.errno == errno.ECONNREFUSED
        assert str(info.value) == f"[Errno {errno.ECONNREFUSED}] Connect call failed {address}"
    finally:
        closed.close()


class LoggingSocket(socket.socket):
    """A socket subclass whose methods the loop must call, as asyncio does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def recv(self, *args):
        self.log.append("recv")
        return super().recv(*args)

    def recv_into(self, *args):
        self.log.append("recv_into")
        return super().recv_into(*args)

    def send(self, *args):
        self.log.append("send")
        return super().send(*args)

    def accept(self):
        self.log.append("accept")
        return super().accept()


def test_socket_subclass_methods_are_called(loop, run):
    x, y = socket.socketpair()
    a = LoggingSocket(x.family, x.type, x.proto, x.detach())
    b = LoggingSocket(y.family, y.type, y.proto, y.detach())
    listener = LoggingSocket()
    try:
        for s in (a, b, listener):
            s.setblocking(False)
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        async def main():
            recv = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0)
            await loop.sock_sendall(b, b"hello")
            assert await recv == b"hello"
            buf = bytearray(10)
            await loop.sock_sendall(b, b"world")
            assert await loop.sock_recv_into(a, buf) == 5
            accept = loop.create_task(loop.sock_accept(listener))
            with socket.socket() as client:
                client.setblocking(False)
                await loop.sock_connect(client, listener.getsockname())
                conn, _ = await accept
                conn.close()

        run(main())
        assert a.log == ["recv", "recv", "recv_into"]
        assert b.log == ["send", "send"]
        assert "accept" in listener.log
    finally:
        for s in (a, b, listener):
            s.close()


def test_finished_operations_keep_nothing_alive(loop, run):
    pair = list(socket.socketpair())
    for s in pair:
        s.setblocking(False)

    async def main(a, b):
        for _ in range(100):
            recv = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0)
            b.send(b"x")
            assert await recv == b"x"
        for _ in range(100):
            await cancel_while_waiting(loop, loop.sock_recv(a, 10))
        await cancel_while_waiting(loop, loop.sock_sendall(a, b"x" * (16 * 1024 * 1024)))
        assert not loop.remove_reader(a)
        assert not loop.remove_writer(a)

    run(main(*pair))
    ref = weakref.ref(pair[0])  # the socket the operations waited on
    for s in pair:
        s.close()
    pair.clear()
    gc.collect()
    assert ref() is None


def test_cancelled_after_its_socket_was_closed(loop, run, sockpair):
    a, b = sockpair

    async def main():
        other = loop.create_task(loop.sock_recv(b, 10))
        await asyncio.sleep(0)
        c, d = socket.socketpair()
        with c, d:
            c.setblocking(False)
            recv = loop.create_task(loop.sock_recv(c, 10))
            await asyncio.sleep(0)
            c.close()
            recv.cancel()
            with pytest.raises(asyncio.CancelledError):
                await recv
        # The other socket's wait is untouched.
        a.send(b"still here")
        assert await other == b"still here"

    run(main())


def test_number_reused_while_the_old_file_lives_on(loop, run):
    # The closed socket's file stays open through a duplicate: epoll keeps its registration
    # under the old number, which a new socket gets. Its traffic must not wake the new socket's
    # waits, and the new socket's traffic must.
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    fd = a.fileno()
    a_dup = a.dup()

    async def main():
        recv = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        b.send(b"1")
        assert await recv == b"1"
        a.close()
        c, d = _pair_on_number(fd)
        with c, d:
            recv = loop.create_task(loop.sock_recv(c, 10))
            for _ in range(3):
                b.send(b"old")
                await asyncio.sleep(0.001)
            assert not recv.done()
            d.send(b"new")
            assert await recv == b"new"

    try:
        run(main())
        assert a_dup.recv(100) == b"old" * 3
    finally:
        for s in (a, b, a_dup):
            s.close()


def test_two_socket_objects_on_one_descriptor(loop, run, sockpair):
    a, b = sockpair
    alias = socket.socket(a.family, a.type, a.proto, a.fileno())
    alias.setblocking(False)

    async def main():
        for i, sock in enumerate([a, alias, alias, a, a, alias]):
            recv = loop.create_task(loop.sock_recv(sock, 10))
            await asyncio.sleep(0)
            b.send(b"%d" % i)
            assert await recv == b"%d" % i

    try:
        run(main())
    finally:
        alias.detach()


def test_many_reports_nobody_waits_for(loop, run):
    # Data arrives over and over on sockets nobody waits on (the poller drops what it keeps
    # registered for them); waits keep working throughout.
    pairs = [socket.socketpair() for _ in range(4)]
    for x, y in pairs:
        x.setblocking(False)
        y.setblocking(False)

    async def main():
        for round_ in range(150):
            for x, y in pairs:
                recv = loop.create_task(loop.sock_recv(x, 10))
                await asyncio.sleep(0)
                y.send(b"w")
                assert await recv == b"w"
            for x, y in pairs:
                y.send(b"u")
            await asyncio.sleep(0)
            for x, _ in pairs:
                assert x.recv(10) == b"u"

    try:
        run(main(), timeout=3 * WAIT)
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def test_partial_reads_after_a_wait(loop, run, sockpair):
    # One readiness report, more data than one receive takes: the rest is there at once.
    a, b = sockpair

    async def main():
        got = []
        for _ in range(3):
            recv = loop.create_task(loop.sock_recv(a, 3))
            await asyncio.sleep(0)
            b.send(b"abcdefgh")
            got.append(await recv)
            got.append(await loop.sock_recv(a, 3))
            got.append(await loop.sock_recv(a, 3))
        return got

    assert run(main()) == [b"abc", b"def", b"gh"] * 3


def test_accept_several_clients_arriving_at_once(loop, run, tcp_server):
    clients = [socket.socket() for _ in range(4)]

    async def main():
        accept = loop.create_task(loop.sock_accept(tcp_server))
        await asyncio.sleep(0)
        for c in clients:
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(tcp_server.getsockname())
        conns = [(await accept)[0]]
        for _ in clients[1:]:
            conns.append((await loop.sock_accept(tcp_server))[0])
        peers = sorted(conn.getpeername() for conn in conns)
        for conn in conns:
            conn.close()
        return peers

    try:
        assert run(main()) == sorted(c.getsockname() for c in clients)
    finally:
        for c in clients:
            c.close()


def test_socket_closed_while_waiting_its_file_open_elsewhere(loop, run):
    # As asyncio's retry of sock.recv() on the closed socket does: EBADF.
    a, b = socket.socketpair()
    a.setblocking(False)
    a_dup = a.dup()

    async def main():
        recv = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        a.close()
        b.send(b"x")
        with pytest.raises(OSError) as info:
            await recv
        assert info.value.errno == errno.EBADF

    try:
        run(main())
        assert a_dup.recv(10) == b"x"
    finally:
        for s in (a, b, a_dup):
            s.close()


def test_wait_of_a_closed_socket_never_touches_the_numbers_next_owner(loop, run):
    a, b = socket.socketpair()
    a.setblocking(False)
    fd = a.fileno()
    x, y = socket.socketpair()
    x.setblocking(False)

    async def main():
        abandoned = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        a.close()
        b.close()
        c, d = _pair_on_number(fd)
        with c, d:
            # c is used without the loop. Meanwhile, many reports nobody waits for.
            for i in range(300):
                recv = loop.create_task(loop.sock_recv(x, 10))
                await asyncio.sleep(0)
                y.send(b"w")
                assert await recv == b"w"
                y.send(b"u")
                await asyncio.sleep(0)
                assert x.recv(10) == b"u"
                if i % 10 == 0:
                    d.send(b"c")
            await asyncio.sleep(0.01)
            assert c.recv(1000) == b"c" * 30
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await abandoned

    try:
        run(main(), timeout=3 * WAIT)
    finally:
        for s in (a, b, x, y):
            s.close()
