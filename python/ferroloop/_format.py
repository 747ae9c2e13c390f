"""Reprs and messages for the Rust handles and loop: the parts that are not hot.

The Rust side calls these functions by name (``crates/ferroloop-py/src/pyrefs.rs``).
"""

from asyncio import coroutines, tasks

from . import _compat

_callback_source = _compat.format_callback_source


def handle_repr(handle):
    """``<Handle ...>``/``<TimerHandle ...>`` with asyncio's fields."""
    info = [type(handle).__name__]
    if handle.cancelled():
        info.append("cancelled")
    if hasattr(handle, "when"):
        info.append(f"when={handle.when()}")
    if handle._callback is not None:
        info.append(_callback_source(handle._callback, handle._args))
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def _stepped_task(handle):
    """The task whose step or wake-up ``handle`` runs, or None."""
    owner = getattr(handle._callback, "__self__", None)
    return owner if isinstance(owner, tasks.Task) else None


def format_handle(handle):
    """How a slow callback is named in debug mode's warning: its task, if it steps one."""
    owner = _stepped_task(handle)
    if owner is not None:
        return repr(owner)
    return str(handle)


def describe_callback(handle):
    """What a slow callback was, for ``ferroloop.stats()``: the task it stepped (name and where its
    coroutine is now), or the callback as asyncio names it."""
    owner = _stepped_task(handle)
    if owner is not None:
        coro = owner.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if code is None:
            return f"Task {owner.get_name()!r} {coro!r}"
        line = frame.f_lineno if frame is not None else code.co_firstlineno
        return f"Task {owner.get_name()!r} {code.co_qualname}() at {code.co_filename}:{line}"
    if handle._callback is None:
        return type(handle).__name__
    return _callback_source(handle._callback, handle._args)


def callback_error_context(handle, exc, debug):
    """The exception handler's context for a callback that raised ``exc``."""
    source = _callback_source(handle._callback, handle._args, debug)
    context = {
        "message": f"Exception in callback {source}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    return context


def check_callback(callback, method):
    """Debug mode's argument check of ``call_soon`` and friends."""
    if coroutines.iscoroutine(callback) or _compat.iscoroutinefunction(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")
