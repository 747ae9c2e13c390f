"""Networking on ferroloop: connections, servers, datagrams, ``sendfile``.

The transports of connected stream sockets are Rust (``_ferroloop.StreamTransport``); this module
holds what is not hot. Where asyncio's own orchestration works on any loop that provides the
transport factories below (host resolution, happy eyeballs, socket options, ``Server``, TLS over
``sslproto``, ``sendfile``'s fallback), ferroloop calls stdlib's functions as they are, so every
argument and every error is asyncio's own for each Python version. The factories and the accept
path are ferroloop's.
"""

import errno
import os
import socket
import ssl
from asyncio import constants, exceptions, trsock
from asyncio.log import logger
from typing import Any, NamedTuple

from . import _compat, _ferroloop

# The socket methods asyncio's socket transport calls for I/O.
_SOCKET_IO = ("recv", "recv_into", "send", "sendmsg", "shutdown")


def _overrides_io(sock):
    """Whether ``sock`` is of a socket class whose own I/O methods must be called."""
    cls = type(sock)
    return cls is not socket.socket and any(getattr(cls, m, None) is not getattr(socket.socket, m) for m in _SOCKET_IO)


def _acceptor(listener):
    """A function that accepts one connection on ``listener`` at each call and answers
    ``(socket, address)`` as ``listener.accept()`` does (the caller sets the new socket's
    blocking mode), or ``None`` when no connection is pending, where ``accept()`` raises
    ``BlockingIOError``; other errors are ``accept()``'s.

    A ``socket.socket`` is accepted on without ``accept()``'s conversions of the family and
    type to enums (the new socket is made from the listener's ints); an IPv4 one through
    ``_ferroloop._accept_inet``, which answers ``None`` where ``_accept()`` would make an
    exception and its message for every connection. A listener of another class is accepted on
    through its own ``accept``."""
    if type(listener) is not socket.socket:
        return listener.accept
    family, kind, proto = _compat.sock_family(listener), _compat.sock_type(listener), listener.proto
    make = socket.socket
    if family == socket.AF_INET:
        fd, accept_inet = listener.fileno(), _ferroloop._accept_inet

        def accept_one():
            got = accept_inet(fd)
            return None if got is None else (make(family, kind, proto, fileno=got[0]), got[1])

    else:
        accept = listener._accept

        def accept_one():
            fd, address = accept()
            return make(family, kind, proto, fileno=fd), address

    return accept_one


class _Serving(NamedTuple):
    """What a listening socket serves with: ``_start_serving``'s arguments."""

    protocol_factory: Any
    sock: socket.socket
    sslcontext: Any
    server: Any
    backlog: int
    ssl_handshake_timeout: Any
    ssl_shutdown_timeout: Any
    context: Any


class NetworkMixin(_compat.BorrowedNetworking):
    """The networking methods of ``ferroloop.Loop``; asyncio's orchestration (see the module
    docstring) is inherited from ``_compat.BorrowedNetworking``."""

    # Transport factories.

    # `context` (asyncio 3.15): the contextvars.Context every callback of the transport runs in.

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None, context=None):
        _compat.set_nodelay(sock)
        if _overrides_io(sock):
            # asyncio's transports call the socket object's methods, so a subclass's own
            # recv/send see every byte: asyncio's own transport keeps that true here.
            more = {} if context is None else {"context": context}
            return _compat.selector_socket_transport(self, sock, protocol, waiter, extra, server, **more)
        return _ferroloop.make_stream_transport(self, sock, protocol, waiter, extra, server, context)

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
        context=None,
    ):
        ssl_protocol = _ferroloop.make_tls_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            True,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server, context=context)
        return ssl_protocol._app_transport

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Upgrade ``transport`` to TLS; return the new transport ``protocol`` talks to."""
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}")
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        ssl_protocol = _ferroloop.make_tls_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            False,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        # Nothing may be read between the protocol switch and the start of the handshake.
        transport.pause_reading()
        if server_side:
            # What a server's stream reader already read is the client's first handshake bytes.
            early = _compat.take_stream_reader_buffer(protocol)
            if early:
                ssl_protocol._incoming.write(early)
        transport.set_protocol(ssl_protocol)
        started = self.call_soon(ssl_protocol.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            started.cancel()
            resumed.cancel()
            # The exception's traceback holds this frame: without the waiter (which holds the
            # exception), no cycle keeps the transport alive until a collection.
            waiter = None
            raise
        return ssl_protocol._app_transport

    def _ensure_fd_no_transport(self, fd):
        """``RuntimeError`` if ``fd`` (or a file object's descriptor) belongs to a transport."""
        self._check_fd_free(fd)
        fileno = fd if isinstance(fd, int) else fd.fileno()
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return _ferroloop.make_datagram_transport(self, sock, protocol, address, waiter, extra)

    # Serving: the listening socket is watched for reading; each event accepts up to `backlog`
    # connections. Unlike asyncio, a protocol factory that raises is always reported (asyncio
    # reports it in debug mode only); the connection is closed and the server keeps serving.
    # `context` (asyncio 3.15's Server gives the one it was created in): each connection runs in
    # a copy of it, protocol factory included.

    def _start_serving(
        self,
        protocol_factory,
        sock,
        sslcontext=None,
        server=None,
        backlog=100,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
        context=None,
    ):
        serving = _Serving(
            protocol_factory, sock, sslcontext, server, backlog, ssl_handshake_timeout, ssl_shutdown_timeout, context
        )
        accept_connection = self._accept_connection
        if (
            sslcontext is None
            and context is None
            and type(sock) is socket.socket
            and _compat.sock_family(sock) == socket.AF_INET
            and getattr(accept_connection, "__func__", None) is NetworkMixin._accept_connection
            and type(self)._make_socket_transport is NetworkMixin._make_socket_transport
        ):
            # The common server: accepted and made transports in Rust (`_serve_inet`), with no
            # socket object nor Python frame per connection; the general path in debug mode.
            kind, proto = _compat.sock_type(sock), sock.proto
            nodelay = kind == socket.SOCK_STREAM and proto == socket.IPPROTO_TCP
            args = (self, serving, sock.fileno(), kind, proto, nodelay, backlog)
            self.add_reader(sock.fileno(), _ferroloop._serve_inet, *args)
        else:
            self.add_reader(sock.fileno(), accept_connection, serving)

    def _stop_serving(self, sock):
        # Python 3.13's create_unix_server records each socket's inode here, so that closing
        # the server removes its path, unless another socket has been bound there since.
        inode = self._unix_server_sockets.pop(sock, None)
        path = sock.getsockname() if inode is not None else None
        self.remove_reader(sock.fileno())
        sock.close()
        if path:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)

    def _accept_connection(self, serving):
        sock, server = serving.sock, serving.server
        accept = _acceptor(sock)
        for _ in range(serving.backlog):
            try:
                accepted = accept()
                if accepted is None:
                    return
                conn, addr = accepted
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                return self._accept_failed(serving, exc)
            if self.get_debug():
                logger.debug("%r got a new connection from %r: %r", server, addr, conn)
            extra = {"peername": addr}
            conn_context = None if serving.context is None else serving.context.copy()
            if serving.sslcontext:
                self.create_task(self._accept_tls(serving, conn, extra, conn_context), context=conn_context)
            elif conn_context is None:
                self._accept_plain(serving.protocol_factory, conn, extra, server)
            else:
                conn_context.run(self._accept_plain, serving.protocol_factory, conn, extra, server, conn_context)

    def _accept_failed(self, serving, exc):
        """An accept failed with ``exc``: out of descriptors or memory, stop accepting for a
        while, then retry (reported once); any other error is raised."""
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            raise exc
        sock = serving.sock
        self.call_exception_handler(
            {
                "message": "socket.accept() out of system resource",
                "exception": exc,
                "socket": trsock.TransportSocket(sock),
            }
        )
        self.remove_reader(sock.fileno())
        self.call_later(constants.ACCEPT_RETRY_DELAY, self._start_serving, *serving)

    def _factory_failed(self, conn, exc):
        """The protocol factory raised ``exc`` for the connection ``conn`` (a socket, or the
        descriptor of the native accept, ``_ferroloop._serve_inet``): closed, and reported."""
        if isinstance(conn, int):
            os.close(conn)
        else:
            conn.close()
        self.call_exception_handler(
            {"message": "Error on transport creation for incoming connection", "exception": exc}
        )

    def _accept_plain(self, protocol_factory, conn, extra, server, context=None):
        try:
            protocol = protocol_factory()
        except (SystemExit, KeyboardInterrupt):
            conn.close()
            raise
        except BaseException as exc:
            self._factory_failed(conn, exc)
            return
        self._make_socket_transport(conn, protocol, extra=extra, server=server, context=context)

    async def _accept_tls(self, serving, conn, extra, conn_context=None):
        protocol = transport = None
        try:
            protocol = serving.protocol_factory()
            waiter = self.create_future()
            transport = self._make_ssl_transport(
                conn,
                protocol,
                serving.sslcontext,
                waiter=waiter,
                server_side=True,
                extra=extra,
                server=serving.server,
                ssl_handshake_timeout=serving.ssl_handshake_timeout,
                ssl_shutdown_timeout=serving.ssl_shutdown_timeout,
                context=conn_context,
            )
            try:
                await waiter
            except BaseException:
                transport.close()
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            elif not self.get_debug():
                # A failed handshake (a scanner, a client that gave up) is routine on a public
                # server: asyncio reports it in debug mode only, and so does ferroloop.
                return
            context = {"message": "Error on transport creation for incoming connection", "exception": exc}
            if protocol is not None:
                context["protocol"] = protocol
            if transport is not None:
                context["transport"] = transport
            self.call_exception_handler(context)

    # sendfile on a native transport: os.sendfile on its socket while the transport is paused.

    async def _sendfile_native(self, transp, file, offset, count):
        if not isinstance(transp, _ferroloop.StreamTransport):
            raise exceptions.SendfileNotAvailableError(f"sendfile is not supported on {transp!r}")
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()
