"""redis-py's asyncio client against a real redis-server (started by the ``redis_server`` fixture)."""

import asyncio

import redis.asyncio as aioredis

from ._support import loop_class_name, run_scenario


async def scenario(url, prefix):
    out = {}
    client = aioredis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=10)
    try:
        out["ping"] = await client.ping()
        keys = await client.keys(f"{prefix}:*")
        if keys:
            await client.delete(*keys)

        out["set"] = await client.set(f"{prefix}:greeting", "h\u00e9llo")
        out["get"] = await client.get(f"{prefix}:greeting")
        out["missing"] = await client.get(f"{prefix}:nothing")
        await client.set(f"{prefix}:ttl", "x", px=50)
        await asyncio.sleep(0.2)
        out["expired"] = await client.get(f"{prefix}:ttl")
        big = "z" * 1_000_000
        await client.set(f"{prefix}:big", big)
        out["big"] = (await client.get(f"{prefix}:big")) == big

        # A transaction (MULTI/EXEC) and a plain pipeline.
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(f"{prefix}:counter")
            pipe.incrby(f"{prefix}:counter", 41)
            pipe.rpush(f"{prefix}:list", *range(5))
            pipe.lrange(f"{prefix}:list", 0, -1)
            pipe.hset(f"{prefix}:hash", mapping={"a": "1", "b": "2"})
            pipe.hgetall(f"{prefix}:hash")
            out["transaction"] = await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for i in range(200):
                pipe.set(f"{prefix}:k{i}", i)
            for i in range(200):
                pipe.get(f"{prefix}:k{i}")
            results = await pipe.execute()
        out["pipeline"] = (results[:200] == [True] * 200, results[200:] == [str(i) for i in range(200)])

        # Concurrent commands over the connection pool.
        out["concurrent"] = await asyncio.gather(*(client.get(f"{prefix}:k{i}") for i in range(50)))

        # A blocking pop on one pooled connection, woken by a push on another.
        waiter = asyncio.ensure_future(client.blpop([f"{prefix}:queue"], timeout=5))
        await asyncio.sleep(0.05)
        await client.rpush(f"{prefix}:queue", "job")
        out["blpop"] = list(await waiter)

        # Pub/sub: a subscriber on its own connection, messages published from the main one.
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(f"{prefix}:chan")
            await pubsub.psubscribe(f"{prefix}:pat.*")
            confirmations = [await pubsub.get_message(timeout=5) for _ in range(2)]
            out["subscribed"] = sorted(m["type"] for m in confirmations)
            out["receivers"] = [
                await client.publish(f"{prefix}:chan", "one"),
                await client.publish(f"{prefix}:pat.x", "two"),
                await client.publish(f"{prefix}:chan", "three"),
            ]
            received = []
            while len(received) < 3:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is None:
                    break
                received.append((message["type"], message["channel"], message["data"]))
            out["messages"] = received
            await pubsub.unsubscribe()
            await pubsub.punsubscribe()
        finally:
            await pubsub.aclose()

        keys = await client.keys(f"{prefix}:*")
        await client.delete(*keys)
    finally:
        await client.aclose()
    out["loop"] = loop_class_name(asyncio.get_running_loop())
    return out


def test_redis(loop_factory, fd_guard, redis_server):
    prefix = f"ferroloop-test:{loop_factory.name}"
    out = run_scenario(loop_factory, lambda: scenario(redis_server.url, prefix))
    assert out.pop("loop") == loop_class_name(loop_factory.loop_class)
    assert out == {
        "ping": True,
        "set": True,
        "get": "h\u00e9llo",
        "missing": None,
        "expired": None,
        "big": True,
        "transaction": [1, 42, 5, ["0", "1", "2", "3", "4"], 2, {"a": "1", "b": "2"}],
        "pipeline": (True, True),
        "concurrent": [str(i) for i in range(50)],
        "blpop": [f"{prefix}:queue", "job"],
        "subscribed": ["psubscribe", "subscribe"],
        "receivers": [1, 1, 1],
        "messages": [
            ("message", f"{prefix}:chan", "one"),
            ("pmessage", f"{prefix}:pat.x", "two"),
            ("message", f"{prefix}:chan", "three"),
        ],
    }
