"""Child process of the CPython conformance runner: runs one test_asyncio module.

run.py starts one child per ``test.test_asyncio`` module, as::

    python -m _child test_locks --loop ferroloop --exclusions FILE \
        --timeout 30 --report-fd 5 --start 0

Substitution (``--loop ferroloop`` only)
    * Before the test module is imported, ferroloop becomes asyncio's default
      loop, so ``asyncio.new_event_loop()``, ``asyncio.run()`` and
      ``IsolatedAsyncioTestCase`` get ferroloop loops: where asyncio's policies
      are deprecated (3.14+), asyncio's ``new_event_loop`` is replaced by a
      counting factory, as ``python -m ferroloop`` does; before, a counting
      subclass of ``ferroloop.EventLoopPolicy`` is installed, and
      ``asyncio.set_event_loop_policy`` is wrapped so that ``None`` (which
      every test module passes in ``tearDownModule``) reinstalls it instead of
      asyncio's default policy.
    * Test classes that build their own loop through a ``create_event_loop``
      or ``new_loop`` method (the Epoll/Poll/Select variants of test_events,
      test_sock_lowlevel, test_sendfile, ...) get that method replaced by one
      returning ``ferroloop.new_event_loop()``.

Selection (both loops, so the two runs have the same test ids)
    * Tests matching ``exclusions.txt`` are reported as skipped, unrun.
    * Selector variants of one family (concrete classes that define the loop
      factory themselves and share their bases) are duplicates once the
      factory is replaced: only the first one the module defines (Epoll on
      Linux) runs; the others are reported as skipped.

Reporting
    The child writes JSON lines to ``--report-fd``, never to stdout/stderr
    (tests print there; run.py sends both to a log file)::

        {"plan": [test ids in run order]}
        {"start": id}
        {"result": id, "outcome": "passed|failed|error|skipped",
         "ferroloop": bool, "detail": str}
        {"done": true}

    Ids are unittest ids without the ``test.test_asyncio.`` prefix; a failed
    class or module fixture is reported as e.g. ``test_x.SomeTests.setUpClass``
    and the tests it kept from running as not run, with its outcome.  A test
    "ran on ferroloop" when a ferroloop loop was created between its
    ``startTest`` and ``stopTest`` (the loops made through the counting policy
    and the replaced factories are counted).  ``--start N`` skips the first N
    tests of the plan: run.py uses it to resume after a hung test.
    faulthandler dumps the tracebacks of a child silent for ``--timeout``
    seconds into the log, just before run.py kills it as hung.
"""

import argparse
import asyncio
import faulthandler
import fnmatch
import importlib
import json
import os
import signal
import unittest

ID_PREFIX = "test.test_asyncio."
LOOP_FACTORIES = ("create_event_loop", "new_loop")
# Modules whose setUp builds `asyncio.BaseEventLoop()` itself (adding mocks of private methods
# that ferroloop does not use): there, that name builds ferroloop loops.
BASE_LOOP_MODULES = ("test_pep492",)
DUPLICATE_REASON = "duplicate selector variant: ferroloop has one poller"

# Number of ferroloop loops created so far in this process.
loops_created = 0


def load_exclusions(path):
    """Read ``pattern  # reason`` lines into a list of (pattern, reason)."""
    rules = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            pattern, _, reason = line.partition("#")
            if pattern.strip():
                rules.append((pattern.strip(), reason.strip()))
    return rules


def exclusion_reason(name, rules):
    """Reason for excluding a module, class or test id, or None.

    A pattern matches the name itself or anything below it, so the pattern
    ``test_x.SomeTests`` also excludes ``test_x.SomeTests.test_y``.
    """
    for pattern, reason in rules:
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*"):
            return reason
    return None


def test_id(test):
    return test.id().removeprefix(ID_PREFIX)


def install_ferroloop():
    """Make ferroloop the loop of asyncio; return a counting loop factory."""
    import ferroloop
    from ferroloop import _compat

    def new_ferroloop():
        global loops_created
        loops_created += 1
        return ferroloop.new_event_loop()

    if _compat.POLICIES_DEPRECATED:
        # asyncio's new_event_loop replaced, as `python -m ferroloop` does: no policy involved.
        _compat.install_default_loop(new_ferroloop, None)
        return new_ferroloop

    class CountingPolicy(ferroloop.EventLoopPolicy):
        def new_event_loop(self):
            global loops_created
            loops_created += 1
            return super().new_event_loop()

    real_set_policy = asyncio.events.set_event_loop_policy

    def set_event_loop_policy(policy):
        real_set_policy(CountingPolicy() if policy is None else policy)

    asyncio.set_event_loop_policy = set_event_loop_policy
    asyncio.events.set_event_loop_policy = set_event_loop_policy
    set_event_loop_policy(None)
    return new_ferroloop


def ferroloop_factory(original, new_ferroloop):
    """A test class's loop factory, made to build ferroloop loops.

    The original factory runs with asyncio's loop classes standing for ferroloop, so whatever it
    sets up on the loop (test_runners adds mocks and records shutdown_asyncgens) is kept; a
    factory that only raises NotImplementedError (an abstract base) yields a plain ferroloop loop.
    """

    def make(*args, **kwargs):
        return new_ferroloop()

    def factory(self):
        saved = (asyncio.BaseEventLoop, asyncio.SelectorEventLoop, asyncio.new_event_loop)
        asyncio.BaseEventLoop = asyncio.SelectorEventLoop = asyncio.new_event_loop = make
        try:
            return original(self)
        except NotImplementedError:
            return new_ferroloop()
        finally:
            asyncio.BaseEventLoop, asyncio.SelectorEventLoop, asyncio.new_event_loop = saved

    return factory


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def duplicate_variants(module, classes):
    """Classes that repeat an earlier selector variant of the same family."""
    definition_order = {obj: i for i, obj in enumerate(vars(module).values()) if isinstance(obj, type)}
    families = {}
    for cls in sorted(classes, key=lambda c: definition_order.get(c, len(definition_order))):
        defines_factory = any(name in vars(cls) for name in LOOP_FACTORIES)
        if defines_factory and not getattr(cls, "__unittest_skip__", False):
            families.setdefault(cls.__bases__, []).append(cls)
    return {cls for family in families.values() for cls in family[1:]}


class ReportingResult(unittest.TestResult):
    """Reports each test's outcome, and whether it used ferroloop, as it ends.

    Tests that unittest never starts because a class or module fixture failed
    are reported, with that fixture's outcome, as soon as a later test starts
    (or by a final `report_not_run()`), so a later hang or crash cannot lose
    them.
    """

    def __init__(self, report, tests):
        super().__init__()
        self.report = report
        self.not_started = [test_id(t) for t in tests]
        self.current = None
        # Outcome of the running test; an expected failure stays "passed"
        # (the test behaves as CPython expects it to).
        self.outcome, self.detail = "passed", ""
        self.loops_before = 0
        # (outcome, description) of the last failed or skipped class/module
        # fixture: the tests it prevented from running inherit it.
        self.last_fixture = ("error", "unknown fixture")

    def report_not_run(self, until=None):
        """Report the tests before `until` (all when None) that never started."""
        outcome, fixture = self.last_fixture
        while self.not_started and self.not_started[0] != until:
            self.report(
                result=self.not_started.pop(0),
                outcome=outcome,
                ferroloop=False,
                detail=f"not run: {fixture}",
            )

    def begin(self, test):
        self.report_not_run(until=test_id(test))
        self.not_started.pop(0)

    def startTest(self, test):
        super().startTest(test)
        self.begin(test)
        self.current = test
        self.outcome, self.detail = "passed", ""
        self.loops_before = loops_created
        self.report(start=test_id(test))

    def stopTest(self, test):
        super().stopTest(test)
        if test is not self.current:  # a skip already reported by _record
            return
        self.current = None
        self.report(
            result=test_id(test),
            outcome=self.outcome,
            ferroloop=loops_created > self.loops_before,
            detail=self.detail,
        )

    def _record(self, test, outcome, detail):
        if not isinstance(test, unittest.TestCase):
            # unittest reports class and module fixtures as an _ErrorHolder
            # described "setUpClass (test.test_asyncio.test_x.SomeTests)".
            method, _, owner = test.id().partition(" (")
            fixture = f"{owner.rstrip(')').removeprefix(ID_PREFIX)}.{method}"
            self.last_fixture = (outcome, fixture)
            if outcome != "skipped":
                self.report(result=fixture, outcome=outcome, ferroloop=False, detail=detail)
        elif test is not self.current:
            # Python 3.12 skips tests without startTest (but with stopTest).
            self.begin(test)
            self.report(result=test_id(test), outcome=outcome, ferroloop=False, detail=detail)
        elif self.outcome == "passed":
            self.outcome, self.detail = outcome, detail

    def _failure(self, test, err):
        return self._exc_info_to_string(err, test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failed", self._failure(test, err))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self._failure(test, err))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            outcome = "failed" if issubclass(err[0], test.failureException) else "error"
            self._record(test, outcome, f"{subtest}\n{self._failure(test, err)}")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "failed", "unexpected success")


def run(args, report):
    """Run the module named by `args`, reporting through `report`."""
    faulthandler.enable()
    faulthandler.dump_traceback_later(args.timeout)
    new_ferroloop = install_ferroloop() if args.loop == "ferroloop" else None
    if new_ferroloop is not None and args.module in BASE_LOOP_MODULES:
        asyncio.BaseEventLoop = lambda: new_ferroloop()
    rules = load_exclusions(args.exclusions)

    try:
        module = importlib.import_module(ID_PREFIX + args.module)
    except unittest.SkipTest as exc:
        report(plan=[args.module])
        report(result=args.module, outcome="skipped", ferroloop=False, detail=str(exc))
        return

    tests = list(iter_tests(unittest.defaultTestLoader.loadTestsFromModule(module)))
    if args.only:
        tests = [t for t in tests if test_id(t) in args.only]
    report(plan=[test_id(t) for t in tests])
    duplicates = duplicate_variants(module, {type(t) for t in tests})
    runnable = []
    for test in tests[args.start :]:
        reason = exclusion_reason(test_id(test), rules)
        if reason is not None:
            reason = f"excluded: {reason}"
        elif type(test) in duplicates:
            reason = DUPLICATE_REASON
        if reason is None:
            runnable.append(test)
        else:
            report(result=test_id(test), outcome="skipped", ferroloop=False, detail=reason)

    if new_ferroloop is not None:
        for cls in {type(t) for t in runnable}:
            for name in LOOP_FACTORIES:
                if hasattr(cls, name):
                    setattr(cls, name, ferroloop_factory(getattr(cls, name), new_ferroloop))

    result = ReportingResult(report, runnable)
    unittest.TestSuite(runnable).run(result)
    result.report_not_run()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module")
    parser.add_argument("--loop", choices=("ferroloop", "asyncio"), required=True)
    parser.add_argument("--exclusions", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--only", action="append", help="run only this test id (repeatable)")
    args = parser.parse_args()

    os.set_inheritable(args.report_fd, False)
    # A runner started in the background (`cmd &` in a shell) inherits SIGINT ignored, and then
    # Python installs no KeyboardInterrupt handler: the tests of Ctrl-C (test_runners) would hang.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with open(args.report_fd, "w", encoding="utf-8") as channel:

        def report(**message):
            channel.write(json.dumps(message) + "\n")
            channel.flush()
            # run.py kills a child that stays silent for --timeout seconds
            # (plus a grace period): dump where it is stuck into the log first.
            faulthandler.dump_traceback_later(args.timeout)

        run(args, report)
        report(done=True)
        faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main()
