"""``ferroloop.Loop``: the Rust ``EventLoop`` plus ``asyncio.AbstractEventLoop``.

The Rust base class owns the hot paths (scheduling, timers, polling, running callbacks,
``add_reader``/``add_writer``). This module holds the parts of asyncio's loop interface that are
not hot and read best in Python: ``run_forever``'s bookkeeping, ``run_until_complete``, tasks,
exception handlers, async generator hooks, executors and DNS. Its mixins hold the rest: socket
operations (``_sockets.py``: thin ``async def`` wrappers around the Rust engine in
``sock_ops.rs``), signals (``_signals.py``), networking (``_network.py``) and subprocesses
(``_subprocess.py``). Their semantics are asyncio's (``Lib/asyncio/base_events.py`` and
``unix_events.py``).
"""

import asyncio
import concurrent.futures
import socket
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import futures, tasks, timeouts
from asyncio.log import logger

from . import _compat, _ferroloop, _stats
from ._network import NetworkMixin
from ._signals import SignalsMixin
from ._sockets import SocketsMixin
from ._subprocess import SubprocessMixin


def _stop_when_done(fut):
    """Done callback of ``run_until_complete``'s future: stop the loop."""
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # run_forever() is already unwinding with this exception.
            return
    _compat.get_loop(fut).stop()


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


class Loop(SocketsMixin, SignalsMixin, NetworkMixin, SubprocessMixin, _ferroloop.EventLoop, asyncio.AbstractEventLoop):
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
        self.set_debug(_compat.is_debug_mode())
        if type(self).time is not Loop.time:
            self._set_time_source(self.time)
        _stats.track(self)
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
        if _compat.get_running_loop() is not None:
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
            _compat.set_running_loop(self)
            self._run_forever_native()
        finally:
            _compat.set_running_loop(None)
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
                self.call_soon_threadsafe(_compat.set_result_unless_cancelled, future, None)
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


# call_soon, call_soon_threadsafe, call_later and call_at as vectorcall entry points (what
# stdlib's C Task and Future call on every step; see crates/ferroloop-py/src/fastcall.rs).
for _name, _method in _ferroloop._fast_methods().items():
    setattr(Loop, _name, _method)
del _name, _method
