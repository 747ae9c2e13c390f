"""``ferroloop.Loop``: the Rust ``EventLoop`` plus ``asyncio.AbstractEventLoop``.

The Rust base class owns the hot paths (scheduling, timers, polling, running callbacks,
``add_reader``/``add_writer``). This module holds the parts of asyncio's loop interface that are
not hot and read best in Python: ``run_forever``'s bookkeeping, ``run_until_complete``, tasks,
exception handlers, async generator hooks, executors, DNS, signals, and the socket coroutines (the
hot ones are thin ``async def`` wrappers around the Rust engine in ``sock_ops.rs``).
Their semantics are asyncio's (``Lib/asyncio/base_events.py`` and ``unix_events.py``).
"""

import asyncio
import concurrent.futures
import errno
import os
import signal
import socket
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import base_events, coroutines, events, exceptions, futures, tasks, timeouts
from asyncio.log import logger

from . import _compat, _ferroloop
from ._network import NetworkMixin
from ._subprocess import SubprocessMixin

_HAS_IPV6 = hasattr(socket, "AF_INET6")
# What the Rust socket engine returns when the caller must wait: stdlib's future type, exactly.
_Future = asyncio.Future


def _stop_when_done(fut):
    """Done callback of ``run_until_complete``'s future: stop the loop."""
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # run_forever() is already unwinding with this exception.
            return
    futures._get_loop(fut).stop()


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


def _sighandler_noop(signum, frame):
    """Python-level handler for signals the loop dispatches: the wakeup fd carries them."""


def _numeric_host_info(host, port, family, type, proto, flags):
    """``getaddrinfo`` for an IP literal and numeric port, answered without the executor."""
    if not isinstance(host, (str, bytes)) or not host:
        return None
    if port is not None and not isinstance(port, (int, str, bytes)):
        return None
    try:
        return socket.getaddrinfo(
            host, port, family, type, proto, flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        )
    except (socket.gaierror, UnicodeError, OSError):
        return None


class Loop(NetworkMixin, SubprocessMixin, _ferroloop.EventLoop, asyncio.AbstractEventLoop):
    """An asyncio event loop whose engine is written in Rust."""

    def __init__(self):
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._signal_handlers = {}
        self._signal_sockets = None
        # asyncio's Python transports (datagrams) register themselves here.
        self._transports = weakref.WeakValueDictionary()
        self._child_pidfds = {}
        self._unix_server_sockets = {}
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self.set_debug(coroutines._is_debug_mode())
        if type(self).time is not Loop.time:
            self._set_time_source(self.time)
        ps = sys.modules.get("ferroloop._ps")  # python -m ferroloop ps: imported once enabled
        if ps is not None and ps.enabled:
            ps.track(self)

    # asyncio's loop reads every deadline from ``self.time()``: a ``time`` patched onto the
    # instance (tests and libraries do) is used by the Rust engine too.
    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "time":
            self._set_time_source(value)

    def __delattr__(self, name):
        super().__delattr__(name)
        if name == "time":
            self._set_time_source(self.time if type(self).time is not Loop.time else None)

    def __repr__(self):
        return f"<{type(self).__name__} running={self.is_running()} closed={self.is_closed()} debug={self.get_debug()}>"

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # Running and stopping.

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(asyncio.constants.DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    def run_forever(self):
        """Run until ``stop()`` is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_hooks = sys.get_asyncgen_hooks()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_forever_native()
        finally:
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    def run_until_complete(self, future):
        """Run until ``future`` (a future, task or coroutine) is done; return its result."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # The caller cannot see this task: an exception it raises is re-raised below.
            future._log_destroy_pending = False
        future.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()  # Mark it retrieved: it propagates from here.
            raise
        finally:
            future.remove_done_callback(_stop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        """Close the loop: drop pending callbacks and timers, shut the default executor down."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        self._close_signal_sockets()
        self._close_child_watchers()
        self._close_native()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # Tasks: create_task, set_task_factory and get_task_factory are Rust (EventLoop).

    # Asynchronous generators.

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self):
        """Close every asynchronous generator that is still suspended."""
        self._asyncgens_shutdown_called = True
        if not self._asyncgens:
            return
        agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[ag.aclose() for ag in agens], return_exceptions=True)
        for result, agen in zip(results, agens):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # Executors.

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            from ._format import check_callback

            check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Wait for the default executor's threads (at most ``timeout`` seconds)."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._shutdown_executor_in_thread, args=(future,))
        thread.start()
        try:
            async with timeouts.timeout(timeout):
                await future
        except TimeoutError:
            warnings.warn(
                f"The executor did not finishing joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _shutdown_executor_in_thread(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(futures._set_result_unless_cancelled, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)

    # DNS.

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        info = _numeric_host_info(host, port, family, type, proto, flags)
        if info is not None:
            return info
        return await self.run_in_executor(None, socket.getaddrinfo, host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr, flags=0):
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    # Error handling.

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Log ``context`` on the ``asyncio`` logger, as asyncio's loop does."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception is not None else False
        current = self._current_handle
        if "source_traceback" not in context and current is not None and current._source_traceback:
            context["handle_traceback"] = current._source_traceback
        lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Object created at (most recent call last):\n" + tb.rstrip()
            elif key == "handle_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Handle created at (most recent call last):\n" + tb.rstrip()
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Pass ``context`` to the exception handler; never raise but SystemExit/KeyboardInterrupt."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            if sys.version_info < (3, 12):
                # 3.11 calls the handler as it is, with whatever it was given.
                self._exception_handler(self, context)
                return
            # 3.12+ runs it in the context of the task, future or handle it is about.
            owner = context.get("task") or context.get("future") or context.get("handle")
            ctx = owner.get_context() if owner is not None and hasattr(owner, "get_context") else None
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(self._exception_handler, self, context)
            else:
                self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an unexpected error "
                    "in custom exception handler",
                    exc_info=True,
                )

    # Socket operations. The Rust engine (``_sock_recv`` and friends, crates/ferroloop-py/src/
    # sock_ops.rs) tries the call at once and returns its result, or a future it completes when
    # the socket is ready. When the coroutine is cancelled (or closed) while awaiting that
    # future, ``_sock_abandon`` removes the wait, unless it completed or was replaced meanwhile,
    # so the socket stays usable. The engine declines (``NotImplemented``) for anything but a
    # plain ``socket.socket``; then the ``_slow`` versions below run asyncio's algorithm through
    # the socket's own methods.

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

    # asyncio's own: chunks read in the executor, sent with sock_sendall (where the file position
    # ends up differs between Python versions, and this follows the running one).
    _sock_sendfile_fallback = base_events.BaseEventLoop._sock_sendfile_fallback

    # Signals: Python's own handler writes the signal number to a socket (signal.set_wakeup_fd)
    # that the loop reads, so a signal that arrives while the loop is not running waits there.

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def _open_signal_sockets(self):
        if self._signal_sockets is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._signal_sockets = (rsock, wsock)
            self.add_reader(rsock.fileno(), self._read_signals)
        return self._signal_sockets

    def _close_signal_sockets(self):
        if self._signal_sockets is not None:
            rsock, wsock = self._signal_sockets
            self._signal_sockets = None
            self.remove_reader(rsock.fileno())
            rsock.close()
            wsock.close()

    def _read_signals(self):
        rsock = self._signal_sockets[0]
        while True:
            try:
                data = rsock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for signum in data:
                handle = self._signal_handlers.get(signum)
                if handle is None:
                    continue
                if handle.cancelled():
                    self.remove_signal_handler(signum)
                else:
                    self._call_handle(handle)

    def add_signal_handler(self, sig, callback, *args):
        """Run ``callback(*args)`` in the loop whenever signal ``sig`` arrives."""
        if coroutines.iscoroutine(callback) or _compat.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        _, wsock = self._open_signal_sockets()
        try:
            # Fails outside the main thread of the main interpreter.
            signal.set_wakeup_fd(wsock.fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        handle = self._make_handle(callback, args)
        self._signal_handlers[sig] = handle
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    logger.info("set_wakeup_fd(-1) failed: %s", nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler of ``sig``; return whether there was one."""
        self._check_signal(sig)
        handle = self._signal_handlers.pop(sig, None)
        if handle is None:
            return False
        handle.cancel()
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not self._signal_handlers:
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info("set_wakeup_fd(-1) failed: %s", exc)
        return True


# call_soon, call_soon_threadsafe, call_later and call_at as vectorcall entry points (what
# stdlib's C Task and Future call on every step; see crates/ferroloop-py/src/fastcall.rs).
for _name, _method in _ferroloop._fast_methods().items():
    setattr(Loop, _name, _method)
del _name, _method
