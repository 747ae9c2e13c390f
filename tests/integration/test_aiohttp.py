"""aiohttp's server and client in one loop: JSON, streaming both ways, websocket echo."""

import asyncio
import hashlib

import aiohttp
import pytest
from aiohttp import web

from ._support import loop_class_name, run_scenario, tls_contexts

STREAM_CHUNKS = 100
CANCELLED = web.AppKey("cancelled", asyncio.Event)
UPLOAD = bytes(range(256)) * 4096  # 1 MiB


async def hello(request):
    return web.json_response({"hello": "world", "query": dict(request.query)})


async def echo(request):
    body = await request.json()
    return web.json_response({"received": body, "method": request.method}, status=201)


async def stream(request):
    response = web.StreamResponse(headers={"content-type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(STREAM_CHUNKS):
        await response.write(f"line {i}\n".encode())
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def download(request):
    """8 MiB written as fast as the transport takes it (write() waits on drain: flow control)."""
    response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
    await response.prepare(request)
    for i in range(128):
        await response.write(bytes([i]) * 65536)
    await response.write_eof()
    return response


async def upload(request):
    size = 0
    checksum = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        checksum = (checksum + sum(chunk)) % 65521
    return web.json_response({"size": size, "checksum": checksum})


async def ws_echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == "close":
                await ws.close(code=4000, message=b"bye")
                break
            await ws.send_str("echo: " + msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


async def slow(request):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        # handler_cancellation=True: the client went away.
        request.app[CANCELLED].set()
        raise
    return web.Response(text="too late")


def make_app():
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[CANCELLED] = asyncio.Event()
    app.add_routes(
        [
            web.get("/json", hello),
            web.post("/echo", echo),
            web.put("/echo", echo),
            web.get("/stream", stream),
            web.post("/upload", upload),
            web.get("/download", download),
            web.get("/ws", ws_echo),
            web.get("/slow", slow),
        ]
    )
    return app


async def upload_body():
    for i in range(0, len(UPLOAD), 100_000):
        yield UPLOAD[i : i + 100_000]
        await asyncio.sleep(0)


async def scenario(tls):
    out = {}
    app = make_app()
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    server_ssl, client_ssl = tls_contexts() if tls else (None, False)
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
        await site.start()
        port = runner.addresses[0][1]
        base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        connector = aiohttp.TCPConnector(ssl=client_ssl)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.get(f"{base}/json", params={"a": "1"}) as r:
                out["get"] = (r.status, r.content_type, await r.json())
            async with session.post(f"{base}/echo", json={"list": [1, 2, 3], "text": "h\u00e9llo"}) as r:
                out["post"] = (r.status, await r.json())
            async with session.put(f"{base}/echo", json={"big": "y" * 200_000}) as r:
                body = await r.json()
                out["put"] = (r.status, body["method"], len(body["received"]["big"]))
            async with session.get(f"{base}/stream") as r:
                lines = [line async for line in r.content]
                out["stream"] = (r.status, r.headers.get("Transfer-Encoding"), len(lines), lines[0], lines[-1])
            async with session.post(f"{base}/upload", data=upload_body()) as r:
                out["upload"] = await r.json()
            async with session.get(f"{base}/download") as r:
                digest = hashlib.sha256()
                async for chunk in r.content.iter_any():
                    digest.update(chunk)
                    await asyncio.sleep(0)  # a slow reader
                out["download"] = digest.hexdigest()

            async def one(i):
                async with session.get(f"{base}/json", params={"a": str(i)}) as r:
                    return int((await r.json())["query"]["a"])

            out["concurrent"] = sorted(await asyncio.gather(*(one(i) for i in range(30))))

            try:
                async with session.get(f"{base}/slow", timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                    out["timeout"] = await r.text()
            except TimeoutError:
                out["timeout"] = "timed out"
            await asyncio.wait_for(app[CANCELLED].wait(), 5)
            out["handler_cancelled"] = True

            async with session.ws_connect(f"{base}/ws") as ws:
                await ws.send_str("hi")
                out["ws_text"] = await ws.receive_str()
                await ws.send_bytes(b"hello")
                out["ws_bytes"] = await ws.receive_bytes()
                await ws.send_str("close")
                msg = await ws.receive()
                out["ws_close"] = (msg.type.name, ws.close_code)
            out["ws_closed"] = ws.closed
        out["loop"] = loop_class_name(asyncio.get_running_loop())
    finally:
        await runner.cleanup()
    return out


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_aiohttp_server_and_client(loop_factory, fd_guard, tls):
    out = run_scenario(loop_factory, lambda: scenario(tls))
    assert out.pop("loop") == loop_class_name(loop_factory.loop_class)
    assert out == {
        "get": (200, "application/json", {"hello": "world", "query": {"a": "1"}}),
        "post": (201, {"received": {"list": [1, 2, 3], "text": "h\u00e9llo"}, "method": "POST"}),
        "put": (201, "PUT", 200_000),
        "stream": (200, "chunked", STREAM_CHUNKS, b"line 0\n", f"line {STREAM_CHUNKS - 1}\n".encode()),
        "upload": {"size": len(UPLOAD), "checksum": sum(UPLOAD) % 65521},
        "download": hashlib.sha256(b"".join(bytes([i]) * 65536 for i in range(128))).hexdigest(),
        "concurrent": list(range(30)),
        "timeout": "timed out",
        "handler_cancelled": True,
        "ws_text": "echo: hi",
        "ws_bytes": b"olleh",
        "ws_close": ("CLOSE", 4000),
        "ws_closed": True,
    }
