"""In-process micro-benchmarks: stock asyncio and ferroloop (and uvloop if installed), side by side.

Each workload runs on every loop within each round, loops interleaved, for several rounds; the
report gives the median time per operation and each loop's speed relative to stock asyncio,
computed within a round. Ratios, not absolute numbers, are what carries across machines.

    python bench/micro.py [--quick] [WORKLOAD ...]
"""

import argparse
import asyncio
import statistics
import time


def loop_factories():
    import ferroloop

    factories = {"asyncio": asyncio.SelectorEventLoop, "ferroloop": ferroloop.new_event_loop}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factories["uvloop"] = uvloop.new_event_loop
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


WORKLOADS = {
    "call_soon": (call_soon, 200_000),
    "call_soon_chain": (call_soon_chain, 200_000),
    "create_task": (create_task, 50_000),
    "sleep0": (sleep0, 50_000),
    "future": (future_round_trip, 50_000),
    "timers": (timers, 50_000),
}


def measure(factory, fn, n):
    loop = factory()
    try:
        start = time.perf_counter()
        fn(loop, n)
        return (time.perf_counter() - start) / n
    finally:
        loop.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", choices=[[]] + list(WORKLOADS), default=[])
    parser.add_argument("--quick", action="store_true", help="3 rounds at a fifth of the size")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    names = args.workloads or list(WORKLOADS)
    rounds = args.rounds or (3 if args.quick else 7)
    scale = 5 if args.quick else 1
    factories = loop_factories()
    print(
        f"{'workload':<16}"
        + "".join(f"{name + ' us/op':>18}" for name in factories)
        + "".join(f"{name + ' vs asyncio':>22}" for name in factories if name != "asyncio")
    )
    for name in names:
        fn, n = WORKLOADS[name]
        n //= scale
        per_op = {loop: [] for loop in factories}
        ratios = {loop: [] for loop in factories}
        for _ in range(rounds):
            this_round = {loop: measure(f, fn, n) for loop, f in factories.items()}
            for loop, t in this_round.items():
                per_op[loop].append(t)
                ratios[loop].append(this_round["asyncio"] / t)
        cols = "".join(f"{statistics.median(per_op[loop]) * 1e6:>18.3f}" for loop in factories)
        cols += "".join(f"{statistics.median(ratios[loop]):>21.2f}x" for loop in factories if loop != "asyncio")
        print(f"{name:<16}{cols}")


if __name__ == "__main__":
    main()
