"""Where ferroloop depends on the Python version or on a private name of asyncio.

Each difference between the CPython versions ferroloop supports is named here once, by what
changed, and the rest of the package asks this module; the Rust side's are in
``crates/ferroloop-py/src/compat.rs`` (which reads what it needs from here). Every private name of
asyncio that the package uses is taken here too, under a name of its own, so that a CPython which
renames or drops one breaks this module alone. A new CPython version is handled by looking here
first.
"""

import _socket
import inspect
import socket as _socket_module
import sys
from asyncio import base_events as _base_events
from asyncio import constants as _constants
from asyncio import coroutines as _coroutines
from asyncio import events as _events
from asyncio import format_helpers as _format_helpers
from asyncio import futures as _futures
from asyncio import selector_events as _selector_events
from asyncio import sslproto as _sslproto
from asyncio import transports as _transports
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


# --- asyncio's private names ---------------------------------------------------------------

# Functions are looked up when called, not when this module is imported: tests (CPython's
# among them) patch them in asyncio's modules, and asyncio's own loop sees the patch.


def get_running_loop():
    """The running-loop slot of this thread (``asyncio.events._get_running_loop``)."""
    return _events._get_running_loop()


def set_running_loop(loop):
    _events._set_running_loop(loop)


def is_debug_mode():
    """``PYTHONASYNCIODEBUG``/``-X dev``: the default of a new loop's debug mode."""
    return _coroutines._is_debug_mode()


def get_loop(fut):
    """The loop of a future (also of a non-asyncio future that has ``get_loop``)."""
    return _futures._get_loop(fut)


def set_result_unless_cancelled(fut, result):
    """Sets a waiter's result unless it was cancelled meanwhile."""
    _futures._set_result_unless_cancelled(fut, result)


def create_transport_context(server_side, server_hostname):
    """The default client ``SSLContext`` of ``ssl=True`` (the Rust TLS protocol asks for it)."""
    return _sslproto._create_transport_context(server_side, server_hostname)


#: What a transport's ``_sendfile_compatible`` answers to ``loop.sendfile`` (read by the Rust
#: transports): native ``os.sendfile`` may be tried, or only the fallback.
SENDFILE_TRY_NATIVE = _constants._SendfileMode.TRY_NATIVE
SENDFILE_FALLBACK = _constants._SendfileMode.FALLBACK


# A socket's family and type as the C socket keeps them (ints): ``socket.socket``'s own
# ``family`` and ``type`` properties convert them to enums, which costs more than the rest of
# setting up a connection's socket (measured: about 5,000 instructions each on 3.11).
sock_family = _socket.socket.family.__get__
sock_type = _socket.socket.type.__get__
_TCP_FAMILIES = (_socket.AF_INET, _socket.AF_INET6)


def set_nodelay(sock):
    """``TCP_NODELAY`` on a TCP socket, as asyncio's transports set it (asyncio's own check, on
    the ints, for a ``socket.socket``; asyncio's function for anything else)."""
    if type(sock) is not _socket_module.socket:
        _base_events._set_nodelay(sock)
    elif (
        sock_family(sock) in _TCP_FAMILIES
        and sock_type(sock) == _socket.SOCK_STREAM
        and sock.proto == _socket.IPPROTO_TCP
    ):
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)


def selector_socket_transport(*args, **kwargs):
    """asyncio's socket transport: for socket subclasses whose own I/O methods must be called."""
    return _selector_events._SelectorSocketTransport(*args, **kwargs)


def unix_subprocess_transport(*args, **kwargs):
    """asyncio's subprocess transport (its Popen and argument handling), on ferroloop's pipes."""
    return _unix_events._UnixSubprocessTransport(*args, **kwargs)


#: The base of asyncio's write transports' flow control (``set_write_buffer_limits`` & co.):
#: the ``__class__`` of ferroloop's transports derives from it, as asyncio's transports do.
FlowControlMixin = _transports._FlowControlMixin


def tasks_awaited_by(task):
    """The tasks ``task`` waits for now: the one it awaits, or the children of a ``gather``."""
    import asyncio

    waiter = getattr(task, "_fut_waiter", None)
    if isinstance(waiter, asyncio.Task):
        return [waiter]
    return [child for child in getattr(waiter, "_children", None) or () if isinstance(child, asyncio.Task)]


def task_group_parent(task):
    """The task whose ``TaskGroup`` made ``task`` (found through the group's done callback on
    it), or None."""
    import asyncio

    for callback, _ in getattr(task, "_callbacks", None) or ():
        group = getattr(callback, "__self__", None)
        if isinstance(group, asyncio.TaskGroup):
            return group._parent_task
    return None


def format_callback_source(callback, args, debug=False):
    """asyncio's description of a callback in reprs (``debug`` is taken from 3.13 on)."""
    try:
        return _format_helpers._format_callback_source(callback, args, debug=debug)
    except TypeError:  # Python < 3.13 has no ``debug`` argument.
        return _format_helpers._format_callback_source(callback, args)


class BorrowedNetworking:
    """asyncio's own orchestration of connections and servers, which works on any loop with
    ferroloop's transport factories: its methods, private helpers included, as they are."""

    _Base = _base_events.BaseEventLoop
    _Unix = _unix_events._UnixSelectorEventLoop
    create_connection = _Base.create_connection
    _connect_sock = _Base._connect_sock
    _create_connection_transport = _Base._create_connection_transport
    _ensure_resolved = _Base._ensure_resolved
    create_server = _Base.create_server
    connect_accepted_socket = _Base.connect_accepted_socket
    create_datagram_endpoint = _Base.create_datagram_endpoint
    sendfile = _Base.sendfile
    _sendfile_fallback = _Base._sendfile_fallback
    # sock_sendfile's fallback: chunks read in the executor, sent with sock_sendall (where the
    # file position ends up differs between versions; this follows the running one).
    _sock_sendfile_fallback = _Base._sock_sendfile_fallback
    create_unix_connection = _Unix.create_unix_connection
    create_unix_server = _Unix.create_unix_server
    if hasattr(_Base, "_create_server_getaddrinfo"):  # 3.12+
        _create_server_getaddrinfo = _Base._create_server_getaddrinfo
    del _Base, _Unix


class BorrowedSubprocess:
    """asyncio's pipe and subprocess methods, which call ferroloop's transport factories."""

    _Base = _base_events.BaseEventLoop
    connect_read_pipe = _Base.connect_read_pipe
    connect_write_pipe = _Base.connect_write_pipe
    subprocess_exec = _Base.subprocess_exec
    subprocess_shell = _Base.subprocess_shell
    _log_subprocess = _Base._log_subprocess
    del _Base
