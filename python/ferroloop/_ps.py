"""``python -m ferroloop ps PID`` / ``pstree PID``: the tasks of a running ferroloop process;
and the endpoint that answers them and ``top``.

Python 3.14's ``python -m asyncio ps`` reads another process's tasks from its memory; older
Pythons have no such tool. For them ferroloop offers its own, for processes that opt in; and on
every Python, ``python -m ferroloop top`` (``_top``) reads the loops' statistics the same way:

* A process opts in with the environment variable ``FERROLOOP_PS=1`` (read when ferroloop is
  imported) or by calling ``ferroloop.enable_ps()``. A process that does not opt in pays
  nothing: no thread, no socket, no bookkeeping per loop or task.
* Opted in, it listens on a Unix socket, ``<tmp>/ferroloop-ps-<uid>/<pid>.sock`` (the directory
  is the user's alone, mode 0700), in a daemon thread that sleeps in ``accept``. The running
  loop and each ferroloop loop created from then on are remembered (weakly).
* A client connects and sends one request line; the process answers it as JSON and closes. A
  client that sends no line within REQUEST_TIMEOUT is closed unanswered (the thread serves one
  client at a time). The requests:

  ``ps``
      A snapshot of the tasks (``ps``, ``pstree``). The snapshot of a running loop is taken in
      the loop's own thread (``call_soon_threadsafe``), so it is consistent; a loop that does not
      answer within a second (a callback blocking it) is read from the listening thread instead,
      as it stands.
  ``stats``
      The statistics of every loop (``top``; ``_top.answer`` has the fields), read from the
      listening thread: nothing is run on a loop, so reading does not disturb the figures read.
  anything else
      ``{"error": "..."}``.

What a snapshot holds per task: its id, name, coroutine stack (function, file, line; innermost
first, as asyncio's tool shows it) and the tasks awaiting it. "Awaiting" is found as asyncio
3.14 records it: a task awaiting another task (``await task``, ``wait_for``), the children of a
``gather`` it awaits, and the tasks created by a ``TaskGroup`` of the task (from their creation
on: each calls its group back when done, which is how they are found).

On Python 3.14+, ``python -m ferroloop ps``/``pstree`` run asyncio's own tool, which needs no
opt-in and reads any asyncio process.
"""

import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import weakref

ENV = "FERROLOOP_PS"
# Seconds a running loop gets to take its own snapshot.
LOOP_ANSWER_TIMEOUT = 1.0
# Seconds the CLI waits for the process's answer.
CLIENT_TIMEOUT = 10.0
# Seconds the process waits for a client's request line, and the longest line it reads.
REQUEST_TIMEOUT = 1.0
REQUEST_MAX = 256

_loops = weakref.WeakSet()
_lock = threading.Lock()
_listener = None  # (pid, path, socket) once listening in this process
enabled = False


def socket_path(pid, uid=None):
    uid = os.getuid() if uid is None else uid
    return os.path.join(tempfile.gettempdir(), f"ferroloop-ps-{uid}", f"{pid}.sock")


def track(loop):
    """Remember a new loop (called by ``Loop.__init__`` when enabled)."""
    _loops.add(loop)


def enable():
    """Make this process answer ``python -m ferroloop ps``/``pstree`` (idempotent)."""
    global enabled, _listener
    with _lock:
        if _listener is not None and _listener[0] == os.getpid():
            return _listener[1]
        path = socket_path(os.getpid())
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{directory} must be a directory of this user's alone (mode 0700)")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(4)
        _listener = (os.getpid(), path, server)
        enabled = True
        thread = threading.Thread(target=_serve, args=(server,), name="ferroloop-ps", daemon=True)
        thread.start()
    from . import _compat

    running = _compat.get_running_loop()
    if running is not None and type(running).__module__.startswith("ferroloop"):
        track(running)
    import atexit

    atexit.register(_remove, os.getpid(), path)
    return path


def _remove(pid, path):
    if os.getpid() == pid:
        try:
            os.unlink(path)
        except OSError:
            pass


def _after_fork_in_child():
    # The listening thread did not come along: the child listens anew on its own socket.
    global _listener
    if _listener is not None:
        _listener[2].close()
        _listener = None
        enable()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _serve(server):
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return  # closed (fork, interpreter exit)
        # A client that went away or sent nothing, or an answer that failed, costs that client its
        # answer only.
        with conn, contextlib.suppress(Exception):
            conn.settimeout(REQUEST_TIMEOUT)
            conn.sendall(json.dumps(answer(_read_request(conn))).encode())


def _read_request(conn):
    """The words of the client's request line."""
    data = b""
    while b"\n" not in data and len(data) < REQUEST_MAX:
        chunk = conn.recv(REQUEST_MAX)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("ascii", "replace").split()


def answer(request):
    """The answer to a request (its words)."""
    match request:
        case ["ps"]:
            return snapshot()
        case ["stats"]:
            from . import _top

            return _top.answer()
    return {"error": f"unknown request {' '.join(request)!r}"}


def snapshot():
    """The tasks of every live ferroloop loop of this process, grouped by the loop's thread."""
    threads = []
    for loop in list(_loops):
        if loop.is_closed():
            continue
        threads.append(_loop_snapshot(loop))
    return {"pid": os.getpid(), "threads": threads}


def _loop_snapshot(loop):
    if loop.is_running():
        done = threading.Event()
        answer = []

        def take():
            answer.append(_tasks_of(loop, threading.get_native_id()))
            done.set()

        try:
            loop.call_soon_threadsafe(take)
        except RuntimeError:  # closed meanwhile
            pass
        else:
            if done.wait(LOOP_ANSWER_TIMEOUT):
                return answer[0]
    return _tasks_of(loop, 0)


def all_tasks(loop):
    """``asyncio.all_tasks(loop)``, callable from any thread."""
    import asyncio

    for _ in range(100):  # another thread may change the task set while it is copied
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return []


def _tasks_of(loop, tid):
    tasks = all_tasks(loop)
    if not tid:  # read from another thread: the loop's thread, by its identifier
        from . import _stats

        tid = getattr(_stats.thread_of(getattr(loop, "_thread_id", None)), "native_id", 0)
    awaited_by = {}
    for awaiter, child in _awaits(tasks):
        entry = {"id": id(awaiter), "stack": _awaiter_stack(awaiter)}
        awaited_by.setdefault(id(child), []).append(entry)
    return {
        "tid": tid,
        "tasks": [
            {
                "id": id(task),
                "name": task.get_name(),
                "stack": _coroutine_stack(task.get_coro())[::-1],
                "awaited_by": awaited_by.get(id(task), []),
            }
            for task in tasks
        ],
    }


def _frames(coro):
    """The frames of a coroutine chain, outermost first, with the objects they await."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        chain.append((frame, coro))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return chain


def _entry(frame):
    code = frame.f_code
    return [getattr(code, "co_qualname", code.co_name), code.co_filename, frame.f_lineno]


def _coroutine_stack(coro):
    return [_entry(frame) for frame, _ in _frames(coro)]


def _is_asyncio_frame(frame):
    return frame.f_globals.get("__name__", "").startswith("asyncio.")


def _awaiter_stack(task):
    """Where ``task`` awaits, innermost first, without asyncio's own frames."""
    return [_entry(frame) for frame, _ in _frames(task.get_coro()) if not _is_asyncio_frame(frame)][::-1]


def _awaits(tasks):
    """(awaiter, awaited) pairs of tasks: ``await task``, ``gather``, ``TaskGroup``."""
    from . import _compat

    pairs = {}
    for task in tasks:
        for awaited in _compat.tasks_awaited_by(task):
            pairs[id(task), id(awaited)] = (task, awaited)
        parent = _compat.task_group_parent(task)
        if parent is not None:
            pairs[id(parent), id(task)] = (parent, task)
    return list(pairs.values())


# --- the command line side -------------------------------------------------------------------


class NotListening(LookupError):
    """The process exists but nothing listens on its socket (it did not opt in, or is exiting)."""


def fetch(pid, request="ps"):
    """Process ``pid``'s answer to ``request``, or raise ``LookupError`` saying why there is none."""
    path = socket_path(pid)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(CLIENT_TIMEOUT)
    try:
        client.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        client.close()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise LookupError(f"no process with PID {pid}") from None
        except PermissionError:
            pass
        raise NotListening(
            f"process {pid} does not answer ferroloop's ps, pstree and top: run it with {ENV}=1 in "
            "its environment, or call ferroloop.enable_ps() in it"
        ) from None
    try:
        with client:
            client.sendall(f"{request}\n".encode())
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
    except OSError as exc:  # the process ended or stalled while answering
        raise LookupError(f"process {pid} did not answer: {exc}") from None
    if not chunks:
        raise LookupError(f"process {pid} closed the connection without answering (exiting?)")
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise LookupError(f"process {pid} ended its answer early (exiting?)") from None
    if "error" in reply:
        raise LookupError(f"process {pid} refused the request {request!r}: {reply['error']}")
    return reply


def _label(entry):
    func, filename, line = entry
    return f"{func} {filename}:{line}"


def table(snap):
    """Rows of ``ps``: tid, task id, task name, coroutine stack, awaiter chain, awaiter name, id."""
    names = {t["id"]: t["name"] for th in snap["threads"] for t in th["tasks"]}
    rows = []
    for th in snap["threads"]:
        for t in th["tasks"]:
            stack = " -> ".join(e[0] for e in t["stack"])
            if not t["awaited_by"]:
                rows.append([th["tid"], hex(t["id"]), t["name"], stack, "", "", "0x0"])
            for a in t["awaited_by"]:
                chain = " -> ".join(e[0] for e in a["stack"])
                rows.append(
                    [th["tid"], hex(t["id"]), t["name"], stack, chain, names.get(a["id"], "Unknown"), hex(a["id"])]
                )
    return rows


def tree(snap):
    """Lines of ``pstree``: each task under the coroutines of the task awaiting it."""
    tasks = {t["id"]: t for th in snap["threads"] for t in th["tasks"]}
    children = {}  # node -> [child nodes]; a node is ("T", id) or ("C", parent node, label)

    def child(parent, node):
        kids = children.setdefault(parent, [])
        if node not in kids:
            kids.append(node)
        return node

    awaited = set()
    awaiting = set()
    for t in tasks.values():
        for a in t["awaited_by"]:
            if a["id"] not in tasks:
                continue
            node = ("T", a["id"])
            for entry in reversed(a["stack"]):
                node = child(node, ("C", node, _label(entry)))
            child(node, ("T", t["id"]))
            awaited.add(t["id"])
            awaiting.add(a["id"])
    for t in tasks.values():
        if t["id"] not in awaiting:
            node = ("T", t["id"])
            for entry in reversed(t["stack"]):
                node = child(node, ("C", node, _label(entry)))

    def label(node):
        return f"(T) {tasks[node[1]]['name']}" if node[0] == "T" else f" {node[2]}"

    lines = []

    def render(node, prefix, last, seen):
        lines.append(f"{prefix}{'└── ' if last else '├── '}{label(node)}")
        if node in seen:  # an await cycle: shown once
            return
        kids = children.get(node, [])
        for i, kid in enumerate(kids):
            render(kid, prefix + ("    " if last else "│   "), i == len(kids) - 1, seen | {node})

    for tid in tasks:
        if tid not in awaited:
            render(("T", tid), "", True, frozenset())
    return lines


def main(command, pid, out=sys.stdout):
    """Print ``ps``'s table or ``pstree``'s tree of process ``pid``; return the exit status."""
    try:
        snap = fetch(pid)
    except LookupError as exc:
        sys.stderr.write(f"python -m ferroloop {command}: {exc}\n")
        return 1
    if command == "ps":
        widths = (10, 20, 20, 50, 50, 15, 15)
        header = ("tid", "task id", "task name", "coroutine stack", "awaiter chain", "awaiter name", "awaiter id")
        out.write(" ".join(f"{h:<{w}}" for h, w in zip(header, widths)) + "\n")
        out.write("-" * 180 + "\n")
        for row in table(snap):
            out.write(" ".join(f"{c!s:<{w}}" for c, w in zip(row, widths)) + "\n")
    else:
        for line in tree(snap):
            out.write(line + "\n")
    return 0
