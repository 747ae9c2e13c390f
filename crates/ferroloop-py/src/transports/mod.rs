//! Native transports: the objects protocols talk to, with asyncio's transport interface.
//!
//! - [`stream`]: `StreamTransport`, for connected TCP and Unix stream sockets (asyncio's
//!   `_SelectorSocketTransport`).
//!
//! A transport registers its file descriptor with the loop as an
//! [`IoWatcher`](crate::watch::IoWatcher) and calls its protocol directly from Rust. The protocol
//! receives the transport object itself, whose `__class__` is a Python subclass of
//! `asyncio.Transport`, so `isinstance(transport, asyncio.Transport)` holds.
//!
//! Errors follow asyncio: an `OSError` from the socket closes the connection and reaches the
//! protocol's `connection_lost(exc)` (logged only in debug mode); any other exception, such as
//! one raised by a protocol method, also goes to the loop's exception handler.

pub mod stream;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::event_loop::EventLoop;

/// asyncio's `_fatal_error`: report (unless it is an `OSError`), then the caller force-closes.
pub(crate) fn report_fatal(
    event_loop: &Bound<'_, EventLoop>,
    transport: &Bound<'_, PyAny>,
    protocol: Option<&Py<PyAny>>,
    exc: &Bound<'_, PyAny>,
    message: &str,
) -> PyResult<()> {
    let py = event_loop.py();
    if exc.is_instance_of::<pyo3::exceptions::PyOSError>() {
        if event_loop.get().debug() {
            crate::pyrefs::asyncio_logger(py)?
                .call_method1("debug", ("%r: %s", transport, message))?;
        }
        return Ok(());
    }
    let context = PyDict::new(py);
    context.set_item("message", message)?;
    context.set_item("exception", exc)?;
    context.set_item("transport", transport)?;
    context.set_item("protocol", protocol)?;
    event_loop.call_method1("call_exception_handler", (context,))?;
    Ok(())
}

/// Calls a protocol's flow-control method; an exception goes to the exception handler.
pub(crate) fn call_flow_control(
    event_loop: &Bound<'_, EventLoop>,
    transport: &Bound<'_, PyAny>,
    protocol: &Bound<'_, PyAny>,
    method: &str,
) -> PyResult<()> {
    let py = event_loop.py();
    if let Err(err) = protocol.call_method0(method) {
        if err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
            || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
        {
            return Err(err);
        }
        let context = PyDict::new(py);
        context.set_item("message", format!("protocol.{method}() failed"))?;
        context.set_item("exception", err.into_value(py))?;
        context.set_item("transport", transport)?;
        context.set_item("protocol", protocol)?;
        event_loop.call_method1("call_exception_handler", (context,))?;
    }
    Ok(())
}
