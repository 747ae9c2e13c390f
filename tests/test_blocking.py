"""``ferroloop.report_blocking()``: the blocked-loop report, with real blocking code.

Stock asyncio has no such report (its debug mode logs a slow callback after it ends, without
where it blocked), so these tests run on ferroloop only: the reference is the code the test runs,
whose blocking line the report must name. Durations are checked with a stated tolerance: at least
what was blocked, and at most that plus SLACK (a loaded machine's scheduling delays).
"""

import asyncio
import collections
import inspect
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import ferroloop
import pytest

SLACK = 0.1
THRESHOLD = 0.05
BLOCK = 0.25


@pytest.fixture
def reports(caplog):
    """The ``ferroloop`` logger's records while the report is on (``THRESHOLD``)."""
    caplog.set_level(logging.WARNING, logger="ferroloop")
    previous = ferroloop.report_blocking(THRESHOLD)
    try:
        yield caplog
    finally:
        ferroloop.report_blocking(previous)


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ferroloop"]


def line_of(marker):
    """The line number in this file of the line holding ``marker``."""
    for number, line in enumerate(inspect.getsource(sys.modules[__name__]).splitlines(), 1):
        if marker in line and "line_of(" not in line:
            return number
    raise AssertionError(marker)


def sleeps():
    time.sleep(BLOCK)  # blocks: sleep


def spins():
    end = time.monotonic() + BLOCK
    # One line, so that wherever the stack is taken it is on this line (a `while` loop's body
    # has a line of its own, which 3.15 reports).
    collections.deque(iter(lambda: time.monotonic() < end, False), maxlen=0)  # blocks: cpu


def waits_on_a_socket():
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(BLOCK)
        with pytest.raises(TimeoutError):
            a.recv(1)  # blocks: socket


def check_one_episode(caplog, marker):
    lines = messages(caplog)
    assert len(lines) == 2, lines
    report, end = lines
    # While it blocked: how long so far, and the stack down to the blocking line.
    assert "blocked for" in report and "so far" in report, report
    assert f'{__file__}", line {line_of(marker)}' in report.splitlines()[-2], report
    assert report.splitlines()[-1].strip().endswith(marker), report
    # When it ended: how long in all.
    seconds = float(end.split("blocked for ")[1].split(" s")[0])
    assert BLOCK <= seconds + 0.001 <= BLOCK + SLACK, end
    assert "(its stack is logged above)" in end, end
    return report, end


@pytest.mark.parametrize(
    ("blocker", "marker"),
    [(sleeps, "# blocks: sleep"), (spins, "# blocks: cpu"), (waits_on_a_socket, "# blocks: socket")],
    ids=["sleep", "cpu", "socket"],
)
def test_a_task_that_blocks_is_reported_with_its_line(reports, blocker, marker):
    async def blocking_task():
        blocker()

    async def main():
        await asyncio.create_task(blocking_task(), name="the-blocker")

    ferroloop.run(main())
    _, end = check_one_episode(reports, marker)
    assert "Task 'the-blocker' " in end and "blocking_task()" in end, end


def test_a_protocol_callback_that_blocks_is_reported_with_its_line(reports):
    class Blocking(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            time.sleep(BLOCK)  # blocks: protocol
            self.transport.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(Blocking, a)
        reader, writer = await asyncio.open_connection(sock=b)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        writer.close()
        transport.close()

    ferroloop.run(main())
    report, end = check_one_episode(reports, "# blocks: protocol")
    assert "in data_received" in report
    assert "Blocking object" in end and "readable" in end, end


def test_short_callbacks_are_not_reported(reports):
    async def main():
        for _ in range(20):
            time.sleep(THRESHOLD / 5)  # noqa: ASYNC251 (short blocks, under the threshold)
            await asyncio.sleep(0)
        await asyncio.sleep(THRESHOLD * 3)  # idle: waiting is not blocking

    ferroloop.run(main())
    assert messages(reports) == []


def test_turned_off_reports_nothing(reports):
    assert ferroloop.report_blocking(None) == pytest.approx(THRESHOLD, rel=0.01)

    async def main():
        sleeps()

    ferroloop.run(main())
    assert messages(reports) == []
    assert ferroloop.report_blocking(0) is None


def test_each_loop_of_each_thread_is_watched(reports):
    def worker():
        async def main():
            sleeps()

        ferroloop.run(main())

    threads = [threading.Thread(target=worker, name=f"loop-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = messages(reports)
    assert len(lines) == 4, lines
    for name in ("loop-0", "loop-1"):
        assert any(f"in {name} blocked" in line for line in lines), lines


def test_bad_thresholds():
    with pytest.raises(TypeError, match="number of seconds or None, not str"):
        ferroloop.report_blocking("0.1")
    with pytest.raises(TypeError, match="not bool"):
        ferroloop.report_blocking(True)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number of seconds"):
            ferroloop.report_blocking(bad)
    assert ferroloop.report_blocking(None) is None


def test_the_environment_variable_turns_it_on(tmp_path):
    script = tmp_path / "blocks.py"
    script.write_text(
        "import asyncio, time, ferroloop\n"
        "async def main():\n"
        "    time.sleep(0.3)  # the blocking line\n"
        "ferroloop.run(main())\n"
    )
    env = dict(os.environ, FERROLOOP_REPORT_BLOCKING="0.05")
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "blocked for" in out.stderr and "time.sleep(0.3)  # the blocking line" in out.stderr, out.stderr
    env["FERROLOOP_REPORT_BLOCKING"] = "soon"
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and "RuntimeWarning" in out.stderr and "blocked for" not in out.stderr, out.stderr
