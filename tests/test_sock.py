"""Low-level socket coroutines: sock_recv, sock_sendall, sock_connect, ..."""

import asyncio
import contextlib
import hashlib
import io
import socket
import ssl

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
