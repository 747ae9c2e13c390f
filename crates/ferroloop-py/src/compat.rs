//! Where the Rust side depends on the Python version or on a private name of asyncio: the
//! counterpart of `python/ferroloop/_compat.py`, which holds the Python side's and every private
//! name of asyncio (the objects below are read from it). A new CPython version that changes one
//! of these is handled here and there, nowhere else.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::pyrefs;

/// Whether the running Python is at least `major.minor`, read once (`Python::version_info`
/// parses the version string at every call: too slow for a hot path such as `create_task`).
fn at_least(py: Python<'_>, minor: u8) -> bool {
    static MINOR: PyOnceLock<u8> = PyOnceLock::new();
    let running = *MINOR.get_or_init(py, || {
        let v = py.version_info();
        if v.major > 3 {
            u8::MAX
        } else {
            v.minor
        }
    });
    running >= minor
}

/// asyncio's `_ThreadSafeHandle` where it exists (3.14, and the 3.12/3.13 bug-fix releases that
/// have it), read once.
fn asyncio_thread_safe_handle(py: Python<'_>) -> PyResult<Option<&Bound<'_, PyType>>> {
    static CELL: PyOnceLock<Option<Py<PyType>>> = PyOnceLock::new();
    let found = CELL.get_or_try_init(py, || {
        let found = py.import("ferroloop._compat")?.getattr("THREAD_SAFE_HANDLE")?;
        Ok::<_, PyErr>(if found.is_none() { None } else { Some(found.cast_into::<PyType>()?.unbind()) })
    })?;
    Ok(found.as_ref().map(|t| t.bind(py)))
}

/// The `__class__` of `call_soon_threadsafe`'s handles: asyncio's `_ThreadSafeHandle`, else
/// `asyncio.Handle`.
pub(crate) fn thread_safe_handle_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    match asyncio_thread_safe_handle(py)? {
        Some(t) => Ok(t),
        None => pyrefs::asyncio_handle_type(py),
    }
}

/// Whether `call_soon_threadsafe`'s handles are thread-safe ones (see `handles::Gate`): where
/// asyncio's are.
pub(crate) fn thread_safe_handles(py: Python<'_>) -> PyResult<bool> {
    Ok(asyncio_thread_safe_handle(py)?.is_some())
}

macro_rules! from_compat {
    ($(#[$doc:meta])* $name:ident, $attr:literal) => {
        $(#[$doc])*
        pub(crate) fn $name(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
            static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            CELL.import(py, "ferroloop._compat", $attr)
        }
    };
}

from_compat!(
    /// asyncio's `futures._set_result_unless_cancelled`.
    set_result_unless_cancelled, "set_result_unless_cancelled"
);
from_compat!(
    /// asyncio's `sslproto._create_transport_context`: the default client context of `ssl=True`.
    create_transport_context, "create_transport_context"
);
from_compat!(
    /// asyncio's `constants._SendfileMode.TRY_NATIVE`.
    sendfile_try_native, "SENDFILE_TRY_NATIVE"
);
from_compat!(
    /// asyncio's `constants._SendfileMode.FALLBACK`.
    sendfile_fallback, "SENDFILE_FALLBACK"
);

/// `loop.create_task(coro, **kwargs)` hands every keyword to the task factory and to `Task`
/// (3.14); before, it takes only `name` and `context`, and calls the factory with `context` alone.
pub(crate) fn create_task_takes_kwargs(py: Python<'_>) -> bool {
    at_least(py, 14)
}

/// Python 3.13 sends empty datagrams and counts 8 header bytes per queued datagram.
pub(crate) fn datagram_modern_accounting(py: Python<'_>) -> bool {
    at_least(py, 13)
}

/// Whether `Server._attach`/`_detach` take the transport (3.13+).
pub(crate) fn server_attach_takes_transport(py: Python<'_>) -> bool {
    at_least(py, 13)
}

/// 3.11's `writelines` is `write(b"".join(list_of_data))`; later ones write the items in turn.
pub(crate) fn writelines_joins_first(py: Python<'_>) -> bool {
    !at_least(py, 12)
}
