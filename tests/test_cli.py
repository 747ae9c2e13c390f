"""``python -m ferroloop``: the asyncio REPL and running programs on ferroloop.

Each test runs the command in a subprocess of this interpreter (``sys.executable``), with its
input piped; the console reads piped lines as it reads a terminal's.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

TIMEOUT = 30  # seconds for any one subprocess; they normally take well under a second

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ferroloop is Linux-only")


def _env(pythonpath=None):
    env = dict(os.environ)
    for name in ("PYTHONSTARTUP", "PYTHONSAFEPATH", "PYTHONINSPECT", "PYTHONWARNINGS"):
        env.pop(name, None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return env


def ferroloop_cli(*args, input=None, cwd=None, pythonpath=None):
    return subprocess.run(
        [sys.executable, "-m", "ferroloop", *map(str, args)],
        input=input,
        capture_output=True,
        check=False,
        text=True,
        cwd=cwd,
        env=_env(pythonpath),
        timeout=TIMEOUT,
    )


def write(path, source):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


# The REPL.


def test_repl_runs_on_a_ferroloop_loop(tmp_path):
    proc = ferroloop_cli(
        input=(
            "import asyncio\n"
            "await asyncio.sleep(0)\n"
            "print(type(asyncio.get_running_loop()).__module__)\n"
            "print(type(asyncio.get_running_loop()).__name__)\n"
            "exit()\n"
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ferroloop._loop" in proc.stdout
    assert "Loop" in proc.stdout
    assert "ferroloop" in proc.stderr  # the banner
    assert '"await"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_repl_prints_the_value_of_an_awaited_expression(tmp_path):
    proc = ferroloop_cli(
        input=("async def answer():\n    await asyncio.sleep(0.01)\n    return 6 * 7\n\nawait answer()\nexit()\n"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "42" in proc.stdout.split()  # the repr, alone on its line after the prompts


def test_repl_await_result_repr(tmp_path):
    proc = ferroloop_cli(input="await asyncio.sleep(0, result='done')\n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "'done'" in proc.stdout


def test_repl_end_of_input_exits_cleanly(tmp_path):
    proc = ferroloop_cli(input="x = 1\n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_repl_exit_status(tmp_path):
    proc = ferroloop_cli(input="await asyncio.sleep(0)\nexit(3)\nprint('not reached')\n", cwd=tmp_path)
    assert proc.returncode == 3
    assert "not reached" not in proc.stdout


def test_repl_errors_show_a_traceback_and_the_session_goes_on(tmp_path):
    proc = ferroloop_cli(
        input=(
            "1 / 0\n"
            "async def fail():\n    raise KeyError('inside')\n\n"
            "await fail()\n"
            "await asyncio.sleep(0, result='still running')\n"
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ZeroDivisionError" in proc.stderr
    assert "KeyError: 'inside'" in proc.stderr
    assert "'still running'" in proc.stdout


def test_repl_context_variables_persist_between_statements(tmp_path):
    proc = ferroloop_cli(
        input=(
            "import contextvars\n"
            "var = contextvars.ContextVar('var')\n"
            "_ = var.set('kept')\n"
            "await asyncio.sleep(0, result=var.get())\n"
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "'kept'" in proc.stdout


def test_repl_ctrl_c_cancels_the_awaited_statement(tmp_path):
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferroloop"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    try:
        proc.stdin.write(
            # SIGINT may be ignored if this test runs in the background: restore Python's handler.
            "import signal\n"
            "_ = signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "import pathlib\n"
            "async def wait():\n"
            f"    pathlib.Path({str(started)!r}).touch()\n"
            "    await asyncio.sleep(60)\n"
            "\n"
            "await wait()\n"
        )
        proc.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        while not started.exists():
            assert proc.poll() is None, "the REPL ended early"
            assert time.monotonic() < deadline, "the awaited statement did not start"
            time.sleep(0.02)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("print('alive')\nexit()\n", timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "KeyboardInterrupt" in err
    assert "alive" in out


# Programs.

LOOP_REPORT = """
    import asyncio
    import json
    import sys

    def name(loop):
        return f"{type(loop).__module__}.{type(loop).__qualname__}"

    async def running():
        return name(asyncio.get_running_loop())

    report = {"__name__": __name__, "argv": sys.argv, "path0": sys.path[0]}
    report["run"] = asyncio.run(running())
    with asyncio.Runner() as runner:
        report["runner"] = runner.run(running())
    loop = asyncio.new_event_loop()
    report["new_event_loop"] = name(loop)
    loop.close()
    print(json.dumps(report))
"""

FERROLOOP_LOOP = "ferroloop._loop.Loop"


def report_of(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_script_runs_on_ferroloop(tmp_path):
    script = write(tmp_path / "prog" / "main.py", LOOP_REPORT)
    report = report_of(ferroloop_cli(script, cwd=tmp_path))
    assert report["__name__"] == "__main__"
    assert report["run"] == FERROLOOP_LOOP
    assert report["runner"] == FERROLOOP_LOOP
    assert report["new_event_loop"] == FERROLOOP_LOOP


def test_script_argv_and_path_are_python_s(tmp_path):
    script = write(tmp_path / "prog" / "main.py", LOOP_REPORT)
    report = report_of(ferroloop_cli("prog/main.py", "a", "--flag", "-m", "x", cwd=tmp_path))
    assert report["argv"] == ["prog/main.py", "a", "--flag", "-m", "x"]
    assert report["path0"] == os.path.realpath(script.parent)


def test_script_imports_modules_next_to_it(tmp_path):
    write(tmp_path / "prog" / "helper.py", "VALUE = 'from helper'\n")
    script = write(tmp_path / "prog" / "main.py", "import helper\nprint(helper.VALUE)\n")
    proc = ferroloop_cli(script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "from helper"


def test_module_runs_on_ferroloop(tmp_path):
    lib = tmp_path / "lib"
    write(lib / "cli_test_pkg" / "__init__.py", "")
    write(lib / "cli_test_pkg" / "__main__.py", LOOP_REPORT)
    write(lib / "cli_test_mod.py", LOOP_REPORT)

    report = report_of(ferroloop_cli("-m", "cli_test_pkg", "one", "--two", cwd=tmp_path, pythonpath=lib))
    assert report["__name__"] == "__main__"
    assert report["argv"][1:] == ["one", "--two"]
    assert report["argv"][0] == str(lib / "cli_test_pkg" / "__main__.py")
    assert report["run"] == report["runner"] == report["new_event_loop"] == FERROLOOP_LOOP

    report = report_of(ferroloop_cli("-m", "cli_test_mod", "three", cwd=tmp_path, pythonpath=lib))
    assert report["argv"] == [str(lib / "cli_test_mod.py"), "three"]
    assert report["run"] == FERROLOOP_LOOP


def test_missing_script(tmp_path):
    proc = ferroloop_cli("no_such_script.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "can't open file" in proc.stderr
    assert "no_such_script.py" in proc.stderr


def test_missing_module(tmp_path):
    proc = ferroloop_cli("-m", "no_such_module_for_ferroloop", cwd=tmp_path)
    assert proc.returncode == 1
    assert "No module named no_such_module_for_ferroloop" in proc.stderr


def test_package_without_main(tmp_path):
    write(tmp_path / "lib" / "cli_plain_pkg" / "__init__.py", "")
    proc = ferroloop_cli("-m", "cli_plain_pkg", cwd=tmp_path, pythonpath=tmp_path / "lib")
    assert proc.returncode == 1
    assert "cannot be directly executed" in proc.stderr


def test_uncaught_exception_in_script(tmp_path):
    script = write(
        tmp_path / "fail.py",
        """
        import asyncio

        async def main():
            raise ValueError("boom")

        asyncio.run(main())
        """,
    )
    proc = ferroloop_cli(script, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ValueError: boom" in proc.stderr
    assert "fail.py" in proc.stderr
    # The traceback starts at the program, as Python's does.
    assert "runpy" not in proc.stderr
    assert "ferroloop/__main__.py" not in proc.stderr


def test_sys_exit_status_of_script(tmp_path):
    script = write(tmp_path / "exits.py", "import sys\nsys.exit(5)\n")
    assert ferroloop_cli(script, cwd=tmp_path).returncode == 5


def test_help(tmp_path):
    proc = ferroloop_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage:")
    assert "-m module" in proc.stdout
    assert "ps PID" in proc.stdout and "pstree PID" in proc.stdout and "top [-n SECONDS] [--once] PID" in proc.stdout


def test_unknown_option(tmp_path):
    proc = ferroloop_cli("--no-such-option", cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
