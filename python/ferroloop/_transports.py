"""The ``asyncio.Transport`` subclasses that ferroloop's Rust transports present as ``__class__``.

A Rust type cannot inherit from a Python class, so each native transport reports one of these
classes as its ``__class__``; ``isinstance(transport, asyncio.Transport)`` then holds, as it does
for stdlib's transports. They carry no behaviour: every method lives on the Rust type.
"""

import asyncio

from . import _compat


class StreamTransport(_compat.FlowControlMixin):
    """A connected stream socket (TCP or Unix); implemented by ``_ferroloop.StreamTransport``."""

    __slots__ = ()


class DatagramTransport(_compat.FlowControlMixin, asyncio.DatagramTransport):
    """A UDP or Unix datagram socket; implemented by ``_ferroloop.DatagramTransport``.

    Also an ``asyncio.Transport`` with flow control, as stdlib's datagram transport is.
    """

    __slots__ = ()


class SSLTransport(_compat.FlowControlMixin):
    """The application's side of a TLS connection; implemented by ``_ferroloop.SSLTransport``."""

    __slots__ = ()


class ReadPipeTransport(asyncio.ReadTransport):
    """The read end of a pipe, FIFO, socket or character device; implemented by
    ``_ferroloop.ReadPipeTransport``."""

    __slots__ = ()


class WritePipeTransport(_compat.FlowControlMixin, asyncio.WriteTransport):
    """The write end of a pipe, FIFO, socket or character device, with flow control; implemented
    by ``_ferroloop.WritePipeTransport``."""

    __slots__ = ()
