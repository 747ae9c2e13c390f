"""Where ferroloop depends on the Python version or on a private name of asyncio.

Each difference between the CPython versions ferroloop supports is named here once, by what
changed, and the rest of the package asks this module; the Rust side's are in
``crates/ferroloop-py/src/compat.rs`` (which reads what it needs from here). A new CPython
version is handled by looking here first.
"""

import inspect
import sys
from asyncio import coroutines as _coroutines
from asyncio import events as _events
from asyncio import unix_events as _unix_events

#: asyncio's policy system is deprecated (3.14) and goes in 3.16: where deprecated, ferroloop
#: installs itself without it and offers ``ferroloop.EventLoopPolicy`` with asyncio's warning.
POLICIES_DEPRECATED = sys.version_info >= (3, 14)

#: The base class of ``ferroloop.EventLoopPolicy``: asyncio's default policy (private from 3.14
#: on, where its public name warns), or None where asyncio has no policies any more.
if POLICIES_DEPRECATED:
    DEFAULT_POLICY = getattr(_unix_events, "_UnixDefaultEventLoopPolicy", None)
else:
    from asyncio import DefaultEventLoopPolicy as DEFAULT_POLICY

#: asyncio's handle of ``call_soon_threadsafe``, which another thread may cancel safely (3.14,
#: and the 3.12/3.13 bug-fix releases that have it); None where there is none.
THREAD_SAFE_HANDLE = getattr(_events, "_ThreadSafeHandle", None)

#: asyncio's own test for "a coroutine function" (also true of legacy ``@types.coroutine``-marked
#: ones): public before 3.14, where the public name warns and the private one stays.
iscoroutinefunction = getattr(_coroutines, "_iscoroutinefunction", _coroutines.iscoroutinefunction)

#: Whether ``sock_sendfile`` leaves the file at ``offset + sent`` even when nothing was sent
#: (3.14; before, only after sending something): asyncio's helper lost its ``total_sent``.
SENDFILE_ALWAYS_SETS_POSITION = (
    len(inspect.signature(_unix_events._UnixSelectorEventLoop._sock_sendfile_update_filepos).parameters) == 3
)

#: ``asyncio.capture_call_graph`` and the per-thread task lists ``python -m asyncio ps`` reads
#: (3.14): where missing, ``python -m ferroloop ps`` is ferroloop's own (``_ps``).
HAS_ASYNCIO_PS = sys.version_info >= (3, 14)


def deprecated_policy_name(name):
    """Warn as asyncio 3.14+ does when a name of its policy system is used."""
    import warnings

    warnings._deprecated(f"ferroloop.{name}", remove=(3, 16))


def install_default_loop(new_event_loop, policy_class):
    """Make asyncio create ferroloop loops where it is not told which loop to make.

    ``asyncio.run``, ``asyncio.Runner`` and ``asyncio.new_event_loop`` then make them. Where
    policies are deprecated, asyncio's ``new_event_loop`` itself is replaced (what ``Runner``
    calls), deferring to a policy the program installed; before, ferroloop's policy is installed.
    """
    if POLICIES_DEPRECATED:
        import asyncio

        def default_new_event_loop():
            # A policy the program installed itself (deprecated, but still asyncio's hook until
            # 3.16) makes the loop; asyncio's own default policy does not.
            policy = getattr(_events, "_event_loop_policy", None)
            if policy is not None and type(policy) is not DEFAULT_POLICY:
                return policy.new_event_loop()
            return new_event_loop()

        asyncio.events.new_event_loop = asyncio.new_event_loop = default_new_event_loop
    else:
        _events.set_event_loop_policy(policy_class())


def take_stream_reader_buffer(protocol):
    """What the ``StreamReader`` of a ``StreamReaderProtocol`` has buffered, taken out of it.

    ``start_tls(server_side=True)`` gives it to TLS (asyncio does since gh-142352: before, the
    bytes of the handshake a server's reader had already read were lost and the handshake hung).
    """
    from asyncio import streams

    reader = getattr(protocol, "_stream_reader", None) if isinstance(protocol, streams.StreamReaderProtocol) else None
    if reader is None or not reader._buffer:
        return b""
    data = bytes(reader._buffer)
    reader._buffer.clear()
    return data
