"""The exporters, ``ferroloop.prometheus`` and ``ferroloop.opentelemetry``, checked against ground truth.

Stock asyncio keeps no such figures, so these tests run on ferroloop only: the reference is what
the test made a loop do (a block of known duration with ``time.sleep``, known numbers of
callbacks and timers, transports opened and bytes moved) and ``ferroloop.stats()`` of the same
loop, which a loop that is not running does not change, so what is exported must equal it.
Prometheus is scraped from a real exposition endpoint (prometheus_client's HTTP server on
127.0.0.1, fetched with urllib, parsed by prometheus_client's parser); OpenTelemetry is read by
the SDK's in-memory reader.

Tolerances: a busy time is at least the block (a clock never runs short) and at most that plus
SLACK, which absorbs the rest of the known work and a loaded machine's scheduling delays (busy
time is the loop's running time less its waits, so a thread descheduled while it runs counts it:
`make test` runs these beside valgrind). Every exported figure is also compared with
``ferroloop.stats()`` of the same loop exactly, which is what the exporters are for; the figures'
own ground truth is tests/test_stats.py's. Nothing waits by sleeping: threads are
synchronised with events, and the loops are read while stopped or while parked on an event.
"""

import asyncio
import math
import subprocess
import sys
import threading
import time
import urllib.request

import ferroloop
import ferroloop.opentelemetry
import ferroloop.prometheus
import prometheus_client
import pytest
from conftest import WAIT
from ferroloop import _export
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from prometheus_client.parser import text_string_to_metric_families

# How long a callback blocks the loop, and how much more than that the busy time may show (seconds).
BLOCK = 0.12
SLACK = 0.5
CALLBACKS = 50
TIMERS = 7
PAYLOAD = 1000
KINDS = {"tcp", "unix", "tls", "datagram", "pipe"}


# -- what the tests make the loops do -------------------------------------------------------------


def known_work(loop):
    """Block ``loop`` for BLOCK seconds, run CALLBACKS call_soon callbacks and TIMERS timers."""

    async def main():
        done = loop.create_future()
        for _ in range(CALLBACKS):
            loop.call_soon(lambda: None)
        for i in range(TIMERS):
            loop.call_later(0.001 * i, lambda: None)
        loop.call_later(0.001 * TIMERS, done.set_result, None)  # the last timer: all have fired
        time.sleep(BLOCK)  # noqa: ASYNC251 (the loop is busy for a known time)
        await done

    loop.run_until_complete(main())


def echo(loop, rounds=1):
    """A TCP connection on ``loop`` that sends PAYLOAD bytes each way ``rounds`` times, then closes."""

    async def main():
        lost = loop.create_future()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                self.transport.write(data)

            def connection_lost(self, exc):
                lost.set_result(None)  # the server's end has closed too

        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(rounds):
            writer.write(b"x" * PAYLOAD)
            await reader.readexactly(PAYLOAD)
        writer.close()
        await writer.wait_closed()
        await lost
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


class ParkedLoop:
    """A loop running in a thread of its own, parked on an event once it has blocked for BLOCK."""

    def __init__(self, name):
        self.loop = ferroloop.new_event_loop()
        self.parked = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name)
        self.thread.start()
        assert self.parked.wait(WAIT)

    def _run(self):
        async def main():
            self.release = asyncio.Event()
            time.sleep(BLOCK)  # noqa: ASYNC251
            self.parked.set()
            await self.release.wait()

        self.loop.run_until_complete(main())

    def stop(self):
        self.loop.call_soon_threadsafe(self.release.set)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


@pytest.fixture
def new_loop():
    made = []

    def new():
        made.append(ferroloop.new_event_loop())
        return made[-1]

    yield new
    for loop in made:
        if not loop.is_closed():
            loop.close()


def label(loop):
    return str(_export.serial_of(loop))


# -- Prometheus -----------------------------------------------------------------------------------


class Scrape:
    """One scrape of the endpoint: the samples by name and labels, and the families' types."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.samples = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def __call__(self, name, **labels):
        return self.samples[name, frozenset(labels.items())]

    def loops(self):
        return {dict(labels)["loop"] for name, labels in self.samples if name == "ferroloop_loop_busy_seconds_total"}

    def lag_buckets(self, loop):
        buckets = [
            (float(dict(labels)["le"]), value)
            for (name, labels), value in self.samples.items()
            if name == "ferroloop_loop_lag_seconds_bucket" and dict(labels)["loop"] == loop
        ]
        return sorted(buckets)


@pytest.fixture
def scrape():
    registry = prometheus_client.CollectorRegistry()
    ferroloop.prometheus.register(registry)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    def get():
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            assert response.status == 200
            return Scrape(response.read().decode())

    yield get
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


def test_prometheus_scrape_shows_a_loops_known_work(scrape, new_loop):
    loop = new_loop()
    known_work(loop)
    truth = ferroloop.stats(loop)
    got = scrape()
    this = {"loop": label(loop)}

    assert BLOCK <= got("ferroloop_loop_busy_seconds_total", **this) <= BLOCK + SLACK
    assert got("ferroloop_loop_timers_total", **this) == TIMERS + 1
    assert got("ferroloop_loop_callbacks_total", **this) >= CALLBACKS + TIMERS + 1
    for name, figure in [
        ("ferroloop_loop_busy_seconds_total", truth.busy),
        ("ferroloop_loop_idle_seconds_total", truth.idle),
        ("ferroloop_loop_iterations_total", truth.iterations),
        ("ferroloop_loop_callbacks_total", truth.callbacks),
        ("ferroloop_loop_io_events_total", truth.io_events),
        ("ferroloop_loop_timers_total", truth.timers),
        ("ferroloop_loop_slow_callbacks_total", truth.slow_callbacks),
        ("ferroloop_loop_utilization_ratio", truth.utilization),
        ("ferroloop_loop_lag_max_seconds", truth.lag.max),
    ]:
        assert got(name, **this) == figure, name
    assert got("ferroloop_loop_slow_callbacks_total", **this) == 1  # the block (slow_callback_duration 0.1 s)
    assert got("ferroloop_loop_running", thread="", **this) == 0


def test_prometheus_metric_types_and_names(scrape, new_loop):
    known_work(new_loop())
    got = scrape()
    counters = ["busy_seconds", "idle_seconds", "iterations", "callbacks", "io_events", "timers", "slow_callbacks"]
    expected = {f"ferroloop_loop_{name}": "counter" for name in counters} | {
        "ferroloop_loop_utilization_ratio": "gauge",
        "ferroloop_loop_lag_seconds": "histogram",
        "ferroloop_loop_lag_max_seconds": "gauge",
        "ferroloop_loop_running": "gauge",
        "ferroloop_transports_open": "gauge",
        "ferroloop_transports_opened": "counter",
        "ferroloop_transports_received_bytes": "counter",
        "ferroloop_transports_sent_bytes": "counter",
    }
    assert {name: kind for name, kind in got.types.items() if name.startswith("ferroloop_")} == expected
    # Each family once, with its help and its unit in OpenMetrics' exposition.
    assert got.text.count("# TYPE ferroloop_loop_busy_seconds_total counter") == 1
    openmetrics = prometheus_client.openmetrics.exposition.generate_latest(_registry_of_collector())
    assert b"# UNIT ferroloop_loop_busy_seconds seconds" in openmetrics
    assert b"# UNIT ferroloop_transports_received_bytes bytes" in openmetrics


def _registry_of_collector():
    registry = prometheus_client.CollectorRegistry()
    ferroloop.prometheus.register(registry)
    return registry


def test_prometheus_exports_a_loop_in_another_thread_and_drops_it_once_closed(scrape):
    parked = ParkedLoop("exported-loop")
    loop, this = parked.loop, label(parked.loop)
    try:
        got = scrape()
        assert got("ferroloop_loop_running", loop=this, thread="exported-loop") == 1
        assert BLOCK <= got("ferroloop_loop_busy_seconds_total", loop=this) <= BLOCK + SLACK
    finally:
        parked.stop()
    got = scrape()
    assert got("ferroloop_loop_running", loop=this, thread="") == 0
    assert got("ferroloop_loop_busy_seconds_total", loop=this) == ferroloop.stats(loop).busy
    loop.close()
    got = scrape()
    assert this not in got.loops()
    assert not [labels for _, labels in got.samples if ("loop", this) in labels]


def test_prometheus_every_live_loop_by_its_serial(scrape, new_loop):
    loops = [new_loop() for _ in range(3)]
    serials = [_export.serial_of(loop) for loop in loops]
    assert serials == sorted(serials) and len(set(serials)) == 3
    loops[1].close()
    assert {str(serials[0]), str(serials[2])} <= scrape().loops()
    assert str(serials[1]) not in scrape().loops()


def test_prometheus_register_is_idempotent():
    registry = prometheus_client.CollectorRegistry()
    first = ferroloop.prometheus.register(registry)
    assert ferroloop.prometheus.register(registry) is first
    assert isinstance(first, ferroloop.prometheus.LoopCollector)
    text = prometheus_client.generate_latest(registry).decode()
    assert text.count("# TYPE ferroloop_loop_callbacks_total counter") == 1
    assert ferroloop.prometheus.register() is ferroloop.prometheus.register(prometheus_client.REGISTRY)


def test_prometheus_lag_folds_native_buckets_up_to_the_next_bound():
    bounds = (0.001, 0.01, 0.1)
    native = [(0.0005, 3), (0.001, 2), (0.0011, 1), (0.05, 4), (0.2, 5), (math.inf, 6)]
    # Each native bucket counts under the smallest bound at or above its upper bound.
    assert ferroloop.prometheus.fold_lag_buckets(native, bounds) == [
        (0.001, 5),
        (0.01, 6),
        (0.1, 10),
        (math.inf, 21),
    ]
    assert ferroloop.prometheus.fold_lag_buckets([], bounds) == [(b, 0) for b in (*bounds, math.inf)]
    assert list(ferroloop.prometheus.LAG_BOUNDS) == sorted(ferroloop.prometheus.LAG_BOUNDS)


def test_prometheus_lag_histogram_against_the_loops_own(scrape, new_loop):
    loop = new_loop()
    known_work(loop)  # the callbacks and the timers due behind the block wait at least BLOCK
    truth = ferroloop.stats(loop)
    got = scrape()
    this = label(loop)
    buckets = got.lag_buckets(this)
    assert [bound for bound, _ in buckets] == [*ferroloop.prometheus.LAG_BOUNDS, math.inf]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == truth.lag.samples == sum(count for _, count in truth.lag_buckets)
    assert got("ferroloop_loop_lag_seconds_count", loop=this) == truth.lag.samples
    assert got("ferroloop_loop_lag_seconds_sum", loop=this) == truth.lag_sum
    assert truth.lag_sum >= BLOCK
    # A lag of at least BLOCK counts under no bound below it; each native bucket under the first
    # bound at or above it.
    below = [count for bound, count in buckets if bound < BLOCK]
    assert below[-1] < counts[-1]
    for bound, count in buckets:
        assert count == sum(n for upper, n in truth.lag_buckets if upper <= bound), bound


def test_prometheus_transports_by_kind(scrape, new_loop):
    loop = new_loop()
    echo(loop)
    truth = ferroloop.stats(loop).transports
    got = scrape()
    this = label(loop)
    assert set(truth) == KINDS
    for kind in KINDS:
        for name, figure in [
            ("ferroloop_transports_open", truth[kind].open),
            ("ferroloop_transports_opened_total", truth[kind].opened),
            ("ferroloop_transports_received_bytes_total", truth[kind].bytes_in),
            ("ferroloop_transports_sent_bytes_total", truth[kind].bytes_out),
        ]:
            assert got(name, loop=this, kind=kind) == figure, (name, kind)
    # Both ends of the connection are the loop's: two TCP transports, PAYLOAD each way through each.
    assert got("ferroloop_transports_opened_total", loop=this, kind="tcp") == 2
    assert got("ferroloop_transports_open", loop=this, kind="tcp") == 0
    assert got("ferroloop_transports_received_bytes_total", loop=this, kind="tcp") == 2 * PAYLOAD
    assert got("ferroloop_transports_sent_bytes_total", loop=this, kind="tcp") == 2 * PAYLOAD
    assert got("ferroloop_transports_opened_total", loop=this, kind="unix") == 0


# -- OpenTelemetry --------------------------------------------------------------------------------


class Collection:
    """One collection by the in-memory reader: ferroloop's metrics by name."""

    def __init__(self, reader):
        data = reader.get_metrics_data()  # None when nothing was observed
        self.metrics = {
            metric.name: metric
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            if scope.scope.name == "ferroloop"
            for metric in scope.metrics
        }

    def __call__(self, name, **attributes):
        points = [point.value for point in self.points(name) if dict(point.attributes) == attributes]
        assert len(points) == 1, (name, attributes, points)
        return points[0]

    def points(self, name):
        metric = self.metrics.get(name)
        return [] if metric is None else metric.data.data_points

    def loops(self):
        return {point.attributes["ferroloop.loop.id"] for point in self.points("ferroloop.loop.busy_time")}


@pytest.fixture
def collect():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    ferroloop.opentelemetry.instrument(provider)
    yield lambda: Collection(reader)
    provider.shutdown()


def test_opentelemetry_shows_a_loops_known_work(collect, new_loop):
    loop = new_loop()
    known_work(loop)
    truth = ferroloop.stats(loop)
    got = collect()
    this = {"ferroloop.loop.id": _export.serial_of(loop)}

    assert BLOCK <= got("ferroloop.loop.busy_time", **this) <= BLOCK + SLACK
    assert got("ferroloop.loop.timers", **this) == TIMERS + 1
    assert got("ferroloop.loop.slow_callbacks", **this) == 1
    for name, figure in [
        ("ferroloop.loop.busy_time", truth.busy),
        ("ferroloop.loop.idle_time", truth.idle),
        ("ferroloop.loop.iterations", truth.iterations),
        ("ferroloop.loop.callbacks", truth.callbacks),
        ("ferroloop.loop.io_events", truth.io_events),
        ("ferroloop.loop.timers", truth.timers),
        ("ferroloop.loop.slow_callbacks", truth.slow_callbacks),
        ("ferroloop.loop.utilization", truth.utilization),
    ]:
        assert got(name, **this) == figure, name
    for quantile in ("p50", "p90", "p99", "max"):
        assert got("ferroloop.loop.lag", **this, **{"ferroloop.lag.quantile": quantile}) == getattr(truth.lag, quantile)
    assert got("ferroloop.loop.lag", **this, **{"ferroloop.lag.quantile": "max"}) >= BLOCK
    assert got("ferroloop.loop.running", **this, **{"thread.name": ""}) == 0


def test_opentelemetry_instruments_units_and_kinds(collect, new_loop):
    echo(new_loop())
    got = collect()
    expected = {
        "ferroloop.loop.busy_time": ("s", "counter"),
        "ferroloop.loop.idle_time": ("s", "counter"),
        "ferroloop.loop.iterations": ("{iteration}", "counter"),
        "ferroloop.loop.callbacks": ("{callback}", "counter"),
        "ferroloop.loop.io_events": ("{event}", "counter"),
        "ferroloop.loop.timers": ("{timer}", "counter"),
        "ferroloop.loop.slow_callbacks": ("{callback}", "counter"),
        "ferroloop.loop.utilization": ("1", "gauge"),
        "ferroloop.loop.lag": ("s", "gauge"),
        "ferroloop.loop.running": ("1", "gauge"),
        "ferroloop.transport.count": ("{transport}", "updowncounter"),
        "ferroloop.transport.opened": ("{transport}", "counter"),
        "ferroloop.transport.io": ("By", "counter"),
    }

    def kind(data):
        if isinstance(data, Gauge):
            return "gauge"
        assert isinstance(data, Sum)
        return "counter" if data.is_monotonic else "updowncounter"

    assert {name: (metric.unit, kind(metric.data)) for name, metric in got.metrics.items()} == expected
    assert all(metric.description for metric in got.metrics.values())


def test_opentelemetry_observes_a_loop_in_another_thread_and_drops_it_once_closed(collect):
    parked = ParkedLoop("observed-loop")
    loop, serial = parked.loop, _export.serial_of(parked.loop)
    try:
        got = collect()
        assert got("ferroloop.loop.running", **{"ferroloop.loop.id": serial, "thread.name": "observed-loop"}) == 1
        assert BLOCK <= got("ferroloop.loop.busy_time", **{"ferroloop.loop.id": serial}) <= BLOCK + SLACK
    finally:
        parked.stop()
    loop.close()
    got = collect()
    assert serial not in got.loops()
    assert not [
        point
        for metric in got.metrics.values()
        for point in metric.data.data_points
        if point.attributes.get("ferroloop.loop.id") == serial
    ]


def test_opentelemetry_transports_by_kind(collect, new_loop):
    loop = new_loop()
    echo(loop)
    truth = ferroloop.stats(loop).transports
    got = collect()
    this = {"ferroloop.loop.id": _export.serial_of(loop)}
    for kind in KINDS:
        of_kind = {**this, "ferroloop.transport.kind": kind}
        assert got("ferroloop.transport.count", **of_kind) == truth[kind].open
        assert got("ferroloop.transport.opened", **of_kind) == truth[kind].opened
        assert got("ferroloop.transport.io", **of_kind, **{"network.io.direction": "receive"}) == truth[kind].bytes_in
        assert got("ferroloop.transport.io", **of_kind, **{"network.io.direction": "transmit"}) == truth[kind].bytes_out
    tcp = {**this, "ferroloop.transport.kind": "tcp"}
    assert got("ferroloop.transport.opened", **tcp) == 2
    assert got("ferroloop.transport.io", **tcp, **{"network.io.direction": "receive"}) == 2 * PAYLOAD


def test_opentelemetry_instrument_is_idempotent(new_loop):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        first = ferroloop.opentelemetry.instrument(provider)
        assert ferroloop.opentelemetry.instrument(provider) is first
        loop = new_loop()
        points = Collection(reader).points("ferroloop.loop.callbacks")
        assert [p.attributes["ferroloop.loop.id"] for p in points].count(_export.serial_of(loop)) == 1
    finally:
        provider.shutdown()


# -- packaging ------------------------------------------------------------------------------------


def python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=False)


def test_importing_ferroloop_imports_neither_library():
    done = python(
        "import sys, ferroloop\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [("prometheus", "prometheus_client", "prometheus"), ("opentelemetry", "opentelemetry", "opentelemetry")],
)
def test_an_exporter_without_its_library_says_which_extra_to_install(module, library, extra):
    done = python(f"import sys\nsys.modules[{library!r}] = None\nimport ferroloop.{module}")
    assert done.returncode != 0
    assert "ImportError" in done.stderr
    assert f"pip install 'ferroloop[{extra}]'" in done.stderr


def test_the_exporters_read_a_loop_while_it_moves_data_in_another_thread(scrape, collect, new_loop):
    # Scrapes and collections from this thread while the loop echoes in another: the counters
    # read never go back, and the last reading (the loop stopped) is the loop's own.
    loop = new_loop()
    rounds = 200
    finished = threading.Event()

    def worker():
        try:
            echo(loop, rounds)
        finally:
            finished.set()

    thread = threading.Thread(target=worker)
    thread.start()
    this = label(loop)
    earlier = 0
    while not finished.is_set():
        callbacks = scrape()("ferroloop_loop_callbacks_total", loop=this)
        assert callbacks >= earlier
        earlier = collect()("ferroloop.loop.callbacks", **{"ferroloop.loop.id": int(this)})
        assert earlier >= callbacks
    thread.join(WAIT)
    truth = ferroloop.stats(loop)
    assert truth.transports["tcp"].bytes_in == 2 * rounds * PAYLOAD  # the echo ran to its end
    assert scrape()("ferroloop_loop_callbacks_total", loop=this) == truth.callbacks >= 2 * rounds
