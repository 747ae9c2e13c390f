"""Subprocesses and pipes on ferroloop.

Child exit is watched with a pidfd (Linux 5.3+): the loop watches the pidfd for readability and
reaps only its own child with ``waitpid``, so it never takes ``SIGCHLD`` over, works from any
thread, and never reaps a process it did not start. Without pidfd support, a thread blocks in
``waitpid`` for that one child and wakes the loop. A child still running when the loop closes is
handed to such a thread, so it is reaped, not left a zombie.

The process itself is started by asyncio's ``_UnixSubprocessTransport`` (``subprocess.Popen``),
and argument checking is asyncio's own ``subprocess_exec``/``subprocess_shell``. Its standard
streams, like ``connect_read_pipe``/``connect_write_pipe``, use the Rust pipe transports
(``_ferroloop.ReadPipeTransport``/``WritePipeTransport``).
"""

import os
import threading
import warnings
from asyncio.log import logger

from . import _compat, _ferroloop


def _reap(pid):
    """Wait for ``pid`` to exit; its return code (255 when it was already reaped elsewhere)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        logger.warning("child process pid %d exit status already read: will report returncode 255", pid)
        return 255
    return os.waitstatus_to_exitcode(status)


class SubprocessMixin(_compat.BorrowedSubprocess):
    """The subprocess and pipe methods of ``ferroloop.Loop`` (asyncio's own ones, inherited from
    ``_compat.BorrowedSubprocess``, call the transport factories below)."""

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _ferroloop.make_read_pipe_transport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _ferroloop.make_write_pipe_transport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        waiter = self.create_future()
        with warnings.catch_warnings():
            # 3.12+ deprecates asyncio's child watchers, which this transport does not use.
            warnings.simplefilter("ignore", DeprecationWarning)
            transp = _compat.unix_subprocess_transport(
                self, protocol, args, shell, stdin, stdout, stderr, bufsize, waiter=waiter, extra=extra, **kwargs
            )
        self._watch_child(transp.get_pid(), transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _watch_child(self, pid, transp):
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._wait_child_in_thread(pid, transp)
            return
        self._child_pidfds[pid] = pidfd
        self.add_reader(pidfd, self._child_exited, pid, transp)

    def _child_exited(self, pid, transp):
        pidfd = self._child_pidfds.pop(pid)
        self.remove_reader(pidfd)
        os.close(pidfd)
        transp._process_exited(_reap(pid))

    def _wait_child_in_thread(self, pid, transp):
        def wait():
            returncode = _reap(pid)
            if transp is not None and not self.is_closed():
                self.call_soon_threadsafe(transp._process_exited, returncode)

        threading.Thread(target=wait, name=f"ferroloop-waitpid-{pid}", daemon=True).start()

    def _close_child_watchers(self):
        """On close: children still running are reaped by threads, so none is left a zombie."""
        for pid, pidfd in list(self._child_pidfds.items()):
            self.remove_reader(pidfd)
            os.close(pidfd)
            self._wait_child_in_thread(pid, None)
        self._child_pidfds.clear()
