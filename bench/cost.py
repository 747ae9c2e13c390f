"""Instructions per operation under callgrind: what a change to the loop costs, measured exactly.

Wall-clock time on a shared machine moves by 10-30 % from run to run; the instructions a workload
executes do not. This runs each workload (``bench/micro.py``'s, echo round trips over a socket
pair in one process, and a streams server's side alone against a client thread) under
``valgrind --tool=callgrind`` in each given Python (a venv with the build to measure), and
reports instructions per operation, all of them (the loop's, Python's, the C library's):

- the slope between runs of n/10 and n operations, so that start-up cancels out;
- ``PYTHONHASHSEED=0``; the garbage collector frozen after start-up and then disabled, so that no
  collection falls differently in the two runs;
- the loop's thread only (the blocked-loop watchdog's thread costs per second, not per
  operation: about 25 µs of CPU per wake-up, four wake-ups per threshold);
- averaged over heap layouts (``--layouts``): what happens to be allocated at start-up decides
  how long glibc's malloc takes for the 1 KiB buffers of an echo, which moved one build's echo
  by up to 2 % either way (``--layouts 1`` shows it). Each layout adds a few allocations of its
  own size before the loop is made.

    python bench/cost.py /tmp/base/bin/python .venv/bin/python
    python bench/cost.py --env FERROLOOP_REPORT_BLOCKING=0.1 .venv/bin/python ...

``python bench/cost.py --run WORKLOAD N`` is the process each measurement runs.
"""

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile

# Workload name: (operations in the long run, description).
WORKLOADS = {
    "call_soon": (20000, "call_soon"),
    "call_soon_chain": (20000, "call_soon_chain (one callback per iteration)"),
    "create_task": (5000, "create_task"),
    "sleep0": (5000, "sleep0"),
    "future": (5000, "future (resolved by a callback, awaited)"),
    "timers": (5000, "timers"),
    "queue": (5000, "queue"),
    "gather_10k": (2000, "gather_10k"),
    "proto_echo_1k": (4000, "Protocol echo, 1 KiB (per round trip)"),
    "proto_echo_100k": (400, "Protocol echo, 100 KiB"),
    "streams_echo_1k": (2000, "streams echo, 1 KiB"),
    "streams_echo_100k": (200, "streams echo, 100 KiB"),
    "streams_server_1k": (2000, "streams server, 1 KiB (server only)"),
    "protocol_server_1k": (2000, "Protocol server, 1 KiB (server only)"),
    "task_server_1k": (2000, "Task woken by a Future per request, 1 KiB (server only)"),
    "connection_fin": (1000, "a connection per 1 KiB echo, client closes (server only)"),
    "connection_rst": (1000, "a connection per 1 KiB echo, client resets (server only)"),
    "uvicorn": (1000, "uvicorn + Starlette, a keep-alive request (server only)"),
}
LAYOUTS = (1, 500, 1000, 1500, 2000, 3000, 5000, 9000)


class Echo(asyncio.Protocol):
    """The echo servers' protocol: writes back what it receives (a workload that must know when
    the connection ends adds its own `connection_lost`)."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def proto_echo(loop, n, size):
    import socket

    a, b = socket.socketpair()
    payload = b"x" * size
    done = loop.create_future()

    class Client(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.left, self.got = transport, n, 0
            transport.write(payload)

        def data_received(self, data):
            self.got += len(data)
            if self.got >= size:
                self.got -= size
                self.left -= 1
                if self.left:
                    self.transport.write(payload)
                else:
                    done.set_result(None)

    async def main():
        await loop.connect_accepted_socket(Echo, a)
        await loop.connect_accepted_socket(Client, b)
        await done

    loop.run_until_complete(main())


def streams_echo(loop, n, size=1024):
    import socket

    async def main():
        a, b = socket.socketpair()

        async def serve(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        task = asyncio.ensure_future(serve(*await asyncio.open_connection(sock=a)))
        reader, writer = await asyncio.open_connection(sock=b)
        payload = b"x" * size
        for _ in range(n):
            writer.write(payload)
            await writer.drain()
            await reader.readexactly(size)
        writer.close()
        await task

    loop.run_until_complete(main())


def server_only(loop, n, kind, size=1024):
    """One server's side alone, as `make bench` counts the server's CPU only: the client is a
    blocking socket in another thread, whose instructions are not counted (see `instructions`).

    kind "streams": a start_server-style streams echo (`StreamReaderProtocol` with a callback).
    kind "protocol": an echo `Protocol`, the loop's floor for the same bytes.
    kind "task": a coroutine woken through an asyncio `Future` by `data_received` for each
    request, which then writes: what any coroutine that awaits its data costs on asyncio's Task
    and Future, the floor under a streams server that keeps them.
    """
    import socket
    import threading

    def client(sock):
        payload = b"x" * size
        with sock:
            for _ in range(n):
                sock.sendall(payload)
                got = 0
                while got < size:
                    got += len(sock.recv(size - got))

    async def main():
        a, b = socket.socketpair()
        done = loop.create_future()

        async def serve(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                writer.close()
            finally:
                done.set_result(None)

        class Ended(Echo):
            def connection_lost(self, exc):
                done.set_result(None)

        class Woken(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                self.waiter = None
                self.data = None
                loop.create_task(self.serve())

            def data_received(self, data):
                self.data = data
                if self.waiter is not None:
                    self.waiter.set_result(None)

            def eof_received(self):
                self.data = b""
                if self.waiter is not None:
                    self.waiter.set_result(None)

            async def serve(self):
                while True:
                    if self.data is None:
                        self.waiter = loop.create_future()
                        await self.waiter
                        self.waiter = None
                    data, self.data = self.data, None
                    if not data:
                        break
                    self.transport.write(data)
                self.transport.close()
                done.set_result(None)

        factories = {
            "streams": lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), serve, loop=loop),
            "protocol": Ended,
            "task": Woken,
        }
        await loop.connect_accepted_socket(factories[kind], a)
        thread = threading.Thread(target=client, args=(b,))
        thread.start()
        await done
        thread.join()

    loop.run_until_complete(main())


# The client of `connections`, run in a child process (valgrind follows only the server's):
# PORT N CLOSE SIZE SYNC_FD. Each connection waits for the server's word (a byte on SYNC_FD)
# that the last one is gone.
CONNECTIONS_CLIENT = """
import os, socket, struct, sys
port, n, close, size, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
payload = b"x" * size
for _ in range(n):
    with socket.create_connection(("127.0.0.1", int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(payload)
        got = 0
        while got < size:
            got += len(sock.recv(size - got))
        if close == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    os.read(sync, 1)
"""


def connections(loop, n, close, size=1024):
    """A `create_server` echo Protocol's side alone, for `n` connections from a client process
    (not traced), each one 1 KiB echo, then closed by the client with a FIN (`close` "fin") or an
    RST ("rst"): what the server pays per connection. The client opens the next connection once
    the server's protocol has seen the last one lost (it writes a byte to a pipe), so that each
    connection costs the same work: connections arriving together would share accept calls."""

    sync_r, sync_w = os.pipe()

    async def main():
        served = 0
        done = loop.create_future()

        class Counted(Echo):
            def connection_lost(self, exc):
                nonlocal served
                served += 1
                os.write(sync_w, b"x")
                if served == n:
                    done.set_result(None)

        server = await loop.create_server(Counted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        args = [sys.executable, "-c", CONNECTIONS_CLIENT, str(port), str(n), close, str(size), str(sync_r)]
        client = subprocess.Popen(args, pass_fds=(sync_r,))  # noqa: ASYNC220 (once per run: the slope cancels it)
        await done
        server.close()
        await server.wait_closed()
        return client

    client = loop.run_until_complete(main())
    client.wait()
    os.close(sync_r)
    os.close(sync_w)


# The client of `uvicorn_app`, run in a child process: PORT N DONE_FD. One keep-alive connection,
# one request at a time; a byte on DONE_FD when all are answered.
HTTP_CLIENT = """
import os, socket, sys
port, n, done = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with socket.create_connection(("127.0.0.1", port)) as sock:
    for _ in range(n):
        sock.sendall(b"GET / HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n")
        got = b""
        while not got.endswith(b"Hello World!"):
            got += sock.recv(4096)
os.write(done, b"x")
"""


def uvicorn_app(loop, n):
    """The server side of `make bench`'s real-app workload (uvicorn with httptools serving a
    one-route Starlette app, bench/server.py's), for `n` requests on one keep-alive connection
    from a client process (not traced)."""
    import server as bench_server

    done_r, done_w = os.pipe()

    async def main():
        server, serving = await bench_server.start_uvicorn(loop, "127.0.0.1", 0)
        port = server.servers[0].sockets[0].getsockname()[1]
        done = loop.create_future()
        loop.add_reader(done_r, done.set_result, None)
        args = [sys.executable, "-c", HTTP_CLIENT, str(port), str(n), str(done_w)]
        client = subprocess.Popen(args, pass_fds=(done_w,))  # noqa: ASYNC220 (once per run: the slope cancels it)
        await done
        loop.remove_reader(done_r)
        server.should_exit = True
        await serving
        return client

    client = loop.run_until_complete(main())
    client.wait()
    os.close(done_r)
    os.close(done_w)


def run_one(name, n, layout):
    import gc

    import ferroloop

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import micro

    work = {key: value[0] for key, value in micro.WORKLOADS.items()}
    work["proto_echo_1k"] = lambda loop, n: proto_echo(loop, n, 1024)
    work["proto_echo_100k"] = lambda loop, n: proto_echo(loop, n, 100 * 1024)
    work["streams_echo_1k"] = streams_echo
    work["streams_echo_100k"] = lambda loop, n: streams_echo(loop, n, 100 * 1024)
    work["streams_server_1k"] = lambda loop, n: server_only(loop, n, "streams")
    work["protocol_server_1k"] = lambda loop, n: server_only(loop, n, "protocol")
    work["task_server_1k"] = lambda loop, n: server_only(loop, n, "task")
    work["connection_fin"] = lambda loop, n: connections(loop, n, "fin")
    work["connection_rst"] = lambda loop, n: connections(loop, n, "rst")
    work["uvicorn"] = uvicorn_app
    gc.collect()
    gc.freeze()
    gc.disable()
    padding = [bytearray(layout) for _ in range(8)]
    loop = ferroloop.new_event_loop()
    work[name](loop, n)
    loop.close()
    del padding


def instructions(python, env, name, n, layout):
    """The instructions of the process's first thread (the loop's): another thread's work, such
    as the blocked-loop watchdog's wake-ups, is paid per second, not per operation, and valgrind
    stretches seconds fifty-fold."""
    with tempfile.TemporaryDirectory() as out:
        command = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}/cg"]
        command += [python, __file__, "--run", name, str(n), str(layout)]
        subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        with open(f"{out}/cg-01") as first:
            return int(re.search(r"^totals: (\d+)", first.read(), re.MULTILINE).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pythons", nargs="+", help="the interpreters (venvs) of the builds to compare")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated (default: all)")
    parser.add_argument("--layouts", type=int, default=len(LAYOUTS), help="heap layouts to average over")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the measured processes")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.update(item.split("=", 1) for item in args.env)
    print("| workload | " + " | ".join(args.pythons) + " |")
    print("| --- |" + " ---: |" * len(args.pythons))
    for name in args.workloads.split(","):
        n, description = WORKLOADS[name]
        cells = []
        for python in args.pythons:
            per_op = []
            for layout in LAYOUTS[: args.layouts]:
                short = instructions(python, env, name, n // 10, layout)
                long = instructions(python, env, name, n, layout)
                per_op.append((long - short) / (n - n // 10))
            cells.append(f"{sum(per_op) / len(per_op):,.0f}")
        print(f"| {description} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        run_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
