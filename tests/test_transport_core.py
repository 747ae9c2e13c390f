"""The surface every transport shares (the transport core), kind by kind, against asyncio.

Each transport kind (TCP stream, UDP datagram, read pipe, write pipe) is made on both loops and
walked through the same steps: its protocol, its private attributes that libraries and asyncio's
own tests read (``_loop``, ``_protocol``, ``_closing``, ``_paused``, ``_protocol_paused``,
``_high_water``, ``_low_water``), write-buffer limits and the pause they call for, reading paused
and resumed, ``get_extra_info``, and closing. What the test records is compared with what stock
asyncio records for the same steps, so both loops must record the same thing.
"""

import asyncio
import os
import socket

import pytest


class Proto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")

    def datagram_received(self, data, addr):
        pass

    def error_received(self, exc):
        pass

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


def shared_state(transport, loop, protocol):
    """What every kind answers the same way, as a dictionary to compare across loops."""
    state = {
        "loop_is_loop": transport._loop is loop,
        "protocol": transport.get_protocol() is protocol,
        "_protocol": getattr(transport, "_protocol", None) is protocol,
        "closing": transport.is_closing(),
        "_closing": transport._closing,
        "missing_key": transport.get_extra_info("no such key", "fallback"),
    }
    if hasattr(transport, "get_write_buffer_limits"):
        state["limits"] = transport.get_write_buffer_limits()
        state["size"] = transport.get_write_buffer_size()
        state["_protocol_paused"] = transport._protocol_paused
        state["_high_water"] = transport._high_water
        state["_low_water"] = transport._low_water
    return state


async def exercise(loop, transport, protocol, *, reads, writes):
    """Walks a transport through the shared steps; returns what it saw."""
    seen = {"start": shared_state(transport, loop, protocol)}
    if reads:
        seen["reading"] = [transport.is_reading(), transport._paused]
        transport.pause_reading()
        transport.pause_reading()
        seen["paused"] = [transport.is_reading(), transport._paused]
        transport.resume_reading()
        seen["resumed"] = [transport.is_reading(), transport._paused]
    if writes:
        with pytest.raises(ValueError, match="high.*must be >= low"):
            transport.set_write_buffer_limits(high=1, low=2)
        transport.set_write_buffer_limits(high=100)
        seen["after_limits"] = [transport.get_write_buffer_limits(), transport._high_water, transport._low_water]
        # Limits of zero pause a protocol as soon as anything is buffered; nothing is here.
        transport.set_write_buffer_limits(0)
        seen["zero_limits"] = [transport.get_write_buffer_limits(), transport._protocol_paused]
    other = Proto(loop)
    transport.set_protocol(other)
    seen["swapped"] = [transport.get_protocol() is other, transport._protocol is other]
    transport.set_protocol(protocol)
    transport.close()
    seen["after_close"] = shared_state(transport, loop, protocol)
    if reads:
        seen["reading_after_close"] = transport.is_reading()
        transport.resume_reading()
        seen["resume_after_close"] = transport.is_reading()
    await asyncio.wait_for(protocol.lost, 10)
    seen["events"] = protocol.events
    seen["protocol_after_lost"] = transport.get_protocol() is protocol
    return seen


def run_on(loop_factory, kind):
    loop = loop_factory()
    try:
        return loop.run_until_complete(MAKERS[kind](loop))
    finally:
        loop.close()


async def tcp(loop):
    a, b = socket.socketpair()
    try:
        protocol = Proto(loop)
        transport, _ = await loop.create_connection(lambda: protocol, sock=a)
        await asyncio.sleep(0)
        return await exercise(loop, transport, protocol, reads=True, writes=True)
    finally:
        b.close()


async def udp(loop):
    protocol = Proto(loop)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=("127.0.0.1", 0))
    await asyncio.sleep(0)
    seen = await exercise(loop, transport, protocol, reads=True, writes=True)
    seen["extra_sockname"] = transport.get_extra_info("sockname") is None
    return seen


async def read_pipe(loop):
    r, w = os.pipe()
    try:
        protocol = Proto(loop)
        transport, _ = await loop.connect_read_pipe(lambda: protocol, os.fdopen(r, "rb", 0))
        await asyncio.sleep(0)
        seen = await exercise(loop, transport, protocol, reads=True, writes=False)
        seen["pipe_released"] = transport._pipe is None
        return seen
    finally:
        os.close(w)


async def write_pipe(loop):
    r, w = os.pipe()
    try:
        protocol = Proto(loop)
        transport, _ = await loop.connect_write_pipe(lambda: protocol, os.fdopen(w, "wb", 0))
        await asyncio.sleep(0)
        seen = await exercise(loop, transport, protocol, reads=False, writes=True)
        seen["pipe_released"] = transport._pipe is None
        seen["_fileno"] = transport._fileno == w
        # A closed write pipe drops writes and counts them.
        transport.write(b"dropped")
        seen["_conn_lost"] = transport._conn_lost
        return seen
    finally:
        os.close(r)


MAKERS = {"tcp": tcp, "udp": udp, "read_pipe": read_pipe, "write_pipe": write_pipe}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_shared_surface_matches_asyncio(loop_factory, kind):
    from conftest import make_loop_factory

    expected = run_on(make_loop_factory("asyncio"), kind)
    assert run_on(loop_factory, kind) == expected
    # The comparison is not vacuous: the steps saw a live transport close.
    assert expected["start"]["closing"] is False
    assert expected["after_close"]["closing"] is True
    assert "lost" in expected["events"]
