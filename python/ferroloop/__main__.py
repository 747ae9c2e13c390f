"""``python -m ferroloop``: the asyncio REPL, or a program, on ferroloop.

    python -m ferroloop                       asyncio REPL on a ferroloop loop
    python -m ferroloop script.py [args...]   run a script with ferroloop as asyncio's loop
    python -m ferroloop -m module [args...]   run a library module likewise
    python -m ferroloop ps PID                the tasks of a process, as a table
    python -m ferroloop pstree PID            the tasks of a process, as a tree of awaits
    python -m ferroloop top PID               a live view of the loops of a process

A program runs as ``python script.py`` or ``python -m module`` would run it (``sys.argv``,
``sys.path[0]``, ``__name__ == "__main__"``), with ferroloop installed as asyncio's default loop
(``_compat.install_default_loop``: ``ferroloop.EventLoopPolicy`` where asyncio's policies are not
deprecated), so the loops of ``asyncio.run``, ``asyncio.Runner`` and ``asyncio.new_event_loop``
are ferroloop loops.
"""

import importlib.util
import os
import pkgutil
import runpy
import sys

import ferroloop
from ferroloop import _compat

PROG = "python -m ferroloop"

USAGE = f"usage: {PROG} [-h] [-V] [script [args ...] | -m module [args ...] | ps PID | pstree PID | top PID]\n"

HELP = (
    USAGE
    + """
Runs Python's asyncio on ferroloop's event loop.

With no arguments, starts the asyncio REPL on a ferroloop loop: "await" works at top level, and
Ctrl-C cancels the statement being awaited.

  script [args ...]     run a Python file (or a directory or zip file with a __main__.py) as
                        "python script [args ...]" would, with ferroloop as the event loop of
                        asyncio.run(), asyncio.Runner and asyncio.new_event_loop()
  -m module [args ...]  run a library module as a script, likewise
  ps PID                list the pending tasks of process PID: each with its coroutine stack
                        and the task awaiting it (Python 3.14+: asyncio's own tool, for any
                        asyncio process; before, for ferroloop processes run with
                        FERROLOOP_PS=1 or that called ferroloop.enable_ps())
  pstree PID            the same tasks as a tree: each under the coroutines awaiting it
  top [-n SECONDS] [--once] PID
                        a live view of the event loops of process PID, refreshed every
                        SECONDS (1): utilization, lag, callbacks and I/O events per second,
                        tasks, the slowest callbacks, transports; q or Ctrl-C quits. --once
                        prints one frame as text. For ferroloop processes run with
                        FERROLOOP_PS=1 or that called ferroloop.enable_ps() (every Python)
  --                    what follows is a script, even one named ps, pstree or top
  -h, --help            print this help and exit
  -V, --version         print ferroloop's version and exit
"""
)


def _fail(message, status):
    sys.stderr.write(f"{PROG}: {message}\n")
    return status


def _usage_error(message):
    sys.stderr.write(f"{PROG}: {message}\n{USAGE}Try '{PROG} --help' for more information.\n")
    return 2


def install_policy():
    """Make ferroloop the loop asyncio creates by default (``asyncio.run``, ``Runner``, ...)."""
    _compat.install_default_loop(ferroloop.new_event_loop, lambda: ferroloop.EventLoopPolicy())


def _user_traceback(exc):
    """``exc``'s traceback without the frames of this module and runpy that precede the program."""
    tb = exc.__traceback__
    entry = tb
    while entry is not None and (
        entry.tb_frame.f_globals is globals() or entry.tb_frame.f_globals.get("__name__") == "runpy"
    ):
        entry = entry.tb_next
    return entry if entry is not None else tb


def _run_program(run):
    """Call ``run``; report an uncaught exception as Python does (traceback, status 1).

    Returns ``run``'s result, or 1 after an exception.
    """
    try:
        return run()
    except (SystemExit, KeyboardInterrupt):
        raise  # Python's own handling: exit status, or death by SIGINT.
    except BaseException as exc:
        tb = _user_traceback(exc)
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1


def _script_error(path):
    """Why Python could not run ``path`` as a script (message, exit status), or ``None``."""
    importer = pkgutil.get_importer(path)
    if importer is None:  # Not a directory or zip file: a source or bytecode file.
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            return f"can't open file {os.path.abspath(path)!r}: [Errno {exc.errno}] {exc.strerror}", 2
        return None
    try:
        spec = importer.find_spec("__main__")
    except Exception:
        spec = None
    if spec is None:
        return f"can't find '__main__' module in {path!r}", 1
    return None


def run_script(path, args):
    error = _script_error(path)
    if error is not None:
        return _fail(*error)
    sys.argv = [path, *args]
    if not sys.flags.safe_path:
        # Python puts the script's directory first on sys.path (a directory or zip file itself
        # goes there; runpy.run_path adds that).
        real = os.path.realpath(path)
        sys.path[0] = real if os.path.isdir(real) else os.path.dirname(real)
    install_policy()

    def run():
        runpy.run_path(path, run_name="__main__")
        return 0

    return _run_program(run)


def _module_error(name):
    """Why ``python -m name`` would fail before running anything (its message), or ``None``."""
    if name.startswith("."):
        return "Relative module names not supported"
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            main_name = f"{name}.__main__"
            if importlib.util.find_spec(main_name) is None:
                return f"No module named {main_name}; {name!r} is a package and cannot be directly executed"
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        return f"Error while finding module specification for {name!r} ({type(exc).__name__}: {exc})"
    if spec is None or spec.loader is None:
        return f"No module named {name}"
    return None


def run_module(name, args):
    # While the module is looked up, sys.argv[0] is "-m", as in Python; runpy then sets it to the
    # module's file. sys.path[0] is already what "python -m" gives: the current directory.
    sys.argv = ["-m", *args]
    install_policy()

    def run():
        # Looking the module up imports its parent packages: their errors are the program's.
        error = _module_error(name)
        if error is not None:
            return _fail(error, 1)
        runpy.run_module(name, run_name="__main__", alter_sys=True)
        return 0

    return _run_program(run)


def tasks_tool(command, args):
    """``ps PID`` / ``pstree PID``."""
    if len(args) != 1 or not args[0].isdigit():
        return _usage_error(f"{command} takes one argument: a process ID")
    pid = int(args[0])
    if _compat.HAS_ASYNCIO_PS:
        import asyncio.tools

        show = (
            asyncio.tools.display_awaited_by_tasks_table
            if command == "ps"
            else asyncio.tools.display_awaited_by_tasks_tree
        )
        show(pid)
        return 0
    from . import _ps

    return _ps.main(command, pid)


def main(argv=None):
    """Parse the command line and run what it asks for; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        from . import _repl

        install_policy()
        return _repl.main()
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help"):
        sys.stdout.write(HELP)
        return 0
    if first in ("-V", "--version"):
        sys.stdout.write(f"ferroloop {ferroloop.__version__}\n")
        return 0
    if first in ("ps", "pstree"):
        return tasks_tool(first, rest)
    if first == "top":
        from . import _top

        return _top.main(rest)
    if first == "-m":
        if not rest:
            return _usage_error("argument expected for the -m option")
        return run_module(rest[0], rest[1:])
    if first.startswith("-m"):  # -mmodule, as Python accepts
        return run_module(first[2:], rest)
    if first == "--":
        if not rest:
            return _usage_error("a script is expected after --")
        return run_script(rest[0], rest[1:])
    if first.startswith("-"):
        return _usage_error(f"unknown option {first}")
    return run_script(first, rest)


if __name__ == "__main__":
    sys.exit(main())
