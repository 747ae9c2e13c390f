"""Signal handlers of ``ferroloop.Loop``: ``add_signal_handler`` and ``remove_signal_handler``."""

import errno
import signal
import socket
from asyncio import coroutines
from asyncio.log import logger

from . import _compat


def _sighandler_noop(signum, frame):
    """Python-level handler for signals the loop dispatches: the wakeup fd carries them."""


class SignalsMixin:
    """The signal methods of ``ferroloop.Loop``."""

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
