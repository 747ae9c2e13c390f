"""``python -m ferroloop top PID``: a live view of the loops of a running ferroloop process.

The process opts in as for ``ps`` (``FERROLOOP_PS=1`` in its environment, or
``ferroloop.enable_ps()``), on every Python: its endpoint (``_ps``) answers the request
``stats`` with ``answer()``. asyncio's own tools (3.14's ``python -m asyncio ps``) know nothing
of these figures, so ``top`` uses ferroloop's endpoint on 3.14+ too.

The process side reads every loop's statistics (``ferroloop.stats``) from the listening thread:
nothing is scheduled on a loop, so ``top`` does not add to the figures it shows, and a blocked
loop is shown as blocked. It answers with the cumulative figures, the lag histogram's included,
and keeps nothing: the client makes each interval's rates and lag percentiles from two answers.

The client side draws with curses (no colour; bold titles and reverse-video headings where the
terminal has them), one frame per interval, sized to the terminal: the loop table drops its least
needed columns when narrow, and the sections below it shorten or go when the terminal is short.
``--once`` prints one frame, over one interval, as plain text.
"""

import argparse
import dataclasses
import math
import os
import shutil
import sys
import time

from . import _ps, _stats

PROG = "python -m ferroloop top"

# --- the process side: the endpoint's answer ------------------------------------------------------


def answer():
    """The statistics of every ferroloop loop of this process, as JSON-ready data::

        {"pid": 4242, "argv": ["python", "app.py"], "loops": [
            {"id": 0, "thread": "MainThread", "tid": 4242, "running": true, "tasks": 3,
             "slow_callback_duration": 0.1,
             "taken": ..., "busy": ..., "idle": ..., "iterations": ..., "callbacks": ...,
             "io_events": ..., "timers": ..., "slow_callbacks": ...,
             "lag": {"p50": ..., "p90": ..., "p99": ..., "max": ..., "samples": ...},
             "lag_buckets": [[upper bound, samples], ...],   # the last bound may be Infinity
             "slowest": [[seconds, ended, what], ...],
             "transports": {"tcp": {"open": ..., "opened": ..., "bytes_in": ..., "bytes_out": ...}, ...}},
            ...]}

    The figures are ``ferroloop.LoopStats``'s, since the loop was made (``taken``, ``ended``:
    the process's ``time.monotonic()``). ``id`` is the loop's serial number (its place in the
    order the process made its loops, from 0: fixed for its life, never reused; the exporters'
    ``loop`` too); ``thread``/``tid`` are the name and native id of the thread running the loop
    (null when it is not running); ``tasks`` counts the loop's pending tasks.
    """
    loops = []
    for serial, loop in _stats.numbered_loops():
        stats = _stats.stats(loop)
        thread = _stats.thread_of(loop._thread_id)
        entry = {
            "id": serial,
            "thread": thread.name if thread else None,
            "tid": thread.native_id if thread else None,
            "running": loop.is_running(),
            "tasks": len(_ps.all_tasks(loop)),
            "slow_callback_duration": loop.slow_callback_duration,
            **{
                name: getattr(stats, name)
                for name in ("taken", "busy", "idle", "iterations", "callbacks", "io_events", "timers")
            },
            "slow_callbacks": stats.slow_callbacks,
            "lag": dataclasses.asdict(stats.lag),
            "lag_buckets": stats.lag_buckets,
            "slowest": [[slow.seconds, slow.ended, slow.what] for slow in stats.slowest],
            "transports": {kind: dataclasses.asdict(figures) for kind, figures in stats.transports.items()},
        }
        loops.append(entry)
    return {"pid": os.getpid(), "argv": sys.orig_argv, "loops": loops}


# --- the client side: two answers make a frame -------------------------------------------------


@dataclasses.dataclass
class LoopView:
    """One loop over the interval between two answers (rates None without an earlier answer)."""

    id: int
    thread: str
    tid: int | None
    running: bool
    tasks: int
    utilization: float | None
    lag: dict | None  # over the interval; None without samples in it
    callbacks: float | None  # per second, likewise below
    io_events: float | None
    timers: float | None
    slow: int | None  # slow callbacks in the interval


def loop_views(earlier, later):
    """A LoopView per loop of ``later``, over the interval since ``earlier`` (which may be None)."""
    before = {loop["id"]: loop for loop in earlier["loops"]} if earlier else {}
    views = []
    for loop in later["loops"]:
        prev = before.get(loop["id"])
        seconds = loop["taken"] - prev["taken"] if prev else 0.0
        if seconds > 0:

            def rate(name, prev=prev, loop=loop, seconds=seconds):
                return (loop[name] - prev[name]) / seconds

            busy = max(0.0, loop["busy"] - prev["busy"])  # the two clocks' rounding may make it -1 ns
            ran = busy + (loop["idle"] - prev["idle"])
            utilization = min(1.0, busy / ran) if ran > 0 else None
            callbacks, io_events, timers = rate("callbacks"), rate("io_events"), rate("timers")
            slow = loop["slow_callbacks"] - prev["slow_callbacks"]
            lag = interval_lag(prev, loop)
        else:
            utilization = callbacks = io_events = timers = slow = lag = None
        views.append(
            LoopView(
                id=loop["id"],
                thread=loop["thread"] or "-",
                tid=loop["tid"],
                running=loop["running"],
                tasks=loop["tasks"],
                utilization=utilization,
                lag=lag,
                callbacks=callbacks,
                io_events=io_events,
                timers=timers,
                slow=slow,
            )
        )
    return views


def interval_lag(earlier, later):
    """The lag percentiles of one loop between two answers, as ``LoopStats.since`` makes them (the
    upper bound of the bucket holding the rank, capped by the maximum); None without samples."""
    before = {bound: samples for bound, samples in earlier["lag_buckets"]}
    gained = [(bound, samples - before.get(bound, 0)) for bound, samples in later["lag_buckets"]]
    gained = [(bound, samples) for bound, samples in gained if samples > 0]
    total = sum(samples for _, samples in gained)
    if not total:
        return None
    cap = later["lag"]["max"]  # the exact maximum since the loop was made bounds the interval's

    def quantile(q):
        rank, seen = max(1, math.ceil(q * total)), 0
        for bound, samples in gained:
            seen += samples
            if seen >= rank:
                return min(bound, cap)
        return cap

    return {"p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99), "max": quantile(1.0)}


def transport_rows(earlier, later):
    """(loop id, kind, open, opened/s, bytes in/s, bytes out/s) of the kinds open or used in the
    interval."""
    before = {loop["id"]: loop for loop in earlier["loops"]} if earlier else {}
    rows = []
    for loop in later["loops"]:
        kinds = loop["transports"]
        prev = before.get(loop["id"])
        seconds = loop["taken"] - prev["taken"] if prev else 0.0
        old = prev["transports"] if prev else {}
        for kind, now in kinds.items():  # in LoopStats' order: tcp, unix, tls, datagram, pipe
            if seconds > 0:
                then = old.get(kind, dict.fromkeys(now, 0))
                opened, read, written = ((now[n] - then[n]) / seconds for n in ("opened", "bytes_in", "bytes_out"))
            else:
                opened = read = written = None
            if now["open"] or opened or read or written:
                rows.append((loop["id"], kind, now["open"], opened, read, written))
    return rows


def slowest_rows(later):
    """(loop id, seconds, seconds ago, what) of every loop's slowest callbacks, slowest first."""
    rows = [
        (loop["id"], seconds, max(0.0, loop["taken"] - ended), what)
        for loop in later["loops"]
        for seconds, ended, what in loop["slowest"]
    ]
    return sorted(rows, key=lambda row: -row[1])


# Figures as short text (ASCII: a terminal in any locale shows them).


def duration(seconds):
    if seconds is None:
        return "-"
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f}ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f}ms" if seconds < 0.1 else f"{seconds * 1e3:.0f}ms"
    return f"{seconds:.2f}s"


def quantity(value):
    """A count or a rate, in at most six characters: 9999, 12.3k, 456.7M."""
    if value is None:
        return "-"
    if value < 9999.5:
        return f"{value:.0f}"
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G")):
        if value < 999.95 * scale:
            break
    return f"{value / scale:.1f}{suffix}"


def age(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _percent(value):
    return "-" if value is None else f"{value:.0%}"


def _lag(view, name):
    return duration(view.lag[name]) if view.lag else "-"


@dataclasses.dataclass(frozen=True)
class Column:
    heading: str
    width: int
    cell: object  # LoopView -> str
    keep: int  # when the terminal is narrow, the columns with the lowest keep go first
    left: bool = False


LOOP_COLUMNS = (
    Column("LOOP", 4, lambda v: str(v.id), 99),
    Column("THREAD", 0, lambda v: v.thread, 98, left=True),  # as wide as the names, 8 to 20
    Column("TID", 7, lambda v: str(v.tid or "-"), 2),
    Column("STATE", 7, lambda v: "running" if v.running else "stopped", 5, left=True),
    Column("UTIL", 4, lambda v: _percent(v.utilization), 97),
    Column("LAG p50", 7, lambda v: _lag(v, "p50"), 8),
    Column("LAG p90", 7, lambda v: _lag(v, "p90"), 3),
    Column("LAG p99", 7, lambda v: _lag(v, "p99"), 96),
    Column("LAG max", 7, lambda v: _lag(v, "max"), 6),
    Column("CALLS/s", 7, lambda v: quantity(v.callbacks), 95),
    Column("IO/s", 6, lambda v: quantity(v.io_events), 9),
    Column("TIMERS/s", 8, lambda v: quantity(v.timers), 1),
    Column("TASKS", 5, lambda v: quantity(v.tasks), 10),
    Column("SLOW", 4, lambda v: quantity(v.slow), 4),
)


def _fit(columns, width):
    """The columns that fit in ``width``, dropping those with the lowest ``keep`` first."""
    columns = list(columns)
    while len(columns) > 2 and sum(c.width for c in columns) + len(columns) - 1 > width:
        columns.remove(min(columns, key=lambda c: c.keep))
    return columns


def _row(columns, cells):
    return " ".join(
        (text[: c.width].ljust(c.width) if c.left else text[: c.width].rjust(c.width))
        for c, text in zip(columns, cells)
    )


def _printable(text):
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _summary(views):
    def total(name):
        values = [getattr(v, name) for v in views if getattr(v, name) is not None]
        return sum(values) if values else None

    def count(n, what):
        return f"{quantity(n)} {what}{'' if n == 1 else 's'}"

    running = sum(v.running for v in views)
    return (
        f"{count(len(views), 'loop')} ({running} running)   {quantity(total('callbacks'))} callbacks/s   "
        f"{quantity(total('io_events'))} I/O events/s   {count(sum(v.tasks for v in views), 'task')}   "
        f"{count(total('slow'), 'slow callback')}"
    )


def render(earlier, later, width, height=None, hint=""):
    """The lines of a frame, as (text, style) with style "title", "heading" or ""; at most
    ``width`` characters each, and ``height`` lines (None: as many as there are).

    A section (a title, a heading, rows) that does not fit shows its first rows and how many
    more there are; one with no room for a row is left out, with those after it."""
    width = max(width, 20)
    views = loop_views(earlier, later)
    title = f"ferroloop top - PID {later['pid']} - "
    room_for_command = width - len(title) - len(hint) - 2
    if hint and room_for_command >= 10:
        title = (title + " ".join(later["argv"])[:room_for_command]).ljust(width - len(hint)) + hint
    else:
        title += " ".join(later["argv"])
    lines = [(title, "title"), (_summary(views), ""), ("", "")]

    thread = dataclasses.replace(LOOP_COLUMNS[1], width=min(20, max([8, *(len(v.thread) for v in views)])))
    columns = _fit((LOOP_COLUMNS[0], thread, *LOOP_COLUMNS[2:]), width)
    sections = [
        (
            [(_row(columns, [c.heading for c in columns]), "heading")],
            [(_row(columns, [c.cell(v) for c in columns]), "") for v in views],
        )
    ]

    slow = slowest_rows(later)
    thresholds = {loop["slow_callback_duration"] for loop in later["loops"]}
    over = f" over {duration(thresholds.pop())}" if len(thresholds) == 1 else ""
    head = [(f"SLOWEST CALLBACKS{over} (since each loop was made; AGO: since it ended)", "title")]
    if slow:
        head.append((f"{'LOOP':>4} {'TOOK':>7} {'AGO':>6} WHAT", "heading"))
    rows = [(f"{i:>4} {duration(s):>7} {age(ago):>6} {what}", "") for i, s, ago, what in slow]
    sections.append((head, rows or [("none", "")]))

    transports = transport_rows(earlier, later)
    head = [("TRANSPORTS (open now; the rest per second)", "title")]
    if transports:
        heading = f"{'LOOP':>4} {'KIND':<8} {'OPEN':>6} {'OPENED/s':>8} {'IN B/s':>8} {'OUT B/s':>8}"
        head.append((heading, "heading"))
    rows = [
        (f"{i:>4} {kind:<8} {n:>6} {quantity(o):>8} {quantity(r):>8} {quantity(w):>8}", "")
        for i, kind, n, o, r, w in transports
    ]
    sections.append((head, rows or [("none open", "")]))

    for number, (head, rows) in enumerate(sections):
        if number:
            head = [("", ""), *head]
        room = None if height is None else height - len(lines) - len(head)
        if room is not None and len(rows) > room:
            if room < 2 and number:  # not one row and the line saying how many more
                break
            shown = max(0, room - 1)
            rows = [*rows[:shown], (f"... {len(rows) - shown} more", "")]
        lines += head + rows
    return [(_printable(text)[:width], style) for text, style in lines[:height]]


# --- the command line -----------------------------------------------------------------------------


class Unreachable(Exception):
    """The process cannot be read (not opted in, gone, not answering)."""


# Seconds a process that stopped answering gets to be gone before top says it hangs.
ENDING_TIMEOUT = 1.0


class NoTerminal(Exception):
    """curses cannot draw on this terminal."""


def fetch(pid):
    try:
        return _ps.fetch(pid, "stats")
    except LookupError as exc:
        raise Unreachable(str(exc)) from None


def _fetch_again(pid):
    """The next answer of a process that answered before: if none comes, it has ended (or is
    ending: its socket goes before it does) or hangs."""
    try:
        return _ps.fetch(pid, "stats")
    except LookupError as exc:
        deadline = time.monotonic() + ENDING_TIMEOUT
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise Unreachable(f"process {pid} has ended") from None
            except PermissionError:
                break
            time.sleep(0.02)
        if isinstance(exc, _ps.NotListening):
            raise Unreachable(f"process {pid} no longer listens (exiting, or its socket was removed)") from None
        raise Unreachable(f"process {pid} stopped answering ({exc})") from None


def once(pid, interval, out):
    """Print one frame over one interval, as plain text."""
    earlier = fetch(pid)
    time.sleep(interval)
    later = _fetch_again(pid)
    width = shutil.get_terminal_size((120, 24)).columns
    for text, _ in render(earlier, later, width, hint=f"over {interval:g} s"):
        out.write(text.rstrip() + "\n")


def live(pid, interval):
    """Redraw a frame every ``interval`` seconds until ``q`` (or Ctrl-C, KeyboardInterrupt)."""
    import curses

    first = fetch(pid)  # before the screen is taken: a process that cannot be read is said plainly

    def run(screen):
        try:
            curses.curs_set(0)
        except curses.error:  # a terminal without an invisible cursor
            pass
        styles = {"title": curses.A_BOLD, "heading": curses.A_REVERSE, "": curses.A_NORMAL}
        earlier, later = None, first
        due = time.monotonic() + interval
        while True:
            # A resize is signalled (SIGWINCH, KEY_RESIZE); one that came before curses listened
            # was not: the terminal's size is read again before each frame.
            size = os.get_terminal_size(sys.__stdout__.fileno())
            if (size.lines, size.columns) != screen.getmaxyx():
                curses.resizeterm(size.lines, size.columns)
            height, width = screen.getmaxyx()
            hint = f"every {interval:g} s, q quits  {time.strftime('%H:%M:%S')}"
            screen.erase()
            for y, (text, style) in enumerate(render(earlier, later, width, height, hint)):
                text = text.encode(screen.encoding, "replace").decode(screen.encoding)
                try:
                    screen.addnstr(y, 0, text, width, styles[style])
                except curses.error:  # the bottom-right cell: written, but the cursor cannot move on
                    pass
            screen.refresh()
            while True:
                screen.timeout(max(0, round((due - time.monotonic()) * 1000)))
                key = screen.getch()
                if key in (ord("q"), ord("Q")):
                    return
                if key == curses.KEY_RESIZE:
                    break
                if time.monotonic() >= due:
                    earlier, later = later, _fetch_again(pid)
                    due = max(due + interval, time.monotonic())
                    break

    # The terminal's size, not LINES/COLUMNS: a shell may have exported them before a resize.
    curses.use_env(False)
    term = os.environ.get("TERM", "")
    try:
        curses.setupterm()  # initscr() on a terminal it cannot use would print and exit the process
        if not curses.tigetstr("cup"):
            raise NoTerminal(f"this terminal (TERM={term}) cannot move its cursor")
        curses.wrapper(run)
    except curses.error as exc:
        raise NoTerminal(f"this terminal (TERM={term}) cannot show top ({exc})") from None


def _interval(text):
    seconds = float(text)
    if not seconds >= 0.05:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 0.05 seconds")
    return seconds


def main(args, out=sys.stdout):
    """``top [-n SECONDS] [--once] PID``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A live view of the event loops of a ferroloop process that runs with FERROLOOP_PS=1 "
        "or called ferroloop.enable_ps(): utilization, lag, callbacks and I/O per second, tasks, the "
        "slowest callbacks, transports. q or Ctrl-C quits.",
    )
    parser.add_argument("pid", type=int, metavar="PID", help="the process to watch")
    parser.add_argument(
        "-n", "--interval", type=_interval, default=1.0, metavar="SECONDS", help="seconds between frames (1)"
    )
    parser.add_argument("--once", action="store_true", help="print one frame, over one interval, as plain text")
    options = parser.parse_args(args)
    try:
        if options.once:
            once(options.pid, options.interval, out)
            return 0
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise NoTerminal("needs a terminal")
        live(options.pid, options.interval)
    except Unreachable as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    except NoTerminal as exc:
        sys.stderr.write(f"{PROG}: {exc}: --once prints one frame as text\n")
        return 2
    except KeyboardInterrupt:
        pass  # Ctrl-C quits, as q does (curses.wrapper has restored the terminal)
    return 0
