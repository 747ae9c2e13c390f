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
//! each readiness event does one `read(2)` of up to [`MAX_READ`] bytes and passes a new `bytes`
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

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use ferroloop_core::flow::{WriteFlow, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use ferroloop_core::net::{self, FileType};
use ferroloop_core::write_buffer::WriteBuffer;
use pyo3::exceptions::{PyBrokenPipeError, PyNotImplementedError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::os_error;
use crate::buffers::{Data, DataError};
use crate::errors::is_exit;
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;
use crate::pyrefs;
use crate::watch::IoWatcher;

mod read;
mod write;
pub use read::{make_read_pipe_transport, ReadPipeTransport};
pub use write::{make_write_pipe_transport, WritePipeTransport};

/// The most one read event takes from the pipe (asyncio's `max_size`).
pub const MAX_READ: usize = 256 * 1024;

thread_local! {
    /// The buffer reads land in before they are copied into a `bytes` object.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ]);
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

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
