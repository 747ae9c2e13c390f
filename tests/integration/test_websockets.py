"""websockets' asyncio implementation: client and server in one loop."""

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from ._support import loop_class_name, run_scenario, tls_contexts

BIG = bytes(range(256)) * 8192  # 2 MiB, several frames' worth of reads


async def scenario(tls):
    out = {}
    server_ssl, client_ssl = tls_contexts() if tls else (None, None)
    server_closes = []

    async def handler(ws):
        try:
            async for message in ws:
                if message == "close-4000":
                    await ws.close(4000, "server says bye")
                    return
                if isinstance(message, str):
                    await ws.send(message.upper())
                else:
                    await ws.send(message)
        finally:
            server_closes.append((ws.close_code, ws.close_reason, ws.request.path))

    async with serve(handler, "127.0.0.1", 0, max_size=4 * len(BIG), ssl=server_ssl) as server:
        port = server.sockets[0].getsockname()[1]
        uri = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"

        async with connect(f"{uri}/one", max_size=4 * len(BIG), ssl=client_ssl) as ws:
            await ws.send("hello")
            out["text"] = await ws.recv()
            await ws.send(b"\x00\x01\xfe\xff")
            out["binary"] = await ws.recv()
            await ws.send(BIG)
            out["big"] = await ws.recv() == BIG
            await ws.send(["frag", "mented"])  # one message in two frames
            out["fragmented"] = await ws.recv()
            latency = await ws.ping()
            await asyncio.wait_for(latency, 5)
            out["ping"] = True
            await ws.send("close-4000")
            try:
                await ws.recv()
            except ConnectionClosedError as exc:
                out["server_close"] = (type(exc).__name__, exc.rcvd.code, exc.rcvd.reason)

        async with connect(f"{uri}/two", ssl=client_ssl) as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close(1001, "client going away")
            try:
                await ws.recv()
            except ConnectionClosedOK as exc:
                out["client_close"] = (type(exc).__name__, exc.sent.code, exc.sent.reason)

        # Many clients at once.
        async def one(i):
            async with connect(f"{uri}/many", ssl=client_ssl) as ws:
                await ws.send(f"m{i}")
                return await ws.recv()

        out["many"] = sorted(await asyncio.gather(*(one(i) for i in range(20))))

    out["server_closes"] = sorted(c for c in server_closes if c[2] != "/many")
    out["many_closes"] = sorted({c[:2] for c in server_closes if c[2] == "/many"})
    out["loop"] = loop_class_name(asyncio.get_running_loop())
    return out


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_websockets_echo_and_close_codes(loop_factory, fd_guard, tls):
    out = run_scenario(loop_factory, lambda: scenario(tls))
    assert out.pop("loop") == loop_class_name(loop_factory.loop_class)
    assert out == {
        "text": "HELLO",
        "binary": b"\x00\x01\xfe\xff",
        "big": True,
        "fragmented": "FRAGMENTED",
        "ping": True,
        "server_close": ("ConnectionClosedError", 4000, "server says bye"),
        "client_close": ("ConnectionClosedOK", 1001, "client going away"),
        "many": sorted(f"M{i}" for i in range(20)),
        "server_closes": [(1001, "client going away", "/two"), (4000, "server says bye", "/one")],
        "many_closes": [(1000, "")],
    }
