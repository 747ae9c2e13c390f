"""What changes with the Python version: asyncio 3.14's API, policies, the task tools.

Each behaviour is asserted on stock asyncio and on ferroloop (the ``loop_factory`` fixture), with
the expectation asyncio sets for the running Python; where a feature does not exist on this Python,
the test is skipped and says so.
"""

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import ferroloop
import pytest
from ferroloop import _compat

PY314 = sys.version_info >= (3, 14)
THREAD_SAFE_HANDLE = getattr(asyncio.events, "_ThreadSafeHandle", None)
TIMEOUT = 30


def _run_python(*args, env=None, **kwargs):
    environ = dict(os.environ)
    environ.pop("PYTHONWARNINGS", None)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=TIMEOUT, env=environ, check=False, **kwargs
    )


# --- create_task's keywords --------------------------------------------------------------------


def test_create_task_keywords_reach_the_task_factory(loop):
    seen = []

    def factory(lp, coro, **kwargs):
        seen.append(sorted(kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    async def main():
        lp = asyncio.get_running_loop()
        lp.set_task_factory(factory)
        ctx = contextvars.copy_context()
        await lp.create_task(asyncio.sleep(0), name="n", context=ctx)
        await lp.create_task(asyncio.sleep(0))
        await asyncio.create_task(asyncio.sleep(0), name="m")
        return seen

    got = loop.run_until_complete(main())
    if PY314:
        # 3.14: every keyword as given, to the factory (asyncio.create_task passes name too).
        assert got == [["context", "name"], [], ["name"]]
    else:
        # Before: the factory gets `context` alone, when there is one; the name is set after.
        assert got == [["context"], [], []]


@pytest.mark.skipif(not PY314, reason="create_task(eager_start=...) is new in Python 3.14")
def test_create_task_eager_start(loop):
    order = []

    async def child():
        order.append("child starts")
        await asyncio.sleep(0)
        return 7

    async def main():
        task = asyncio.get_running_loop().create_task(child(), eager_start=True)
        order.append("created")
        eager_done = asyncio.create_task(asyncio.sleep(0, "x"), eager_start=False)
        assert not eager_done.done()
        return await task, await eager_done

    assert loop.run_until_complete(main()) == (7, "x")
    assert order == ["child starts", "created"]


@pytest.mark.skipif(PY314, reason="before 3.14, create_task takes only name and context")
def test_create_task_rejects_unknown_keywords_before_314(loop):
    async def main():
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(TypeError, match="unexpected keyword argument 'eager_start'"):
                asyncio.get_running_loop().create_task(coro, eager_start=True)
        finally:
            coro.close()

    loop.run_until_complete(main())


@pytest.mark.skipif(not PY314, reason="3.14 passes create_task's keywords to Task")
def test_create_task_passes_loop_twice_is_an_error(loop):
    async def main():
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(TypeError, match="multiple values for keyword argument 'loop'"):
                asyncio.get_running_loop().create_task(coro, loop=asyncio.get_running_loop())
        finally:
            coro.close()

    loop.run_until_complete(main())


# --- call_soon_threadsafe's handles -------------------------------------------------------------


@pytest.mark.skipif(THREAD_SAFE_HANDLE is None, reason="this asyncio has no _ThreadSafeHandle (3.14 has)")
def test_threadsafe_handle_cancel_waits_for_a_running_callback(loop):
    started, finished = threading.Event(), threading.Event()
    outcome = {}

    def callback():
        started.set()
        time.sleep(0.3)
        finished.set()

    def other_thread():
        handle = loop.call_soon_threadsafe(callback)
        outcome["class"] = isinstance(handle, THREAD_SAFE_HANDLE)
        started.wait(TIMEOUT)
        outcome["cancelled_while_running"] = handle.cancelled()  # waits for the callback
        outcome["finished_first"] = finished.is_set()
        handle.cancel()  # too late to stop it: it ran
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=other_thread)
    thread.start()
    loop.run_forever()
    thread.join(TIMEOUT)
    assert outcome == {"class": True, "cancelled_while_running": False, "finished_first": True}


@pytest.mark.skipif(THREAD_SAFE_HANDLE is None, reason="this asyncio has no _ThreadSafeHandle (3.14 has)")
def test_threadsafe_handle_callback_may_cancel_itself(loop):
    holder = []

    def callback():
        holder[0].cancel()  # reentrant: the handle's own callback holds its lock
        loop.stop()

    holder.append(loop.call_soon_threadsafe(callback))
    loop.run_forever()
    assert holder[0].cancelled()


def test_threadsafe_handle_cancelled_before_it_runs(loop):
    ran = []
    handle = loop.call_soon_threadsafe(ran.append, 1)
    handle.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [] and handle.cancelled()
    expected = THREAD_SAFE_HANDLE or asyncio.Handle
    assert isinstance(handle, expected)


# --- task bookkeeping ---------------------------------------------------------------------------


def test_all_tasks_and_current_task_from_another_thread(loop):
    """all_tasks(loop) from another thread sees eager and normal tasks; current_task of a loop
    that waits is None."""
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:

        async def setup():
            forever = asyncio.Event()
            if sys.version_info >= (3, 12):
                loop.set_task_factory(asyncio.eager_task_factory)
                eager = loop.create_task(forever.wait(), name="EAGER")
                loop.set_task_factory(None)
            else:
                eager = loop.create_task(forever.wait(), name="EAGER")
            normal = loop.create_task(forever.wait(), name="NORMAL")
            return eager, normal, asyncio.current_task().get_name()

        eager, normal, setup_name = asyncio.run_coroutine_threadsafe(setup(), loop).result(TIMEOUT)
        names = {t.get_name() for t in asyncio.all_tasks(loop)}
        assert {"EAGER", "NORMAL"} <= names
        assert setup_name not in names  # done
        assert asyncio.current_task(loop) is None

        async def teardown():
            for t in (eager, normal):
                t.cancel()
            await asyncio.gather(eager, normal, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(teardown(), loop).result(TIMEOUT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)


@pytest.mark.skipif(not PY314, reason="asyncio.capture_call_graph is new in Python 3.14")
def test_capture_call_graph(loop):
    async def leaf(seen):
        graph = asyncio.capture_call_graph()
        seen.append(
            (
                [entry.frame.f_code.co_name for entry in graph.call_stack],
                [g.future.get_name() for g in graph.awaited_by],
            )
        )
        text = asyncio.format_call_graph()
        seen.append("leaf" in text and "middle" in text)

    async def middle(seen):
        await leaf(seen)

    async def main():
        asyncio.current_task().set_name("main")
        seen = []
        async with asyncio.TaskGroup() as tg:
            tg.create_task(middle(seen), name="child")
        return seen

    (stack, awaited_by), formatted = loop.run_until_complete(main())
    assert stack[:2] == ["leaf", "middle"]
    assert awaited_by == ["main"]
    assert formatted is True


# --- policies -----------------------------------------------------------------------------------


def test_import_warns_of_nothing():
    proc = _run_python("-W", "error::DeprecationWarning", "-c", "import ferroloop, ferroloop.__main__")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not _compat.POLICIES_DEPRECATED, reason="asyncio's policies are deprecated from 3.14 on")
def test_event_loop_policy_warns_as_asyncio_does():
    with pytest.warns(DeprecationWarning, match="ferroloop.EventLoopPolicy"):
        policy_class = ferroloop.EventLoopPolicy
    with pytest.warns(DeprecationWarning, match="asyncio.DefaultEventLoopPolicy"):
        assert issubclass(policy_class, asyncio.DefaultEventLoopPolicy)
    assert "EventLoopPolicy" not in ferroloop.__all__
    loop = policy_class().new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()


@pytest.mark.skipif(_compat.POLICIES_DEPRECATED, reason="asyncio's policies are deprecated from 3.14 on")
def test_event_loop_policy_before_314():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = ferroloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.DefaultEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()


SCRIPT = """
import asyncio, warnings

async def main():
    return type(asyncio.get_running_loop()).__module__

print("run", asyncio.run(main()))
with asyncio.Runner() as runner:
    print("runner", runner.run(main()))
loop = asyncio.new_event_loop()
print("new", type(loop).__module__)
loop.close()
try:
    warnings.simplefilter("ignore", DeprecationWarning)
    loop = asyncio.get_event_loop()
    print("get_event_loop", type(loop).__module__)
except RuntimeError as exc:
    print("get_event_loop RuntimeError")
"""


def test_python_m_ferroloop_makes_ferroloop_loops_without_deprecated_calls(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    stock = _run_python(str(script))
    ours = _run_python("-W", "error::DeprecationWarning", "-m", "ferroloop", str(script))
    assert stock.returncode == 0 and ours.returncode == 0, (stock.stderr, ours.stderr)
    for line in ours.stdout.splitlines()[:3]:
        assert line.split()[1] == "ferroloop._loop", ours.stdout
    # asyncio.get_event_loop() outside a loop does whatever stock asyncio does on this Python
    # (a RuntimeError or a loop), with ferroloop's loops standing for asyncio's.
    assert ours.stdout.replace("ferroloop._loop", "LOOP") == stock.stdout.replace("asyncio.unix_events", "LOOP")


@pytest.mark.skipif(not _compat.POLICIES_DEPRECATED, reason="asyncio's policies are deprecated from 3.14 on")
def test_python_m_ferroloop_obeys_a_policy_the_program_installs(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, warnings
            warnings.simplefilter("ignore", DeprecationWarning)

            class Mine(asyncio.DefaultEventLoopPolicy):
                def new_event_loop(self):
                    print("mine")
                    return super().new_event_loop()

            asyncio.set_event_loop_policy(Mine())
            async def main():
                return type(asyncio.get_running_loop()).__module__
            print(asyncio.run(main()))
            """
        )
    )
    proc = _run_python("-m", "ferroloop", str(script))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["mine", "asyncio.unix_events"]


# --- python -m ferroloop ps / pstree ------------------------------------------------------------

PS_PROGRAM = """
import asyncio, os, sys
import ferroloop

async def leaf():
    await asyncio.sleep(3600)

async def worker():
    await leaf()

async def main():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(worker(), name="worker-a")
        tg.create_task(worker(), name="worker-b")
        await asyncio.sleep(0)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        raise SystemExit(0)

ferroloop.run(main())
"""


@pytest.mark.parametrize("command", ["ps", "pstree"])
def test_ps_lists_the_tasks_of_a_ferroloop_process(tmp_path, command):
    program = tmp_path / "prog.py"
    program.write_text(PS_PROGRAM)
    env = dict(os.environ, FERROLOOP_PS="1")
    env.pop("PYTHONWARNINGS", None)
    with subprocess.Popen(
        [sys.executable, str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as child:
        try:
            assert child.stdout.readline().strip() == "ready"
            proc = _run_python("-m", "ferroloop", command, str(child.pid))
        finally:
            child.stdin.write("\n")
            child.stdin.flush()
        assert child.wait(TIMEOUT) == 0
    if proc.returncode != 0 and "permission" in (proc.stdout + proc.stderr).lower():
        pytest.skip(f"this machine does not let one process read another's memory: {proc.stdout}{proc.stderr}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "worker-a" in out and "worker-b" in out and "Task-1" in out
    if command == "ps":
        rows = [line.split() for line in out.splitlines() if "worker-a" in line]
        assert rows and rows[0][3] == "sleep" and rows[0][5] == "leaf", out  # sleep -> leaf -> worker
        assert rows[0][-2] == "Task-1", out  # awaited by the task of main()
    else:
        lines = out.splitlines()
        root = next(i for i, line in enumerate(lines) if "(T) Task-1" in line)
        assert lines[root].startswith("└── "), out
        assert any("main" in line for line in lines[root + 1 : root + 3]), out
        child_lines = [line for line in lines if "(T) worker-a" in line]
        assert child_lines and child_lines[0].index("(T)") > lines[root].index("(T)"), out


def test_ps_explains_a_process_that_did_not_opt_in():
    if _compat.HAS_ASYNCIO_PS:
        pytest.skip("3.14+: asyncio's own tool reads any process; there is no opt-in")
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as child:
        try:
            proc = _run_python("-m", "ferroloop", "ps", str(child.pid))
        finally:
            child.stdin.close()
    assert proc.returncode == 1
    assert "FERROLOOP_PS=1" in proc.stderr


def test_ps_usage_errors():
    proc = _run_python("-m", "ferroloop", "ps")
    assert proc.returncode == 2 and "process ID" in proc.stderr
    proc = _run_python("-m", "ferroloop", "pstree", "abc")
    assert proc.returncode == 2 and "process ID" in proc.stderr


def test_ps_costs_nothing_unless_enabled():
    proc = _run_python(
        "-c",
        "import sys, threading, ferroloop; loop = ferroloop.new_event_loop(); loop.close();"
        "print('ferroloop._ps' in sys.modules, threading.active_count())",
    )
    assert proc.stdout.split() == ["False", "1"], proc.stderr
