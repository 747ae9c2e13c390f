//! Native transports: the objects protocols talk to, with asyncio's transport interface.
//!
//! - [`stream`]: `StreamTransport`, for connected TCP and Unix stream sockets (asyncio's
//!   `_SelectorSocketTransport`).
//! - [`datagram`]: `DatagramTransport`, for UDP and Unix datagram sockets.
//! - [`tls`]: `TlsProtocol` and `TlsTransport`, TLS over a stream transport.
//! - [`pipe`]: `ReadPipeTransport` and `WritePipeTransport`, for pipes, FIFOs, sockets and
//!   character devices such as pseudo-terminals (asyncio's `_UnixReadPipeTransport` and
//!   `_UnixWritePipeTransport`): `connect_read_pipe`, `connect_write_pipe` and the standard
//!   streams of subprocesses.
//!
//! A transport registers its file descriptor with the loop as an
//! [`IoWatcher`](crate::watch::IoWatcher) and calls its protocol directly from Rust. The protocol
//! receives the transport object itself, whose `__class__` is a Python subclass of the matching
//! asyncio class (`asyncio.Transport`, `asyncio.ReadTransport`, `asyncio.WriteTransport`), so
//! `isinstance` checks hold.
//!
//! Errors follow asyncio: an `OSError` from the socket closes the connection and reaches the
//! protocol's `connection_lost(exc)` (logged only in debug mode); any other exception, such as
//! one raised by a protocol method, also goes to the loop's exception handler. Pipes differ as
//! asyncio's do: a read error other than `EIO` is reported too, and a protocol method's exception
//! goes to the exception handler without closing the pipe (see [`pipe`]).

pub(crate) use crate::errors::os_error;

pub mod datagram;
pub mod pipe;
pub mod stream;
pub mod tls;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

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
            crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r: %s", transport, message))?;
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
        if is_exit(py, &err) {
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

/// `KeyboardInterrupt` and `SystemExit` are never reported: they leave the loop.
pub(crate) fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
}

/// The `ResourceWarning` of a transport dropped while open. The socket object closes its own
/// descriptor when it goes (it may already be torn down by the garbage collector: no calls).
pub(crate) fn warn_unclosed(py: Python<'_>, kind: &str, fd: std::os::fd::RawFd) {
    let msg = std::ffi::CString::new(format!("unclosed transport <{kind} fd={fd}>")).unwrap_or_default();
    let category = py.get_type::<pyo3::exceptions::PyResourceWarning>();
    if let Err(e) = PyErr::warn(py, &category, &msg, 1) {
        e.write_unraisable(py, None);
    }
}

/// `get_extra_info`'s dictionary for a socket: the caller's `extra`, plus `socket` (asyncio's
/// `TransportSocket` wrapper), `sockname` and `peername` (None when unavailable).
pub(crate) fn socket_extra<'py>(
    sock: &Bound<'py, PyAny>,
    extra: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = sock.py();
    let extra = match extra {
        Some(e) => e.copy()?,
        None => PyDict::new(py),
    };
    let trsock = py.import("asyncio.trsock")?.getattr("TransportSocket")?.call1((sock,))?;
    extra.set_item("socket", trsock)?;
    extra.set_item("sockname", sock.call_method0("getsockname").ok())?;
    if !extra.contains("peername")? {
        extra.set_item("peername", sock.call_method0("getpeername").ok())?;
    }
    Ok(extra)
}

/// Schedules, in order: `protocol.connection_made(transport)`, `transport._start_reading()`,
/// and `waiter`'s result (unless it was cancelled), as asyncio's transports do.
pub(crate) fn schedule_start(
    event_loop: &Bound<'_, EventLoop>,
    protocol: &Bound<'_, PyAny>,
    transport: &Bound<'_, PyAny>,
    waiter: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = event_loop.py();
    let lp = event_loop.get();
    lp.call_soon_native(py, &protocol.getattr("connection_made")?, &PyTuple::new(py, [transport])?)?;
    lp.call_soon_native(py, &transport.getattr("_start_reading")?, &PyTuple::empty(py))?;
    if let Some(waiter) = waiter.filter(|w| !w.is_none()) {
        let set = py.import("asyncio.futures")?.getattr("_set_result_unless_cancelled")?;
        lp.call_soon_native(py, &set, &PyTuple::new(py, [waiter.clone(), py.None().into_bound(py)])?)?;
    }
    Ok(())
}
