"""TLS: create_connection/create_server with ``ssl=``, streams over TLS, ``start_tls``, certificate
verification, client certificates, ALPN, flow control, abrupt peers and timeouts.

Every test runs on stock asyncio and on ferroloop and asserts asyncio's behaviour. The
certificates are made by the tests (``trustme``): one CA, a server certificate for
localhost/127.0.0.1, one for another name, and a client certificate. Peers that must misbehave
(close abruptly, never answer, never send close_notify back) are driven by hand: a socket used
through ``loop.sock_*`` and, where TLS is needed, an ``ssl.SSLObject`` over two memory BIOs.
"""

import asyncio
import hashlib
import logging
import random
import socket
import ssl

import pytest
import trustme
from conftest import WAIT, FdGuard

# Generous bound for things that must happen "about" after a short timeout.
PROMPT = 3.0


# ---------------------------------------------------------------------------
# certificates


class Certs:
    """A CA, the certificates it issued, and contexts built from them."""

    def __init__(self):
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
        self.other = self.ca.issue_cert("other.example", common_name="other.example")
        self.client = self.ca.issue_cert("client.example", common_name="client.example")

    def server_context(self, *, cert=None, require_client_cert=False, alpn=None):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (cert or self.server).configure_cert(ctx)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def client_context(self, *, trust=True, cert=False, alpn=None, max_version=None):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if trust:
            self.ca.configure_trust(ctx)
        if cert:
            self.client.configure_cert(ctx)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx


@pytest.fixture(scope="module")
def certs():
    return Certs()


# ---------------------------------------------------------------------------
# helpers


class Errors:
    """An exception handler that records contexts (tracebacks cleared, so that frames holding
    sockets do not outlive the test)."""

    def __init__(self, loop):
        self.loop = loop
        self.contexts = []
        self._changed = None

    def __call__(self, loop, context):
        context = dict(context)
        exc = context.get("exception")
        if exc is not None:
            exc.__traceback__ = None
        self.contexts.append(context)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def wait(self, n=1):
        while len(self.contexts) < n:
            self._changed = self.loop.create_future()
            await self._changed
        return self.contexts

    def exceptions(self):
        return [c.get("exception") for c in self.contexts]


@pytest.fixture
def errors(loop):
    handler = Errors(loop)
    loop.set_exception_handler(handler)
    yield handler
    loop.set_exception_handler(None)


class Proto(asyncio.Protocol):
    """Records every callback; ``echo`` writes received data back."""

    def __init__(self, loop, *, echo=False):
        self.loop = loop
        self.echo = echo
        self.transport = None
        self.data = bytearray()
        self.made_calls = 0
        self.made = loop.create_future()
        self.eof_calls = 0
        self.lost = loop.create_future()
        self.lost_calls = []
        self._changed = None

    def connection_made(self, transport):
        self.made_calls += 1
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.data += data
        if self.echo:
            self.transport.write(data)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def eof_received(self):
        self.eof_calls += 1

    def connection_lost(self, exc):
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_data(self, n):
        while len(self.data) < n:
            self._changed = self.loop.create_future()
            await self._changed
        return bytes(self.data)


class Factory:
    """A protocol factory keeping every protocol it made."""

    def __init__(self, loop, **kwargs):
        self.loop = loop
        self.kwargs = kwargs
        self.protocols = []

    def __call__(self):
        proto = Proto(self.loop, **self.kwargs)
        self.protocols.append(proto)
        return proto


def listening_socket(*, bufsize=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if bufsize is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def raw_connect(loop, addr, *, bufsize=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if bufsize is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


def reset_on_close(sock):
    """Make ``sock.close()`` send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


async def recv_until_closed(loop, sock):
    """Read until the peer closes; returns what was read (a reset counts as a close)."""
    data = bytearray()
    while True:
        try:
            chunk = await loop.sock_recv(sock, 65536)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


async def recv_record(loop, sock):
    """Read one whole TLS record (header and body) from a raw socket."""

    async def exactly(n):
        data = b""
        while len(data) < n:
            chunk = await loop.sock_recv(sock, n - len(data))
            if not chunk:
                raise ConnectionResetError("closed in the middle of a record")
            data += chunk
        return data

    header = await exactly(5)
    return header + await exactly(int.from_bytes(header[3:5], "big"))


async def fds_settled(guard):
    """Wait (bounded) until no descriptor opened since ``guard`` is left; return the leaked ones."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        leaked = guard.leaked()
        if not leaked or loop.time() > deadline:
            return leaked
        await asyncio.sleep(0.01)


class RawTlsPeer:
    """One end of a TLS connection driven by hand: an ``ssl.SSLObject`` over memory BIOs, its
    ciphertext moved through a non-blocking socket with ``loop.sock_*``. Nothing happens unless the
    test asks for it, so the peer can stop answering or drop the connection at any point."""

    def __init__(self, loop, sock, ctx, *, server_side, server_hostname=None):
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname)

    async def flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def _fill(self):
        data = await self.loop.sock_recv(self.sock, 65536)
        if not data:
            raise ConnectionResetError("the peer closed the connection")
        self.incoming.write(data)

    async def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self._fill()
        await self.flush()

    def encrypt(self, data):
        """The ciphertext of ``data`` (not sent)."""
        self.obj.write(data)
        return self.outgoing.read()

    async def send(self, data):
        self.obj.write(data)
        await self.flush()

    async def recv(self):
        """Plaintext from the peer; b"" once its close_notify arrived."""
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLWantReadError:
                await self.flush()
                await self._fill()


def client_hello(ctx, server_hostname="localhost"):
    """The bytes of a ClientHello ``ctx`` would send."""
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


# ---------------------------------------------------------------------------
# 1. an HTTPS-like exchange over a real certificate chain


def test_https_exchange_with_keep_alive(loop, run, certs):
    server_ctx = certs.server_context()
    client_ctx = certs.client_context()

    async def main():
        handled = loop.create_future()
        server_info = {}

        async def handle(reader, writer):
            transport = writer.transport
            server_info.update(
                transport=transport,
                peername=writer.get_extra_info("peername"),
                sockname=writer.get_extra_info("sockname"),
                sslcontext=writer.get_extra_info("sslcontext"),
                peercert=writer.get_extra_info("peercert"),
                ssl_object=writer.get_extra_info("ssl_object"),
            )
            requests = 0
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    request_line, *header_lines = head.decode("ascii").split("\r\n")[:-2]
                    method, path, version = request_line.split(" ")
                    assert (method, version) == ("GET", "HTTP/1.1")
                    headers = dict(line.split(": ", 1) for line in header_lines)
                    assert headers["Host"] == "localhost"
                    requests += 1
                    body = f"resource {path} (request {requests})\n".encode()
                    close = headers.get("Connection") == "close"
                    writer.write(
                        b"HTTP/1.1 200 OK\r\n"
                        + f"Content-Length: {len(body)}\r\n".encode()
                        + b"Content-Type: text/plain\r\n"
                        + (b"Connection: close\r\n" if close else b"Connection: keep-alive\r\n")
                        + b"\r\n"
                        + body
                    )
                    await writer.drain()
                    if close:
                        break
                writer.close()
                await writer.wait_closed()
            except BaseException as exc:
                handled.set_exception(exc)
                raise
            handled.set_result(requests)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        addr = server.sockets[0].getsockname()
        try:
            reader, writer = await asyncio.open_connection(*addr, ssl=client_ctx, server_hostname="localhost")
            transport = writer.transport
            assert isinstance(transport, asyncio.Transport)
            assert not transport.is_closing()

            # What the client sees.
            peercert = writer.get_extra_info("peercert")
            assert ("commonName", "localhost") in [rdn for rdns in peercert["subject"] for rdn in rdns]
            assert ("DNS", "localhost") in peercert["subjectAltName"]
            cipher = writer.get_extra_info("cipher")
            assert isinstance(cipher, tuple) and len(cipher) == 3
            assert cipher[1] in ("TLSv1.2", "TLSv1.3")
            assert writer.get_extra_info("compression") is None
            sslobj = writer.get_extra_info("ssl_object")
            assert isinstance(sslobj, ssl.SSLObject)
            assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
            assert sslobj.server_side is False
            assert sslobj.server_hostname == "localhost"
            assert sslobj.cipher() == cipher
            assert sslobj.getpeercert() == peercert
            assert writer.get_extra_info("sslcontext") is client_ctx
            assert writer.get_extra_info("peername") == addr
            sockname = writer.get_extra_info("sockname")
            assert sockname[0] == "127.0.0.1"
            sock = writer.get_extra_info("socket")
            assert sock.getsockname() == sockname
            assert sock.getpeername() == addr
            assert writer.get_extra_info("no such thing", "default") == "default"

            responses = []
            for i, path in enumerate(["/", "/index.html", "/last"]):
                last = i == 2
                writer.write(
                    f"GET {path} HTTP/1.1\r\n".encode()
                    + b"Host: localhost\r\nUser-Agent: test\r\n"
                    + (b"Connection: close\r\n" if last else b"")
                    + b"\r\n"
                )
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status_line, *header_lines = head.decode("ascii").split("\r\n")[:-2]
                assert status_line == "HTTP/1.1 200 OK"
                headers = dict(line.split(": ", 1) for line in header_lines)
                assert headers["Connection"] == ("close" if last else "keep-alive")
                body = await reader.readexactly(int(headers["Content-Length"]))
                responses.append(body)
            assert responses == [
                b"resource / (request 1)\n",
                b"resource /index.html (request 2)\n",
                b"resource /last (request 3)\n",
            ]
            # The server closed the connection (close_notify): EOF.
            assert await reader.read() == b""
            assert reader.at_eof()
            assert await handled == 3
            writer.close()
            await writer.wait_closed()
            assert transport.is_closing()

            # What the server saw.
            server_transport = server_info["transport"]
            assert isinstance(server_transport, asyncio.Transport)
            assert server_info["peername"] == sockname
            assert server_info["sockname"] == addr
            assert server_info["sslcontext"] is server_ctx
            assert server_info["peercert"] is None  # no client certificate was asked for
            assert isinstance(server_info["ssl_object"], ssl.SSLObject)
            assert server_info["ssl_object"].server_side is True
            assert server_info["ssl_object"].version() == sslobj.version()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_protocol_callbacks_and_close_notify(loop, run, certs):
    # Protocols instead of streams: connection_made gets the TLS transport, data flows both ways,
    # close() on one side is eof_received then connection_lost(None) on the other.
    async def main():
        factory = Factory(loop, echo=True)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context())
        addr = server.sockets[0].getsockname()
        try:
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(), server_hostname="localhost"
            )
            assert proto.made_calls == 1
            assert proto.made.result() is transport
            assert isinstance(transport, asyncio.Transport)
            assert transport.get_protocol() is proto
            transport.write(b"hello ")
            transport.writelines([b"over ", bytearray(b"tls"), memoryview(b"!")])
            assert await proto.wait_data(15) == b"hello over tls!"
            (server_proto,) = factory.protocols
            assert server_proto.made_calls == 1
            assert isinstance(server_proto.transport, asyncio.Transport)

            transport.close()
            assert transport.is_closing()
            assert await server_proto.lost is None
            assert await proto.lost is None
            assert server_proto.eof_calls == 1
            assert server_proto.lost_calls == [None]
            assert proto.lost_calls == [None]
            # The initiator of the shutdown gets eof_received too, once the peer's close_notify came.
            assert proto.eof_calls == 1
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------------
# 2. verification


async def connect_and_fail(loop, addr, **kwargs):
    """create_connection(**kwargs) to ``addr`` through a socket made here; returns the exception.
    The loop must have closed the socket."""
    sock = await raw_connect(loop, addr)
    with pytest.raises(Exception) as info:
        await loop.create_connection(lambda: Proto(loop), sock=sock, **kwargs)
    assert sock.fileno() == -1
    return info.value


@pytest.mark.parametrize(
    "case",
    ["no CA", "wrong server_hostname", "ssl=True", "ssl=True, server_hostname=''", "certificate for another name"],
)
def test_verification_failures(loop, run, certs, errors, case):
    async def main():
        guard = FdGuard()
        server_cert = certs.other if case == "certificate for another name" else certs.server
        server = await loop.create_server(Factory(loop), "127.0.0.1", 0, ssl=certs.server_context(cert=server_cert))
        addr = server.sockets[0].getsockname()
        kwargs = {
            "no CA": {"ssl": certs.client_context(trust=False), "server_hostname": "localhost"},
            "wrong server_hostname": {"ssl": certs.client_context(), "server_hostname": "www.example.com"},
            "ssl=True": {"ssl": True, "server_hostname": "localhost"},
            "ssl=True, server_hostname=''": {"ssl": True, "server_hostname": ""},
            "certificate for another name": {"ssl": certs.client_context(), "server_hostname": "localhost"},
        }[case]
        try:
            exc = await connect_and_fail(loop, addr, **kwargs)
            assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
            if case in ("wrong server_hostname", "certificate for another name"):
                assert exc.verify_message.startswith("Hostname mismatch")
            else:
                assert exc.verify_message == "unable to get local issuer certificate"
        finally:
            server.close()
            await server.wait_closed()
        assert await fds_settled(guard) == set()

    run(main())


def _ssl_needs_hostname_to_check_it():
    """Whether this Python's ssl refuses check_hostname without a server_hostname (3.14.x does)."""
    try:
        ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=None)
    except ValueError:
        return True
    return False


def test_empty_server_hostname_skips_the_hostname_check(loop, run, certs):
    # The server's certificate names other.example only: the chain is valid, the name is not.
    async def main():
        factory = Factory(loop, echo=True)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context(cert=certs.other))
        addr = server.sockets[0].getsockname()
        try:
            if _ssl_needs_hostname_to_check_it():
                # Newer ssl modules refuse the combination itself: so do both loops.
                with pytest.raises(ValueError, match="check_hostname requires server_hostname"):
                    await loop.create_connection(
                        lambda: Proto(loop), *addr, ssl=certs.client_context(), server_hostname=""
                    )
                return
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(), server_hostname=""
            )
            assert transport.get_extra_info("ssl_object").server_hostname is None
            transport.write(b"ping")
            assert await proto.wait_data(4) == b"ping"
            transport.close()
            await proto.lost
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_server_hostname_defaults_to_host(loop, run, certs):
    # The certificate also names 127.0.0.1 (an IP address SAN).
    async def main():
        server = await loop.create_server(Factory(loop), "127.0.0.1", 0, ssl=certs.server_context())
        addr = server.sockets[0].getsockname()
        try:
            transport, proto = await loop.create_connection(lambda: Proto(loop), *addr, ssl=certs.client_context())
            assert transport.get_extra_info("ssl_object").server_hostname == "127.0.0.1"
            transport.close()
            await proto.lost
        finally:
            server.close()
            await server.wait_closed()

    run(main())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server_hostname": "localhost"}, "server_hostname is only meaningful with ssl"),
        ({"ssl": None, "server_hostname": "localhost"}, "server_hostname is only meaningful with ssl"),
        ({"ssl_handshake_timeout": 1.0}, "ssl_handshake_timeout is only meaningful with ssl"),
        ({"ssl_shutdown_timeout": 1.0}, "ssl_shutdown_timeout is only meaningful with ssl"),
        ({"ssl": True, "server_hostname": None}, "You must set server_hostname when using ssl without a host"),
    ],
)
def test_create_connection_argument_errors(loop, run, kwargs, message):
    async def main():
        lsock = listening_socket()
        sock = await raw_connect(loop, lsock.getsockname())
        try:
            with pytest.raises(ValueError, match=message):
                await loop.create_connection(lambda: Proto(loop), sock=sock, **kwargs)
        finally:
            sock.close()
            lsock.close()

    run(main())


@pytest.mark.parametrize("value", [0, -1.5])
@pytest.mark.parametrize("which", ["ssl_handshake_timeout", "ssl_shutdown_timeout"])
def test_timeouts_must_be_positive(loop, run, certs, which, value):
    async def main():
        lsock = listening_socket()
        try:
            with pytest.raises(ValueError, match=f"{which} should be a positive number, got {value}"):
                await loop.create_connection(
                    lambda: Proto(loop),
                    *lsock.getsockname(),
                    ssl=certs.client_context(),
                    server_hostname="localhost",
                    **{which: value},
                )
        finally:
            lsock.close()

    run(main())


def test_create_server_timeouts_need_ssl(loop, run):
    async def main():
        for which in ("ssl_handshake_timeout", "ssl_shutdown_timeout"):
            with pytest.raises(ValueError, match=f"{which} is only meaningful with ssl"):
                await loop.create_server(Factory(loop), "127.0.0.1", 0, **{which: 1.0})

    run(main())


# ---------------------------------------------------------------------------
# 3. client certificates


def test_client_certificate_accepted(loop, run, certs):
    async def main():
        factory = Factory(loop, echo=True)
        server_ctx = certs.server_context(require_client_cert=True)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
        addr = server.sockets[0].getsockname()
        try:
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(cert=True), server_hostname="localhost"
            )
            transport.write(b"who am i")
            assert await proto.wait_data(8) == b"who am i"
            (server_proto,) = factory.protocols
            peercert = server_proto.transport.get_extra_info("peercert")
            assert ("commonName", "client.example") in [rdn for rdns in peercert["subject"] for rdn in rdns]
            assert ("DNS", "client.example") in peercert["subjectAltName"]
            assert server_proto.transport.get_extra_info("ssl_object").getpeercert() == peercert
            transport.close()
            await proto.lost
            await server_proto.lost
        finally:
            server.close()
            await server.wait_closed()

    run(main())


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_client_certificate_missing(loop, run, certs, errors, version):
    # Stock asyncio reports failed handshakes of incoming connections only in debug mode.
    loop.set_debug(True)

    async def main():
        guard = FdGuard()
        factory = Factory(loop)
        server_ctx = certs.server_context(require_client_cert=True)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
        addr = server.sockets[0].getsockname()
        client_ctx = certs.client_context(max_version=ssl.TLSVersion[version.replace(".", "_")])
        try:
            if version == "TLSv1.2":
                # The server refuses the handshake and drops the connection.
                with pytest.raises(ConnectionResetError):
                    await loop.create_connection(
                        lambda: Proto(loop), *addr, ssl=client_ctx, server_hostname="localhost"
                    )
            else:
                # TLS 1.3: the client's handshake is over before the server checked its (absent)
                # certificate; the connection then ends without any data.
                transport, proto = await loop.create_connection(
                    lambda: Proto(loop), *addr, ssl=client_ctx, server_hostname="localhost"
                )
                transport.write(b"hello")
                exc = await proto.lost
                assert exc is None or isinstance(exc, (ConnectionError, ssl.SSLError)), repr(exc)
                assert proto.data == b""
                assert len(proto.lost_calls) == 1
            (context,) = await errors.wait(1)
            assert context["message"] == "Error on transport creation for incoming connection"
            exc = context["exception"]
            assert isinstance(exc, ssl.SSLError), repr(exc)
            assert exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
            # The server's protocol never saw a connection.
            (server_proto,) = factory.protocols
            assert server_proto.made_calls == 0
            assert server_proto.lost_calls == []
        finally:
            server.close()
            await server.wait_closed()
        assert await fds_settled(guard) == set()

    run(main())


def test_failed_server_handshake_is_not_reported_without_debug(loop, run, certs, errors):
    # Stock asyncio's server drops a connection whose TLS handshake failed silently unless the
    # loop is in debug mode (a failed handshake is the client's problem, and a public server
    # would otherwise log every scanner).
    async def main():
        factory = Factory(loop)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context())
        addr = server.sockets[0].getsockname()
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await loop.create_connection(
                    lambda: Proto(loop), *addr, ssl=certs.client_context(trust=False), server_hostname="localhost"
                )
            sock = await raw_connect(loop, addr)
            try:
                await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\n\r\n")  # not TLS
                await recv_until_closed(loop, sock)
            finally:
                sock.close()
            # A good client still gets through; by then both failures were handled.
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(), server_hostname="localhost"
            )
            transport.close()
            await proto.lost
            assert len(factory.protocols) == 3
            assert errors.contexts == []
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------------
# 4. ALPN, SSLContext.sslobject_class


@pytest.mark.parametrize(
    ("server_alpn", "client_alpn", "expected"),
    [
        (["h2", "http/1.1"], ["http/1.1"], "http/1.1"),
        (["http/1.1"], ["h2", "http/1.1"], "http/1.1"),
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (None, ["h2", "http/1.1"], None),
        (["h2"], None, None),
    ],
)
def test_alpn(loop, run, certs, server_alpn, client_alpn, expected):
    async def main():
        factory = Factory(loop)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context(alpn=server_alpn))
        addr = server.sockets[0].getsockname()
        try:
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(alpn=client_alpn), server_hostname="localhost"
            )
            assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == expected
            transport.write(b"x")
            (server_proto,) = factory.protocols
            await server_proto.wait_data(1)
            assert server_proto.transport.get_extra_info("ssl_object").selected_alpn_protocol() == expected
            transport.close()
            await proto.lost
            await server_proto.lost
        finally:
            server.close()
            await server.wait_closed()

    run(main())


class ShoutingSSLObject(ssl.SSLObject):
    """An ``SSLContext.sslobject_class`` overriding the methods used for every record."""

    reads = 0

    def read(self, len=1024, buffer=None):
        type(self).reads += 1
        return super().read(len, buffer)

    def write(self, data):
        return super().write(bytes(data).upper())


def test_sslobject_class_overrides_are_called(loop, run, certs):
    server_ctx = certs.server_context()
    server_ctx.sslobject_class = ShoutingSSLObject
    ShoutingSSLObject.reads = 0

    async def main():
        factory = Factory(loop, echo=True)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
        addr = server.sockets[0].getsockname()
        try:
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(), server_hostname="localhost"
            )
            transport.write(b"hello")
            assert await proto.wait_data(5) == b"HELLO"
            assert type(factory.protocols[0].transport.get_extra_info("ssl_object")) is ShoutingSSLObject
            assert ShoutingSSLObject.reads > 0
            transport.close()
            await proto.lost
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------------
# 5. start_tls, BufferedProtocol, flow control


class LineProto(asyncio.Protocol):
    """Plain-text side of a STARTTLS exchange: stops reading after the first line."""

    def __init__(self, loop):
        self.transport = None
        self.buffer = bytearray()
        self.line = loop.create_future()
        self.lost_calls = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if b"\n" in self.buffer and not self.line.done():
            # Nothing after the line may be read as plain text: it belongs to TLS.
            self.transport.pause_reading()
            self.line.set_result(bytes(self.buffer))

    def connection_lost(self, exc):
        self.lost_calls.append(exc)


class FlowMixin:
    """Counts pause_writing/resume_writing; ``send_all`` honours them."""

    def _init_flow(self, loop, expected):
        self.loop = loop
        self.expected = expected
        self.made_calls = 0
        self.eof_calls = 0
        self.lost = loop.create_future()
        self.lost_calls = []
        self.complete = loop.create_future()
        self.first_pause = loop.create_future()
        self.pause_calls = 0
        self.resume_calls = 0
        self._writable = None

    def connection_made(self, transport):
        self.made_calls += 1

    def pause_writing(self):
        self.pause_calls += 1
        self._writable = self.loop.create_future()
        if not self.first_pause.done():
            self.first_pause.set_result(None)

    def resume_writing(self):
        self.resume_calls += 1
        self._writable.set_result(None)

    async def send_all(self, transport, payload, chunk=64 * 1024):
        for i in range(0, len(payload), chunk):
            while self.pause_calls != self.resume_calls:
                await self._writable
            transport.write(payload[i : i + chunk])

    def _received(self, nbytes):
        if nbytes >= self.expected and not self.complete.done():
            self.complete.set_result(None)

    def eof_received(self):
        self.eof_calls += 1

    def connection_lost(self, exc):
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)


class StreamReceiver(FlowMixin, asyncio.Protocol):
    def __init__(self, loop, expected):
        self._init_flow(loop, expected)
        self.data = bytearray()

    def data_received(self, data):
        self.data += data
        self._received(len(self.data))


class BufferedReceiver(FlowMixin, asyncio.BufferedProtocol):
    def __init__(self, loop, expected):
        self._init_flow(loop, expected)
        self.data = bytearray()
        self.buffer = bytearray(64 * 1024)
        self.get_buffer_calls = 0

    def get_buffer(self, sizehint):
        self.get_buffer_calls += 1
        # A memoryview: stock asyncio fills the rest of a partly filled buffer through a slice of
        # it, which would be a copy of a bytearray.
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buffer)
        self.data += self.buffer[:nbytes]
        self._received(len(self.data))


def test_start_tls_large_transfer_with_flow_control(loop, run, certs):
    size = 5 * 1024 * 1024
    rng = random.Random(1234)
    to_server = rng.randbytes(size)
    to_client = rng.randbytes(size)

    async def main():
        # Small socket buffers, so that a paused reader pushes back on the writer quickly.
        lsock = listening_socket(bufsize=64 * 1024)
        plain_protos = []

        def factory():
            proto = LineProto(loop)
            plain_protos.append(proto)
            return proto

        server = await loop.create_server(factory, sock=lsock)
        try:
            sock = await raw_connect(loop, lsock.getsockname(), bufsize=64 * 1024)
            client_plain_transport, client_plain = await loop.create_connection(lambda: LineProto(loop), sock=sock)
            client_plain_transport.write(b"STARTTLS\n")
            (server_plain,) = plain_protos
            assert await server_plain.line == b"STARTTLS\n"
            server_plain.transport.write(b"OK\n")
            assert await client_plain.line == b"OK\n"

            server_app = BufferedReceiver(loop, size)
            client_app = StreamReceiver(loop, size)
            server_tls, client_tls = await asyncio.gather(
                loop.start_tls(server_plain.transport, server_app, certs.server_context(), server_side=True),
                loop.start_tls(client_plain_transport, client_app, certs.client_context(), server_hostname="localhost"),
            )
            # start_tls does not call connection_made: the protocol already had a connection.
            assert server_app.made_calls == client_app.made_calls == 0
            assert isinstance(server_tls, asyncio.Transport)
            assert isinstance(client_tls, asyncio.Transport)
            assert server_tls.get_protocol() is server_app
            assert client_tls.get_protocol() is client_app
            assert server_tls.get_extra_info("ssl_object").server_side is True
            assert client_tls.get_extra_info("ssl_object").server_hostname == "localhost"
            assert client_tls.get_extra_info("peercert")["subjectAltName"][0] == ("DNS", "localhost")
            assert client_tls.get_extra_info("sockname") == client_plain_transport.get_extra_info("sockname")
            assert server_tls.get_extra_info("peername") == client_tls.get_extra_info("sockname")

            # Neither side reads until the other one's writing was paused.
            server_tls.pause_reading()
            client_tls.pause_reading()
            assert not server_tls.is_reading()
            senders = [
                asyncio.ensure_future(client_app.send_all(client_tls, to_server)),
                asyncio.ensure_future(server_app.send_all(server_tls, to_client)),
            ]
            try:
                await asyncio.gather(client_app.first_pause, server_app.first_pause)
                # A protocol whose transport does not read gets nothing.
                assert len(server_app.data) == len(client_app.data) == 0
                server_tls.resume_reading()
                client_tls.resume_reading()
                assert server_tls.is_reading()
                await asyncio.gather(*senders)
                await asyncio.gather(server_app.complete, client_app.complete)
            finally:
                for task in senders:
                    task.cancel()
            assert len(server_app.data) == len(client_app.data) == size
            assert hashlib.sha256(server_app.data).digest() == hashlib.sha256(to_server).digest()
            assert hashlib.sha256(client_app.data).digest() == hashlib.sha256(to_client).digest()
            assert server_app.get_buffer_calls > 0
            for app, transport in ((client_app, client_tls), (server_app, server_tls)):
                assert app.pause_calls >= 1
                assert app.resume_calls == app.pause_calls
                assert transport.get_write_buffer_size() == 0

            client_tls.close()
            assert await server_app.lost is None
            assert await client_app.lost is None
            assert server_app.eof_calls == 1
            assert server_app.lost_calls == [None]
            assert client_app.lost_calls == [None]
            # The plain protocols were replaced: they hear nothing more.
            assert server_plain.lost_calls == client_plain.lost_calls == []
            assert client_plain_transport.is_closing()
        finally:
            server.close()
            await server.wait_closed()

    run(main(), timeout=30)


def test_start_tls_argument_errors(loop, run, certs):
    async def main():
        factory = Factory(loop, echo=True)
        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        try:
            transport, proto = await loop.create_connection(lambda: Proto(loop), *addr)
            with pytest.raises(TypeError, match="sslcontext is expected to be an instance of ssl.SSLContext"):
                await loop.start_tls(transport, proto, None)
            with pytest.raises(TypeError, match="sslcontext is expected to be an instance of ssl.SSLContext"):
                await loop.start_tls(transport, proto, True)
            for value in (0, -1):
                with pytest.raises(ValueError, match=f"ssl_handshake_timeout should be a positive number, got {value}"):
                    await loop.start_tls(
                        transport,
                        proto,
                        certs.client_context(),
                        server_hostname="localhost",
                        ssl_handshake_timeout=value,
                    )
            with pytest.raises(ValueError, match="ssl_shutdown_timeout should be a positive number, got 0"):
                await loop.start_tls(
                    transport, proto, certs.client_context(), server_hostname="localhost", ssl_shutdown_timeout=0
                )
            # None of that touched the connection: it is still plain text, reading.
            assert transport.is_reading()
            assert transport.get_protocol() is proto
            transport.write(b"still plain")
            assert await proto.wait_data(11) == b"still plain"
            transport.close()
            await proto.lost
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_start_tls_over_tls(loop, run, certs):
    # A TLS transport is start_tls-compatible too: TLS inside TLS (as through an HTTPS proxy).
    async def main():
        plain_protos = []

        def factory():
            plain_protos.append(LineProto(loop))
            return plain_protos[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context())
        addr = server.sockets[0].getsockname()
        try:
            outer, client_line = await loop.create_connection(
                lambda: LineProto(loop), *addr, ssl=certs.client_context(), server_hostname="localhost"
            )
            outer.write(b"STARTTLS\n")
            (server_line,) = plain_protos
            assert await server_line.line == b"STARTTLS\n"
            server_outer = server_line.transport
            server_outer.write(b"OK\n")
            assert await client_line.line == b"OK\n"
            server_app = Proto(loop, echo=True)
            client_app = Proto(loop)
            server_app.transport, inner = await asyncio.gather(
                loop.start_tls(server_outer, server_app, certs.server_context(cert=certs.other), server_side=True),
                loop.start_tls(outer, client_app, certs.client_context(), server_hostname="other.example"),
            )
            assert inner.get_extra_info("peercert")["subjectAltName"] == (("DNS", "other.example"),)
            assert outer.get_extra_info("peercert")["subjectAltName"][0] == ("DNS", "localhost")
            assert inner.get_extra_info("ssl_object") is not outer.get_extra_info("ssl_object")
            inner.write(b"nested" * 10000)
            assert await client_app.wait_data(60000) == b"nested" * 10000
            inner.close()
            assert await server_app.lost is None
            assert await client_app.lost is None
            assert server_app.eof_calls == 1
            assert outer.is_closing()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------------
# 6. abrupt peers


@pytest.mark.parametrize("when", ["at once", "after the ClientHello"])
def test_client_peer_closes_during_handshake(loop, run, certs, when):
    async def main():
        guard = FdGuard()
        lsock = listening_socket()
        protos = []

        async def peer():
            conn, _ = await loop.sock_accept(lsock)
            with conn:
                if when == "after the ClientHello":
                    # A whole ClientHello was read (nothing unread: FIN, not RST).
                    assert (await recv_record(loop, conn))[0] == 0x16  # a handshake record

        def factory():
            protos.append(Proto(loop))
            return protos[-1]

        try:
            peer_task = asyncio.ensure_future(peer())
            with pytest.raises(ConnectionResetError):
                await loop.create_connection(
                    factory, *lsock.getsockname(), ssl=certs.client_context(), server_hostname="localhost"
                )
            await peer_task
        finally:
            lsock.close()
        (proto,) = protos
        assert proto.made_calls == 0
        assert proto.lost_calls == []
        assert await fds_settled(guard) == set()

    run(main())


@pytest.mark.parametrize("when", ["before the ClientHello", "after the ClientHello", "mid-ClientHello"])
def test_server_peer_closes_during_handshake(loop, run, certs, errors, when):
    # debug mode: stock asyncio then reports the failed incoming connection, which tells the test
    # the server is done with it.
    loop.set_debug(True)

    async def main():
        guard = FdGuard()
        factory = Factory(loop, echo=True)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context())
        addr = server.sockets[0].getsockname()
        try:
            sock = await raw_connect(loop, addr)
            with sock:
                hello = client_hello(certs.client_context())
                if when == "after the ClientHello":
                    await loop.sock_sendall(sock, hello)
                    # The server answered (ServerHello...): the handshake is under way.
                    assert await loop.sock_recv(sock, 5)
                elif when == "mid-ClientHello":
                    await loop.sock_sendall(sock, hello[: len(hello) // 2])
            (context,) = await errors.wait(1)
            assert context["message"] == "Error on transport creation for incoming connection"
            assert isinstance(context["exception"], ConnectionResetError), repr(context["exception"])
            (proto,) = factory.protocols
            assert proto.made_calls == 0
            assert proto.lost_calls == []

            # The server keeps serving.
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(), server_hostname="localhost"
            )
            transport.write(b"still there?")
            assert await proto.wait_data(12) == b"still there?"
            transport.close()
            await proto.lost
        finally:
            server.close()
            await server.wait_closed()
        assert await fds_settled(guard) == set()

    run(main())


async def connect_to_raw_peer(loop, certs, protocol_class=Proto, **kwargs):
    """A TLS client of the loop connected to a RawTlsPeer server; returns (transport, proto, peer)."""
    lsock = listening_socket()

    async def accept():
        conn, _ = await loop.sock_accept(lsock)
        conn.setblocking(False)
        peer = RawTlsPeer(loop, conn, certs.server_context(), server_side=True)
        try:
            await peer.handshake()
        except BaseException:
            conn.close()
            raise
        return peer

    try:
        accepting = asyncio.ensure_future(accept())
        (transport, proto), peer = await asyncio.gather(
            loop.create_connection(
                lambda: protocol_class(loop),
                *lsock.getsockname(),
                ssl=certs.client_context(),
                server_hostname="localhost",
                **kwargs,
            ),
            accepting,
        )
    finally:
        lsock.close()
    return transport, proto, peer


@pytest.mark.parametrize("how", ["FIN", "RST", "FIN mid-record"])
def test_peer_closes_mid_stream(loop, run, certs, how):
    async def main():
        guard = FdGuard()
        transport, proto, peer = await connect_to_raw_peer(loop, certs)
        payload = bytes(range(256)) * 400
        try:
            await peer.send(payload)
            # The client got everything so far, and expects more.
            assert await proto.wait_data(len(payload)) == payload
            if how == "RST":
                reset_on_close(peer.sock)
            elif how == "FIN mid-record":
                record = peer.encrypt(b"more data that never arrives whole")
                await loop.sock_sendall(peer.sock, record[: len(record) // 2])
        finally:
            peer.sock.close()
        exc = await proto.lost
        if how == "RST":
            assert isinstance(exc, ConnectionResetError), repr(exc)
            assert proto.eof_calls == 0
        else:
            # End of stream without close_notify: treated as a shutdown (a truncation attack is
            # the application's business, as with stdlib's suppress_ragged_eofs).
            assert exc is None
            assert proto.eof_calls == 1
        assert proto.lost_calls == [exc]
        assert bytes(proto.data) == payload
        assert transport.is_closing()
        transport.close()
        assert await fds_settled(guard) == set()

    run(main())


@pytest.mark.parametrize("how", ["FIN", "RST"])
def test_peer_closes_during_shutdown(loop, run, certs, how):
    # The client sends close_notify; the peer reads it and drops the connection without answering.
    async def main():
        guard = FdGuard()
        transport, proto, peer = await connect_to_raw_peer(loop, certs)
        try:
            await peer.send(b"hello")
            assert await proto.wait_data(5) == b"hello"
            transport.close()
            assert await peer.recv() == b""  # close_notify
            if how == "RST":
                reset_on_close(peer.sock)
        finally:
            peer.sock.close()
        exc = await proto.lost
        if how == "RST":
            assert isinstance(exc, ConnectionResetError), repr(exc)
            assert proto.eof_calls == 0
        else:
            # A closed connection ends the shutdown as if close_notify had come.
            assert exc is None
            assert proto.eof_calls == 1
        assert proto.lost_calls == [exc]
        assert await fds_settled(guard) == set()

    run(main())


def test_peer_answers_close_notify(loop, run, certs):
    # The well-behaved counterpart of the test above: the peer answers close_notify, then closes.
    async def main():
        guard = FdGuard()
        transport, proto, peer = await connect_to_raw_peer(loop, certs)
        try:
            transport.write(b"bye")
            assert await peer.recv() == b"bye"
            transport.close()
            assert await peer.recv() == b""
            peer.obj.unwrap()  # the client's close_notify is in: this only queues the answer
        finally:
            try:
                await peer.flush()
            finally:
                peer.sock.close()
        assert await proto.lost is None
        assert proto.lost_calls == [None]
        assert await fds_settled(guard) == set()

    run(main())


def test_peer_sends_close_notify(loop, run, certs):
    # The peer closes properly: the client gets eof_received, answers close_notify, then
    # connection_lost(None).
    async def main():
        guard = FdGuard()
        _, proto, peer = await connect_to_raw_peer(loop, certs)
        try:
            await peer.send(b"last words")
            with pytest.raises(ssl.SSLWantReadError):
                peer.obj.unwrap()
            await peer.flush()
            assert await proto.wait_data(10) == b"last words"
            assert await peer.recv() == b""  # the client's close_notify
            assert await recv_until_closed(loop, peer.sock) == b""
        finally:
            peer.sock.close()
        assert await proto.lost is None
        assert proto.eof_calls == 1
        assert proto.lost_calls == [None]
        assert await fds_settled(guard) == set()

    run(main())


# ---------------------------------------------------------------------------
# 7. timeouts


def test_handshake_timeout_client(loop, run, certs):
    async def main():
        guard = FdGuard()
        lsock = listening_socket()
        try:
            accepting = asyncio.ensure_future(loop.sock_accept(lsock))
            sock = await raw_connect(loop, lsock.getsockname())
            protos = []

            def factory():
                protos.append(Proto(loop))
                return protos[-1]

            start = loop.time()
            with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer than 0.2 seconds"):
                await loop.create_connection(
                    factory,
                    sock=sock,
                    ssl=certs.client_context(),
                    server_hostname="localhost",
                    ssl_handshake_timeout=0.2,
                )
            elapsed = loop.time() - start
            assert 0.15 <= elapsed < PROMPT
            assert sock.fileno() == -1
            conn, _ = await accepting
            with conn:
                # The peer got a ClientHello, then the connection was dropped.
                received = await recv_until_closed(loop, conn)
                assert received[:1] == b"\x16"
            (proto,) = protos
            assert proto.made_calls == 0
            assert proto.lost_calls == []
        finally:
            lsock.close()
        assert await fds_settled(guard) == set()

    run(main())


def test_handshake_timeout_server(loop, run, certs, errors):
    async def main():
        guard = FdGuard()
        factory = Factory(loop)
        server = await loop.create_server(
            factory, "127.0.0.1", 0, ssl=certs.server_context(), ssl_handshake_timeout=0.2
        )
        addr = server.sockets[0].getsockname()
        try:
            sock = await raw_connect(loop, addr)
            with sock:
                start = loop.time()
                # A client that never says anything is dropped.
                assert await recv_until_closed(loop, sock) == b""
                elapsed = loop.time() - start
                assert elapsed < PROMPT
            (proto,) = factory.protocols
            assert proto.made_calls == 0
            assert proto.lost_calls == []
        finally:
            server.close()
            await server.wait_closed()
        assert await fds_settled(guard) == set()

    run(main())


def test_shutdown_timeout(loop, run, certs):
    # The peer reads close_notify and never answers nor closes: ssl_shutdown_timeout ends it.
    async def main():
        guard = FdGuard()
        transport, proto, peer = await connect_to_raw_peer(loop, certs, ssl_shutdown_timeout=0.2)
        try:
            transport.close()
            assert await peer.recv() == b""
            start = loop.time()
            exc = await proto.lost
            elapsed = loop.time() - start
            assert isinstance(exc, TimeoutError), repr(exc)
            assert str(exc) == "SSL shutdown timed out"
            assert elapsed < PROMPT
            assert proto.lost_calls == [exc]
            # The raw connection was dropped.
            assert await recv_until_closed(loop, peer.sock) == b""
        finally:
            peer.sock.close()
        assert await fds_settled(guard) == set()

    run(main())


# ---------------------------------------------------------------------------
# 8. write_eof and writing after close


def test_write_eof_and_writes_after_close(loop, run, certs, caplog):
    async def main():
        factory = Factory(loop)
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context())
        addr = server.sockets[0].getsockname()
        try:
            transport, proto = await loop.create_connection(
                lambda: Proto(loop), *addr, ssl=certs.client_context(), server_hostname="localhost"
            )
            assert transport.can_write_eof() is False
            with pytest.raises(NotImplementedError):
                transport.write_eof()
            with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
                transport.write("text")
            transport.write(b"")  # nothing
            transport.write(b"before close")
            transport.close()
            assert transport.is_closing()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(5):
                    transport.write(b"after close")
                assert not [r for r in caplog.records if r.getMessage() == "SSL connection is closed"]
                transport.write(b"after close")
                assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == ["SSL connection is closed"]
            transport.close()  # again: nothing
            (server_proto,) = factory.protocols
            assert await server_proto.lost is None
            assert bytes(server_proto.data) == b"before close"
            assert await proto.lost is None
            assert proto.lost_calls == [None]
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_abort(loop, run, certs):
    # abort() drops the connection without close_notify: the peer sees a closed connection,
    # the protocol gets connection_lost(None).
    async def main():
        guard = FdGuard()
        transport, proto, peer = await connect_to_raw_peer(loop, certs)
        try:
            transport.write(b"data")
            assert await peer.recv() == b"data"
            transport.abort()
            assert transport.is_closing()
            assert await proto.lost is None
            assert proto.lost_calls == [None]
            with pytest.raises(ConnectionResetError):
                await peer.recv()
        finally:
            peer.sock.close()
        assert await fds_settled(guard) == set()

    run(main())


# ---------------------------------------------------------------------------
# more of the TLS protocol's paths


async def wait_for_condition(predicate):
    """Poll ``predicate`` (bounded by WAIT) for a state no callback announces."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("end", ["close_notify", "FIN"])
def test_peer_ends_while_reading_is_paused(loop, run, certs, end):
    # Data and the end of the connection arrive while the application does not read: nothing is
    # delivered until it resumes, then the data, eof_received and connection_lost, in order.
    async def main():
        guard = FdGuard()
        transport, proto, peer = await connect_to_raw_peer(loop, certs)
        try:
            transport.pause_reading()
            assert not transport.is_reading()
            payload = b"while you were away " * 1000
            ciphertext = peer.encrypt(payload)
            if end == "close_notify":
                with pytest.raises(ssl.SSLWantReadError):
                    peer.obj.unwrap()
                ciphertext += peer.outgoing.read()
            await loop.sock_sendall(peer.sock, ciphertext)
            if end == "FIN":
                peer.sock.shutdown(socket.SHUT_WR)
            await wait_for_condition(lambda: transport.get_read_buffer_size() >= len(ciphertext))
            assert proto.data == b""
            assert proto.eof_calls == 0
            assert proto.lost_calls == []
            transport.resume_reading()
            assert transport.is_reading()
            assert await proto.lost is None
            assert bytes(proto.data) == payload
            assert proto.eof_calls == 1
            assert proto.lost_calls == [None]
            if end == "close_notify":
                assert await peer.recv() == b""  # the client answered close_notify
            assert await recv_until_closed(loop, peer.sock) == b""
        finally:
            peer.sock.close()
        assert await fds_settled(guard) == set()

    run(main())


class EofKeepOpen(Proto):
    def eof_received(self):
        super().eof_received()
        return True


def test_eof_received_returning_true_has_no_effect(loop, run, certs, caplog):
    async def main():
        transport, proto, peer = await connect_to_raw_peer(loop, certs, protocol_class=EofKeepOpen)
        try:
            with pytest.raises(ssl.SSLWantReadError):
                peer.obj.unwrap()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                await peer.flush()
                assert await proto.lost is None
            assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == [
                "returning true from eof_received() has no effect when using ssl"
            ]
            assert proto.eof_calls == 1
            assert transport.is_closing()
        finally:
            peer.sock.close()

    run(main())


class RaisingProto(Proto):
    def data_received(self, data):
        super().data_received(data)
        raise RuntimeError("protocol bug")


def test_data_received_raises(loop, run, certs, errors):
    async def main():
        transport, proto, peer = await connect_to_raw_peer(loop, certs, protocol_class=RaisingProto)
        try:
            await peer.send(b"boom")
            exc = await proto.lost
            assert isinstance(exc, RuntimeError)
            assert str(exc) == "protocol bug"
            assert proto.lost_calls == [exc]
            assert bytes(proto.data) == b"boom"
            (context,) = errors.contexts
            assert context["message"] == "Fatal error on SSL protocol"
            assert context["exception"] is exc
            assert transport.is_closing()
            # The connection was dropped, without close_notify.
            with pytest.raises(ConnectionResetError):
                await peer.recv()
        finally:
            peer.sock.close()

    run(main())


def test_cancel_during_handshake(loop, run, certs):
    async def main():
        guard = FdGuard()
        lsock = listening_socket()
        try:
            sock = await raw_connect(loop, lsock.getsockname())
            conn, _ = await loop.sock_accept(lsock)
            with conn:
                protos = []

                def factory():
                    protos.append(Proto(loop))
                    return protos[-1]

                task = asyncio.ensure_future(
                    loop.create_connection(factory, sock=sock, ssl=certs.client_context(), server_hostname="localhost")
                )
                # The ClientHello came: the handshake is under way.
                assert (await loop.sock_recv(conn, 5))[:1] == b"\x16"
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert sock.fileno() == -1
                await recv_until_closed(loop, conn)
                (proto,) = protos
                assert proto.made_calls == 0
                assert proto.lost_calls == []
        finally:
            lsock.close()
        assert await fds_settled(guard) == set()

    run(main())


@pytest.mark.parametrize("failure", ["verification", "handshake timeout", "peer closes"])
def test_start_tls_failures(loop, run, certs, failure):
    # A failed upgrade raises from start_tls and closes the connection.
    async def main():
        guard = FdGuard()
        lsock = listening_socket()
        try:
            transport, proto = await loop.create_connection(lambda: Proto(loop), *lsock.getsockname())
            conn, _ = await loop.sock_accept(lsock)
            with conn:
                conn.setblocking(False)
                app = Proto(loop)
                kwargs = {"server_hostname": "localhost"}
                if failure == "verification":
                    kwargs["server_hostname"] = "www.example.com"
                elif failure == "handshake timeout":
                    kwargs["ssl_handshake_timeout"] = 0.2
                upgrade = asyncio.ensure_future(loop.start_tls(transport, app, certs.client_context(), **kwargs))
                if failure == "verification":
                    peer = RawTlsPeer(loop, conn, certs.server_context(), server_side=True)
                    with pytest.raises(ConnectionResetError):
                        await peer.handshake()
                    expected = ssl.SSLCertVerificationError
                elif failure == "handshake timeout":
                    expected = ConnectionAbortedError
                else:
                    # The whole ClientHello is read, so that closing sends FIN.
                    assert (await recv_record(loop, conn))[0] == 0x16
                    conn.close()
                    expected = ConnectionResetError
                with pytest.raises(expected) as info:
                    await upgrade
                assert transport.is_closing()
                if failure != "peer closes":
                    await recv_until_closed(loop, conn)  # returns once the loop dropped the connection
                # The plain protocol was replaced: it hears nothing.
                assert proto.lost_calls == []
                assert app.made_calls == 0
                # start_tls's protocol counts as connected from the start: a handshake that fails
                # ends its connection with connection_lost(exc), unless the handshake timeout
                # aborted it (asyncio then leaves the protocol alone).
                if failure == "handshake timeout":
                    for _ in range(3):  # the connection is closed: let queued callbacks run
                        await asyncio.sleep(0)
                    assert app.lost_calls == []
                else:
                    await wait_for_condition(lambda: app.lost_calls)
                    assert app.lost_calls == [info.value]
        finally:
            lsock.close()
        assert await fds_settled(guard) == set()

    run(main())


def test_buffer_limits(loop, run, certs):
    async def main():
        transport, proto, peer = await connect_to_raw_peer(loop, certs)
        try:
            assert transport.get_write_buffer_limits() == (128 * 1024, 512 * 1024)
            assert transport.get_read_buffer_limits() == (64 * 1024, 256 * 1024)
            assert transport.get_write_buffer_size() == 0
            assert transport.get_read_buffer_size() == 0
            transport.set_write_buffer_limits(high=4000)
            assert transport.get_write_buffer_limits() == (1000, 4000)
            transport.set_write_buffer_limits(low=100)
            assert transport.get_write_buffer_limits() == (100, 400)
            transport.set_read_buffer_limits(high=8192, low=1024)
            assert transport.get_read_buffer_limits() == (1024, 8192)
            with pytest.raises(ValueError, match=r"high \(10\) must be >= low \(20\) must be >= 0"):
                transport.set_write_buffer_limits(high=10, low=20)
            with pytest.raises(ValueError, match=r"high \(-4\) must be >= low \(-1\) must be >= 0"):
                transport.set_read_buffer_limits(high=-4, low=-1)
            transport.abort()
            assert await proto.lost is None
        finally:
            peer.sock.close()

    run(main())
