"""Subprocesses over pipe transports: many children at once, reaping, signals, cancellation."""

import asyncio
import os
import signal
import sys
import time

import pytest
from conftest import FdGuard

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")

PIPE = asyncio.subprocess.PIPE
# -S: no site import, so 200 interpreters start quickly.
PY = (sys.executable, "-S", "-c")
ECHO = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
SLEEP = "import time; time.sleep(60)"


def children_of_this_process():
    """{pid: state} of this process's children, from /proc."""
    me = os.getpid()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == me:
            found[int(name)] = fields[0]
    return found


def assert_gone(pid):
    """pid was reaped: it is neither a child of ours (zombie or not) nor waitable."""
    assert pid not in children_of_this_process()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_200_subprocesses_at_once(loop, run):
    count = 200
    guard = FdGuard()

    async def one(i):
        proc = await asyncio.create_subprocess_exec(*PY, ECHO, stdin=PIPE, stdout=PIPE)
        data = b"child %d\n" % i * (i + 1)
        out, err = await proc.communicate(data)
        assert err is None
        return proc.pid, proc.returncode, out == data

    async def main():
        return await asyncio.gather(*(one(i) for i in range(count)))

    start = time.monotonic()
    results = run(main(), timeout=60)
    elapsed = time.monotonic() - start

    assert len(results) == count
    assert [rc for _, rc, _ in results] == [0] * count
    assert all(ok for _, _, ok in results)
    pids = {pid for pid, _, _ in results}
    assert len(pids) == count
    zombies = [pid for pid, state in children_of_this_process().items() if state == "Z"]
    assert zombies == []
    for pid in pids:
        assert_gone(pid)
    # Every pipe and child watcher is closed by now, with the loop still open.
    assert guard.leaked() == set()
    assert elapsed < 20, f"{count} subprocesses took {elapsed:.1f}s"


def test_large_echo_through_pipes(loop, run):
    payload = os.urandom(4 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec(*PY, ECHO, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        transport = proc._transport
        stdin = transport.get_pipe_transport(0)
        stdout = transport.get_pipe_transport(1)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(stdout, asyncio.ReadTransport)
        assert stdin.get_extra_info("pipe") is not None
        out, err = await proc.communicate(payload)
        assert out == payload
        assert err == b""
        assert proc.returncode == 0
        return proc.pid

    assert_gone(run(main()))


def test_child_killed_by_signal_reports_negative_signal(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(*PY, SLEEP)
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        assert proc.returncode == -signal.SIGKILL

        suicide = await asyncio.create_subprocess_exec(*PY, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
        assert await suicide.wait() == -signal.SIGKILL

        term = await asyncio.create_subprocess_exec(*PY, SLEEP)
        term.send_signal(signal.SIGTERM)
        assert await term.wait() == -signal.SIGTERM
        return [proc.pid, suicide.pid, term.pid]

    for pid in run(main()):
        assert_gone(pid)


def test_cancelled_communicate_then_kill_leaves_no_process(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(*PY, SLEEP, stdin=PIPE, stdout=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.communicate(b"ignored"), 0.2)
        # Cancelling communicate() does not stop the child: the caller kills and waits for it.
        assert proc.returncode is None
        assert proc.pid in children_of_this_process()
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        return proc.pid

    pid = run(main())
    assert_gone(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cancelled_communicate_task(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(*PY, SLEEP, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        task = asyncio.ensure_future(proc.communicate())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        # The pipes reach end of file once the child is gone.
        assert await proc.stdout.read() == b""
        assert await proc.stderr.read() == b""
        return proc.pid

    assert_gone(run(main()))


def test_child_closing_stdin_early(loop, run):
    """The child exits without reading its input: the writer sees the reader go."""

    async def main():
        proc = await asyncio.create_subprocess_exec(
            *PY, "import sys; sys.stdin.close(); print('bye')", stdin=PIPE, stdout=PIPE
        )
        # Large enough to be buffered in the transport when the child goes.
        out, _ = await proc.communicate(os.urandom(8 * 1024 * 1024))
        assert out == b"bye\n"
        assert proc.returncode == 0
        return proc.pid

    assert_gone(run(main()))


def test_shell_and_stderr(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_shell("echo out; echo err >&2; exit 3", stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate()
        assert (out, err, proc.returncode) == (b"out\n", b"err\n", 3)
        return proc.pid

    assert_gone(run(main()))
