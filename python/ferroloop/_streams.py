"""ferroloop's ``StreamReader`` and ``StreamWriter``: asyncio's own, with their hot operations in Rust.

A ferroloop transport made for asyncio's stock ``StreamReaderProtocol`` gives the protocol's
stock ``StreamReader`` this module's class (``__class__`` assignment: the layout is the same)
before any user code can reach the reader, if nothing about the reader is customised, and after
``connection_made`` gives a server's stock ``StreamWriter`` (the one the protocol made, which
it keeps before Python 3.13) this module's writer class, if its class is intact (see
``crates/ferroloop-py/src/transports/streams/``). The reader and writer keep asyncio's state, in
their own attributes, and every method asyncio defines.

``read(n)``, ``readexactly(n)``, ``readuntil(separator)``, ``readline()`` and the writer's
``drain()`` are native methods, installed below, that return a ``StreamOperation``: an awaitable
that does the operation in Rust and behaves as asyncio's coroutine for the call, handing over to
asyncio's own coroutine wherever asyncio's code must run (``streams/op.rs``). Iteration,
``at_eof()`` and the rest are asyncio's, and call these.
"""

import asyncio
import collections.abc

from . import _ferroloop


class StreamReader(asyncio.StreamReader):
    """``asyncio.StreamReader`` with ``read``, ``readexactly``, ``readuntil`` and ``readline`` in Rust
    (installed below)."""

    __slots__ = ()


class StreamWriter(asyncio.StreamWriter):
    """``asyncio.StreamWriter`` with ``drain`` in Rust (a server's writer, given this class by
    its transport after ``connection_made``)."""

    __slots__ = ()


# asyncio takes what these return wherever it takes a coroutine (``asyncio.iscoroutine``).
collections.abc.Coroutine.register(_ferroloop.StreamOperation)
_ferroloop._install_stream_operations(StreamReader, StreamWriter)
