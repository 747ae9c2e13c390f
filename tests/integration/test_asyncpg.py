"""asyncpg against a real PostgreSQL server (started by the ``postgres`` fixture)."""

import asyncio
import datetime
import decimal
import io

import asyncpg

from ._support import loop_class_name, run_scenario

ROWS = [(i, f"name {i}", decimal.Decimal(i) / 4) for i in range(1, 501)]


async def scenario(dsn, client_ssl, table):
    out = {}
    conn = await asyncpg.connect(dsn, ssl=False, timeout=10)
    try:
        out["version"] = conn.get_server_version().major >= 12
        out["plain"] = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(
            f"CREATE TABLE {table} (id integer PRIMARY KEY, name text NOT NULL, amount numeric(10, 2), "
            "created timestamptz DEFAULT '2024-01-02 03:04:05+00')"
        )

        # Plain inserts and executemany.
        status = await conn.execute(f"INSERT INTO {table} (id, name, amount) VALUES ($1, $2, $3)", *ROWS[0])
        out["insert"] = status
        await conn.executemany(f"INSERT INTO {table} (id, name, amount) VALUES ($1, $2, $3)", ROWS[1:100])
        out["count_after_insert"] = await conn.fetchval(f"SELECT count(*) FROM {table}")

        row = await conn.fetchrow(f"SELECT id, name, amount, created FROM {table} WHERE id = $1", 4)
        out["fetchrow"] = (row["id"], row["name"], row["amount"], row["created"])

        # Transactions: one committed, one rolled back by an exception.
        async with conn.transaction():
            await conn.execute(f"UPDATE {table} SET name = 'committed' WHERE id = 1")
        try:
            async with conn.transaction():
                await conn.execute(f"UPDATE {table} SET name = 'rolled back' WHERE id = 2")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        out["transactions"] = await conn.fetch(f"SELECT id, name FROM {table} WHERE id IN (1, 2) ORDER BY id")
        out["transactions"] = [tuple(r) for r in out["transactions"]]

        # A savepoint inside a transaction.
        async with conn.transaction():
            await conn.execute(f"UPDATE {table} SET amount = 0 WHERE id = 3")
            try:
                async with conn.transaction():
                    await conn.execute(f"DELETE FROM {table} WHERE id = 3")
                    raise RuntimeError("roll back the savepoint")
            except RuntimeError:
                pass
        out["savepoint"] = await conn.fetchval(f"SELECT amount FROM {table} WHERE id = 3")

        # A prepared statement, used many times, and a cursor over it.
        stmt = await conn.prepare(f"SELECT name FROM {table} WHERE id = $1")
        out["prepared"] = [await stmt.fetchval(i) for i in (5, 6, 7)]
        out["prepared_params"] = [p.name for p in stmt.get_parameters()]
        async with conn.transaction():
            cursor_ids = [r["id"] async for r in conn.cursor(f"SELECT id FROM {table} ORDER BY id", prefetch=7)]
        out["cursor"] = (len(cursor_ids), cursor_ids[:3], cursor_ids[-1])

        # COPY in (records and a text stream) and out.
        await conn.copy_records_to_table(table, records=ROWS[100:400], columns=["id", "name", "amount"])
        text = "".join(f"{i}\tname {i}\t{decimal.Decimal(i) / 4}\n" for i, _, _ in ROWS[400:])
        await conn.copy_to_table(table, source=io.BytesIO(text.encode()), columns=["id", "name", "amount"])
        out["count_after_copy"] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        sink = io.BytesIO()
        status = await conn.copy_from_query(
            f"SELECT id, name FROM {table} WHERE id > $1 ORDER BY id", 495, output=sink, format="csv"
        )
        out["copy_out"] = (status, sink.getvalue().decode().splitlines())
        out["sum"] = await conn.fetchval(f"SELECT sum(amount) FROM {table} WHERE id > 3")

        # A query cancelled by a client-side timeout leaves the connection usable.
        try:
            await conn.execute("SELECT pg_sleep(10)", timeout=0.2)
        except TimeoutError:
            out["cancel"] = "timed out"
        out["after_cancel"] = await conn.fetchval("SELECT 1 + 1")

        # LISTEN/NOTIFY.
        notes = asyncio.Queue()

        def on_notify(connection, pid, channel, payload):
            notes.put_nowait((channel, payload))

        await conn.add_listener(f"{table}_chan", on_notify)
        other = await asyncpg.connect(dsn, ssl=False, timeout=10)
        try:
            await other.execute(f"NOTIFY {table}_chan, 'ping'")
        finally:
            await other.close()
        out["notify"] = await asyncio.wait_for(notes.get(), 5)
        await conn.remove_listener(f"{table}_chan", on_notify)

        # A pool, used concurrently.
        async with asyncpg.create_pool(dsn, ssl=False, min_size=2, max_size=4, timeout=10) as pool:

            async def one(i):
                async with pool.acquire() as c:
                    return await c.fetchval(f"SELECT name FROM {table} WHERE id = $1", i)

            out["pool"] = await asyncio.gather(*(one(i) for i in range(10, 30)))

        # A large result: many rows in many reads.
        rows = await conn.fetch("SELECT g, repeat('r', 50) AS pad FROM generate_series(1, 100000) AS g")
        out["large"] = (len(rows), rows[-1]["g"], sum(r["g"] for r in rows))

        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()

    # TLS: asyncpg asks for it with SSLRequest, then upgrades the connection with loop.start_tls().
    tls_conn = await asyncpg.connect(dsn, ssl=client_ssl, timeout=10)
    try:
        out["tls"] = await tls_conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        rows = await tls_conn.fetch("SELECT g FROM generate_series(1, 20000) AS g")
        out["tls_rows"] = sum(r["g"] for r in rows)
    finally:
        await tls_conn.close()
    out["loop"] = loop_class_name(asyncio.get_running_loop())
    return out


def test_asyncpg(loop_factory, fd_guard, postgres):
    table = f"items_{loop_factory.name}"
    out = run_scenario(loop_factory, lambda: scenario(postgres.dsn, postgres.client_ssl, table))
    assert out.pop("loop") == loop_class_name(loop_factory.loop_class)
    assert out == {
        "version": True,
        "plain": False,
        "insert": "INSERT 0 1",
        "count_after_insert": 100,
        "fetchrow": (
            4,
            "name 4",
            decimal.Decimal("1.00"),
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        ),
        "transactions": [(1, "committed"), (2, "name 2")],
        "savepoint": decimal.Decimal("0.00"),
        "prepared": ["name 5", "name 6", "name 7"],
        "prepared_params": ["int4"],
        "cursor": (100, [1, 2, 3], 100),
        "count_after_copy": 500,
        "copy_out": ("COPY 5", [f"{i},name {i}" for i in range(496, 501)]),
        "sum": sum(a for i, _, a in ROWS if i > 3),
        "cancel": "timed out",
        "after_cancel": 2,
        "notify": (f"{table}_chan", "ping"),
        "pool": [f"name {i}" for i in range(10, 30)],
        "large": (100000, 100000, 100000 * 100001 // 2),
        "tls": True,
        "tls_rows": 20000 * 20001 // 2,
    }
