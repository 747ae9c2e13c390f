"""Run CPython's own test.test_asyncio suite with ferroloop as the event loop.

Usage (from the repository root)::

    .venv/bin/python tests/cpython/run.py [--loop ferroloop|asyncio]
        [--modules test_locks,test_queues] [--timeout 30]
        [--expected tests/cpython/expected/3.11.json] [--update-expected]
        [--json results.json] [-v]

The suite shipped with the interpreter running this script is used, and
children run on that same interpreter (sys.executable): to test another
Python version, run this script with that version's interpreter.

Design
    Each module runs in its own child process (``python -m _child``, see
    _child.py for the substitution of ferroloop and the selection of tests),
    one module after the other.  The child's stdout/stderr go to a log file
    per module; its results come back as JSON lines on a pipe.

    A test that sends nothing for ``--timeout`` seconds is "hung": the child's
    process group is killed and a new child resumes the module after that
    test.  A child that dies (signal, os._exit, fatal error) before reporting
    "done" has "crashed": the test it was running and every test it had not
    reported yet are counted as crashed.  A module that hangs or crashes
    before listing its tests gets one entry under the module's name.

    ``--loop asyncio`` runs the same tests (same exclusions and duplicate
    skips) on stock asyncio, as a baseline to compare with.

Expected results
    ``--expected FILE`` (e.g. expected/3.11.json; a stock-asyncio baseline
    can be kept as expected/3.11-asyncio.json) maps test id to outcome.  A
    test of a module run now that FILE records as "passed" but that does not
    pass now is a regression: the runner lists it and exits with status 1.
    Each runs again alone first: one that passes then and is listed in
    flaky.txt (tests that fail at random whatever the loop, each with why) is
    reported as flaky and not counted; flaky on ferroloop alone still counts.
    Passing tests not recorded as passed are listed as improvements.
    ``--update-expected`` rewrites FILE with the outcomes of the modules run
    (entries of other modules are kept).  A missing FILE is not an error.

The last line printed is ``conformance: N passed, N failed, N skipped``,
where failed counts failures, errors, hung and crashed tests.
"""

import argparse
import collections
import importlib.util
import json
import os
import pathlib
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time

import _child

HERE = pathlib.Path(__file__).resolve().parent
EXCLUSIONS = HERE / "exclusions.txt"
# Tests that fail at random whatever the loop, for a reason the file gives (see compare_expected).
FLAKY = HERE / "flaky.txt"
# Seconds a hung child gets beyond --timeout to dump its tracebacks.
GRACE = 2.0
COLUMNS = (
    ("pass", "passed"),
    ("fail", "failed"),
    ("err", "error"),
    ("skip", "skipped"),
    ("hung", "hung"),
    ("crash", "crashed"),
)


def discover_modules():
    """Names of the test_asyncio modules of this interpreter."""
    package = importlib.util.find_spec("test.test_asyncio")
    return sorted(
        path.stem
        for location in package.submodule_search_locations
        for path in pathlib.Path(location).glob("test_*.py")
    )


def child_env():
    path = [str(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def kill_group(proc):
    """Kill a child and whatever it started (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_child(module, start, opts, workdir, log, results):
    """Run one child for `module` from plan index `start`.

    Results are stored into `results` as they arrive.  Returns (plan, end):
    plan is the child's list of test ids (None if it never sent it), end is
    None when the child reported "done", else ("hung" or "crashed", id of the
    running test or None, description).
    """
    read_fd, write_fd = os.pipe()
    command = [
        sys.executable,
        "-m",
        "_child",
        module,
        "--loop",
        opts.loop,
        "--exclusions",
        str(EXCLUSIONS),
        "--timeout",
        str(opts.timeout),
        "--report-fd",
        str(write_fd),
        "--start",
        str(start),
    ]
    for test in getattr(opts, "only", None) or ():
        command += ["--only", test]
    # Each child works in a directory of its own: some tests remove their working directory.
    cwd = workdir / f"cwd-{module}-{start}"
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=[write_fd],
        start_new_session=True,
    )
    os.close(write_fd)
    plan, current, end, done = None, None, None, False
    buffer = b""
    deadline = time.monotonic() + opts.timeout + GRACE
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while not done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kill_group(proc)
                end = ("hung", current)
                break
            if not select.select([pipe], [], [], min(remaining, 0.5))[0]:
                if proc.poll() is not None:  # exited; a grandchild holds the pipe
                    end = ("crashed", current)
                    break
                continue
            chunk = pipe.read(65536)
            if not chunk:
                end = ("crashed", current)
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                message = json.loads(line)
                deadline = time.monotonic() + opts.timeout + GRACE
                if "plan" in message:
                    plan = message["plan"]
                elif "start" in message:
                    current = message["start"]
                elif "result" in message:
                    results[message.pop("result")] = message
                    current = None
                done = "done" in message
    try:
        proc.wait(timeout=opts.timeout)
    except subprocess.TimeoutExpired:
        print(f"  {module}: child still running {opts.timeout}s after its last report; killed")
        kill_group(proc)
        proc.wait()
    status = (
        f"child killed by signal {-proc.returncode}"
        if proc.returncode < 0
        else f"child exited with status {proc.returncode}"
    )
    if done and proc.returncode != 0:
        print(f"  {module}: {status} after reporting all its tests")
    if end is None:
        return plan, None
    kind, test = end
    if kind == "hung":
        return plan, (kind, test, f"no progress for {opts.timeout}s")
    return plan, (kind, test, status + (f" while running {test}" if test else ""))


def run_module(module, opts, workdir):
    """Run every test of `module`; return {test id: result}."""
    results = {}
    start = 0
    with open(workdir / f"{module}.log", "wb") as log:
        while True:
            plan, end = run_child(module, start, opts, workdir, log, results)
            if end is None:
                break
            kind, test, detail = end
            if plan is None:
                results[module] = {"outcome": kind, "ferroloop": False, "detail": f"{detail}, before listing its tests"}
                break
            pending = [t for t in plan[start:] if t not in results]
            if kind == "crashed":
                for t in pending or [module]:
                    results[t] = {"outcome": "crashed", "ferroloop": False, "detail": detail}
                break
            # Hung: blame the running test, or the next one when the child
            # hung between tests (e.g. in setUpClass), or the module when it
            # hung after its last test; then resume after the hung test.
            test = test or (pending[0] if pending else module)
            results[test] = {"outcome": "hung", "ferroloop": False, "detail": detail}
            if test not in plan:
                break
            start = plan.index(test) + 1
    return results


def module_of(test_id):
    return test_id.split(".", 1)[0]


def print_details(results):
    for test, result in sorted(results.items()):
        if result["outcome"] not in ("passed", "skipped"):
            lines = result["detail"].strip().splitlines() or [""]
            print(f"    {result['outcome']:8} {test}: {lines[-1]}")


def rerun_alone(test, opts, workdir):
    """The outcome of `test` run again by itself, in a child of its own."""
    results = {}
    alone = argparse.Namespace(**{**vars(opts), "only": [test]})
    with open(workdir / f"rerun-{test}.log", "wb") as log:
        run_child(module_of(test), 0, alone, workdir, log, results)
    return results.get(test, {}).get("outcome", "missing")


def compare_expected(opts, results, modules, workdir):
    """Print regressions and improvements; return the number of regressions.

    A regression runs again alone. One that passes then failed only among the others: it counts
    unless FLAKY lists it, with the reason it fails at random on stock asyncio as well.
    """
    path = pathlib.Path(opts.expected)
    expected, regressions = {}, []
    flaky = _child.load_exclusions(FLAKY)
    if path.exists():
        expected = json.loads(path.read_text())
        failed = sorted(
            t
            for t, outcome in expected.items()
            if outcome == "passed" and module_of(t) in modules and results.get(t, {}).get("outcome") != "passed"
        )
        improvements = sorted(t for t, r in results.items() if r["outcome"] == "passed" and expected.get(t) != "passed")
        for t in failed:
            got = results[t]["outcome"] if t in results else "missing"
            reason = _child.exclusion_reason(t, flaky)
            alone = rerun_alone(t, opts, workdir)
            if reason and alone == "passed":
                print(f"FLAKY on both loops {t}: {got} among the others, passed alone ({FLAKY.name}: {reason})")
                continue
            regressions.append(t)
            if alone == "passed":
                print(f"REGRESSION {t}: expected passed, got {got}; passed alone: flaky on ferroloop is not a pass")
            else:
                print(f"REGRESSION {t}: expected passed, got {got}, and {alone} alone")
        for t in improvements:
            print(f"improvement {t}: passes (expected: {expected.get(t, 'not recorded')})")
        print(f"expected: {len(regressions)} regressions, {len(improvements)} improvements against {path}")
    else:
        print(f"expected: {path} does not exist, nothing to compare")
    if opts.update_expected:
        updated = {t: o for t, o in expected.items() if module_of(t) not in modules}
        updated.update({t: r["outcome"] for t, r in results.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(updated, indent=1, sort_keys=True) + "\n")
        print(f"expected: wrote {len(updated)} outcomes to {path}")
    return len(regressions)


def check_ferroloop():
    probe = "import ferroloop; ferroloop.new_event_loop().close()"
    done = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(
            f"ferroloop does not work in {sys.executable}:\n{done.stderr}"
            "(build it with `maturin develop`, or use --loop asyncio)"
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--loop", choices=("ferroloop", "asyncio"), default="ferroloop")
    parser.add_argument("--modules", help="comma-separated module names, e.g. test_locks,test_tasks")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-test timeout (s)")
    parser.add_argument("--expected", help="JSON file of expected outcomes")
    parser.add_argument(
        "--update-expected", action="store_true", help="rewrite the --expected file with this run's outcomes"
    )
    parser.add_argument("--json", help="write every test's result to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="list failing, hung and crashed tests")
    opts = parser.parse_args()
    if opts.update_expected and not opts.expected:
        parser.error("--update-expected needs --expected FILE")
    if opts.loop == "ferroloop":
        check_ferroloop()

    available = discover_modules()
    if opts.modules:
        modules = opts.modules.split(",")
        unknown = sorted(set(modules) - set(available))
        if unknown:
            parser.error(f"unknown modules: {', '.join(unknown)}")
    else:
        rules = _child.load_exclusions(EXCLUSIONS)
        modules = [m for m in available if _child.exclusion_reason(m, rules) is None]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="ferroloop-cpython-"))
    print(f"Python {platform.python_version()} ({sys.executable}), loop: {opts.loop}")
    print(f"{'module':24}" + "".join(f"{title:>7}" for title, _ in COLUMNS) + "  ferro   secs")

    results, summary = {}, {}
    for module in modules:
        began = time.monotonic()
        module_results = run_module(module, opts, workdir)
        counts = collections.Counter(r["outcome"] for r in module_results.values())
        counts["ferroloop"] = sum(r["ferroloop"] for r in module_results.values())
        seconds = time.monotonic() - began
        summary[module] = dict(counts, seconds=round(seconds, 1))
        print(
            f"{module:24}"
            + "".join(f"{counts[key]:7}" for _, key in COLUMNS)
            + f"{counts['ferroloop']:7}{seconds:7.1f}",
            flush=True,
        )
        if opts.verbose:
            print_details(module_results)
        results.update(module_results)

    total = collections.Counter(r["outcome"] for r in results.values())
    ran_on_ferroloop = sum(r["ferroloop"] for r in results.values())
    print(f"{'total':24}" + "".join(f"{total[key]:7}" for _, key in COLUMNS) + f"{ran_on_ferroloop:7}")
    print(f"logs: {workdir}")
    if opts.json:
        pathlib.Path(opts.json).write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "executable": sys.executable,
                    "loop": opts.loop,
                    "timeout": opts.timeout,
                    "modules": summary,
                    "tests": results,
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )
    regressions = compare_expected(opts, results, set(modules), workdir) if opts.expected else 0
    failed = sum(total[key] for key in ("failed", "error", "hung", "crashed"))
    print(f"conformance: {total['passed']} passed, {failed} failed, {total['skipped']} skipped")
    sys.exit(1 if regressions else 0)


if __name__ == "__main__":
    main()
