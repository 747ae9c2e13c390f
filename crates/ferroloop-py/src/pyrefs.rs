//! Python objects the bindings use, imported once per process.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

macro_rules! cached_import {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $module:literal, $attr:literal) => {
        $(#[$doc])*
        pub fn $name(py: Python<'_>) -> PyResult<&Bound<'_, $ty>> {
            static CELL: PyOnceLock<Py<$ty>> = PyOnceLock::new();
            CELL.import(py, $module, $attr)
        }
    };
}

cached_import!(
    /// `asyncio.Future`: futures are stdlib's, so `isinstance` checks hold everywhere.
    future_type, PyType, "asyncio", "Future"
);
cached_import!(
    /// `asyncio.Task`: tasks are stdlib's too.
    task_type, PyType, "asyncio", "Task"
);
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
/// A function of `ferroloop._format`, the Python side of reprs and messages (not hot).
pub fn format_fn<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("ferroloop._format")?.getattr(name)
}
