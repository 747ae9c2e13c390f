"""The Starlette app uvicorn serves in test_uvicorn.py (imported by name by uvicorn's CLI too)."""

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

STREAM_CHUNKS = 50
CLOSE_CODE = 4001


def _loop_name():
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


async def hello(request: Request):
    return JSONResponse({"hello": "world", "query": dict(request.query_params), "loop": _loop_name()})


async def echo(request: Request):
    body = await request.json()
    return JSONResponse({"received": body, "length": len(await request.body())}, status_code=201)


async def stream(request: Request):
    count = int(request.query_params.get("n", STREAM_CHUNKS))

    async def chunks():
        for i in range(count):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


async def big(request: Request):
    """``n`` MiB in 64 KiB chunks, fast: the client reads slowly, so the server's writes pause."""
    count = int(request.query_params.get("n", 8)) * 16

    async def chunks():
        for i in range(count):
            yield bytes([i % 256]) * 65536

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await websocket.close(code=CLOSE_CODE, reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text("echo: " + message["text"])
            else:
                await websocket.send_bytes(message["bytes"][::-1])
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/json", hello),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/big", big),
        WebSocketRoute("/ws", ws_echo),
    ]
)
