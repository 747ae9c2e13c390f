"""In-process micro-benchmarks: stock asyncio and ferroloop (and uvloop if installed), side by side.

Each workload runs on every loop within each round, loops interleaved, for several rounds; the
report gives the median time per operation and each loop's speed relative to stock asyncio,
computed within a round. Ratios, not absolute numbers, are what carries across machines.

    python bench/micro.py [--quick] [WORKLOAD ...]
"""

import argparse
import asyncio
import json
import statistics
import sys
import time


def loop_factories():
    """The loops to compare: asyncio and ferroloop, plus uvloop and rloop when installed."""
    import ferroloop

    factories = {"asyncio": asyncio.SelectorEventLoop}
    for name in ("uvloop", "rloop"):
        try:
            factories[name] = __import__(name).new_event_loop
        except ImportError:
            pass
    factories["ferroloop"] = ferroloop.new_event_loop
    return factories


def call_soon(loop, n):
    """n callbacks queued at once."""
    count = [0]

    def cb():
        count[0] += 1

    for _ in range(n):
        loop.call_soon(cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert count[0] == n


def call_soon_chain(loop, n):
    """Each callback schedules the next."""
    left = [n]

    def cb():
        left[0] -= 1
        if left[0]:
            loop.call_soon(cb)
        else:
            loop.stop()

    loop.call_soon(cb)
    loop.run_forever()


def create_task(loop, n):
    """create_task + await of a coroutine that returns at once."""

    async def leaf():
        return 1

    async def main():
        total = 0
        for _ in range(n):
            total += await loop.create_task(leaf())
        assert total == n

    loop.run_until_complete(main())


def sleep0(loop, n):
    """Two tasks taking turns with sleep(0)."""

    async def player():
        for _ in range(n // 2):
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(player(), player())

    loop.run_until_complete(main())


def future_round_trip(loop, n):
    """A future resolved by a callback, awaited."""

    async def main():
        for _ in range(n):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut

    loop.run_until_complete(main())


def timers(loop, n):
    """n timers, half of them cancelled."""
    fired = [0]

    def cb():
        fired[0] += 1

    handles = [loop.call_later(0.0001 * (i % 10), cb) for i in range(n)]
    for h in handles[::2]:
        h.cancel()
    loop.call_later(0.002, loop.stop)
    loop.run_forever()
    assert fired[0] == n - len(handles[::2])


def queue(loop, n):
    """A producer and a consumer through asyncio.Queue."""

    async def main():
        q = asyncio.Queue(maxsize=100)

        async def producer():
            for i in range(n):
                await q.put(i)

        async def consumer():
            for _ in range(n):
                await q.get()

        await asyncio.gather(producer(), consumer())

    loop.run_until_complete(main())


def gather(loop, n):
    """gather() of n tasks that each sleep(0) once."""

    async def leaf():
        await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*[leaf() for _ in range(n)])

    loop.run_until_complete(main())


WORKLOADS = {
    "call_soon": (call_soon, 200_000),
    "call_soon_chain": (call_soon_chain, 200_000),
    "create_task": (create_task, 50_000),
    "sleep0": (sleep0, 50_000),
    "future": (future_round_trip, 50_000),
    "timers": (timers, 50_000),
    "queue": (queue, 50_000),
    "gather_10k": (gather, 10_000),
}


def measure(factory, fn, n):
    loop = factory()
    try:
        start = time.perf_counter()
        fn(loop, n)
        return (time.perf_counter() - start) / n
    finally:
        loop.close()


def fairness(factory, samples=200):
    """Delay between data arriving on a socket and its reader running, while a call_soon chain
    keeps the ready queue from ever emptying. A child process writes its send time (the same
    monotonic clock) at irregular intervals, so the GIL plays no part in the timing."""
    import os
    import socket
    import subprocess
    import sys

    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, socket, struct, sys, time, random\n"
                "s = socket.socket(fileno=int(sys.argv[1]))\n"
                "for _ in range(int(sys.argv[2])):\n"
                "    time.sleep(random.uniform(0.001, 0.004))\n"
                "    s.send(struct.pack('q', time.monotonic_ns()))\n"
            ),
            str(wsock.fileno()),
            str(samples),
        ],
        pass_fds=[wsock.fileno()],
    )
    wsock.close()
    loop = factory()
    delays = []
    busy = [True]

    def spin():
        if busy[0]:
            loop.call_soon(spin)

    def on_data():
        now = time.monotonic_ns()
        try:
            data = rsock.recv(8 * 64)
        except BlockingIOError:
            return
        if not data:
            busy[0] = False
            loop.stop()
            return
        for i in range(0, len(data) - 7, 8):
            delays.append((now - int.from_bytes(data[i : i + 8], "little", signed=True)) / 1e3)

    loop.add_reader(rsock.fileno(), on_data)
    loop.call_soon(spin)
    loop.run_forever()
    loop.remove_reader(rsock.fileno())
    loop.close()
    rsock.close()
    writer.wait()
    _ = os
    delays.sort()
    return {
        "samples": len(delays),
        "p50_us": statistics.median(delays),
        "p99_us": delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))],
        "max_us": delays[-1],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", choices=[[]] + list(WORKLOADS), default=[])
    parser.add_argument("--quick", action="store_true", help="3 rounds at a fifth of the size")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="machine-readable output (for bench/run.py)")
    args = parser.parse_args()
    names = args.workloads or list(WORKLOADS)
    rounds = args.rounds or (3 if args.quick else 7)
    scale = 5 if args.quick else 1
    factories = loop_factories()
    report = {"loops": list(factories), "results": {}}
    base = "uvloop" if "uvloop" in factories else "asyncio"
    if not args.json:
        print(
            f"{'workload':<16}"
            + "".join(f"{name + ' us/op':>18}" for name in factories)
            + "".join(f"{name + ' vs ' + base:>22}" for name in factories if name != base)
        )
    for name in names:
        fn, n = WORKLOADS[name]
        n //= scale
        per_op = {loop: [] for loop in factories}
        ratios = {loop: [] for loop in factories}
        for _ in range(rounds):
            this_round = {}
            for loop, f in factories.items():
                try:
                    this_round[loop] = measure(f, fn, n)
                except Exception as exc:  # a loop that lacks the feature: left out of this workload
                    print(f"{loop} cannot run {name}: {exc!r}", file=sys.stderr)
                    continue
            for loop, t in this_round.items():
                per_op[loop].append(t)
                if base in this_round:
                    ratios[loop].append(this_round[base] / t)
        us = {loop: statistics.median(v) * 1e6 for loop, v in per_op.items() if v}
        vs = {loop: statistics.median(v) for loop, v in ratios.items() if v}
        report["results"][name] = {"us_per_op": us, "vs": {base: vs}}
        if not args.json:
            cols = "".join(f"{us[loop]:>18.3f}" if loop in us else f"{'unsupported':>18}" for loop in factories)
            cols += "".join(f"{vs[loop]:>21.2f}x" if loop in vs else f"{'-':>22}" for loop in factories if loop != base)
            print(f"{name:<16}{cols}")
    if not args.quick:
        report["fairness"] = fairness(factories["ferroloop"])
    if args.json:
        print(json.dumps(report))
    elif "fairness" in report:
        f = report["fairness"]
        print(f"fairness (ferroloop): p50 {f['p50_us']:.0f} us, p99 {f['p99_us']:.0f} us, max {f['max_us']:.0f} us")


if __name__ == "__main__":
    main()
