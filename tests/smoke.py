"""Smoke test of an installed ferroloop (run by `make wheel` from outside the source tree)."""

import asyncio
import sys

import ferroloop


async def main():
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ferroloop.Loop), loop
    assert "site-packages" in ferroloop.__file__, ferroloop.__file__

    async def echo(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    writer.write(b"ping")
    assert await reader.read(100) == b"ping"
    writer.close()
    server.close()
    await server.wait_closed()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "print('ok')", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert out.strip() == b"ok"
    return "smoke test passed"


print(ferroloop.run(main()))
