"""Run uvloop's own test suite (the tests/ folder of its sdist) on one loop; started by run.py.

    python uvloop_child.py SDIST_FOLDER [SUBSTRING]

with FERROLOOP_THIRDPARTY_LOOP (`asyncio` or `ferroloop`), FERROLOOP_THIRDPARTY_EXCLUSIONS
(exclusions-uvloop.txt), and the report pipe of thirdparty_common; run.py also puts
uvloop_shim/ first on PYTHONPATH, so `import uvloop` is the shim.

uvloop's tests come in pairs of classes: `Test_UV_TCP(_TestTCP, UVTestCase)` runs the shared
tests on uvloop, `Test_AIO_TCP(_TestTCP, AIOTestCase)` on stock asyncio, and some tests exist
only in the UV class. Test ids are those of the UV classes (`test_tcp.Test_UV_TCP.test_foo`),
whichever loop runs them:

- on ferroloop, every test of a UV class runs, with the shim's `uvloop.new_event_loop`
  giving ferroloop;
- on asyncio, a UV test with an AIO twin (same test name in the class named with AIO for UV)
  runs as that twin, the way uvloop's suite runs it on asyncio; a UV test without one runs
  with the shim's `uvloop.new_event_loop` giving stock asyncio.

Tests outside both kinds of classes (the policy, `uvloop.run()`, the test base itself) run on
both, with the shim standing for the loop.

`UVTestCase.implementation` is set to "asyncio", and its `is_asyncio_loop()` answers True: the
tests branch on them where uvloop deliberately behaves differently from asyncio, and ferroloop's
specification is asyncio's behaviour, so the UV classes must expect what asyncio does.
"""

import faulthandler
import os
import sys
import time
import unittest

from thirdparty_common import Reporter, TestList

# Enough of a failure's traceback to recognise it; the whole is in the log.
DETAIL_CHARS = 3000


def flatten(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from flatten(test)
        else:
            yield test


def short_id(test):
    """`tests.test_tcp.Test_UV_TCP.test_foo` -> `test_tcp.Test_UV_TCP.test_foo`; a module that failed to
    import (unittest's `_FailedTest`) -> its module name."""
    if type(test).__name__ == "_FailedTest":
        return test._testMethodName.removeprefix("tests.")
    return test.id().removeprefix("tests.")


def aio_twin(test, tb):
    """The AIOTestCase test that runs the UV test `test` on asyncio, or None."""
    cls = type(test)
    module = sys.modules[cls.__module__]
    twin = getattr(module, cls.__name__.replace("UV", "AIO", 1), None)
    name = test._testMethodName
    if isinstance(twin, type) and issubclass(twin, tb.AIOTestCase) and hasattr(twin, name):
        return twin(name)
    return None


def plan(loop, tests, tb, exclusions, keyword):
    """[(test id, test to run)] for `loop`, in discovery order; only ids containing `keyword` if given."""
    planned = []
    for test in tests:
        test_id = short_id(test)
        if isinstance(test, tb.AIOTestCase) or exclusions.reason(test_id) is not None:
            continue
        if keyword and keyword not in test_id:
            continue
        if loop == "asyncio" and isinstance(test, tb.UVTestCase):
            test = aio_twin(test, tb) or test
        planned.append((test_id, test))
    return planned


class Result(unittest.TestResult):
    """One test's outcome: the first failure (subtests included) decides it."""

    def __init__(self):
        super().__init__()
        self.outcome, self.detail = "passed", ""

    def _set(self, outcome, detail):
        if self.outcome in ("passed", "skipped"):
            self.outcome, self.detail = outcome, detail

    def addError(self, test, err):
        self._set("failed", self._exc_info_to_string(err, test))

    def addFailure(self, test, err):
        self._set("failed", self._exc_info_to_string(err, test))

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self._set("failed", f"{subtest}: {self._exc_info_to_string(err, test)}")

    def addSkip(self, test, reason):
        self._set("skipped", reason)

    def addExpectedFailure(self, test, err):
        self._set("xfailed", self._exc_info_to_string(err, test))

    def addUnexpectedSuccess(self, test):
        self._set("failed", "unexpected success")


def main():
    faulthandler.enable()  # a crash's Python traceback, in the log
    source = os.path.abspath(sys.argv[1])
    loop = os.environ["FERROLOOP_THIRDPARTY_LOOP"]
    exclusions = TestList(os.environ["FERROLOOP_THIRDPARTY_EXCLUSIONS"])
    reporter = Reporter()
    timeout = float(os.environ.get("FERROLOOP_THIRDPARTY_TIMEOUT", "60"))

    import uvloop
    import uvloop._testbase as tb

    tb.UVTestCase.implementation = "asyncio"
    tb.UVTestCase.is_asyncio_loop = lambda self: True
    sys.path.insert(0, source)
    tests = list(flatten(unittest.TestLoader().discover(os.path.join(source, "tests"), top_level_dir=source)))
    planned = reporter.mine(plan(loop, tests, tb, exclusions, sys.argv[2] if len(sys.argv) > 2 else None))
    reporter.send(plan=[test_id for test_id, _ in planned])
    for test_id, test in planned[reporter.start :]:
        reporter.send(start=test_id)
        print(f"=== {test_id} ({type(test).__name__})", flush=True)
        # Where a hung test is stuck, in the log, before run.py kills this process.
        faulthandler.dump_traceback_later(timeout, exit=False)
        began = time.monotonic()
        result = Result()
        loops_before = uvloop.loops_made
        test.run(result)
        faulthandler.cancel_dump_traceback_later()
        seconds = round(time.monotonic() - began, 3)
        print(f"--- {result.outcome} in {seconds}s\n{result.detail}", flush=True)
        on_ferroloop = loop == "ferroloop" and uvloop.loops_made > loops_before
        detail = result.detail[-DETAIL_CHARS:]
        reporter.send(result=test_id, outcome=result.outcome, detail=detail, ferroloop=on_ferroloop, seconds=seconds)
    reporter.send(done=True)
    # Threads a test left running must not hold the process (and the suite) up.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
