"""``python -m ferroloop top PID``: the ``stats`` request, ``--once``, and the live view in tmux.

These run on ferroloop only: ``top`` reads ferroloop's own statistics through ferroloop's
endpoint (``FERROLOOP_PS=1``), and stock asyncio keeps no such figures, so there is nothing to
compare with. The reference is what the target process was made to do: two loops in two threads
(``alpha`` serves TCP echo, ``beta`` is its client), each with a known number of idle tasks, told
over its standard input to run a known number of callbacks, echo a known number of bytes, block
for a known time, or keep busy.

The live view is driven in a real terminal: tmux (on a private server socket, killed after
each test), keys sent with ``send-keys``, the screen read with ``capture-pane``, waits bounded
by polling for what should appear. Without tmux those tests are skipped.
"""

import asyncio
import contextlib
import dataclasses
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import ferroloop
import pytest
from conftest import WAIT
from ferroloop import _ps, _top

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ferroloop is Linux-only")

# How much more than a known duration a figure may show (seconds): a loaded machine's delays.
SLACK = 0.1

TARGET = """
import asyncio
import sys
import threading
import time

import ferroloop


accepted = threading.Event()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        accepted.set()

    def data_received(self, data):
        self.transport.write(data)


class Client(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.expected = 0
        self.done = None

    def data_received(self, data):
        self.expected -= len(data)
        if self.expected <= 0:
            self.done.set()


def noop():
    pass


def blocking_callback(seconds):
    asyncio.get_running_loop().call_soon(noop)  # ready all through the block: a lag of `seconds`
    time.sleep(seconds)


def chain(loop, n, done):
    if n:
        loop.call_soon(chain, loop, n - 1, done)
    else:
        done.set()


def spin(loop, until):
    if time.monotonic() < until:
        loop.call_soon(spin, loop, until)


async def idle():
    await asyncio.sleep(3600)


loops = {}
state = {}


def serve(name, setup, started):
    loop = ferroloop.new_event_loop()
    loops[name] = loop
    loop.run_until_complete(setup(loop))
    started.set()
    loop.run_forever()
    loop.run_until_complete(loop.shutdown_asyncgens())
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


async def setup_alpha(loop):
    for i in range(3):
        loop.create_task(idle(), name=f"idle-alpha-{i}")
    state["server"] = await loop.create_server(Echo, "127.0.0.1", 0)


async def setup_beta(loop):
    for i in range(2):
        loop.create_task(idle(), name=f"idle-beta-{i}")
    port = state["server"].sockets[0].getsockname()[1]
    _, state["client"] = await loop.create_connection(Client, "127.0.0.1", port)


threads = {}
for name, setup in (("alpha", setup_alpha), ("beta", setup_beta)):
    started = threading.Event()
    threads[name] = threading.Thread(target=serve, args=(name, setup, started), name=name)
    threads[name].start()
    started.wait()
accepted.wait()  # alpha has its end of beta's connection too
print("ready", *(thread.native_id for thread in threads.values()), flush=True)

for line in sys.stdin:
    command, *args = line.split()
    done = threading.Event()
    if command == "calls":  # a chain of N callbacks on alpha, one per iteration
        loops["alpha"].call_soon_threadsafe(chain, loops["alpha"], int(args[0]), done)
    elif command == "echo":  # N bytes from beta to alpha and back
        client = state["client"]

        def send(n=int(args[0])):
            client.expected, client.done = n, done
            client.transport.write(b"x" * n)

        loops["beta"].call_soon_threadsafe(send)
    elif command == "block":  # beta blocked for S seconds by blocking_callback
        loops["beta"].call_soon_threadsafe(blocking_callback, float(args[0]))
        loops["beta"].call_soon_threadsafe(done.set)
    elif command == "spin":  # alpha busy running callbacks for S seconds (answered at once)
        until = time.monotonic() + float(args[0])
        loops["alpha"].call_soon_threadsafe(spin, loops["alpha"], until)
        done.set()
    elif command == "quit":
        break
    done.wait()
    print("done", flush=True)

loops["beta"].call_soon_threadsafe(state["client"].transport.close)
for name in ("beta", "alpha"):
    loops[name].call_soon_threadsafe(loops[name].stop)
    threads[name].join()
"""


@dataclasses.dataclass
class Target:
    process: subprocess.Popen
    program: str
    tids: dict  # thread name -> native thread id

    @property
    def pid(self):
        return self.process.pid

    def do(self, command):
        """Send a command and wait until the target has done it."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        assert _readline(self.process, WAIT) == "done", command


def _readline(process, timeout):
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"the target said nothing for {timeout} s"
    return process.stdout.readline().strip()


def _environment(**extra):
    env = dict(os.environ, **extra)
    for name in ("PYTHONWARNINGS", "PYTHONSTARTUP", "PYTHONINSPECT"):
        env.pop(name, None)
    return env


@pytest.fixture
def target(tmp_path):
    program = tmp_path / "target.py"
    program.write_text(TARGET)
    process = subprocess.Popen(
        [sys.executable, str(program)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_environment(FERROLOOP_PS="1"),
    )
    try:
        words = _readline(process, WAIT).split()
        assert words[0] == "ready", words
        yield Target(process, str(program), {"alpha": int(words[1]), "beta": int(words[2])})
        process.stdin.write("quit\n")
        process.stdin.close()
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def top(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "ferroloop", "top", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        env=_environment(**env),
        check=False,
    )


def by_thread(answer):
    return {loop["thread"]: loop for loop in answer["loops"]}


# --- the stats request -------------------------------------------------------------------------


def test_stats_request_answers_each_loop_s_figures(target):
    first = _ps.fetch(target.pid, "stats")
    target.do("calls 10000")
    target.do("echo 100000")
    target.do("block 0.3")
    second = _ps.fetch(target.pid, "stats")

    assert first["pid"] == second["pid"] == target.pid
    assert [loop["thread"] for loop in second["loops"]] == ["alpha", "beta"]  # oldest first
    assert [loop["id"] for loop in first["loops"]] == [loop["id"] for loop in second["loops"]]
    assert [loop["id"] for loop in second["loops"]] == [0, 1]  # serial numbers: the order made
    before, after = by_thread(first), by_thread(second)
    for name, tasks in (("alpha", 3), ("beta", 2)):
        loop, prev = after[name], before[name]
        assert loop["tid"] == target.tids[name]
        assert loop["running"] is True
        assert loop["tasks"] == tasks
        assert loop["taken"] > prev["taken"]
        assert loop["io_events"] > prev["io_events"]  # the echo's reads and writes
        tcp, tcp_before = loop["transports"]["tcp"], prev["transports"]["tcp"]
        assert tcp["open"] == 1 and tcp["opened"] == tcp_before["opened"]
        assert tcp["bytes_in"] - tcp_before["bytes_in"] == 100_000
        assert tcp["bytes_out"] - tcp_before["bytes_out"] == 100_000

    alpha, beta = after["alpha"], after["beta"]
    calls = alpha["callbacks"] - before["alpha"]["callbacks"]
    assert 10_000 <= calls <= 10_000 + 200, calls  # the chain, and the echo's reads and writes
    assert beta["slow_callbacks"] - before["beta"]["slow_callbacks"] == 1
    assert beta["busy"] - before["beta"]["busy"] >= 0.3
    [(seconds, ended, what)] = beta["slowest"]
    assert 0.3 <= seconds <= 0.3 + SLACK and before["beta"]["taken"] < ended < beta["taken"]
    line = TARGET.splitlines().index("def blocking_callback(seconds):") + 1
    # asyncio's debug format of a callback (with its arguments on some Pythons).
    assert what.startswith("blocking_callback(") and what.endswith(f") at {target.program}:{line}"), what
    assert alpha["slowest"] == []

    # The lag over the interval, made from the two answers' histograms.
    lag = _top.interval_lag(before["beta"], beta)
    assert 0.3 <= lag["max"] <= 0.3 + SLACK, lag
    assert _top.interval_lag(before["alpha"], alpha)["max"] < 0.3
    assert _top.interval_lag(second["loops"][0], second["loops"][0]) is None  # no samples between


def test_interval_lag_is_what_loopstats_since_reports():
    async def main():
        loop = asyncio.get_running_loop()
        earlier = ferroloop.stats()
        for seconds in (0.001, 0.004, 0.02, 0.05):
            loop.call_soon(time.sleep, seconds)  # whatever is ready meanwhile waits that long
            for _ in range(20):
                await asyncio.sleep(0)
        return earlier, ferroloop.stats()

    earlier, later = ferroloop.run(main())

    def answer(stats):
        return {"lag": dataclasses.asdict(stats.lag), "lag_buckets": stats.lag_buckets}

    mine = _top.interval_lag(answer(earlier), answer(later))
    theirs = (later - earlier).lag
    for name in ("p50", "p90", "p99", "max"):
        # LoopStats' interval percentiles are bucket bounds; top caps them by the exact maximum.
        assert mine[name] == min(getattr(theirs, name), later.lag.max), (name, mine, theirs)
    assert 0.05 <= mine["max"] <= 0.05 + SLACK


def test_a_client_that_sends_no_request_is_dropped_and_the_next_is_answered(target):
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(_ps.socket_path(target.pid))
        start = time.monotonic()
        answer = _ps.fetch(target.pid, "stats")  # waits behind the silent one, no longer
        assert time.monotonic() - start < _ps.REQUEST_TIMEOUT + 2
        assert len(answer["loops"]) == 2
        assert silent.recv(100) == b""  # closed unanswered
    with pytest.raises(LookupError, match="refused the request 'nonsense'"):
        _ps.fetch(target.pid, "nonsense")


# --- --once and the command line -------------------------------------------------------------


def loop_rows(lines):
    """The loop table's rows: thread name -> {heading: cell}, read by the headings' positions."""
    heading = next(line for line in lines if line.startswith("LOOP THREAD"))
    ends = []  # (heading, end of its column): right-aligned columns end where their heading ends
    for name in ("LOOP", "TID", "UTIL", "LAG p50", "LAG p90", "LAG p99", "LAG max", "CALLS/s", "IO/s"):
        if f" {name}" in f" {heading}":
            end = f" {heading} ".index(f" {name} ") + len(name)
            ends.append((name, end))
    rows = {}
    for line in lines[lines.index(heading) + 1 :]:
        if not line.strip():
            break
        cells = {name: line[max(0, end - 8) : end].split()[-1] for name, end in ends}
        rows[line.split()[1]] = cells
    return rows


def test_once_prints_each_section(target):
    target.do("block 0.2")
    proc = top("--once", "-n", "0.3", target.pid, COLUMNS="250")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 250 for line in lines)
    assert lines[0].startswith(f"ferroloop top - PID {target.pid} - {sys.executable} {target.program} ")
    assert lines[0].endswith("over 0.3 s")
    assert lines[1].startswith("2 loops (2 running)") and "5 tasks" in lines[1]
    rows = loop_rows(lines)
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"]["TID"] == str(target.tids["alpha"]) and rows["beta"]["TID"] == str(target.tids["beta"])
    assert [line.split()[-2] for line in lines if line.split()[1:2] in (["alpha"], ["beta"])] == ["3", "2"]
    text = proc.stdout
    slowest = text.index("SLOWEST CALLBACKS over 100ms")
    assert re.search(r"\n   1   2\d\dms +\ds blocking_callback\(", text[slowest:]), text
    transports = next(i for i, line in enumerate(lines) if line.startswith("TRANSPORTS"))
    assert text.index("TRANSPORTS") > slowest
    tcp = [line.split()[:3] for line in lines[transports:] if " tcp " in line]
    assert tcp == [["0", "tcp", "1"], ["1", "tcp", "1"]]


def test_once_narrow_keeps_the_essential_columns(target):
    proc = top("--once", "-n", "0.1", target.pid, COLUMNS="60")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 60 for line in lines)
    heading = next(line for line in lines if line.startswith("LOOP"))
    for name in ("THREAD", "UTIL", "LAG p99", "CALLS/s"):
        assert name in heading
    assert "TIMERS/s" not in heading and "TID" not in heading
    assert set(loop_rows(lines)) == {"alpha", "beta"}


def test_top_of_a_process_that_did_not_opt_in():
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as child:
        try:
            proc = top("--once", child.pid)
        finally:
            child.stdin.close()
    assert proc.returncode == 1
    assert "FERROLOOP_PS=1" in proc.stderr and "enable_ps()" in proc.stderr


def test_top_of_a_process_that_is_gone():
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    proc = top("--once", child.stdout.strip())
    assert proc.returncode == 1 and "no process with PID" in proc.stderr


def test_top_usage():
    assert top().returncode == 2
    assert top("abc").returncode == 2
    assert top("-n", "0", "1").returncode == 2
    proc = top("--help")
    assert proc.returncode == 0 and "--once" in proc.stdout and "--interval" in proc.stdout


def test_live_view_needs_a_terminal(target):
    proc = top(target.pid)  # standard output is a pipe
    assert proc.returncode == 2 and "--once" in proc.stderr


@pytest.mark.parametrize("width, height", [(20, 5), (40, 10), (100, 30), (200, 60)])
def test_frames_fit_the_terminal(width, height):
    def loop(number, thread, taken, callbacks):
        return {
            "id": number,
            "thread": thread,
            "tid": 1000 + number,
            "running": True,
            "tasks": 4,
            "slow_callback_duration": 0.1,
            "taken": taken,
            "busy": taken / 2,
            "idle": taken / 2,
            "iterations": callbacks,
            "callbacks": callbacks,
            "io_events": callbacks,
            "timers": 0,
            "slow_callbacks": 3,
            "lag": {"p50": 1e-5, "p90": 1e-4, "p99": 1e-3, "max": 0.2, "samples": callbacks},
            "lag_buckets": [[1e-5, callbacks // 2], [0.25, callbacks - callbacks // 2]],
            "slowest": [[0.2, taken - 5, "x" * 300]] * 3,
            "transports": {"tcp": {"open": 3, "opened": callbacks, "bytes_in": 10 * callbacks, "bytes_out": 0}},
        }

    def answer(taken, callbacks):
        loops = [loop(n, f"thread-{n}-" + "y" * n, taken, callbacks) for n in range(1, 9)]
        return {"pid": 1, "argv": ["python", "z" * 300], "loops": loops}

    lines = _top.render(answer(10.0, 1000), answer(11.0, 5000), width, height, "every 1 s, q quits")
    assert len(lines) <= height
    assert all(len(text) <= width for text, _ in lines)
    texts = [text for text, _ in lines]
    assert texts[3].startswith("LOOP THREAD")
    if height >= 30:
        assert "SLOWEST CALLBACKS" in " ".join(texts) and texts[4].split()[:2] == ["1", "thread-1-y"]
    if height >= 60:
        assert texts[-1].split()[:3] == ["8", "tcp", "3"]  # everything shown
    else:
        assert any(text.startswith("... ") for text in texts)


# --- the live view, in tmux --------------------------------------------------------------------


class Tmux:
    """A tmux server of the test's own, with one session ("top") running one command."""

    def __init__(self, tmp_path):
        self.socket = f"ferroloop-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.config = tmp_path / "tmux.conf"
        # The pane stays when its command ends, to read what it left; no status line, so the pane
        # is the whole window.
        self.config.write_text("set -g remain-on-exit on\nset -g status off\n")
        self.status = tmp_path / "status"

    def __call__(self, *args):
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    def start(self, command, width, height):
        # The exit status is written down by bash: tmux 3.3's #{pane_dead_status} is left empty
        # about half the time. bash waits out a Ctrl-C its command handles (and goes on).
        script = f"{shlex.join(command)}; echo $? > {shlex.quote(str(self.status))}"
        self("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), shlex.join(["bash", "-c", script]))

    def screen(self, history=False):
        """The pane's lines (``history``: with those scrolled off, wrapped lines joined)."""
        return self("capture-pane", "-p", "-t", "top", *(("-J", "-S", "-") if history else ())).splitlines()

    def wait_for(self, condition, what, timeout=WAIT):
        """Poll the screen until ``condition(lines)`` holds; return the lines."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if condition(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what}:\n" + "\n".join(lines))
            time.sleep(0.05)

    def exit_status(self):
        deadline = time.monotonic() + WAIT
        while not self.status.exists() or not self.status.read_text().endswith("\n"):
            assert time.monotonic() < deadline, "top did not exit:\n" + "\n".join(self.screen())
            time.sleep(0.05)
        return int(self.status.read_text())

    def kill(self):
        with contextlib.suppress(Exception):
            path = self("display-message", "-p", "#{socket_path}").strip()
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=WAIT, check=False)
            os.unlink(path)  # tmux leaves it


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the live view is tested in a real terminal, tmux's")
    server = Tmux(tmp_path)
    yield server
    server.kill()


def shows_both_loops(lines):
    rows = {line.split()[1] for line in lines if len(line.split()) > 2 and line.split()[0] in ("0", "1")}
    return {"alpha", "beta"} <= rows


def quantity(text):
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)


def test_live_view_refreshes_resizes_and_quits_on_q(target, tmux):
    tmux.start([sys.executable, "-m", "ferroloop", "top", "-n", "0.3", str(target.pid)], 100, 30)
    lines = tmux.wait_for(lambda lines: shows_both_loops(lines) and len(lines[0]) == 100, "both loops, 100 wide")
    assert lines[0].startswith(f"ferroloop top - PID {target.pid}") and "q quits" in lines[0]
    assert any(line.startswith("LOOP THREAD") and "TID" in line for line in lines)
    assert "TRANSPORTS" in "\n".join(lines)

    # It refreshes: alpha's callbacks per second, low while it idles, high while it spins.
    def alpha_calls(lines):
        cell = loop_rows(lines).get("alpha", {}).get("CALLS/s", "-")
        return None if cell == "-" else quantity(cell)

    tmux.wait_for(lambda lines: (alpha_calls(lines) or 0) < 100 and alpha_calls(lines) is not None, "alpha idle")
    target.do("spin 3")
    lines = tmux.wait_for(lambda lines: (alpha_calls(lines) or 0) > 10_000, "alpha busy")
    assert int(loop_rows(lines)["alpha"]["UTIL"].rstrip("%")) > 50

    # It fits a smaller terminal: fewer columns, and the sections that do not fit left out.
    tmux("resize-window", "-t", "top", "-x", "60", "-y", "12")
    lines = tmux.wait_for(
        lambda lines: shows_both_loops(lines) and "LAG p99" in "".join(lines) and "TID" not in "".join(lines),
        "the narrow layout",
    )
    assert len(lines) <= 12 and all(len(line) <= 60 for line in lines)
    assert "TRANSPORTS" not in "\n".join(lines)
    tmux("resize-window", "-t", "top", "-x", "130", "-y", "30")
    tmux.wait_for(lambda lines: "TIMERS/s" in "".join(lines) and "TRANSPORTS" in "".join(lines), "the wide layout")

    tmux("send-keys", "-t", "top", "q")
    assert tmux.exit_status() == 0
    assert not any(line.startswith("LOOP THREAD") for line in tmux.screen())  # the screen is given back


def test_live_view_without_colours_quits_on_ctrl_c(target, tmux):
    command = ["env", "TERM=vt100", sys.executable, "-m", "ferroloop", "top", str(target.pid)]
    tmux.start(command, 100, 30)
    tmux.wait_for(shows_both_loops, "both loops")
    tmux("send-keys", "-t", "top", "C-c")
    assert tmux.exit_status() == 0


def test_live_view_on_a_terminal_it_cannot_draw_on(target, tmux):
    tmux.start(["env", "TERM=dumb", sys.executable, "-m", "ferroloop", "top", str(target.pid)], 100, 30)
    assert tmux.exit_status() == 2
    assert "python -m ferroloop top: this terminal (TERM=dumb) cannot move its cursor" in "".join(
        tmux.screen(history=True)
    )


def test_live_view_leaves_when_the_process_ends(tmp_path, tmux):
    program = tmp_path / "short.py"
    program.write_text(
        textwrap.dedent(
            """
            import asyncio, sys, ferroloop

            async def main():
                print("ready", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

            ferroloop.run(main())
            """
        )
    )
    with subprocess.Popen(
        [sys.executable, str(program)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_environment(FERROLOOP_PS="1"),
    ) as child:
        assert _readline(child, WAIT) == "ready"
        tmux.start([sys.executable, "-m", "ferroloop", "top", "-n", "0.2", str(child.pid)], 100, 30)
        tmux.wait_for(lambda lines: any(line.startswith("   0 MainThread") for line in lines), "the loop")
        child.stdin.close()
        assert child.wait(WAIT) == 0
        child.stdout.close()
    assert tmux.exit_status() == 1
    # The message is written where curses leaves the cursor, the bottom line: it may scroll.
    assert f"python -m ferroloop top: process {child.pid} has ended" in tmux.screen(history=True)
