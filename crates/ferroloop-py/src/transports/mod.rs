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
//! - [`streams`]: asyncio's stock streams (`open_connection`, `start_server`) fed without a
//!   Python call when they run on these transports.
//!
//! What they share is in [`base`]: the watcher, the methods made from a transport's loop,
//! protocol, reading and write flow control, and asyncio's `_fatal_error`.
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

pub(crate) mod base;
pub mod datagram;
pub mod pipe;
pub mod stream;
pub(crate) mod streams;
pub mod tls;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use ferroloop_core::stats::{Traffic, TransportKind};

use crate::errors::is_exit;
use crate::event_loop::{report_exception, EventLoop};

/// A transport's share of its loop's statistics for its kind (`ferroloop.stats()`'s
/// `transports`): counted open when made, closed once when it releases its descriptor (or, if it
/// never does, when it is freed), and the bytes it moves, counted where the system call returned
/// them.
pub(crate) struct Tally {
    traffic: std::sync::Arc<Traffic>,
    open: std::sync::atomic::AtomicBool,
}

impl Tally {
    pub(crate) fn new(event_loop: &EventLoop, kind: TransportKind) -> Self {
        let traffic = event_loop.traffic(kind);
        traffic.opened.add(1);
        Self { traffic, open: std::sync::atomic::AtomicBool::new(true) }
    }

    #[inline]
    pub(crate) fn received(&self, n: usize) {
        self.traffic.bytes_in.add(n as u64);
    }

    #[inline]
    pub(crate) fn sent(&self, n: usize) {
        self.traffic.bytes_out.add(n as u64);
    }

    /// The transport released its descriptor (counted once).
    pub(crate) fn closed(&self) {
        if self.open.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.traffic.closed.add(1);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.closed();
    }
}

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
    report_error(event_loop, transport, protocol, exc, message)
}

/// Calls the loop's exception handler with asyncio's context for a transport's error: `message`,
/// `exception`, `transport`, `protocol`.
pub(crate) fn report_error(
    event_loop: &Bound<'_, EventLoop>,
    transport: &Bound<'_, PyAny>,
    protocol: Option<&Py<PyAny>>,
    exc: &Bound<'_, PyAny>,
    message: &str,
) -> PyResult<()> {
    let protocol = protocol.map(|p| p.bind(event_loop.py()));
    report_exception(event_loop, message, exc, &[("transport", Some(transport)), ("protocol", protocol)])
}

/// Tells a transport's protocol to pause writing (`pause`) or resume it, when its flow control
/// said so (`protocol` is `Some` then); see [`call_flow_control`].
pub(crate) fn tell_flow(
    event_loop: &Bound<'_, EventLoop>,
    transport: &Bound<'_, PyAny>,
    protocol: Option<Py<PyAny>>,
    pause: bool,
) -> PyResult<()> {
    let Some(protocol) = protocol else { return Ok(()) };
    let protocol = protocol.into_bound(event_loop.py());
    let method = if pause { "pause_writing" } else { "resume_writing" };
    call_flow_control(event_loop, Some(transport), &protocol, &protocol, method)
}

/// Calls a protocol's flow-control method (`pause_writing`/`resume_writing`); an exception goes
/// to the exception handler with `transport` and `protocol` (`protocol` is not always the one
/// called: asyncio's TLS reports itself for its application's protocol).
pub(crate) fn call_flow_control(
    event_loop: &Bound<'_, EventLoop>,
    transport: Option<&Bound<'_, PyAny>>,
    protocol: &Bound<'_, PyAny>,
    called: &Bound<'_, PyAny>,
    method: &str,
) -> PyResult<()> {
    let py = event_loop.py();
    if let Err(err) = called.call_method0(method) {
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        let entries = [("transport", transport), ("protocol", Some(protocol))];
        report_exception(event_loop, &format!("protocol.{method}() failed"), &exc, &entries)?;
    }
    Ok(())
}

/// A new transport object. Transports have an instance `__dict__` (`#[pyclass(dict)]`), so code
/// can patch them as asyncio's (`transport.write = ...`); on Python 3.11 the base object's
/// constructor makes that dictionary before PyO3 has written the Rust fields, and a collection
/// triggered by that allocation would traverse the zeroed fields (a crash: seen in uvloop's TLS
/// tests). The collector is held off for the allocation; no Python code runs meanwhile.
pub(crate) fn new_transport<'py, T: pyo3::PyClass>(
    py: Python<'py>,
    init: impl Into<pyo3::PyClassInitializer<T>>,
) -> PyResult<Bound<'py, T>> {
    // SAFETY: attached to the interpreter; disabling and re-enabling the collector has no other
    // effect, and it is re-enabled only if it was enabled before.
    let was_enabled = unsafe { pyo3::ffi::PyGC_Disable() } != 0;
    let made = Bound::new(py, init);
    if was_enabled {
        // SAFETY: as above.
        unsafe { pyo3::ffi::PyGC_Enable() };
    }
    made
}

pub(crate) use ferroloop_core::flow::DEFAULT_HIGH_WATER;

/// asyncio's watermarks from `set_write_buffer_limits(high, low)` (and the TLS read limits):
/// `high` defaults to `4 * low`, or `default_high`; `low` to `high // 4`; `ValueError` unless
/// `high >= low >= 0`. Any real number is taken, as asyncio takes it; the limits are kept as
/// byte counts (a fraction floored, a number beyond any size capped).
pub(crate) fn water_marks<'py>(
    py: Python<'py>,
    high: Option<&Bound<'py, PyAny>>,
    low: Option<&Bound<'py, PyAny>>,
    default_high: usize,
) -> PyResult<(usize, usize)> {
    let given = |v: Option<&Bound<'py, PyAny>>| v.filter(|v| !v.is_none()).cloned();
    let (high, low) = (given(high), given(low));
    let high = match (high, &low) {
        (Some(h), _) => h,
        (None, Some(l)) => l.mul(4)?,
        (None, None) => default_high.into_pyobject(py)?.into_any(),
    };
    let low = match low {
        Some(l) => l,
        None => high.floor_div(4)?,
    };
    if !(high.ge(&low)? && low.ge(0)?) {
        return Err(PyValueError::new_err(format!(
            "high ({}) must be >= low ({}) must be >= 0",
            high.repr()?,
            low.repr()?
        )));
    }
    // Both are >= 0 here.
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let count = |v: &Bound<'_, PyAny>| {
        v.extract::<usize>().unwrap_or_else(|_| v.extract::<f64>().unwrap_or(f64::INFINITY) as usize)
    };
    Ok((count(&high), count(&low)))
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

/// `get_extra_info` of a stream socket transport, made lazily. `peername` is taken when the
/// transport is made (the peer may be gone when it is asked for); `sockname` is made on first
/// request, or when the socket is closed, and kept; `socket` (asyncio's `TransportSocket`
/// wrapper) on first request, from the socket object, which is kept once closed for it. Made up
/// front they were three objects and a dictionary per connection, a quarter of the memory of an
/// idle one (10,000 idle connections: `make bench`); the wrapper made at every close was a
/// Python object per connection that nobody asked for.
pub(crate) struct SocketExtra {
    /// `getpeername()`'s answer at creation (or the caller's), None when it failed.
    peername: Py<PyAny>,
    /// The caller's other entries, then the answers made so far; made on first need.
    more: Option<Py<PyDict>>,
    /// The socket object once the transport closed it: what `socket` wraps if asked later.
    closed: Option<Py<PyAny>>,
}

impl SocketExtra {
    pub(crate) fn new(sock: &Bound<'_, PyAny>, extra: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let py = sock.py();
        let mut peername = None;
        let mut more = None;
        // A server's connection: `{"peername": address}` alone, taken without a copy.
        if let Some(extra) = extra.filter(|e| e.len() == 1) {
            if let Some(p) = extra.get_item(intern!(py, "peername"))? {
                return Ok(Self { peername: p.unbind(), more: None, closed: None });
            }
        }
        if let Some(extra) = extra {
            let extra = extra.copy()?;
            if let Some(p) = extra.get_item("peername")? {
                extra.del_item("peername")?;
                peername = Some(p.unbind());
            }
            // asyncio's own answers replace the caller's.
            for own in ["sockname", "socket"] {
                if extra.contains(own)? {
                    extra.del_item(own)?;
                }
            }
            if !extra.is_empty() {
                more = Some(extra.unbind());
            }
        }
        let peername = match peername {
            Some(p) => p,
            None => sock.call_method0(intern!(py, "getpeername")).map_or_else(|_| py.None(), Bound::unbind),
        };
        Ok(Self { peername, more, closed: None })
    }

    /// A server's accepted connection's: its peer's address alone.
    pub(crate) fn with_peername(peername: &Bound<'_, PyAny>) -> Self {
        Self { peername: peername.clone().unbind(), more: None, closed: None }
    }

    /// The socket object kept once closed (see `keep_closed`).
    pub(crate) fn closed(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.closed.as_ref().map(|s| s.clone_ref(py))
    }

    /// Keeps `sock`, just closed, for a `socket` answer asked for later.
    pub(crate) fn keep_closed(&mut self, sock: Py<PyAny>) -> Option<Py<PyAny>> {
        self.closed.replace(sock)
    }

    /// TCP or Unix, for the statistics: a Unix socket's peer name is a `str` or `bytes`, an IP
    /// socket's a tuple; asked of the socket only when it has no peer name.
    pub(crate) fn kind(&self, py: Python<'_>, fd: std::os::fd::RawFd) -> TransportKind {
        let peer = self.peername.bind(py);
        let unix = if peer.is_none() {
            ferroloop_core::net::socket_domain(fd).is_ok_and(|d| d == libc::AF_UNIX)
        } else {
            !peer.is_instance_of::<PyTuple>()
        };
        if unix {
            TransportKind::Unix
        } else {
            TransportKind::Tcp
        }
    }

    /// Keeps the dictionary `ExtraSnapshot::answer` filled; returns the one it replaces (the
    /// same object, or none) for the caller to drop after its borrow.
    pub(crate) fn keep(&mut self, dict: Py<PyDict>) -> Option<Py<PyDict>> {
        self.more.replace(dict)
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.peername)?;
        visit.call(&self.more)?;
        visit.call(&self.closed)
    }
}

/// What a transport reads out of its `SocketExtra` (under its cell's borrow) to answer
/// `get_extra_info` after the borrow ends.
pub(crate) struct ExtraSnapshot {
    peername: Py<PyAny>,
    more: Option<Py<PyDict>>,
    /// The open socket.
    sock: Option<Py<PyAny>>,
    /// The socket, once closed.
    closed: Option<Py<PyAny>>,
    /// The socket's descriptor, for the address of a `socket.socket` read without its methods.
    fd: std::os::fd::RawFd,
    /// The socket is open with no object: its IPv4 address is read by the descriptor.
    by_fd: bool,
}

impl ExtraSnapshot {
    pub(crate) fn take(
        py: Python<'_>,
        extra: &SocketExtra,
        sock: Option<&Py<PyAny>>,
        by_fd: bool,
        fd: std::os::fd::RawFd,
    ) -> Self {
        Self {
            fd,
            by_fd,
            peername: extra.peername.clone_ref(py),
            more: extra.more.as_ref().map(|d| d.clone_ref(py)),
            sock: sock.map(|s| s.clone_ref(py)),
            closed: extra.closed.as_ref().map(|s| s.clone_ref(py)),
        }
    }

    /// The answer for `name`, and, when it was made just now, the dictionary to keep (the
    /// transport's `more` if it had one, else a new one) for the transport to store.
    pub(crate) fn answer<'py>(
        self,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyDict>>)> {
        let py = name.py();
        if let Some(more) = &self.more {
            if let Some(v) = more.bind(py).get_item(name)? {
                return Ok((v, None));
            }
        }
        let default = || default.clone().unwrap_or_else(|| py.None().into_bound(py));
        let Ok(key) = name.cast::<pyo3::types::PyString>() else {
            return Ok((default(), None));
        };
        let made = match (key.to_str()?, &self.sock) {
            ("peername", _) => return Ok((self.peername.into_bound(py), None)),
            ("sockname", None) if self.by_fd => {
                crate::sock_ops::inet_sockname(py, self.fd).map_or_else(|| py.None().into_bound(py), Bound::into_any)
            }
            ("sockname", Some(sock)) => {
                let sock = sock.bind(py);
                // A plain IPv4 socket's address is read here: the socket module's costs about
                // ten times as much (inet_ntop, sprintf, the decoding of its text).
                let plain = crate::pyrefs::socket_type(py).is_ok_and(|t| sock.get_type().is(t));
                match plain.then(|| crate::sock_ops::inet_sockname(py, self.fd)).flatten() {
                    Some(address) => address.into_any(),
                    None => sock.call_method0(intern!(py, "getsockname")).unwrap_or_else(|_| py.None().into_bound(py)),
                }
            }
            ("socket", sock) => match sock.as_ref().or(self.closed.as_ref()) {
                Some(sock) => crate::pyrefs::transport_socket_type(py)?.call1((sock,))?,
                None => return Ok((default(), None)),
            },
            _ => return Ok((default(), None)),
        };
        let dict = match self.more {
            Some(d) => d.into_bound(py),
            None => PyDict::new(py),
        };
        dict.set_item(key, &made)?;
        Ok((made, Some(dict)))
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
    let trsock = crate::pyrefs::transport_socket_type(py)?.call1((sock,))?;
    extra.set_item("socket", trsock)?;
    extra.set_item("sockname", sock.call_method0(intern!(py, "getsockname")).ok())?;
    if !extra.contains("peername")? {
        extra.set_item("peername", sock.call_method0(intern!(py, "getpeername")).ok())?;
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
    context: Option<&Py<PyAny>>,
) -> PyResult<()> {
    let py = event_loop.py();
    let lp = event_loop.get();
    lp.call_soon_in(py, &protocol.getattr(intern!(py, "connection_made"))?, &PyTuple::new(py, [transport])?, context)?;
    lp.call_soon_in(py, &transport.getattr(intern!(py, "_start_reading"))?, &PyTuple::empty(py), context)?;
    if let Some(waiter) = waiter.filter(|w| !w.is_none()) {
        let set = crate::compat::set_result_unless_cancelled(py)?;
        lp.call_soon_in(py, set, &PyTuple::new(py, [waiter.clone(), py.None().into_bound(py)])?, context)?;
    }
    Ok(())
}

/// Every transport's classes and factory functions.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    stream::register(m)?;
    streams::register(m)?;
    datagram::register(m)?;
    tls::register(m)?;
    pipe::register(m)
}
