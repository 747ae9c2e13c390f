"""ferroloop's ``StreamReader`` and ``StreamWriter``: asyncio's own, with their hot operations in Rust.

A ferroloop transport made for asyncio's stock ``StreamReaderProtocol`` gives the protocol's
stock ``StreamReader`` this module's class (``__class__`` assignment: the layout is the same)
before any user code can reach the reader, if nothing about the reader is customised, and after
``connection_made`` gives a server's stock ``StreamWriter`` (the one the protocol made) this
module's writer class, if its class is intact (see ``crates/ferroloop-py/src/transports/streams/``).
The reader and writer keep asyncio's state, in their own attributes, and every method asyncio
defines.

``read(n)``, ``readexactly(n)`` and the writer's ``drain()`` are native methods, installed below,
that return a ``StreamOperation``: an awaitable that does the operation in Rust and behaves as
asyncio's coroutine for the call (``streams/op.rs``). ``readuntil(separator)`` and ``readline()``
are coroutines here whose buffer work and wait setup are done in Rust: the native step answers
the data, the offset to search from after a wait (``_wait`` then makes the future), or
``NotImplemented`` where asyncio's own code must run instead (a patched class, a replaced buffer,
a separator that is not ``bytes``). Each writes its wait out (the ``finally`` clears ``_waiter``,
as asyncio's ``_wait_for_data`` does). Iteration, ``at_eof()`` and the rest are asyncio's, and
call these.
"""

import asyncio
import collections.abc

from . import _ferroloop

_stock = asyncio.StreamReader
_readuntil = _ferroloop._stream_readuntil
_readline = _ferroloop._stream_readline
_wait = _ferroloop._stream_wait


class StreamReader(asyncio.StreamReader):
    """``asyncio.StreamReader`` with ``read``, ``readexactly``, ``readuntil`` and ``readline`` in Rust
    (the first two installed below)."""

    __slots__ = ()

    async def readuntil(self, separator=b"\n"):
        # While it must wait, the step answers where the next search starts.
        data = _readuntil(self, separator, -1)
        while data.__class__ is int:
            waiter = _wait(self, "readuntil")
            try:
                await waiter
            finally:
                self._waiter = None
            data = _readuntil(self, separator, data)
        if data is NotImplemented:
            return await _stock.readuntil(self, separator)
        return data

    async def readline(self):
        # asyncio's readline is readuntil(b"\n") and what it makes of that one's errors; its
        # wait is readuntil's.
        data = _readline(self, -1)
        while data.__class__ is int:
            waiter = _wait(self, "readuntil")
            try:
                await waiter
            finally:
                self._waiter = None
            data = _readline(self, data)
        if data is NotImplemented:
            return await _stock.readline(self)
        return data


class StreamWriter(asyncio.StreamWriter):
    """``asyncio.StreamWriter`` with ``drain`` in Rust (a server's writer, given this class by
    its transport after ``connection_made``)."""

    __slots__ = ()


# asyncio takes what these return wherever it takes a coroutine (``asyncio.iscoroutine``).
collections.abc.Coroutine.register(_ferroloop.StreamOperation)
_ferroloop._install_stream_operations(StreamReader, StreamWriter)
