"""ferroloop's ``StreamReader``: asyncio's own, with its hot reads done in Rust.

A ferroloop transport made for asyncio's stock ``StreamReaderProtocol`` gives the protocol's
stock ``StreamReader`` this class (``__class__`` assignment: the layout is the same) before any
user code can reach the reader, if nothing about the reader is customised (see
``crates/ferroloop-py/src/transports/streams/``). The reader keeps asyncio's state, in its own
attributes, and every method asyncio defines; ``read(n)``, ``readexactly(n)``,
``readuntil(separator)`` and ``readline()`` do their buffer work and their wait in Rust.
Iteration, ``at_eof()`` and the rest are asyncio's, and call these.

The native step answers ``NotImplemented`` where asyncio's own code must run instead (a patched
class, a replaced buffer, a separator that is not ``bytes``, ``read(-1)``). Where the read must
wait for data, ``read`` and ``readexactly``'s step answers the future to await, already the
reader's ``_waiter``; ``readuntil`` and ``readline``'s answers the offset to search from next,
and ``_wait`` makes the future. After the wait the step is asked again, told that it waited.
Each method writes its wait out (the ``finally`` clears ``_waiter``, as asyncio's
``_wait_for_data`` does): a helper coroutine would cost one more coroutine per wait, which is
what this class is for saving.
"""

import asyncio
import collections.abc

from . import _ferroloop

_stock = asyncio.StreamReader
_readuntil = _ferroloop._stream_readuntil
_readline = _ferroloop._stream_readline
_wait = _ferroloop._stream_wait


class StreamReader(asyncio.StreamReader):
    """``asyncio.StreamReader`` with ``read``, ``readexactly``, ``readuntil`` and ``readline`` in Rust."""

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


collections.abc.Coroutine.register(_ferroloop.StreamOperation)
_ferroloop._install_stream_operations(StreamReader, StreamWriter)
