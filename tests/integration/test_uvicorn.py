"""uvicorn serving a Starlette app, driven by httpx and a websockets client.

The server runs on the loop under test: in a thread (``uvicorn.Server(config).run()``, with
``loop="asyncio"`` or ``loop="ferroloop:new_event_loop"``, the import string uvicorn accepts for a
custom loop factory) and as ``python -m uvicorn --loop ...`` in a subprocess. The client runs on
the same kind of loop.
"""

import asyncio
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest
import trustme
import uvicorn
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from . import starlette_app
from ._support import SCENARIO_TIMEOUT, listening_socket, loop_class_name, run_scenario

pytestmark = pytest.mark.filterwarnings(
    # ws="websockets" is uvicorn's implementation on websockets' legacy API, exercised on purpose.
    "ignore:websockets.legacy is deprecated",
    "ignore:The `websockets` implementation is deprecated",
    "ignore:remove second argument of ws_handler",
)

HERE = os.path.dirname(os.path.abspath(__file__))
STOP_TIMEOUT = 15.0
BIG = "x" * 1_000_000
SMALL_BODY = json.dumps({"numbers": [1, 2, 3], "text": "h\u00e9llo"}, ensure_ascii=False).encode()
BIG_BODY = json.dumps({"data": BIG}).encode()
JSON_HEADERS = {"content-type": "application/json"}

EXPECTED = {
    "json": (200, {"hello": "world", "query": {"a": "1", "b": "two"}}),
    "echo": (201, {"received": {"numbers": [1, 2, 3], "text": "h\u00e9llo"}, "length": len(SMALL_BODY)}),
    "big_post": (201, len(BIG_BODY)),
    "big": hashlib.sha256(b"".join(bytes([i % 256]) * 65536 for i in range(8 * 16))).hexdigest(),
    "stream": (200, "text/plain; charset=utf-8", "".join(f"chunk {i}\n" for i in range(200))),
    "concurrent": [i for i in range(20)],
    "ws_text": "echo: hi",
    "ws_bytes": b"olleh",
    "ws_close": (starlette_app.CLOSE_CODE, "asked to"),
}


def uvicorn_loop_option(loop_factory):
    return "asyncio" if loop_factory.name == "asyncio" else "ferroloop:new_event_loop"


async def exercise(port, client_ssl=None):
    """Talk to the app on ``port``; return what came back, and the server's loop class."""
    out = {}
    scheme = "https" if client_ssl else "http"
    verify = client_ssl if client_ssl else True
    async with httpx.AsyncClient(base_url=f"{scheme}://127.0.0.1:{port}", timeout=10, verify=verify) as client:
        r = await client.get("/json", params={"a": "1", "b": "two"})
        body = r.json()
        server_loop = body.pop("loop")
        out["json"] = (r.status_code, body)

        r = await client.post("/echo", content=SMALL_BODY, headers=JSON_HEADERS)
        out["echo"] = (r.status_code, r.json())

        r = await client.post("/echo", content=BIG_BODY, headers=JSON_HEADERS)
        out["big_post"] = (r.status_code, r.json()["length"])

        async with client.stream("GET", "/stream", params={"n": 200}) as r:
            text = "".join([chunk async for chunk in r.aiter_text()])
            out["stream"] = (r.status_code, r.headers["content-type"], text)

        # 8 MiB read slowly: uvicorn's flow control (pause_writing/resume_writing) kicks in.
        digest = hashlib.sha256()
        async with client.stream("GET", "/big", params={"n": 8}) as r:
            async for chunk in r.aiter_bytes():
                digest.update(chunk)
                await asyncio.sleep(0)
        out["big"] = digest.hexdigest()

        async def one(i):
            r = await client.get("/json", params={"a": str(i), "b": "two"})
            return int(r.json()["query"]["a"])

        out["concurrent"] = sorted(await asyncio.gather(*(one(i) for i in range(20))))

    ws_scheme = "wss" if client_ssl else "ws"
    async with ws_connect(
        f"{ws_scheme}://127.0.0.1:{port}/ws", open_timeout=10, close_timeout=10, ssl=client_ssl
    ) as ws:
        await ws.send("hi")
        out["ws_text"] = await ws.recv()
        await ws.send(b"hello")
        out["ws_bytes"] = await ws.recv()
        await ws.send("close")
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            out["ws_close"] = (exc.rcvd.code, exc.rcvd.reason)
    return out, server_loop


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s", pytrace=False)
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("http", "ws", "bind", "tls"),
    [
        ("h11", "websockets-sansio", "host-port", False),
        ("httptools", "websockets", "socket", False),
        ("httptools", "websockets-sansio", "socket", True),
    ],
    ids=["h11-hostport", "httptools-socket", "httptools-tls"],
)
def test_uvicorn_server_in_a_thread(loop_factory, fd_guard, tmp_path, http, ws, bind, tls):
    client_ssl = None
    if tls:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
        cert.private_key_pem.write_to_path(tmp_path / "key.pem")
        client_ssl = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(client_ssl)
        tls_kw = {"ssl_certfile": str(tmp_path / "cert.pem"), "ssl_keyfile": str(tmp_path / "key.pem")}
    else:
        tls_kw = {}
    sock = listening_socket()
    if bind == "host-port":
        # uvicorn binds itself; hand it the port and give the socket back.
        port = sock.getsockname()[1]
        sock.close()
        config_kw = {"host": "127.0.0.1", "port": port}
        sockets = None
    else:
        port = sock.getsockname()[1]
        config_kw = {}
        sockets = [sock]
    config = uvicorn.Config(
        starlette_app.app,
        loop=uvicorn_loop_option(loop_factory),
        http=http,
        ws=ws,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=5,
        **config_kw,
        **tls_kw,
    )
    server = uvicorn.Server(config)
    errors = []

    def serve():
        try:
            server.run(sockets=sockets)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn did not start")
        assert not errors, errors
        out, server_loop = run_scenario(loop_factory, lambda: exercise(port, client_ssl))
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"
    assert not errors, errors
    assert server_loop == loop_class_name(loop_factory.loop_class)
    assert out == EXPECTED


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_uvicorn_cli(loop_factory, fd_guard, tmp_path, sig):
    """``python -m uvicorn --loop ferroloop:new_event_loop``, stopped by a signal."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    log_path = tmp_path / "uvicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--loop",
        uvicorn_loop_option(loop_factory),
        "--fd",
        str(sock.fileno()),
        "--app-dir",
        HERE,
        "--log-level",
        "info",
        "--timeout-graceful-shutdown",
        "5",
        "starlette_app:app",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()], env=env)
    sock.close()  # the server has its own copy
    try:
        out, server_loop = run_scenario(loop_factory, lambda: exercise(port), timeout=SCENARIO_TIMEOUT)
        proc.send_signal(sig)
        returncode = proc.wait(STOP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    log = log_path.read_text()
    assert server_loop == loop_class_name(loop_factory.loop_class), log
    assert out == EXPECTED
    assert "Application startup complete." in log, log
    assert "Finished server process" in log, log
    assert "Traceback" not in log, log
    # Once shut down, uvicorn re-raises the signal it caught: SIGINT's KeyboardInterrupt is caught
    # by its CLI (exit status 0), SIGTERM's default action ends the process.
    assert returncode == (0 if sig == signal.SIGINT else -sig), log
