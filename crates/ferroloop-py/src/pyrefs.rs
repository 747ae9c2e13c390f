//! Python objects the bindings use, imported once per process.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyType};

macro_rules! cached_import {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $module:literal, $attr:literal) => {
        $(#[$doc])*
        pub fn $name(py: Python<'_>) -> PyResult<&Bound<'_, $ty>> {
            static CELL: PyOnceLock<Py<$ty>> = PyOnceLock::new();
            CELL.import(py, $module, $attr)
        }
    };
}

/// The value of `name` in a module's namespace, read at each call (the module is imported once):
/// what asyncio's own loop does when it calls `futures.Future` or `tasks.Task`, so a test or
/// library that replaces them (CPython's tests install the pure-Python `_PyTask`) is obeyed.
fn module_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyDict>>,
    module: &str,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let namespace = cell.get_or_try_init(py, || Ok::<_, PyErr>(py.import(module)?.dict().unbind()))?;
    match namespace.bind(py).get_item(name)? {
        Some(value) => Ok(value),
        None => Err(PyAttributeError::new_err(format!("module '{module}' has no attribute '{name}'"))),
    }
}

/// `asyncio.futures.Future`: futures are stdlib's, so `isinstance` checks hold everywhere.
pub fn future_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static MODULE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    module_attr(py, &MODULE, "asyncio.futures", pyo3::intern!(py, "Future"))
}

/// `asyncio.tasks.Task`: tasks are stdlib's too.
pub fn task_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static MODULE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    module_attr(py, &MODULE, "asyncio.tasks", pyo3::intern!(py, "Task"))
}
cached_import!(
    /// `asyncio.Handle`, which ferroloop's handles present as their `__class__`.
    asyncio_handle_type, PyType, "asyncio", "Handle"
);
cached_import!(
    /// `asyncio.TimerHandle`, likewise.
    asyncio_timer_handle_type, PyType, "asyncio", "TimerHandle"
);
cached_import!(
    /// `asyncio.format_helpers.extract_stack`, for debug-mode source tracebacks.
    extract_stack, PyAny, "asyncio.format_helpers", "extract_stack"
);
cached_import!(
    /// `sys._getframe`, to start the source traceback at the caller's frame.
    getframe, PyAny, "sys", "_getframe"
);
cached_import!(
    /// `asyncio.log.logger`, where slow callbacks are reported.
    asyncio_logger, PyAny, "asyncio.log", "logger"
);
cached_import!(
    /// `asyncio.BufferedProtocol`, whose instances receive into their own buffers.
    buffered_protocol_type, PyType, "asyncio", "BufferedProtocol"
);
cached_import!(
    /// `asyncio.trsock.TransportSocket`, the socket wrapper `get_extra_info("socket")` gives.
    transport_socket_type, PyType, "asyncio.trsock", "TransportSocket"
);
cached_import!(
    /// `socket.socket`: only sockets of exactly this type take the socket operations' fast path.
    socket_type, PyType, "socket", "socket"
);
/// A function of `ferroloop._format`, the Python side of reprs and messages (not hot).
pub fn format_fn<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("ferroloop._format")?.getattr(name)
}

/// A function of `ferroloop._blocking`, the Python side of the blocked-loop report (not hot).
pub fn blocking_fn<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("ferroloop._blocking")?.getattr(name)
}
