"""pytest-asyncio running async tests on the loop under test, in an inner pytest (a subprocess).

Two ways to choose the loop, both in pytest-asyncio 1.5:

- the ``pytest_asyncio_loop_factories`` hook, the documented mechanism since 1.3;
- an ``event_loop_policy`` fixture returning ``ferroloop.EventLoopPolicy()`` (or asyncio's
  default policy), the older mechanism, deprecated but still honoured.

The inner tests record the class of the loop they ran on; the outer test checks it.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ._support import loop_class_name

INNER_TIMEOUT = 60

INNER_TESTS = """
import asyncio
import json
import os

import pytest
import pytest_asyncio


def record(test):
    loop = asyncio.get_running_loop()
    with open(os.environ["INNER_RECORD"], "a") as f:
        f.write(json.dumps([test, f"{type(loop).__module__}.{type(loop).__qualname__}"]) + "\\n")


@pytest_asyncio.fixture
async def echo_port():
    async def handle(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    record("fixture")
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_echo(echo_port):
    record("test_echo")
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    writer.write(b"ping")
    await writer.drain()
    assert await reader.read(100) == b"ping"
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
async def test_tasks_and_timeouts():
    record("test_tasks_and_timeouts")
    results = await asyncio.gather(*(asyncio.sleep(0.001 * i, result=i) for i in range(5)))
    assert results == [0, 1, 2, 3, 4]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.sleep(5)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scope_first():
    record("test_module_scope_first")
    pytest.shared_loop = asyncio.get_running_loop()


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scope_second():
    record("test_module_scope_second")
    assert asyncio.get_running_loop() is pytest.shared_loop


@pytest.mark.asyncio
async def test_failure_is_reported():
    record("test_failure_is_reported")
    await asyncio.sleep(0)
    assert 1 == 2, "expected failure"
"""

HOOK_CONFTEST = """
import {module}


def pytest_asyncio_loop_factories(config, item):
    return {{"{name}": {factory}}}
"""

POLICY_CONFTEST = """
import {module}

import pytest


@pytest.fixture(scope="session")
def event_loop_policy():
    return {policy}
"""

FACTORIES = {
    "asyncio": {
        "module": "asyncio",
        "factory": "asyncio.SelectorEventLoop",
        "policy": "asyncio.DefaultEventLoopPolicy()",
    },
    "ferroloop": {
        "module": "ferroloop",
        "factory": "ferroloop.new_event_loop",
        "policy": "ferroloop.EventLoopPolicy()",
    },
}

INNER_INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings =
    ignore:Overriding the "event_loop_policy" fixture is deprecated
"""

TEST_NAMES = [
    "test_echo",
    "test_tasks_and_timeouts",
    "test_module_scope_first",
    "test_module_scope_second",
    "test_failure_is_reported",
]


@pytest.mark.parametrize("mechanism", ["loop_factories_hook", "event_loop_policy_fixture"])
def test_pytest_asyncio_runs_tests_on_the_loop(loop_factory, tmp_path, mechanism):
    spec = dict(FACTORIES[loop_factory.name], name=loop_factory.name)
    conftest = HOOK_CONFTEST if mechanism == "loop_factories_hook" else POLICY_CONFTEST
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest.format(**spec)))
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    (tmp_path / "pytest.ini").write_text(INNER_INI)
    record = tmp_path / "record.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["INNER_RECORD"] = str(record)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA", "--timeout=30", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=INNER_TIMEOUT,
        check=False,
    )
    output = proc.stdout + proc.stderr
    # One deliberate failure: a failing async test is reported as a failure, not lost.
    assert proc.returncode == 1, output
    assert "1 failed, 4 passed" in output, output
    assert "AssertionError: expected failure" in output, output
    for name in TEST_NAMES[:-1]:
        assert f"test_inner.py::{name} PASSED" in output, output
    assert "test_inner.py::test_failure_is_reported FAILED" in output, output
    assert "PytestDeprecationWarning" not in output, output

    seen = [json.loads(line) for line in record.read_text().splitlines()]
    expected_loop = loop_class_name(loop_factory.loop_class)
    assert sorted(name for name, _ in seen) == sorted(["fixture", *TEST_NAMES]), seen
    assert {loop for _, loop in seen} == {expected_loop}, seen
