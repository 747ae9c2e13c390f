"""Run uvloop's and anyio's own test suites on stock asyncio and on ferroloop, and compare.

Usage (from the repository root)::

    .venv/bin/python tests/thirdparty/run.py [--suites uvloop,anyio] [--jobs 4] [--shards 2] [--timeout 60]
        [--cache .thirdparty] [-k EXPRESSION] [--json results.json] [-v]

Sources
    Each suite's sdist, pinned in sdists.txt, is downloaded once with pip into the cache folder
    (default `.thirdparty/` at the repository root, ignored by git) and unpacked there. The tests
    run as they come in the sdist; nothing of them is copied into this repository. anyio's tests
    import the anyio installed in this interpreter, which must be the sdist's version
    (requirements-integration.txt pins both).

Loops
    Each suite runs twice on this interpreter: once on stock asyncio and once on ferroloop, each
    time split into --shards processes (every Nth test), --jobs processes at a time. How a suite is pointed at a loop is
    written at the top of uvloop_child.py (uvloop's UV test classes, through the stand-in
    `uvloop` package in uvloop_shim/) and anyio_plugin.py (anyio's `anyio_backend` fixture, with
    ferroloop as its `loop_factory`).

Timeouts
    A test that sends nothing for --timeout seconds is "hung": its process group is killed and
    a new process resumes the suite after that test. A process that dies while running a test
    has "crashed" it, and is resumed the same way. anyio's tests also have pytest-timeout's own
    per-test limit (20 s, from anyio's configuration).

Verdict
    A test that passes on asyncio (passed, or an expected failure) and does not on ferroloop is
    a regression, and the runner exits with status 1, unless the test is listed in
    known-failures-SUITE.txt: ferroloop bugs found and not fixed yet, reported separately.
    exclusions-SUITE.txt lists tests that cannot apply to ferroloop (they test uvloop's own
    internals, or need what this machine lacks), with the reason; they are not run on either
    loop. Do not list a test there because it fails on ferroloop.

    Under load (several shards at a time, a busy machine) a timing-sensitive test can fail: each
    regression runs again alone on ferroloop. One that fails again is a REGRESSION. One that
    passes then is FLAKY, and flaky on ferroloop is not a pass: it fails the run too, unless the
    test is listed in flaky-SUITE.txt, which holds only tests measured to fail as often on stock
    asyncio under the same load (the reason gives the counts). Those are reported, not counted.

The last line printed is `thirdparty: N passed, N failed, N skipped`, counting ferroloop's
outcomes (failed counts failures, hangs and crashes).
"""

import argparse
import collections
import concurrent.futures
import importlib.metadata
import json
import os
import pathlib
import platform
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

from thirdparty_common import LOOPS, TestList

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SUITES = ("uvloop", "anyio")
# Outcomes that count as passing: an expected failure that failed is what the suite asks for.
PASSING = ("passed", "xfailed")
COLUMNS = ("passed", "failed", "skipped", "xfailed", "hung", "crashed")
# Seconds a hung child gets beyond --timeout to dump its tracebacks.
GRACE = 5.0
# Seconds a child that reported its last test gets to exit before it is killed.
EXIT_WAIT = 10.0
# A child is resumed at most this often after a hang or a crash; the rest then counts as crashed.
MAX_RESTARTS = 25


def read_pins():
    """{name: version} from sdists.txt."""
    pins = {}
    for line in (HERE / "sdists.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def fetch_sdist(name, version, cache):
    """The sdist archive of name==version, downloaded into `cache` once."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"{name}-{version}.tar.gz"
    if not archive.exists():
        print(f"downloading the sdist of {name}=={version} into {downloads}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            + ["--dest", str(downloads), f"{name}=={version}"],
            check=True,
        )
    return archive


def unpack(archive, folder):
    """The sdist's source folder, unpacked from `archive` into `folder` (a job's own, pristine)."""
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder / archive.name.removesuffix(".tar.gz")


def check_versions(pins):
    installed = importlib.metadata.version("anyio")
    if installed != pins["anyio"]:
        sys.exit(f"anyio {installed} is installed, but its tests are those of {pins['anyio']} (sdists.txt)")
    probe = "import ferroloop; ferroloop.new_event_loop().close()"
    done = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"ferroloop does not work in {sys.executable}:\n{done.stderr}")


def python_path(*folders):
    existing = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([str(f) for f in folders] + existing)


def job_spec(suite, loop, shard, source, opts):
    """(command, extra environment, working folder) of one shard of a suite on one loop."""
    env = {
        "FERROLOOP_THIRDPARTY_LOOP": loop,
        "FERROLOOP_THIRDPARTY_SHARD": f"{shard}/{opts.shards}",
        "FERROLOOP_THIRDPARTY_EXCLUSIONS": str(HERE / f"exclusions-{suite}.txt"),
        "FERROLOOP_THIRDPARTY_TIMEOUT": str(opts.timeout),
    }
    if suite == "uvloop":
        env["PYTHONPATH"] = python_path(HERE / "uvloop_shim", HERE)
        env["FERROLOOP_UVLOOP_SOURCE"] = str(source / "uvloop")
        env["FERROLOOP_UVLOOP_LOOP"] = loop
        return [sys.executable, str(HERE / "uvloop_child.py"), str(source)] + ([opts.k] if opts.k else []), env, None
    # anyio's configuration (its pyproject.toml) loads the plugins it needs with -p; nothing else.
    env["PYTHONPATH"] = python_path(HERE)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTEST_PLUGINS"] = "anyio_policy"
    # anyio_policy goes first so that pytest, not anyio_plugin's import of it, loads it.
    command = [sys.executable, "-m", "pytest", "-p", "anyio_policy", "-p", "anyio_plugin", "-p", "no:cacheprovider"]
    command += ["-q", "tests"]
    if opts.k:
        command += ["-k", opts.k]
    if opts.eager:
        env["FERROLOOP_THIRDPARTY_EAGER"] = "1"
    return command, env, source


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_child(spec, start, opts, workdir, log, results):
    """Run one child from plan index `start`, storing results as they come.

    Returns (plan, end): end is None when the child reported "done", else (kind, test id or None,
    detail) for a hang or a crash.
    """
    command, extra_env, cwd = spec
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, **extra_env, FERROLOOP_THIRDPARTY_REPORT_FD=str(write_fd))
    env["FERROLOOP_THIRDPARTY_START"] = str(start)
    if cwd is None:
        # Some tests remove or fill their working folder: give each child its own.
        cwd = workdir / f"cwd-{start}"
        cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=[write_fd], start_new_session=True
    )
    os.close(write_fd)
    plan, current, end, done, buffer = None, None, None, False, b""
    deadline = time.monotonic() + opts.timeout + GRACE
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while not done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                end = ("hung", current, f"no progress for {opts.timeout:g}s")
                break
            if not select.select([pipe], [], [], min(remaining, 0.5))[0]:
                if proc.poll() is not None:  # exited, while a process it started holds the pipe
                    end = ("crashed", current, None)
                    break
                continue
            chunk = pipe.read(65536)
            if not chunk:
                end = ("crashed", current, None)
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
                done = done or "done" in message
    if not done:
        kill_group(proc)
    try:
        proc.wait(timeout=EXIT_WAIT)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
    # Whatever the tests started and left behind goes with the child.
    kill_group(proc)
    if end is not None and end[2] is None:
        status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
        end = (end[0], end[1], f"child {status}" + (f" while running {end[1]}" if end[1] else ""))
    return plan, end


def run_job(suite, loop, shard, archive, opts, workdir, extra_env=None):
    """The tests of one shard of `suite` on `loop`: (plan, {test id: result}, seconds).

    The shard runs in a copy of the suite's source of its own, unpacked from the sdist: some tests
    write into the project (anyio's test_sourceless_install builds a wheel from it, in its build/
    folder), the jobs run at the same time, each loop's beside the other's, and what one run left
    there would change the next.
    """
    name = f"{suite}-{loop}-{shard}"
    job_dir = workdir / name
    job_dir.mkdir()
    source = unpack(archive, job_dir)
    spec = job_spec(suite, loop, shard, source, opts)
    spec[1].update(extra_env or {})
    results, start, restarts, full_plan = {}, 0, 0, None
    began = time.monotonic()
    with open(workdir / f"{name}.log", "wb") as log:
        while True:
            plan, end = run_child(spec, start, opts, job_dir, log, results)
            full_plan = full_plan or plan
            if end is None:
                break
            kind, test, detail = end
            if plan is None:
                results[suite] = {"outcome": kind, "detail": f"{detail}, before listing its tests"}
                break
            pending = [t for t in plan[start:] if t not in results]
            # Blame the running test, or the next one when the child stopped between tests.
            test = test or (pending[0] if pending else None)
            if test is None:
                break
            results[test] = {"outcome": kind, "detail": detail}
            restarts += 1
            if restarts > MAX_RESTARTS:
                for t in pending:
                    results.setdefault(t, {"outcome": "crashed", "detail": f"not run: {MAX_RESTARTS} restarts"})
                break
            start = plan.index(test) + 1
    shutil.rmtree(source, ignore_errors=True)
    return full_plan or [], results, time.monotonic() - began


def counts_of(plan, results):
    counts = collections.Counter(results.get(t, {"outcome": "crashed"})["outcome"] for t in plan)
    counts.update(r["outcome"] for t, r in results.items() if t not in plan)
    return counts


def one_line(detail):
    lines = [line for line in (detail or "").strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else ""


def regressions_of(suite, runs):
    """[(test id, ferroloop's result)] of the tests that pass on asyncio and not on ferroloop, not listed as known."""
    known = TestList(HERE / f"known-failures-{suite}.txt")
    _, results_a, _ = runs[suite, "asyncio"]
    plan_f, results_f, _ = runs[suite, "ferroloop"]
    return [
        (test, results_f.get(test, {"outcome": "missing"}))
        for test in dict.fromkeys(list(results_a) + plan_f)
        if results_a.get(test, {}).get("outcome") in PASSING
        and results_f.get(test, {}).get("outcome") not in PASSING
        and not known.reason(test)
    ]


def rerun(suite, tests, archive, opts, workdir):
    """{test id: result} of `tests` of `suite` run again on ferroloop, alone: one process, nothing beside it."""
    listing = workdir / f"rerun-{suite}.txt"
    listing.write_text("".join(f"{test}\n" for test in tests))
    only = {"FERROLOOP_THIRDPARTY_ONLY": str(listing)}
    _, results, _ = run_job(suite, "ferroloop", "rerun", archive, opts, workdir, only)
    return results


def compare(suite, runs, reruns, opts):
    """Print the comparison of one suite; return (regressions, known failures that occurred).

    `reruns` holds the results of the regressions run again alone: one that passes then is flaky,
    which counts as a regression unless flaky-SUITE.txt lists it as flaky on stock asyncio too.
    """
    known = TestList(HERE / f"known-failures-{suite}.txt")
    flaky_on_asyncio = TestList(HERE / f"flaky-{suite}.txt")
    plan_a, results_a, _ = runs[suite, "asyncio"]
    plan_f, results_f, _ = runs[suite, "ferroloop"]
    missing = {"outcome": "missing", "detail": "not run"}
    regressions, known_seen, fixed = [], [], []
    for test in dict.fromkeys(plan_a + plan_f):
        on_asyncio = results_a.get(test, missing)["outcome"]
        on_ferroloop = results_f.get(test, missing)
        if on_asyncio in PASSING and on_ferroloop["outcome"] not in PASSING:
            (known_seen if known.reason(test) else regressions).append((test, on_ferroloop))
        elif known.reason(test) and on_ferroloop["outcome"] in PASSING:
            fixed.append(test)
        elif opts.verbose and on_ferroloop["outcome"] not in PASSING + ("skipped",):
            print(f"  not compared {test}: {on_ferroloop['outcome']} on ferroloop, {on_asyncio} on asyncio")
    for test, result in known_seen:
        print(f"  known failure {test}: {result['outcome']} ({known.reason(test)})")
        if opts.verbose:
            print(f"      {one_line(result['detail'])}")
    for test in fixed:
        print(f"  fixed? {test} passes on ferroloop: remove it from {known.path.name}")
    counted = []
    for test, result in regressions:
        if reruns.get(test, {}).get("outcome") not in PASSING:
            print(f"  REGRESSION {test}: {result['outcome']} on ferroloop, passed on asyncio")
            counted.append((test, result))
        elif flaky_on_asyncio.reason(test):
            print(f"  FLAKY on both loops {test}: {result['outcome']} on ferroloop among the others, passed alone")
            print(f"      listed in {flaky_on_asyncio.path.name}: {flaky_on_asyncio.reason(test)}")
        else:
            print(
                f"  FLAKY on ferroloop {test}: {result['outcome']} on ferroloop among the others, passed alone;"
                " it passed on asyncio, so this is not a pass"
            )
            counted.append((test, result))
        print(f"      {one_line(result['detail'])}")
    return counted, known_seen


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suites", default=",".join(SUITES), help="comma-separated: uvloop,anyio")
    parser.add_argument("--jobs", type=int, default=2 * (os.cpu_count() or 1), help="processes at a time")
    parser.add_argument("--shards", type=int, default=2, help="processes each suite is split into, on each loop")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without progress before a test is hung")
    parser.add_argument("--cache", default=str(REPO / ".thirdparty"), help="where the sdists are kept")
    parser.add_argument(
        "-k", help="run a part of the suites: pytest's -k expression for anyio, a substring of test ids for uvloop"
    )
    parser.add_argument("--eager", action="store_true", help="anyio: also its asyncio+eager parametrisation (3.12+)")
    parser.add_argument("--json", help="write every test's result on both loops to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list what fails on both loops")
    parser.add_argument("--fetch-only", action="store_true", help="download and unpack the sdists, run nothing")
    opts = parser.parse_args()
    suites = opts.suites.split(",")
    if set(suites) - set(SUITES):
        parser.error(f"unknown suites: {', '.join(sorted(set(suites) - set(SUITES)))}")

    pins = read_pins()
    cache = pathlib.Path(opts.cache).resolve()
    archives = {suite: fetch_sdist(suite, pins[suite], cache) for suite in suites}
    if opts.fetch_only:
        return 0
    check_versions(pins)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="ferroloop-thirdparty-"))
    print(f"Python {platform.python_version()} ({sys.executable}); logs: {workdir}", flush=True)

    began = time.monotonic()
    runs = {(suite, loop): ([], {}, 0.0) for suite in suites for loop in LOOPS}
    # anyio's is the longest: first, so that the processes finish together.
    jobs = [
        (suite, shard, loop)
        for suite in sorted(suites, key=SUITES.index, reverse=True)
        for shard in range(opts.shards)
        for loop in LOOPS
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        futures = {
            pool.submit(run_job, s, loop, shard, archives[s], opts, workdir): (s, loop) for s, shard, loop in jobs
        }
        for future in concurrent.futures.as_completed(futures):
            plan, results, seconds = runs[futures[future]]
            shard_plan, shard_results, shard_seconds = future.result()
            runs[futures[future]] = (plan + shard_plan, {**results, **shard_results}, seconds + shard_seconds)

    # Each regression runs again alone: what passes then is flaky (see compare).
    reruns = {}
    for suite in suites:
        failing = [test for test, _ in regressions_of(suite, runs)]
        if failing:
            print(f"{suite}: running {len(failing)} tests again alone on ferroloop", flush=True)
            reruns.update(rerun(suite, failing, archives[suite], opts, workdir))

    # "made": tests during which the suite made a ferroloop loop (the others never touch a loop, or
    # make a stock one themselves). "secs": the processes' time, added up.
    print(f"{'suite':8}{'loop':11}" + "".join(f"{c:>9}" for c in COLUMNS) + "     made     secs")
    total = collections.Counter()
    regressions, known_seen = 0, 0
    for suite in suites:
        for loop in LOOPS:
            plan, results, seconds = runs[suite, loop]
            counts = counts_of(plan, results)
            if loop == "ferroloop":
                total.update(counts)
            made = sum(bool(r.get("ferroloop")) for r in results.values()) if loop == "ferroloop" else "-"
            print(f"{suite:8}{loop:11}" + "".join(f"{counts[c]:9}" for c in COLUMNS) + f"{made:>9}{seconds:9.1f}")
        found, known = compare(suite, runs, reruns, opts)
        regressions += len(found)
        known_seen += len(known)
    print(f"wall time {time.monotonic() - began:.1f}s")
    # A suite that did not run at all would compare nothing: that is a failure of its own.
    broken = [f"{s} on {loop}" for (s, loop), (plan, _, _) in runs.items() if not plan]
    for name in broken:
        print(f"BROKEN: {name} ran no test (see its log)")
    if opts.json:
        data = {f"{s}/{loop}": {"plan": p, "results": r, "seconds": sec} for (s, loop), (p, r, sec) in runs.items()}
        pathlib.Path(opts.json).write_text(json.dumps({"python": platform.python_version(), "runs": data}, indent=1))
    print(
        f"regressions (pass on asyncio, not on ferroloop; flaky ones included): {regressions} unlisted, "
        f"{known_seen} known failures (known-failures-*.txt)"
    )
    failed = total["failed"] + total["hung"] + total["crashed"] + total["missing"]
    print(f"thirdparty: {total['passed'] + total['xfailed']} passed, {failed} failed, {total['skipped']} skipped")
    sys.exit(1 if regressions or broken else 0)


if __name__ == "__main__":
    main()
