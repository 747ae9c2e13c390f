"""Reliability: soak, garbage collection, Ctrl-C, threads and fork.

Every test runs on stock asyncio and on ferroloop and asserts the same behaviour on both.

* ``test_soak_*``: the bounded soak (5,000 connections, 1,000,000 callbacks; ``tests/soak.py``
  runs the full one): open fds return exactly to their level, RSS grows by less than 5 %.
* garbage: loops, servers, transports and protocols in reference cycles are freed by
  ``gc.collect()`` once closed; so is a loop that was never closed (with its ResourceWarning).
* Ctrl-C: SIGINT to a process in ``run(main())`` cancels the main task and raises
  KeyboardInterrupt, as ``asyncio.Runner`` does; callbacks scheduled before it still run.
* threads: ``call_soon_threadsafe`` from 8 threads at once; every callback runs exactly once.
* fork: a child forked from a process with a running, idle or closed loop runs a fresh loop.
"""

import asyncio
import gc
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref

import pytest
import soak
from conftest import WAIT

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")


# ---------------------------------------------------------------------------
# 1. soak (bounded)

SOAK_CONNECTIONS = 5_000
SOAK_CALLBACKS = 1_000_000


def test_soak_fds_and_memory_return(loop_factory):
    result = soak.soak(loop_factory, SOAK_CONNECTIONS, SOAK_CALLBACKS)
    print(soak.format_result(loop_factory.name, result))
    assert result["fds_after"] == result["fds_before"], soak.format_result(loop_factory.name, result)
    assert result["fds_end"] == result["fds_start"], soak.format_result(loop_factory.name, result)
    assert result["rss_growth"] < soak.RSS_LIMIT, soak.format_result(loop_factory.name, result)


# ---------------------------------------------------------------------------
# 2. garbage: reference cycles are collected


class CycleProtocol(asyncio.Protocol):
    """A protocol in cycles: it holds its transport, its loop and handles of its own methods."""

    def __init__(self, loop, made=None):
        self.loop = loop
        self.made = made
        self.transport = None
        self.handle = None
        self.timer = None
        self.received = bytearray()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        # Handle -> bound method -> protocol -> handle; the timer is still pending at close().
        self.handle = self.loop.call_soon(self.tick)
        self.timer = self.loop.call_later(3600, self.tick)
        if self.made is not None:
            self.made.append(self)

    def tick(self):
        pass

    def data_received(self, data):
        self.received += data
        if self.transport is not None and data == b"ping":
            self.transport.write(b"pong")

    def connection_lost(self, exc):
        # Keep self.transport: the protocol <-> transport cycle stays.
        if not self.lost.done():
            self.lost.set_result(exc)


def _weakref_or_none(obj):
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


def _closed_world(loop_factory):
    """Build loop + server + connected pair in cycles, close it all; return weakrefs to it."""
    loop = loop_factory()
    loop.cycle = loop  # one more cycle, through the loop's own attributes
    accepted = []

    async def main():
        server = await loop.create_server(lambda: CycleProtocol(loop, accepted), "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        transport, proto = await loop.create_connection(lambda: CycleProtocol(loop), host, port)
        transport.write(b"ping")
        deadline = loop.time() + WAIT
        while proto.received != b"pong":
            assert loop.time() < deadline, "no echo"
            await asyncio.sleep(0.001)
        transport.close()
        await proto.lost
        await accepted[0].lost
        server.close()
        await server.wait_closed()
        return server, transport, proto

    try:
        server, transport, proto = loop.run_until_complete(asyncio.wait_for(main(), WAIT))
    finally:
        loop.close()
    peer = accepted[0]
    assert peer.transport is not None and proto.transport is transport
    named = {
        "loop": weakref.ref(loop),
        "server": weakref.ref(server),
        "client protocol": weakref.ref(proto),
        "server protocol": weakref.ref(peer),
        "client handle": _weakref_or_none(proto.handle),
        "client timer": _weakref_or_none(proto.timer),
        "client transport": _weakref_or_none(transport),
        "server transport": _weakref_or_none(peer.transport),
    }
    return {k: v for k, v in named.items() if v is not None}


def _alive(refs):
    for _ in range(3):
        gc.collect()
    return sorted(name for name, ref in refs.items() if ref() is not None)


def test_closed_loop_transports_protocols_in_cycles_are_collected(loop_factory, fd_guard):
    refs = _closed_world(loop_factory)
    if loop_factory.name == "ferroloop":
        # ferroloop's transports are weak-referenceable: check them too.
        assert {"client transport", "server transport"} <= refs.keys()
    assert _alive(refs) == []


class Holder:
    def __init__(self, loop):
        self.loop = loop

    def tick(self):
        pass


def _abandoned_loop(loop_factory):
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0))
    holder = Holder(loop)
    # loop -> ready queue -> handle -> bound method -> holder -> loop
    holder.handle = loop.call_soon(holder.tick)
    holder.timer = loop.call_later(3600, holder.tick)
    return {"loop": weakref.ref(loop), "holder": weakref.ref(holder)}


def test_never_closed_loop_in_cycle_is_collected(loop_factory, fd_guard):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        refs = _abandoned_loop(loop_factory)
        _alive(refs)  # the collection finalizes the loop, which warns
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        caught.clear()  # a recorded warning keeps its source (the loop) alive on 3.15
        alive = _alive(refs)
    assert alive == []
    assert any("unclosed event loop" in m for m in messages), messages


def test_handles_kept_by_their_callbacks_owner_are_collected(loop):
    """owner -> handle -> bound method -> owner, after the handle ran, fired or was cancelled,
    while the loop lives on."""
    refs = {}
    for how in ("ran", "fired", "cancelled", "cancelled timer"):
        owner = Holder(loop)
        if how == "ran":
            owner.handle = loop.call_soon(owner.tick)
        elif how == "fired":
            owner.handle = loop.call_later(0, owner.tick)
        elif how == "cancelled":
            owner.handle = loop.call_soon(owner.tick)
            owner.handle.cancel()
        else:
            owner.handle = loop.call_later(3600, owner.tick)
            owner.handle.cancel()
        refs[how] = weakref.ref(owner)
        del owner
    loop.run_until_complete(asyncio.sleep(0.01))
    assert _alive(refs) == []


# ---------------------------------------------------------------------------
# 3. Ctrl-C

CTRL_C_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time

    which, mode = sys.argv[1], sys.argv[2]

    def marker():
        print("marker: callback ran", flush=True)

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_soon(marker)  # scheduled just before awaiting
        print("ready", flush=True)
        if mode == "pending":
            # Block (without yielding to the loop) until the SIGINT has been handled, so it
            # arrives while the marker callback is still pending.
            task = asyncio.current_task()
            deadline = time.monotonic() + 20
            while not task.cancelling() and time.monotonic() < deadline:
                time.sleep(0.01)
            print("signal seen with the callback pending", flush=True)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("main: cancelled", flush=True)
            raise
        print("main: slept an hour", flush=True)

    if which == "ferroloop":
        import ferroloop
        ferroloop.run(main())
    else:
        asyncio.run(main())
    print("after run", flush=True)
    """
)


def _read_until(proc, marker, timeout):
    """Read the child's stdout until ``marker`` (bytes) appears; return what was read."""
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("mode", ["blocked", "pending"])
def test_ctrl_c_cancels_main_and_raises_keyboard_interrupt(loop_factory, mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, loop_factory.name, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = _read_until(proc, b"ready\n", WAIT)
        assert b"ready\n" in out, f"child not ready: {out!r}"
        if mode == "blocked":
            time.sleep(0.3)  # let the loop block in its poller
        proc.send_signal(signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, err = proc.communicate()
            pytest.fail(f"child still running {WAIT}s after SIGINT; stdout {out + rest!r}, stderr {err!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = (out + rest).decode().splitlines()
    err = err.decode()
    expected = ["ready", "marker: callback ran", "main: cancelled"]
    if mode == "pending":
        expected.insert(1, "signal seen with the callback pending")
    assert lines == expected, err
    # Uncaught KeyboardInterrupt: the traceback, then Python exits by SIGINT (the shell's 130).
    assert err.startswith("Traceback (most recent call last):"), err
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
    assert "Exception ignored" not in err and "Task was destroyed" not in err, err
    assert proc.returncode == -signal.SIGINT, (proc.returncode, err)


# ---------------------------------------------------------------------------
# 4. threads

THREADS = 8
PER_THREAD = 100_000


def test_call_soon_threadsafe_from_8_threads(loop):
    total = THREADS * PER_THREAD
    counts = [0] * THREADS
    last = [-1] * THREADS
    out_of_order = []
    ran = [0]
    go = threading.Event()
    errors = []

    def cb(tid, seq):
        if seq != last[tid] + 1:
            out_of_order.append((tid, last[tid], seq))
        last[tid] = seq
        counts[tid] += 1
        ran[0] += 1
        if ran[0] == total:
            loop.stop()

    def producer(tid):
        try:
            assert go.wait(WAIT)
            call = loop.call_soon_threadsafe
            for seq in range(PER_THREAD):
                call(cb, tid, seq)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(tid,)) for tid in range(THREADS)]
    for t in threads:
        t.start()
    try:
        loop.call_soon(go.set)
        guard = loop.call_later(45, loop.stop)
        t0 = time.monotonic()
        loop.run_forever()
        elapsed = time.monotonic() - t0
        guard.cancel()
    finally:
        go.set()
        for t in threads:
            t.join(WAIT)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert ran[0] == total, f"{ran[0]} of {total} callbacks ran in {elapsed:.1f}s: {counts}"
    # Nothing left over that would run a callback twice.
    loop.run_until_complete(asyncio.sleep(0.05))
    assert counts == [PER_THREAD] * THREADS
    assert out_of_order == [], out_of_order[:10]


# ---------------------------------------------------------------------------
# 5. fork

FORK_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, socket, sys, time, traceback

    which, when = sys.argv[1], sys.argv[2]
    if which == "ferroloop":
        import ferroloop
        new_loop = ferroloop.new_event_loop
    else:
        new_loop = asyncio.SelectorEventLoop

    async def exchange(tag):
        loop = asyncio.get_running_loop()
        fired = loop.create_future()
        loop.call_later(0.01, fired.set_result, "timer")
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b:
            await loop.sock_sendall(a, tag)
            data = await loop.sock_recv(b, 100)
            await loop.sock_sendall(b, data.upper())
            back = await loop.sock_recv(a, 100)
        await asyncio.sleep(0.01)
        assert await fired == "timer"
        assert (data, back) == (tag, tag.upper()), (data, back)
        return back

    def run_fresh(tag):
        loop = new_loop()
        try:
            return loop.run_until_complete(asyncio.wait_for(exchange(tag), 10))
        finally:
            loop.close()

    def fork_and_wait():
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if run_fresh(b"child") == b"CHILD":
                    print("child: ok", flush=True)
                    code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + 20
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout"
            time.sleep(0.01)

    loop = new_loop()
    if when == "running":
        async def parent():
            await exchange(b"before")
            status = fork_and_wait()
            await exchange(b"after")  # the parent's loop still works
            return status
        status = loop.run_until_complete(parent())
        loop.close()
    elif when == "idle":
        loop.run_until_complete(exchange(b"before"))
        status = fork_and_wait()
        loop.run_until_complete(exchange(b"after"))
        loop.close()
    else:
        loop.run_until_complete(exchange(b"before"))
        loop.close()
        status = fork_and_wait()
    print(f"parent: child exit status {status}", flush=True)
    sys.exit(0 if status == 0 else 1)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("when", ["running", "idle", "closed"])
def test_fork_child_runs_a_fresh_loop(loop_factory, when):
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, loop_factory.name, when],
        capture_output=True,
        text=True,
        check=False,
        timeout=2 * WAIT + 20,
    )
    assert proc.stdout.splitlines() == ["child: ok", "parent: child exit status 0"], proc.stderr
    assert proc.stderr == ""
    assert proc.returncode == 0
