"""``ferroloop.stats()``: the loop's statistics, checked against ground truth.

Stock asyncio keeps no such figures, so these tests run on ferroloop only: the reference is what
the test made the loop do (waits and blocking of known durations, known numbers of callbacks and
timers). Durations are checked with a stated tolerance: at least what was slept (a clock never
runs short), and at most that plus SLACK, which absorbs a loaded machine's scheduling delays.
"""

import asyncio
import itertools
import socket
import threading
import time

import ferroloop
import pytest

# How much more than the known duration a figure may show (seconds).
SLACK = 0.08


def between(value, low, slack=SLACK):
    # Durations are measured with the CPU's counter, whose rate is calibrated against the
    # monotonic clock to about 1e-5 (ferroloop_core::clock::Ticks): allow that much below.
    return low * (1 - 1e-4) <= value <= low + slack


def run(main, **kwargs):
    return ferroloop.run(main(), **kwargs)


def test_idle_and_busy_are_the_known_waits_and_blocks():
    async def main():
        before = ferroloop.stats()
        await asyncio.sleep(0.2)  # idle: the loop waits for the timer in its poller
        time.sleep(0.2)  # noqa: ASYNC251 (busy: a task blocks the loop)
        return ferroloop.stats().since(before)

    interval = run(main)
    assert between(interval.idle, 0.2), interval
    assert between(interval.busy, 0.2), interval
    assert 0.35 <= interval.utilization <= 0.65, interval
    assert interval.iterations >= 2 and interval.callbacks >= 2 and interval.timers == 1


def test_utilization_of_a_busy_loop_is_near_one():
    async def main():
        before = ferroloop.stats()
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            await asyncio.sleep(0)
        return ferroloop.stats() - before

    interval = run(main)
    assert interval.utilization > 0.95, interval
    assert interval.idle < 0.01, interval
    assert interval.callbacks >= 100


def test_a_timer_due_behind_a_blocking_callback_reports_its_lag():
    fired = []

    async def main():
        loop = asyncio.get_running_loop()
        before = ferroloop.stats()
        loop.call_later(0.01, lambda: fired.append(loop.time()))
        loop.call_soon(time.sleep, 0.12)
        await asyncio.sleep(0.2)
        return ferroloop.stats() - before

    interval = run(main)
    assert fired
    # Due 0.01 s after scheduling, run after the 0.12 s block: 0.11 s late at least.
    assert between(interval.lag.max, 0.11 * 0.875), interval.lag
    assert interval.lag.p99 <= interval.lag.max


def test_call_soon_behind_a_blocking_callback_reports_its_lag():
    async def main():
        loop = asyncio.get_running_loop()
        before = ferroloop.stats()
        done = loop.create_future()
        loop.call_soon(time.sleep, 0.1)
        loop.call_soon(done.set_result, None)
        await done
        return ferroloop.stats() - before

    interval = run(main)
    assert between(interval.lag.max, 0.1 * 0.875), interval.lag
    assert interval.lag.samples >= 1


def test_an_idle_loop_has_no_lag():
    async def main():
        before = ferroloop.stats()
        for _ in range(20):
            await asyncio.sleep(0.005)
        return ferroloop.stats() - before

    interval = run(main)
    assert interval.lag.samples >= 20
    # Each sleep's timer runs when it is due, give or take the wake-up: a few ms at most.
    assert interval.lag.p50 < 0.005, interval.lag


def blocks_on_sleep():
    time.sleep(0.15)


def blocks_on_cpu():
    end = time.monotonic() + 0.15
    while time.monotonic() < end:
        pass


def blocks_on_socket():
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(0.15)
        with pytest.raises(TimeoutError):
            a.recv(1)


@pytest.mark.parametrize("block", [blocks_on_sleep, blocks_on_cpu, blocks_on_socket])
def test_a_slow_task_step_is_named(block):
    async def slow_worker():
        block()

    async def main():
        before = ferroloop.stats()
        await asyncio.create_task(slow_worker(), name="the-slow-one")
        return ferroloop.stats() - before

    interval = run(main)
    assert interval.slow_callbacks == 1, interval
    (slow,) = interval.slowest
    assert between(slow.seconds, 0.15), slow
    assert "the-slow-one" in slow.what and "slow_worker" in slow.what and __file__ in slow.what, slow


def test_a_slow_plain_callback_is_named():
    async def main():
        loop = asyncio.get_running_loop()
        before = ferroloop.stats()
        loop.call_soon(blocks_on_sleep)
        await asyncio.sleep(0.2)
        return ferroloop.stats() - before

    interval = run(main)
    assert [s.what for s in interval.slowest] == [
        f"blocks_on_sleep() at {__file__}:{blocks_on_sleep.__code__.co_firstlineno}"
    ]


def test_a_slow_protocol_callback_is_named():
    class Slow(asyncio.Protocol):
        def __init__(self, done):
            self.done = done

        def data_received(self, data):
            time.sleep(0.15)
            self.done.set_result(data)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        done = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(lambda: Slow(done), a)
        before = ferroloop.stats()
        b.send(b"x")
        await done
        after = ferroloop.stats()
        transport.close()
        b.close()
        return after - before

    interval = run(main)
    assert interval.slow_callbacks == 1, interval
    (slow,) = interval.slowest
    assert between(slow.seconds, 0.15)
    assert "Slow object" in slow.what and "readable" in slow.what, slow
    assert interval.io_events >= 1


def test_the_threshold_is_slow_callback_duration():
    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.02
        before = ferroloop.stats()
        loop.call_soon(time.sleep, 0.05)
        loop.call_soon(time.sleep, 0.001)
        await asyncio.sleep(0.1)
        loop.slow_callback_duration = 1.0
        loop.call_soon(time.sleep, 0.05)
        await asyncio.sleep(0.1)
        return ferroloop.stats() - before

    interval = run(main)
    assert interval.slow_callbacks == 1, interval


def test_the_slowest_are_kept_slowest_first():
    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.001
        for ms in (3, 9, 2, 7, 5, 4, 8):
            loop.call_soon(time.sleep, ms / 1000)
        await asyncio.sleep(0.1)
        return ferroloop.stats()

    stats = run(main)
    assert stats.slow_callbacks == 7
    seconds = [s.seconds for s in stats.slowest]
    assert len(seconds) == 5 and seconds == sorted(seconds, reverse=True) and seconds[-1] >= 0.004, seconds


def test_counts_of_callbacks_timers_and_iterations():
    def main():
        loop = ferroloop.new_event_loop()
        try:
            before = ferroloop.stats(loop)
            hits = []
            for i in range(100):
                loop.call_soon(hits.append, i)
            cancelled = loop.call_soon(hits.append, -1)
            cancelled.cancel()
            for i in range(10):
                loop.call_later(0.001 * i, hits.append, i)
            loop.call_later(0.001, hits.append, -1).cancel()
            loop.call_later(0.05, loop.stop)
            loop.run_forever()
            interval = ferroloop.stats(loop) - before
        finally:
            loop.close()
        return hits, interval

    hits, interval = main()
    assert len(hits) == 110
    assert interval.callbacks == 111  # the stop callback too; the cancelled ones are not run
    assert interval.timers == 11
    assert 1 <= interval.iterations <= interval.callbacks


def test_time_outside_run_is_not_counted():
    loop = ferroloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0))
        first = ferroloop.stats(loop)
        time.sleep(0.1)
        loop.run_until_complete(asyncio.sleep(0))
        interval = ferroloop.stats(loop) - first
    finally:
        loop.close()
    assert interval.busy + interval.idle < 0.05, interval


def test_a_patched_loop_time_does_not_change_the_figures():
    async def main():
        loop = asyncio.get_running_loop()
        real = loop.time
        loop.time = lambda: real() + 1000.0
        before = ferroloop.stats()
        await asyncio.sleep(0.1)
        return ferroloop.stats() - before

    interval = run(main)
    assert between(interval.idle, 0.1), interval
    assert interval.lag.max < 0.05, interval.lag


def test_each_loop_its_own_and_readable_from_other_threads():
    results = {}
    ready = threading.Barrier(3)

    def worker(name, blocks):
        async def main():
            loop = asyncio.get_running_loop()
            results[name, "loop"] = loop
            ready.wait()
            for _ in range(blocks):
                loop.call_soon(time.sleep, 0.12)
            await asyncio.sleep(0.5)

        ferroloop.run(main())

    threads = [threading.Thread(target=worker, args=(name, n)) for name, n in (("one", 1), ("two", 2))]
    for t in threads:
        t.start()
    ready.wait()
    seen = []
    while any(t.is_alive() for t in threads):
        seen.append({name: ferroloop.stats(results[name, "loop"]) for name in ("one", "two")})
        time.sleep(0.01)
    for t in threads:
        t.join()
    for name, blocks in (("one", 1), ("two", 2)):
        final = seen[-1][name]
        assert final.slow_callbacks == blocks, (name, final)
        assert between(final.busy, 0.12 * blocks, slack=0.2), (name, final)
        for earlier, later in itertools.pairwise(seen):
            assert later[name].callbacks >= earlier[name].callbacks
            assert later[name].busy + later[name].idle >= earlier[name].busy + earlier[name].idle


def test_bad_calls():
    with pytest.raises(RuntimeError, match="no running event loop"):
        ferroloop.stats()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="ferroloop loop"):
            ferroloop.stats(loop)
    finally:
        loop.close()
    fl = ferroloop.new_event_loop()
    try:
        with pytest.raises(TypeError, match="LoopStats"):
            ferroloop.stats(fl).since(42)
        assert ferroloop.stats(fl).utilization == 0.0
    finally:
        fl.close()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def stream_echo(reader, writer, payload):
    writer.write(payload)
    got = await reader.readexactly(len(payload))
    writer.close()
    await writer.wait_closed()
    return got


def traffic_of(interval, kind):
    t = interval.transports[kind]
    return t.open, t.opened, t.bytes_in, t.bytes_out


def test_transports_count_what_each_kind_moved(tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    payload = bytes(range(256)) * 40  # 10,240 bytes

    async def settle(kind, interval_of, want_open=0):
        # connection_lost runs a callback after close(): wait for the count (bounded by the test's timeout).
        while interval_of().transports[kind].open != want_open:
            await asyncio.sleep(0.001)

    async def main():
        loop = asyncio.get_running_loop()
        before = ferroloop.stats()

        def interval():
            return ferroloop.stats() - before

        server = await loop.create_server(Echo, "127.0.0.1", 0)
        got = await stream_echo(*await asyncio.open_connection(*server.sockets[0].getsockname()), payload)
        assert got == payload
        server.close()
        await server.wait_closed()
        await settle("tcp", interval)
        tcp = traffic_of(interval(), "tcp")

        path = str(tmp_path / "s")
        server = await loop.create_unix_server(Echo, path)
        assert await stream_echo(*await asyncio.open_unix_connection(path), payload) == payload
        server.close()
        await server.wait_closed()
        await settle("unix", interval)
        unix = traffic_of(interval(), "unix")

        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
        host, port = server.sockets[0].getsockname()
        conn = await asyncio.open_connection(host, port, ssl=client_ctx, server_hostname="localhost")
        assert await stream_echo(*conn, payload) == payload
        server.close()
        await server.wait_closed()
        await settle("tls", interval)
        tls, tcp_under_tls = traffic_of(interval(), "tls"), traffic_of(interval(), "tcp")

        server_t, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
        echoed = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                echoed.set_result(data)

        client_t, _ = await loop.create_datagram_endpoint(Client, remote_addr=server_t.get_extra_info("sockname"))
        client_t.sendto(payload[:1000])
        assert await echoed == payload[:1000]
        client_t.close()
        server_t.close()
        await settle("datagram", interval)
        datagram = traffic_of(interval(), "datagram")

        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate(payload)
        assert out == payload
        await settle("pipe", interval)
        pipe = traffic_of(interval(), "pipe")
        return tcp, unix, tls, tcp_under_tls, datagram, pipe

    tcp, unix, tls, tcp_under_tls, datagram, pipe = run(main)
    n = len(payload)
    # (open, opened, bytes in, bytes out): two ends of one connection, each way the payload.
    assert tcp == (0, 2, 2 * n, 2 * n)
    assert unix == (0, 2, 2 * n, 2 * n)
    assert tls == (0, 2, 2 * n, 2 * n)
    # Under TLS, TCP carried the ciphertext: the handshake and records, more than the plaintext.
    assert tcp_under_tls[1] == 4 and tcp_under_tls[2] > 4 * n and tcp_under_tls[2] == tcp_under_tls[3]
    assert datagram == (0, 2, 2000, 2000)
    # The child's stdin and stdout: the payload out to cat and back.
    assert pipe == (0, 2, n, n)


def test_open_transports_are_counted_while_open():
    async def main():
        loop = asyncio.get_running_loop()
        before = ferroloop.stats()
        a, b = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        during = (ferroloop.stats() - before).transports["unix"]
        transport.close()
        b.close()
        while (ferroloop.stats() - before).transports["unix"].open:
            await asyncio.sleep(0.001)
        return during, (ferroloop.stats() - before).transports["unix"]

    during, after = run(main)
    assert (during.open, during.opened) == (1, 1)
    assert (after.open, after.opened) == (0, 1)


def test_lag_histogram_and_sum_agree_with_the_percentiles():
    async def main():
        loop = asyncio.get_running_loop()
        before = ferroloop.stats()
        done = loop.create_future()
        loop.call_soon(time.sleep, 0.05)
        loop.call_soon(done.set_result, None)
        await done
        for _ in range(10):
            await asyncio.sleep(0)
        return ferroloop.stats() - before

    interval = run(main)
    buckets = interval.lag_buckets
    assert sum(n for _, n in buckets) == interval.lag.samples
    assert [bound for bound, _ in buckets] == sorted(bound for bound, _ in buckets)
    # The 50 ms lag is in the last bucket holding samples, whose bound is at most 12.5 % above it.
    assert 0.05 * 0.875 <= buckets[-1][0] <= 0.05 * 1.125 + SLACK
    assert interval.lag.max <= buckets[-1][0]
    assert between(interval.lag_sum, interval.lag.max * 0.999, slack=0.01)
