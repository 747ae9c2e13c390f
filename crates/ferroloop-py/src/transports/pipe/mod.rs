//! `ReadPipeTransport` and `WritePipeTransport`: the two ends of a pipe, a FIFO, a socket or a
//! character device (such as a pseudo-terminal), with the semantics of asyncio's
//! `_UnixReadPipeTransport` and `_UnixWritePipeTransport` (unchanged from Python 3.11 to 3.13).
//!
//! Both take a file object (anything with `fileno()`), refuse other kinds of files with
//! `ValueError`, put the descriptor in non-blocking mode and add the object to the extra info as
//! `pipe`. They close it once the protocol's `connection_lost(exc)` has run, which happens exactly
//! once; a transport dropped while still open warns with `ResourceWarning` and closes it then.
//!
//! Read side: while the transport is open and not paused, the descriptor is watched for reading;
//! each readiness event does one `read(2)` of up to [`MAX_READ`](base::MAX_READ) bytes and passes a new `bytes`
//! to `data_received` (an exception from the protocol goes to the loop's exception handler and
//! the transport stays open, as in asyncio). End of file stops reading and schedules
//! `eof_received()` (its result is ignored) and then `connection_lost(None)`. A read error closes
//! the transport: `EIO` (what a pseudo-terminal's master reads once the other side is closed) is
//! logged only in debug mode; any other error also goes to the exception handler.
//!
//! Write side:
//!
//! ```text
//! open ──write_eof()/close()──▶ closing ──buffer drained──▶ connection_lost(None) (at once)
//!   │                              │
//!   └──abort() / write error / reader gone (buffer dropped) ──▶ connection_lost(exc) scheduled
//! ```
//!
//! `write()` tries `write(2)` at once when nothing is buffered; the rest is buffered and the
//! descriptor watched for writing until the buffer drains, each event flushing it with one
//! `writev`. Flow control calls `pause_writing()` when the buffer grows above the high watermark
//! and `resume_writing()` once it has drained completely (asyncio's pipes resume only then).
//! For FIFOs and sockets the descriptor is also watched for reading: a write end becomes
//! "readable" (an error or a hang-up) when the reader goes, and then the transport closes, with
//! `BrokenPipeError` for `connection_lost` when data was still buffered. Writes once the
//! transport is closing are dropped and counted; after five of them, each one logs a warning.
//!
//! Instances have a `__dict__`, as asyncio's pipe transports do: code (asyncio's own tests among
//! it) replaces methods such as `pause_reading` on the instance.
//!
//! Deliberate differences from asyncio: `write()` raises `TypeError` for data that is not
//! `bytes`, `bytearray` or `memoryview` (asyncio only asserts); a second `abort()` or `close()`
//! does not schedule `connection_lost` again; a descriptor watched by a transport cannot be given
//! to `add_reader`/`add_writer` (`RuntimeError`, as for socket transports); an exception from
//! `data_received` reaches the exception handler as the loop's "Unhandled exception in an I/O
//! callback" rather than asyncio's "Exception in callback ...".

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use ferroloop_core::flow::{Lifecycle, WriteFlow, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use ferroloop_core::net::{self, FileType};
use ferroloop_core::write_buffer::{Pushed, WriteBuffer};
use pyo3::exceptions::{PyBrokenPipeError, PyNotImplementedError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::base::{self, control_flow, Core, ReadSide, Readiness, Watch, WriteSide};
use crate::buffers::{Data, DataError};
use crate::errors::{is_exit, os_error, try_later};
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;
use crate::pyrefs;
use crate::watch::IoWatcher;

/// What both ends keep: the file object, the protocol and where the transport is in its life.
struct End {
    /// The file object; closed and dropped once `connection_lost` has run (or set by `_pipe`).
    pipe: Option<Py<PyAny>>,
    /// The protocol; dropped once `connection_lost` has run.
    protocol: Option<Py<PyAny>>,
    /// Open; closing (`close()`, `write_eof()`, end of file, an error): no more reading, writes
    /// dropped; lost: `connection_lost` is scheduled (once).
    life: Lifecycle,
}

impl End {
    fn new(pipe: &Bound<'_, PyAny>, protocol: &Bound<'_, PyAny>) -> Self {
        Self { pipe: Some(pipe.clone().unbind()), protocol: Some(protocol.clone().unbind()), life: Lifecycle::Open }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.pipe)?;
        visit.call(&self.protocol)
    }

    /// The words `__repr__` adds for the lifecycle: `closed` once the file object is released,
    /// `closing` before.
    fn status(&self) -> Option<&'static str> {
        if self.pipe.is_none() {
            Some("closed")
        } else if self.life.is_closing() {
            Some("closing")
        } else {
            None
        }
    }
}

/// One end of a pipe, as the rules both ends share read it.
trait PipeEnd: Core + pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync {
    /// Runs `f` on the end's shared state, under the state's borrow.
    fn end<R>(&self, py: Python<'_>, f: impl FnOnce(&mut End) -> R) -> R;

    /// Stops watching the descriptor in every direction it is watched.
    fn unwatch_all(&self, py: Python<'_>) -> PyResult<()>;

    /// asyncio's `_close(exc)`: stop, and schedule `connection_lost(exc)` (once).
    fn close_with(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()>;
}

/// asyncio's pipe `_fatal_error`: when `quiet`, the error is only logged in debug mode;
/// otherwise it goes to the exception handler. Then the transport closes with it.
fn fatal_error<T: PipeEnd>(slf: &Bound<'_, T>, err: PyErr, message: &str, quiet: bool) -> PyResult<()> {
    let py = slf.py();
    if is_exit(py, &err) {
        return Err(err);
    }
    let this = slf.get();
    let exc = err.into_value(py).into_bound(py).into_any();
    if quiet {
        if this.event_loop(py).get().debug() {
            log(py, "debug", ("%r: %s", slf, message), Some(&exc));
        }
    } else {
        super::report_error(this.event_loop(py), slf.as_any(), this.protocol(py).as_ref(), &exc, message)?;
    }
    T::close_with(slf, Some(&exc))
}

/// Marks the end lost; true the first time, when the caller schedules `connection_lost`.
fn lose<T: PipeEnd>(this: &T, py: Python<'_>) -> bool {
    this.end(py, |end| end.life.lose())
}

/// The transport core's methods for a pipe end, and what both ends add: `_pipe`, `_fileno`,
/// `_call_connection_lost`.
macro_rules! pipe_end {
    ($ty:ty, $marker:literal) => {
        impl Core for $ty {
            fn loop_ref(&self) -> &Py<EventLoop> {
                &self.event_loop
            }

            fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.end(py, |end| end.protocol.as_ref().map(|p| p.clone_ref(py)))
            }

            fn replace_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
                Ok(self.end(protocol.py(), |end| end.protocol.replace(protocol.clone().unbind())))
            }

            fn closing(&self, py: Python<'_>) -> bool {
                self.end(py, |end| end.life.is_closing())
            }

            fn extra_info<'py>(
                &self,
                py: Python<'py>,
                name: &Bound<'py, PyAny>,
                default: Option<Bound<'py, PyAny>>,
            ) -> PyResult<Bound<'py, PyAny>> {
                base::extra_from(self.extra.bind(py), name, default)
            }
        }

        base::core_methods!($ty, $marker);

        #[pymethods]
        impl $ty {
            /// Tells the protocol the pipe is closed, then closes the pipe object (once).
            #[pyo3(signature = (exc))]
            fn _call_connection_lost(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
                self.unwatch_all(py)?;
                self.tally.closed();
                let (protocol, pipe) = self.end(py, |end| {
                    end.life.lose();
                    (end.protocol.take(), end.pipe.take())
                });
                connection_lost(py, protocol, pipe, exc)
            }

            /// The file object; `None` once closed. Setting it to `None` silences the
            /// `ResourceWarning` of a transport dropped while open (asyncio's tests do so).
            #[getter(_pipe)]
            fn pipe_attr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.end(py, |end| end.pipe.as_ref().map(|p| p.clone_ref(py)))
            }

            #[setter(_pipe)]
            fn set_pipe_attr(&self, py: Python<'_>, pipe: Option<Py<PyAny>>) {
                let old = self.end(py, |end| std::mem::replace(&mut end.pipe, pipe));
                drop(old);
            }

            #[getter]
            fn _fileno(&self) -> RawFd {
                self.fd
            }

            fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
                visit.call(&self.event_loop)?;
                visit.call(&self.extra)?;
                if let Some(st) = self.state.try_borrow() {
                    st.end.traverse(&visit)?;
                }
                Ok(())
            }

            fn __repr__(&self, py: Python<'_>) -> String {
                let st = self.state.borrow(py);
                let mut info = vec![$marker.to_owned()];
                info.extend(st.end.status().map(str::to_owned));
                info.push(format!("fd={}", self.fd));
                if st.end.pipe.is_some() {
                    if self.event_loop.get().closed() {
                        info.push("open".into());
                    } else {
                        info.extend(st.polling());
                    }
                }
                format!("<{}>", info.join(" "))
            }
        }

        impl Drop for $ty {
            fn drop(&mut self) {
                if let Some(pipe) = self.state.get_mut().end.pipe.take() {
                    Python::attach(|py| close_on_drop(py, $marker, self.fd, &pipe));
                }
            }
        }
    };
}

mod read;
mod write;
pub use read::{make_read_pipe_transport, ReadPipeTransport};
pub use write::{make_write_pipe_transport, WritePipeTransport};

/// What both constructors do first, in asyncio's order: the extra info (the caller's dictionary
/// itself, as asyncio keeps it) gets `pipe`, then the descriptor's type is checked and the
/// descriptor made non-blocking. Returns the extra info, the descriptor and its type.
fn open_pipe<'py>(
    pipe: &Bound<'py, PyAny>,
    extra: Option<&Bound<'py, PyDict>>,
    refusal: &str,
) -> PyResult<(Bound<'py, PyDict>, RawFd, FileType)> {
    let py = pipe.py();
    let extra = extra.cloned().unwrap_or_else(|| PyDict::new(py));
    extra.set_item(intern!(py, "pipe"), pipe)?;
    let fd: RawFd = pipe.call_method0(intern!(py, "fileno"))?.extract()?;
    let kind = net::file_type(fd).map_err(|e| os_error(&e))?;
    if kind == FileType::Other {
        return Err(PyValueError::new_err(refusal.to_owned()));
    }
    net::set_nonblocking(fd).map_err(|e| os_error(&e))?;
    Ok((extra, fd, kind))
}

/// `logger.<level>(fmt, *args)` on asyncio's logger, with `exc_info` when given. A failure to log
/// is reported as unraisable, never to the caller.
fn log<'py>(py: Python<'py>, level: &str, args: impl pyo3::call::PyCallArgs<'py>, exc: Option<&Bound<'py, PyAny>>) {
    let res = (|| -> PyResult<()> {
        let kwargs = PyDict::new(py);
        if let Some(exc) = exc {
            kwargs.set_item("exc_info", exc)?;
        }
        pyrefs::asyncio_logger(py)?.call_method(level, args, Some(&kwargs))?;
        Ok(())
    })();
    if let Err(e) = res {
        e.write_unraisable(py, None);
    }
}

/// Closes the pipe object when the transport is dropped while open. Errors are ignored: the
/// object may already be torn down by the garbage collector.
fn close_on_drop(py: Python<'_>, kind: &str, fd: RawFd, pipe: &Py<PyAny>) {
    super::warn_unclosed(py, kind, fd);
    // Nothing to report a failure to: the transport is gone.
    let _ = pipe.bind(py).call_method0(intern!(py, "close"));
}

/// Calls `protocol.connection_lost(exc)`, then closes `pipe`; the protocol's error wins.
fn connection_lost(
    py: Python<'_>,
    protocol: Option<Py<PyAny>>,
    pipe: Option<Py<PyAny>>,
    exc: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let lost = match &protocol {
        Some(p) => p.bind(py).call_method1(intern!(py, "connection_lost"), (exc,)).map(drop),
        None => Ok(()),
    };
    let closed = match &pipe {
        Some(p) => p.bind(py).call_method0(intern!(py, "close")).map(drop),
        None => Ok(()),
    };
    drop(protocol);
    drop(pipe);
    lost.and(closed)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ReadPipeTransport>()?;
    m.add_class::<WritePipeTransport>()?;
    m.add_function(wrap_pyfunction!(make_read_pipe_transport, m)?)?;
    m.add_function(wrap_pyfunction!(make_write_pipe_transport, m)?)
}
