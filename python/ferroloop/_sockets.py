"""The socket operations of ``ferroloop.Loop``: ``sock_recv`` and the rest, ``sock_sendfile``."""

import asyncio
import errno
import os
import socket
from asyncio import exceptions

from . import _compat, _ferroloop

_HAS_IPV6 = hasattr(socket, "AF_INET6")
# What the Rust socket engine returns when the caller must wait: stdlib's future type, exactly.
_Future = asyncio.Future


def _check_nonblocking(loop, sock):
    # asyncio checks only in debug mode (the check costs a call per operation).
    if loop.get_debug() and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


def _check_not_ssl(sock):
    try:
        import ssl
    except ImportError:
        return
    if isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


class SocketsMixin:
    """The ``sock_*`` methods of ``ferroloop.Loop``."""

    # Socket operations. The Rust engine (``_sock_recv`` and friends, crates/ferroloop-py/src/
    # sock_ops.rs) tries the call at once and returns its result, or a future it completes when
    # the socket is ready. When the coroutine is cancelled (or closed) while awaiting that
    # future, ``_sock_abandon`` removes the wait, unless it completed or was replaced meanwhile,
    # so the socket stays usable. The engine declines (``NotImplemented``) for anything but a
    # plain ``socket.socket``; then the ``_slow`` versions below run asyncio's algorithm through
    # the socket's own methods.
    #
    # The four methods below repeat the same few lines on purpose: moving the wait into a shared
    # helper coroutine cost about 4,800 instructions per round trip of a sock_sendall/sock_recv
    # ping-pong (callgrind, +16%), on the loop's fastest path.

    async def sock_recv(self, sock, n):
        r = _ferroloop.sock_recv(self, sock, n)
        if type(r) is _Future:
            try:
                return await r
            except BaseException:
                self._sock_abandon(sock, r)
                raise
        if r is NotImplemented:
            return await self._sock_recv_slow(sock, n)
        return r

    async def sock_recv_into(self, sock, buf):
        r = _ferroloop.sock_recv_into(self, sock, buf)
        if type(r) is _Future:
            try:
                return await r
            except BaseException:
                self._sock_abandon(sock, r)
                raise
        if r is NotImplemented:
            return await self._sock_recv_into_slow(sock, buf)
        return r

    async def sock_sendall(self, sock, data):
        r = _ferroloop.sock_sendall(self, sock, data)
        if type(r) is _Future:
            try:
                return await r
            except BaseException:
                self._sock_abandon(sock, r)
                raise
        if r is NotImplemented:
            return await self._sock_sendall_slow(sock, data)
        return r

    async def sock_accept(self, sock):
        r = _ferroloop.sock_accept(self, sock)
        if type(r) is _Future:
            try:
                return await r
            except BaseException:
                self._sock_abandon(sock, r)
                raise
        if r is NotImplemented:
            return await self._sock_accept_slow(sock)
        return r

    async def sock_connect(self, sock, address):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)
        if sock.family == socket.AF_INET or (_HAS_IPV6 and sock.family == socket.AF_INET6):
            # asyncio's resolution: an IP literal is taken as it is (so a port out of range
            # reaches connect(), which refuses it; getaddrinfo would wrap it).
            infos = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto, loop=self
            )
            address = infos[0][4]
        r = _ferroloop.sock_connect(self, sock, address)
        if r is NotImplemented:
            return await self._sock_connect_slow(sock, address)
        if r is not None:
            try:
                return await r
            except BaseException:
                self._sock_abandon(sock, r)
                raise
            finally:
                r = None  # Break the cycle through the exception's traceback, as asyncio does.

    async def _wait_ready(self, sock, write, attempt, *args):
        """Wait until ``attempt(*args)`` stops raising BlockingIOError; return its result.

        ``attempt`` is a method name of ``sock`` (looked up at each try, as asyncio does) or a
        callable.
        """
        fut = self.create_future()
        fd = sock.fileno()

        def on_ready():
            if fut.done():
                return
            try:
                result = getattr(sock, attempt)(*args) if isinstance(attempt, str) else attempt(*args)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        # Only remove our own registration: a later operation may have replaced it by then.
        if write:
            handle = self._add_writer(fd, on_ready)
            fut.add_done_callback(lambda _: handle.cancelled() or self.remove_writer(fd))
        else:
            handle = self._add_reader(fd, on_ready)
            fut.add_done_callback(lambda _: handle.cancelled() or self.remove_reader(fd))
        return await fut

    async def _sock_recv_slow(self, sock, n):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(sock, False, "recv", n)

    async def _sock_recv_into_slow(self, sock, buf):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(sock, False, "recv_into", buf)

    async def sock_recvfrom(self, sock, bufsize):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(sock, False, "recvfrom", bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(sock, False, "recvfrom_into", buf, nbytes)

    async def _sock_sendall_slow(self, sock, data):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        view = memoryview(data).cast("B")
        total = len(view)
        if sent == total:
            return
        progress = [sent]

        def send_more():
            n = sock.send(view[progress[0] :])
            progress[0] += n
            if progress[0] < total:
                raise BlockingIOError

        try:
            return await self._wait_ready(sock, True, send_more)
        finally:
            view.release()

    async def sock_sendto(self, sock, data, address):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(sock, True, "sendto", data, address)

    async def _sock_connect_slow(self, sock, address):
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass

        def connected():
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err in (errno.EINPROGRESS, errno.EALREADY, errno.EINTR, errno.EAGAIN):
                raise BlockingIOError
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")

        return await self._wait_ready(sock, True, connected)

    async def _sock_accept_slow(self, sock):
        _check_not_ssl(sock)
        _check_nonblocking(self, sock)

        def accept():
            conn, address = sock.accept()
            conn.setblocking(False)
            return conn, address

        try:
            return accept()
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(sock, False, accept)

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        _check_nonblocking(self, sock)
        _check_not_ssl(sock)
        self._check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    @staticmethod
    def _check_sendfile_params(sock, file, offset, count):
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not sock.type == socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")

    async def _sock_sendfile_native(self, sock, file, offset, count):
        """Zero-copy ``os.sendfile``, waiting for writability between calls."""
        try:
            fileno = file.fileno()
        except (AttributeError, OSError) as err:
            raise exceptions.SendfileNotAvailableError("not a regular file") from err
        try:
            fsize = os.fstat(fileno).st_size
        except OSError as err:
            raise exceptions.SendfileNotAvailableError("not a regular file") from err
        blocksize = count if count else fsize
        if not blocksize:
            return 0
        blocksize = min(blocksize, 0xFFFF_FFFF)
        sent = [0]

        def send_chunk():
            want = blocksize - sent[0] if count else blocksize
            if count and want <= 0:
                return sent[0]
            try:
                n = os.sendfile(sock.fileno(), fileno, offset + sent[0], want)
            except (BlockingIOError, InterruptedError):
                raise BlockingIOError from None
            except OSError as exc:
                if exc.errno == errno.ENOTSOCK and sent[0] == 0:
                    raise exceptions.SendfileNotAvailableError("not a socket") from exc
                raise
            if n == 0:
                return sent[0]
            sent[0] += n
            raise BlockingIOError  # Keep going until EOF or count.

        try:
            try:
                return send_chunk()
            except BlockingIOError:
                pass
            return await self._wait_ready(sock, True, send_chunk)
        finally:
            if sent[0] > 0 or _compat.SENDFILE_ALWAYS_SETS_POSITION:
                file.seek(offset + sent[0])
