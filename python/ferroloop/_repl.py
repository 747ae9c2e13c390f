"""The asyncio REPL on a ferroloop loop (``python -m ferroloop`` without arguments).

The loop runs in the main thread, so Ctrl-C reaches it as ``KeyboardInterrupt``; the console reads
and compiles input in a second thread and hands each compiled statement to the loop. A statement
that uses ``await`` runs as a task, which Ctrl-C cancels; other statements run directly in a loop
callback. Statements share one ``contextvars.Context``, so context variables persist between them
as they do in Python's own REPL.
"""

import ast
import asyncio
import atexit
import builtins
import code
import concurrent.futures
import contextlib
import contextvars
import inspect
import os
import sys
import threading
import types
import warnings

import ferroloop

_EXIT_MESSAGE = "exiting ferroloop REPL...\n"


class AsyncConsole(code.InteractiveConsole):
    """An interactive console whose statements run on ``loop`` and may ``await`` at top level."""

    def __init__(self, namespace, loop):
        super().__init__(namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop
        self.context = contextvars.copy_context()
        self.task = None  # the task running the current statement, if it awaits
        self.interrupted = False  # set by Ctrl-C while the current statement runs

    # Console thread.

    def runcode(self, code):
        done = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._start, code, done)
        try:
            done.result()
        except SystemExit:
            raise
        except BaseException as exc:
            if self.interrupted:
                self.write("\nKeyboardInterrupt\n")
            else:
                self._show_user_traceback(exc)

    def _show_user_traceback(self, exc):
        # The traceback starts with this thread's frames and the loop's; the user's code starts at
        # the first frame compiled from console input. showtraceback() skips one entry (it expects
        # runcode()'s), so keep the entry before that frame.
        before, entry = None, exc.__traceback__
        while entry is not None and entry.tb_frame.f_code.co_filename != self.filename:
            before, entry = entry, entry.tb_next
        if entry is not None and before is not None:
            exc.with_traceback(before)
        self.showtraceback()

    # Loop thread.

    def _start(self, code, done):
        """Run one compiled statement; its outcome goes to ``done``."""
        self.task = None
        self.interrupted = False
        func = types.FunctionType(code, self.locals)
        try:
            result = self.context.run(func)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                self.interrupted = True
            done.set_exception(exc)
            return
        if not (code.co_flags & inspect.CO_COROUTINE):
            done.set_result(None)
            return
        try:
            self.task = self.loop.create_task(result, context=self.context)
        except BaseException as exc:
            done.set_exception(exc)
            return
        self.task.add_done_callback(lambda task: _copy_outcome(task, done))

    def interrupt(self):
        """Ctrl-C in the loop thread: cancel the statement being awaited, if any."""
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            self.interrupted = True

    def owns(self, exc):
        """Whether ``exc`` (leaving the loop) was raised by the current statement's task."""
        task = self.task
        return task is not None and task.done() and not task.cancelled() and task.exception() is exc


def _copy_outcome(task, done):
    try:
        result = task.result()
    except BaseException as exc:
        done.set_exception(exc)
    else:
        done.set_result(result)


class _ConsoleThread(threading.Thread):
    """Runs the console; when it ends, records how and stops the loop."""

    def __init__(self, console, banner):
        super().__init__(name="ferroloop REPL", daemon=True)
        self.console = console
        self.banner = banner
        self.exit_request = None  # the SystemExit that ended the console, if any
        self.finished = threading.Event()

    def run(self):
        try:
            self.console.interact(banner=self.banner, exitmsg="")
        except SystemExit as exc:
            self.exit_request = exc
        except BaseException:
            self.console.showtraceback()
            self.exit_request = SystemExit(1)
        finally:
            # Statements abandoned by exit() leave coroutines nobody awaits.
            warnings.filterwarnings("ignore", message=r"^coroutine .* was never awaited$", category=RuntimeWarning)
            self.finished.set()
            try:
                self.console.loop.call_soon_threadsafe(self.console.loop.stop)
            except RuntimeError:  # The loop already closed (the main thread exited first).
                pass


def _setup_line_editing(namespace):
    """Line editing, tab completion over the REPL's namespace and Python's history file.

    What site's interactive hook sets up for Python's REPL, done here because on 3.13 that hook
    keeps the history of the new REPL, which this console does not use.
    """
    try:
        import readline
        import rlcompleter
    except ImportError:
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    try:
        readline.read_init_file()
    except OSError:
        pass
    history = os.environ.get("PYTHON_HISTORY") or os.path.join(os.path.expanduser("~"), ".python_history")
    if readline.get_current_history_length() == 0:
        try:
            readline.read_history_file(history)
        except OSError:
            pass

    def save_history():
        try:
            readline.write_history_file(history)
        except OSError:
            pass

    atexit.register(save_history)


def _run_startup_file(namespace):
    path = os.environ.get("PYTHONSTARTUP")
    if not path:
        return
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), namespace)  # noqa: S102 - PYTHONSTARTUP, as Python's REPL
    except Exception:
        import traceback

        traceback.print_exc()


def _shutdown(loop):
    """Cancel what the session left running, shut the loop's services down and close it."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


def main():
    """Run the REPL until ``exit()`` or end of input; return the process's exit status."""
    loop = ferroloop.new_event_loop()
    asyncio.set_event_loop(loop)

    # Statements run in a fresh __main__ module, as in Python's REPL, so that pickle, dataclasses
    # and friends find what the session defines.
    main_module = types.ModuleType("__main__")
    main_module.__builtins__ = builtins
    main_module.asyncio = asyncio
    main_module.ferroloop = ferroloop
    sys.modules["__main__"] = main_module
    namespace = main_module.__dict__

    console = AsyncConsole(namespace, loop)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        _setup_line_editing(namespace)
        _run_startup_file(namespace)

    ps1 = getattr(sys, "ps1", ">>> ")
    banner = (
        f"ferroloop {ferroloop.__version__} asyncio REPL, Python {sys.version} on {sys.platform}\n"
        'Use "await" directly instead of "asyncio.run()".\n'
        'Type "help", "copyright", "credits" or "license" for more information.\n'
        f"{ps1}import asyncio, ferroloop"
    )
    thread = _ConsoleThread(console, banner)
    thread.start()

    exit_request = None
    while True:
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            console.interrupt()
        except SystemExit as exc:
            if not console.owns(exc):
                # A task the session started in the background called sys.exit(): end the
                # session, as an uncaught SystemExit ends Python.
                exit_request = exc
                break
            # The statement's own exit: the console thread receives it and stops the loop.
        else:
            if thread.finished.is_set():
                break
            # A statement stopped the loop (loop.stop()): the session goes on.

    console.write(_EXIT_MESSAGE)
    if exit_request is not None:
        _shutdown(loop)
        _exit_now(exit_request)
    thread.join()
    _shutdown(loop)
    return thread.exit_request.code if thread.exit_request is not None else 0


def _exit_now(exit_request):
    """Exit while the console thread still waits for input.

    Interpreter shutdown cannot wait for that thread, and finalizing with it blocked on stdin
    aborts Python; so run the exit handlers and flush here, and leave without finalizing.
    """
    status = exit_request.code
    if status is None:
        status = 0
    elif not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status & 0xFF)
