"""Unix stream sockets: create_unix_server, create_unix_connection, abstract namespace."""

import asyncio
import errno
import os
import socket
import sys
import uuid

import pytest

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")


class Proto(asyncio.Protocol):
    def __init__(self, loop, *, echo=False):
        self.loop = loop
        self.echo = echo
        self.transport = None
        self.data = bytearray()
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.lost_calls = []
        self._changed = None

    def _wake(self):
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.data += data
        if self.echo:
            self.transport.write(data)
        self._wake()

    def eof_received(self):
        self.eof.set_result(None)
        self._wake()

    def connection_lost(self, exc):
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)
        self._wake()

    async def wait_bytes(self, n):
        while len(self.data) < n and not self.lost.done():
            self._changed = self.loop.create_future()
            await self._changed
        return bytes(self.data)


class Served:
    def __init__(self, loop):
        self.loop = loop
        self.protos = []
        self.first = loop.create_future()

    def factory(self):
        p = Proto(self.loop, echo=True)
        self.protos.append(p)
        if not self.first.done():
            self.first.set_result(p)
        return p

    async def finish(self, server):
        server.close()
        await server.wait_closed()
        for p in self.protos:
            await p.lost


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "s.sock")


def test_unix_echo(loop, run, sock_path):
    async def main():
        srv = Served(loop)
        server = await loop.create_unix_server(srv.factory, sock_path)
        assert os.path.exists(sock_path)
        assert type(server.sockets) is tuple
        assert server.sockets[0].family == socket.AF_UNIX
        assert server.sockets[0].getsockname() == sock_path
        assert server.is_serving()
        tr, cli = await loop.create_unix_connection(lambda: Proto(loop), sock_path)
        assert isinstance(tr, asyncio.Transport)
        assert tr.get_extra_info("peername") == sock_path
        assert tr.get_extra_info("socket").family == socket.AF_UNIX
        tr.write(b"unix")
        tr.writelines([b" ", b"stream"])
        assert await cli.wait_bytes(11) == b"unix stream"
        sp = await srv.first
        assert sp.transport.get_extra_info("sockname") == sock_path
        # The client's socket is unnamed.
        assert sp.transport.get_extra_info("peername") == tr.get_extra_info("sockname") == ""
        # Half-close works on Unix stream sockets too.
        assert tr.can_write_eof()
        tr.write_eof()
        await sp.eof
        await cli.eof
        await cli.lost
        await srv.finish(server)
        assert cli.lost_calls == [None]
        assert sp.lost_calls == [None]

    run(main())


def test_unix_path_like(loop, run, tmp_path):
    async def main():
        path = tmp_path / "p.sock"
        srv = Served(loop)
        server = await loop.create_unix_server(srv.factory, path)
        tr, cli = await loop.create_unix_connection(lambda: Proto(loop), path)
        tr.write(b"p")
        assert await cli.wait_bytes(1) == b"p"
        tr.close()
        await cli.lost
        await srv.finish(server)

    run(main())


def test_unix_streams(loop, run, sock_path):
    async def main():
        done = loop.create_future()

        async def handle(reader, writer):
            data = await reader.read()
            writer.write(data[::-1])
            writer.close()
            await writer.wait_closed()
            done.set_result(None)

        server = await asyncio.start_unix_server(handle, sock_path)
        reader, writer = await asyncio.open_unix_connection(sock_path)
        writer.write(b"abc")
        writer.write_eof()
        assert await reader.read() == b"cba"
        writer.close()
        await writer.wait_closed()
        await done
        server.close()
        await server.wait_closed()

    run(main())


def test_unix_path_cleanup(loop, run, sock_path):
    async def main():
        srv = Served(loop)
        server = await loop.create_unix_server(srv.factory, sock_path)
        await srv.finish(server)
        if sys.version_info >= (3, 13):
            # Python 3.13+ removes the socket file when the server closes.
            assert not os.path.exists(sock_path)
        else:
            # Earlier versions leave it behind ...
            assert os.path.exists(sock_path)
        # ... and a stale socket file is replaced by the next server.
        srv2 = Served(loop)
        server2 = await loop.create_unix_server(srv2.factory, sock_path)
        tr, cli = await loop.create_unix_connection(lambda: Proto(loop), sock_path)
        tr.write(b"again")
        assert await cli.wait_bytes(5) == b"again"
        tr.close()
        await cli.lost
        await srv2.finish(server2)

    run(main())


def test_unix_server_on_regular_file_fails(loop, run, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"not a socket")

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(lambda: Proto(loop), str(path))
        assert info.value.errno == errno.EADDRINUSE

    run(main())
    # The file is left alone.
    assert path.read_bytes() == b"not a socket"


def test_unix_server_with_sock(loop, run, sock_path):
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lsock.bind(sock_path)
            srv = Served(loop)
            server = await loop.create_unix_server(srv.factory, sock=lsock)
            assert server.sockets[0].fileno() == lsock.fileno()
            tr, cli = await loop.create_unix_connection(lambda: Proto(loop), sock_path)
            tr.write(b"q")
            assert await cli.wait_bytes(1) == b"q"
            tr.close()
            await cli.lost
            await srv.finish(server)
            assert lsock.fileno() == -1
        finally:
            lsock.close()

    run(main())


def test_unix_connection_with_sock(loop, run, sock_path):
    async def main():
        srv = Served(loop)
        server = await loop.create_unix_server(srv.factory, sock_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sock_path)
            tr, cli = await loop.create_unix_connection(lambda: Proto(loop), sock=sock)
            tr.write(b"w")
            assert await cli.wait_bytes(1) == b"w"
            tr.close()
            await cli.lost
            assert sock.fileno() == -1
        finally:
            sock.close()
        await srv.finish(server)

    run(main())


def test_unix_connection_errors(loop, run, tmp_path):
    async def main():
        missing = str(tmp_path / "missing.sock")
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(lambda: Proto(loop), missing)
        # A socket file nobody listens on.
        stale = str(tmp_path / "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_unix_connection(lambda: Proto(loop), stale)
        with pytest.raises(ValueError):
            await loop.create_unix_connection(lambda: Proto(loop))

    run(main())


@pytest.mark.skipif(sys.platform != "linux", reason="abstract namespace is Linux only")
def test_unix_abstract_namespace(loop, run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f"\0ferroloop-test-{os.getpid()}-{uuid.uuid4().hex}"

    async def main():
        srv = Served(loop)
        server = await loop.create_unix_server(srv.factory, name)
        # Python reports abstract addresses as bytes.
        assert server.sockets[0].getsockname() == name.encode()
        tr, cli = await loop.create_unix_connection(lambda: Proto(loop), name)
        assert tr.get_extra_info("peername") == name.encode()
        tr.write(b"abstract")
        assert await cli.wait_bytes(8) == b"abstract"
        tr.close()
        await cli.lost
        await srv.finish(server)
        # Nothing was created on the file system.
        assert os.listdir(tmp_path) == []
        # The name is free again once the server is closed.
        srv2 = Served(loop)
        server2 = await loop.create_unix_server(srv2.factory, name)
        await srv2.finish(server2)

    run(main())
