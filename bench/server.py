"""One benchmark server on one event loop, run in its own process by bench/run.py.

    python bench/server.py LOOP WORKLOAD ADDRESS

LOOP is asyncio, uvloop, rloop or ferroloop; ADDRESS is HOST:PORT, or a path for Unix sockets.
Prints READY when listening; exits with status 3 and a reason on stderr when the loop lacks
what the workload needs (reported as "unsupported").
"""

import asyncio
import socket
import ssl
import sys

UNSUPPORTED = 3


def new_loop(name):
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop

        return rloop.new_event_loop()
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    raise SystemExit(f"unknown loop {name}")


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with httptools: a fixed 12-byte body per request."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello World!"

    def connection_made(self, transport):
        import httptools

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_complete(self):
        self.transport.write(self.RESPONSE)


async def serve_sock(loop, address):
    """Echo with sock_accept / sock_recv / sock_sendall."""
    host, port = address
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(512)
    listener.setblocking(False)

    async def handle(conn):
        with conn:
            while data := await loop.sock_recv(conn, 256 * 1024):
                await loop.sock_sendall(conn, data)

    print("READY", flush=True)
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.create_task(handle(conn))


async def serve_streams(loop, address):
    async def handle(reader, writer):
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, *address)
    print("READY", flush=True)
    await run_until_killed(server)


def tls_context():
    from test.test_asyncio import utils

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(utils.ONLYCERT, utils.ONLYKEY)
    return ctx


async def serve_protocol(loop, address, factory, *, unix=False, tls=False):
    if unix:
        server = await loop.create_unix_server(factory, address)
    else:
        server = await loop.create_server(factory, *address, ssl=tls_context() if tls else None)
    print("READY", flush=True)
    await run_until_killed(server)


def starlette_app():
    """The real-app workload's app: one Starlette route answering 12 bytes of text."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request):
        return PlainTextResponse("Hello World!")

    return Starlette(routes=[Route("/", hello)])


async def start_uvicorn(loop, host, port):
    """uvicorn (httptools) serving the Starlette app on `loop`, once it listens: the
    `uvicorn.Server` and the task serving it (bench/cost.py's `uvicorn` workload starts it too)."""
    import uvicorn

    config = uvicorn.Config(
        starlette_app(),
        host=host,
        port=port,
        loop="none",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    serving = loop.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it started serving")
        await asyncio.sleep(0.01)
    return server, serving


async def serve_uvicorn(loop, address):
    """The real-app workload: uvicorn and the Starlette app, on the loop this process made."""
    _, serving = await start_uvicorn(loop, *address)
    print("READY", flush=True)
    await serving


async def run_until_killed(server):
    """Serve until the process is killed (rloop's Server has no serve_forever: not needed)."""
    _ = server
    await asyncio.get_running_loop().create_future()


def main():
    loop_name, workload, address = sys.argv[1:4]
    if ":" in address and not address.startswith("/"):
        host, port = address.rsplit(":", 1)
        address = (host, int(port))
    try:
        loop = new_loop(loop_name)
    except ImportError as exc:
        print(f"{loop_name} is not installed: {exc}", file=sys.stderr)
        sys.exit(UNSUPPORTED)
    servers = {
        "sock": lambda: serve_sock(loop, address),
        "streams": lambda: serve_streams(loop, address),
        "protocol": lambda: serve_protocol(loop, address, EchoProtocol),
        # A connection per request (the client's --per-connection): the same echo Protocol.
        "connect-graceful": lambda: serve_protocol(loop, address, EchoProtocol),
        "connect-reset": lambda: serve_protocol(loop, address, EchoProtocol),
        "unix": lambda: serve_protocol(loop, address, EchoProtocol, unix=True),
        "http": lambda: serve_protocol(loop, address, HttpProtocol),
        "tls": lambda: serve_protocol(loop, address, EchoProtocol, tls=True),
        "uvicorn": lambda: serve_uvicorn(loop, address),
    }
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(servers[workload]())
    except (NotImplementedError, AttributeError, TypeError) as exc:
        print(f"{loop_name} does not support {workload}: {exc!r}", file=sys.stderr)
        sys.exit(UNSUPPORTED)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
