"""Fixtures for the integration suite: third-party libraries on stock asyncio and on ferroloop.

Every scenario takes ``loop_factory`` (from ``tests/conftest.py``), so it runs twice: on
``asyncio.SelectorEventLoop`` (the reference) and on ``ferroloop.new_event_loop``, asserting the
same results on both. Servers listen on 127.0.0.1 on ports the tests pick, and are stopped by the
fixture that started them.

PostgreSQL and redis-server are real servers started here from the Debian packages'
binaries. Without them the tests that need them fail and point to ``make integration-setup``;
with ``FERROLOOP_SKIP_SERVICES=1`` in the environment they are skipped instead.
"""

import shutil

import pytest

from ._support import PostgresServer, RedisServer, postgres_bindir, service_missing


@pytest.fixture(scope="session")
def postgres():
    """A running PostgreSQL server (``.dsn``), for the whole session."""
    bindir = postgres_bindir()
    if bindir is None:
        service_missing("PostgreSQL (initdb, pg_ctl)")
    server = PostgresServer(bindir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A running redis-server (``.url``), for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server")
    server = RedisServer(binary)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()
