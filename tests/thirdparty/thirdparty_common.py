"""What run.py and the children it starts (uvloop_child.py, anyio_plugin.py) share.

A child reports to run.py as JSON lines on the file descriptor named by FERROLOOP_THIRDPARTY_REPORT_FD:

    {"plan": [test id, ...]}          every test it will run, in order, once, before the first
    {"start": test id}                before each test
    {"result": test id, "outcome": ..., "detail": ...}
    {"done": true}                    after the last test

and runs only the tests of its plan from index FERROLOOP_THIRDPARTY_START on (run.py restarts a
child after the test that hung or crashed it). With FERROLOOP_THIRDPARTY_SHARD=I/N, its plan is
every Nth test of the suite from the Ith (0-based): the tests mostly wait (on sleeps, threads,
subprocesses), so several shards at a time share the cores well. With FERROLOOP_THIRDPARTY_ONLY
naming a file of test ids, its plan is those tests. Outcomes: passed, failed, skipped, xfailed (an
expected failure that failed); run.py adds hung and crashed.

Lists of tests (exclusions-*.txt, known-failures-*.txt) hold one `pattern  # reason` a line. A
pattern is a test id, or a prefix of one that ends where a part of the id ends (a module, a class,
a test without its parameters), with `*` matching anything.
"""

import json
import os
import pathlib
import re

LOOPS = ("asyncio", "ferroloop")


def load_list(path):
    """[(pattern, reason)] from a list file; a missing reason is an error (every entry says why)."""
    rules = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            pattern, _, reason = text.partition("#")
            if not reason.strip():
                raise ValueError(f"{path}:{number}: no reason given for {pattern.strip()!r}")
            rules.append((pattern.strip(), reason.strip()))
    return rules


def _compile(pattern):
    body = ".*".join(re.escape(part) for part in pattern.split("*"))
    # A pattern also covers what is below it: `module` covers `module.Class.test`,
    # `file.py::test` covers `file.py::test[params]`.
    return re.compile(body + r"(?:(?:\.|::|\[).*)?", re.DOTALL)


class TestList:
    """A list of test-id patterns with reasons; `reason(test id)` says why a test is listed, or None."""

    def __init__(self, path):
        self.path = path
        self.rules = [(_compile(pattern), pattern, reason) for pattern, reason in load_list(path)]

    def reason(self, test_id):
        for regex, _, reason in self.rules:
            if regex.fullmatch(test_id):
                return reason
        return None

    def unused(self, test_ids):
        """The patterns that match none of `test_ids` (stale entries)."""
        return [pattern for regex, pattern, _ in self.rules if not any(regex.fullmatch(t) for t in test_ids)]


class Reporter:
    """The child's side of the report pipe."""

    def __init__(self):
        self.fd = int(os.environ["FERROLOOP_THIRDPARTY_REPORT_FD"])
        self.start = int(os.environ.get("FERROLOOP_THIRDPARTY_START", "0"))
        self.shard, self.shards = map(int, os.environ.get("FERROLOOP_THIRDPARTY_SHARD", "0/1").split("/"))
        only = os.environ.get("FERROLOOP_THIRDPARTY_ONLY")
        self.only = set(pathlib.Path(only).read_text().splitlines()) if only else None

    def mine(self, tests):
        """This child's part of the suite's [(test id, test)]: its shard, or the tests run.py re-runs."""
        if self.only is not None:
            return [(test_id, test) for test_id, test in tests if test_id in self.only]
        return tests[self.shard :: self.shards]

    def send(self, **message):
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data) :]
