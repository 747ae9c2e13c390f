"""Soak: many connections and callbacks, then check that fds and memory come back.

Run as a script for the full soak (100,000 connections and 10,000,000 callbacks on stock
asyncio and on ferroloop)::

    python tests/soak.py [--connections N] [--callbacks M] [--loops asyncio ferroloop]

It prints the numbers of each loop and exits non-zero if the number of open file descriptors
does not return exactly to its level before the soak, or if RSS grew by more than 5 %.
``tests/test_reliability.py`` imports ``soak()`` for a bounded run of the same workload.

The workload, on one loop:

* connections: ``concurrency`` clients at a time, each opening a TCP connection to one of a
  few local echo servers (``asyncio.Protocol``), writing a message, waiting for its echo,
  closing and waiting for ``connection_lost``; the server side closes on EOF;
* callbacks, at the same time: a ``call_soon`` chain (each callback schedules the next) for
  half of them, batches of ``call_soon`` for the other half.

A warm-up round (the same shape, smaller) runs before the baseline is taken so that allocator
arenas, free lists and the loops' internal buffers are at their working size.
"""

import argparse
import asyncio
import gc
import os
import sys
import time

MESSAGE = b"soak-" * 20
RSS_LIMIT = 0.05  # relative RSS growth allowed over a round
CONCURRENCY = 50  # clients connected at a time
BATCH = 10_000  # callbacks per call_soon batch
SERVERS = 4  # listening ports: spreads the TIME_WAIT connections over more 4-tuples


def fd_count():
    """Open file descriptors in this process (the listing's own descriptor included)."""
    return len(os.listdir("/proc/self/fd"))


def rss_bytes():
    """Resident set size, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def collect():
    for _ in range(3):
        gc.collect()


class Stats:
    def __init__(self):
        self.server_open = 0
        self.server_connections = 0
        self.callbacks = 0


class EchoServer(asyncio.Protocol):
    def __init__(self, stats):
        self.stats = stats
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.stats.server_open += 1
        self.stats.server_connections += 1

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.stats.server_open -= 1
        self.transport = None


class EchoClient(asyncio.Protocol):
    def __init__(self, loop):
        self.received = bytearray()
        self.echoed = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        transport.write(MESSAGE)

    def data_received(self, data):
        self.received += data
        if len(self.received) >= len(MESSAGE) and not self.echoed.done():
            self.echoed.set_result(bytes(self.received))

    def connection_lost(self, exc):
        if not self.echoed.done():
            self.echoed.set_exception(ConnectionError(f"lost before the echo: {exc!r}"))
        if not self.lost.done():
            self.lost.set_result(exc)


async def connections(loop, addrs, count, stats, concurrency=CONCURRENCY):
    """Open, use and close ``count`` connections, ``concurrency`` at a time."""

    async def client(first):
        for i in range(first, count, concurrency):
            host, port = addrs[i % len(addrs)]
            transport, proto = await loop.create_connection(lambda: EchoClient(loop), host, port)
            try:
                echo = await proto.echoed
            finally:
                transport.close()
            if echo != MESSAGE:
                raise AssertionError(f"bad echo {echo[:40]!r}")
            if await proto.lost is not None:
                raise AssertionError(f"connection_lost({proto.lost.result()!r}) after close()")

    await asyncio.gather(*(client(k) for k in range(min(concurrency, count))))
    # The server side closes on EOF; wait for the last of them.
    deadline = loop.time() + 30
    while stats.server_open:
        if loop.time() > deadline:
            raise AssertionError(f"{stats.server_open} server-side connections still open")
        await asyncio.sleep(0.001)


async def callbacks(loop, count, stats, batch=BATCH):
    """Run ``count`` callbacks: a call_soon chain, then call_soon batches."""
    chain = count // 2
    if chain:
        done = loop.create_future()

        def link(left):
            stats.callbacks += 1
            if left > 1:
                loop.call_soon(link, left - 1)
            else:
                done.set_result(None)

        loop.call_soon(link, chain)
        await done

    def tick():
        stats.callbacks += 1

    def last(fut):
        stats.callbacks += 1
        fut.set_result(None)

    left = count - chain
    while left:
        n = min(batch, left)
        fut = loop.create_future()
        for _ in range(n - 1):
            loop.call_soon(tick)
        loop.call_soon(last, fut)
        await fut
        left -= n


def run_round(loop, addrs, stats, n_connections, n_callbacks):
    """One round of the workload; raise AssertionError if it misbehaved."""
    stats.callbacks = 0
    stats.server_connections = 0

    async def main():
        await asyncio.gather(
            connections(loop, addrs, n_connections, stats),
            callbacks(loop, n_callbacks, stats),
        )

    loop.run_until_complete(main())
    if stats.callbacks != n_callbacks:
        raise AssertionError(f"{stats.callbacks} callbacks ran, expected {n_callbacks}")
    if stats.server_connections != n_connections:
        raise AssertionError(f"server accepted {stats.server_connections} connections, expected {n_connections}")


def soak(loop_factory, n_connections, n_callbacks, warmup=(1_000, 50_000)):
    """Run the soak on a loop from ``loop_factory``; return the measurements as a dict.

    ``fds_before``/``fds_after`` and ``rss_before``/``rss_after`` bracket the measured round
    (the loop and its servers open throughout); ``fds_start``/``fds_end`` bracket the whole run
    (before the loop is created, after it is closed).
    """
    collect()
    fds_start = fd_count()
    stats = Stats()
    loop = loop_factory()
    servers = []
    try:
        for _ in range(SERVERS):
            servers.append(
                loop.run_until_complete(loop.create_server(lambda: EchoServer(stats), "127.0.0.1", 0, backlog=1024))
            )
        addrs = [s.sockets[0].getsockname()[:2] for s in servers]

        run_round(loop, addrs, stats, *warmup)
        collect()
        fds_before, rss_before = fd_count(), rss_bytes()

        t0 = time.perf_counter()
        run_round(loop, addrs, stats, n_connections, n_callbacks)
        seconds = time.perf_counter() - t0

        collect()
        fds_after, rss_after = fd_count(), rss_bytes()
    finally:
        for s in servers:
            s.close()
        if servers and not loop.is_closed():

            async def wait_closed(closing):
                for s in closing:
                    await s.wait_closed()

            loop.run_until_complete(wait_closed(servers))
        loop.close()
        del servers, loop
    collect()
    fds_end = fd_count()
    return {
        "connections": n_connections,
        "callbacks": n_callbacks,
        "seconds": seconds,
        "fds_start": fds_start,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "fds_end": fds_end,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_growth": (rss_after - rss_before) / rss_before,
    }


def problems(result):
    """What is wrong with a soak result (empty if it passed)."""
    found = []
    if result["fds_after"] != result["fds_before"]:
        found.append(f"open fds {result['fds_before']} -> {result['fds_after']} over the round")
    if result["fds_end"] != result["fds_start"]:
        found.append(f"open fds {result['fds_start']} -> {result['fds_end']} once the loop is closed")
    if result["rss_growth"] >= RSS_LIMIT:
        found.append(f"RSS grew {result['rss_growth']:.1%} (limit {RSS_LIMIT:.0%})")
    return found


def format_result(name, r):
    mib = 1024 * 1024
    return (
        f"{name:9s} {r['connections']:,} connections + {r['callbacks']:,} callbacks in {r['seconds']:.1f} s; "
        f"fds {r['fds_before']} -> {r['fds_after']} (whole run {r['fds_start']} -> {r['fds_end']}); "
        f"RSS {r['rss_before'] / mib:.1f} -> {r['rss_after'] / mib:.1f} MiB ({r['rss_growth']:+.2%})"
    )


def loop_factories():
    factories = {"asyncio": asyncio.SelectorEventLoop}
    try:
        import ferroloop
    except ImportError as exc:
        print(f"import ferroloop failed: {exc!r}", file=sys.stderr)
        factories["ferroloop"] = None
    else:
        factories["ferroloop"] = ferroloop.new_event_loop
    return factories


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--callbacks", type=int, default=10_000_000)
    parser.add_argument("--loops", nargs="+", default=["asyncio", "ferroloop"], choices=["asyncio", "ferroloop"])
    args = parser.parse_args(argv)

    factories = loop_factories()
    failed = False
    print(f"Python {sys.version.split()[0]}, pid {os.getpid()}", flush=True)
    for name in args.loops:
        factory = factories[name]
        if factory is None:
            print(f"{name:9s} FAIL: not importable", flush=True)
            failed = True
            continue
        try:
            result = soak(factory, args.connections, args.callbacks)
        except Exception as exc:
            print(f"{name:9s} FAIL: {type(exc).__name__}: {exc}", flush=True)
            failed = True
            continue
        found = problems(result)
        print(format_result(name, result), flush=True)
        print(f"{name:9s} {'FAIL: ' + '; '.join(found) if found else 'ok'}", flush=True)
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
