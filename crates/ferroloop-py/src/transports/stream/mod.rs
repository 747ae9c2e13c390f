//! `StreamTransport`: a connected stream socket (TCP or Unix), asyncio's
//! `_SelectorSocketTransport` in Rust.
//!
//! Lifecycle ([`State`]'s `life`, the transport core's `Lifecycle`):
//!
//! ```text
//! open ──close()──▶ closing ──buffer drained──▶ lost: connection_lost scheduled
//!   │                                                  ▲
//!   └──abort() / fatal error (buffer dropped) ─────────┘ ──▶ connection_lost(exc) runs:
//!                                                            socket closed, protocol dropped
//! ```
//!
//! Reading: the descriptor is watched for reading while the transport is open and not paused;
//! each readiness event does one `recv` of up to [`MAX_READ`](base::MAX_READ) bytes into a reused buffer and
//! passes a new `bytes` to `data_received` (or receives straight into the `BufferedProtocol`'s
//! buffer). Writing: `write()` first tries `send` at once; what is left is buffered, and the
//! descriptor is watched for writing until the buffer drains, each event flushing the whole
//! buffer with one `sendmsg`. Flow control calls `pause_writing` above the high watermark and
//! `resume_writing` at or below the low one.
//!
//! Files: this one has the transport's state, its lifecycle and the methods that are neither
//! direction's; `read` and `write` the two directions (the write side's Python methods too).
//! What every transport shares (`get_protocol`, the reading and write-buffer methods, ...) comes
//! from [`super::base`].

use std::os::fd::RawFd;
use std::sync::Arc;

use ferroloop_core::flow::{Lifecycle, WriteFlow};
use ferroloop_core::net;
use ferroloop_core::write_buffer::{Pushed, WriteBuffer};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBytes, PyDict};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::base::{
    self, control_flow, core_methods, read_methods, write_methods, Core, ReadSide, Readiness, Watch, WriteSide,
};
use super::{ExtraSnapshot, SocketExtra};
use crate::buffers::{Data, DataError, Export};
use crate::errors::{os_error, try_later};
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;
use crate::watch::IoWatcher;

mod read;
mod write;

/// The transport's socket: a Python object, or, for a server's accepted IPv4 connection, the
/// descriptor alone until somebody asks for the object (`_sock`, `get_extra_info("socket")`).
/// Made for every connection, the `socket.socket` and its closing cost about 6,500
/// instructions and a `getsockname` (callgrind, a connection per request).
enum Sock {
    /// Only the descriptor (`StreamTransport::fd`, which the transport owns); the object is
    /// made with this family, type and protocol on first need.
    Fd(SockKind),
    /// The socket object, which owns the descriptor.
    Object(Py<PyAny>),
    /// Closed, when `connection_lost` has run; with the kind of a socket that never had an
    /// object, for a `socket` answer asked for afterwards (a new socket of that kind, closed).
    Closed(Option<SockKind>),
}

/// A socket's family, type and protocol.
#[derive(Clone, Copy)]
struct SockKind(i32, i32, i32);

impl Sock {
    fn is_open(&self) -> bool {
        !matches!(self, Self::Closed(_))
    }
}

struct State {
    /// The socket; closed when `connection_lost` has run.
    sock: Sock,
    /// The protocol; dropped when `connection_lost` has run.
    protocol: Option<Py<PyAny>>,
    /// How reads reach the protocol.
    delivery: Delivery,
    /// `connection_lost` is owed to the protocol.
    protocol_connected: bool,
    /// `get_extra_info`'s answers.
    extra: SocketExtra,
    /// The `asyncio.Server` that accepted this connection, told when it ends.
    server: Option<Py<PyAny>>,
    /// Bytes accepted by `write()` and not yet sent.
    buffer: WriteBuffer,
    /// Open, closing (`close()`), or lost (`connection_lost` scheduled).
    life: Lifecycle,
    /// `write_eof()` was called.
    eof: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// The descriptor is watched for writing (the buffer is not empty).
    writing: bool,
    /// Write flow control: the watermarks, and whether the protocol is paused.
    flow: WriteFlow,
    /// A future resolved when the buffer drains (used by `loop.sendfile`).
    empty_waiter: Option<Py<PyAny>>,
}

#[pyclass(module = "ferroloop._ferroloop", frozen, weakref, dict)]
pub struct StreamTransport {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    /// The loop the transport belongs to.
    event_loop: Py<EventLoop>,
    /// The socket's descriptor (valid while `state.sock` is open).
    fd: RawFd,
    /// The `contextvars.Context` every callback of the transport runs in, when its maker gave
    /// one (asyncio 3.15's `context=`: a server's connection runs in a copy of the server's
    /// context). Without one, each callback runs in a copy of the context current when it was
    /// scheduled, as before 3.15.
    context: Option<Py<PyAny>>,
    /// Everything that changes.
    state: GilCell<State>,
    /// The loop's statistics for TCP or Unix transports.
    tally: super::Tally,
}

/// How received data reaches a protocol; decided when the protocol is set, not per read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// `data_received(bytes)`.
    Bytes,
    /// An `asyncio.BufferedProtocol`: reads go into its `get_buffer()`.
    Buffered,
    /// ferroloop's TLS layer: ciphertext is handed over without a Python call.
    Tls,
    /// asyncio's `StreamReaderProtocol`: offered to `streams::feed` first.
    Streams,
}

/// A protocol class written in Rust that takes received bytes without a Python call: the TLS
/// layer, which registers itself (`tls::register`), so that this module, below it, does not name
/// it.
pub(crate) struct NativeReceiver {
    /// The class, exactly (it is final).
    pub(crate) class: fn(Python<'_>) -> *mut pyo3::ffi::PyTypeObject,
    /// Its `data_received(data)`.
    pub(crate) data_received: fn(&Bound<'_, PyAny>, &Bound<'_, PyAny>) -> PyResult<()>,
}

static NATIVE_RECEIVER: std::sync::OnceLock<NativeReceiver> = std::sync::OnceLock::new();

pub(crate) fn set_native_receiver(receiver: NativeReceiver) {
    let _ = NATIVE_RECEIVER.set(receiver);
}

impl Delivery {
    fn of(protocol: &Bound<'_, PyAny>) -> PyResult<Self> {
        let native = NATIVE_RECEIVER
            .get()
            .is_some_and(|r| std::ptr::eq(protocol.get_type().as_type_ptr(), (r.class)(protocol.py())));
        Ok(if native {
            Self::Tls
        } else if super::streams::adopt_protocol(protocol)? {
            Self::Streams
        } else if is_buffered_protocol(protocol)? {
            Self::Buffered
        } else {
            Self::Bytes
        })
    }
}

/// `isinstance(protocol, asyncio.BufferedProtocol)`.
pub(crate) fn is_buffered_protocol(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    protocol.is_instance(crate::pyrefs::buffered_protocol_type(protocol.py())?)
}

impl Core for StreamTransport {
    fn loop_ref(&self) -> &Py<EventLoop> {
        &self.event_loop
    }

    fn context(&self) -> Option<&Py<PyAny>> {
        self.context.as_ref()
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn replace_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let delivery = Delivery::of(protocol)?;
        let mut st = self.state.borrow_mut(protocol.py());
        st.delivery = delivery;
        st.protocol_connected = true;
        Ok(st.protocol.replace(protocol.clone().unbind()))
    }

    fn closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).life.is_closing()
    }

    /// `get_extra_info(name, default)`, keeping what it had to make (see `SocketExtra`).
    fn extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.socket_extra_info(py, name, default)
    }
}

impl WriteSide for StreamTransport {
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut WriteFlow, usize) -> R) -> R {
        let mut st = self.state.borrow_mut(py);
        let size = st.buffer.len();
        f(&mut st.flow, size)
    }
}

impl ReadSide for StreamTransport {
    fn with_paused<R>(&self, py: Python<'_>, f: impl FnOnce(&mut bool, bool) -> R) -> R {
        let mut st = self.state.borrow_mut(py);
        let closing = st.life.is_closing();
        f(&mut st.paused, closing)
    }

    fn watch_reading(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        if on {
            Self::watch(slf, false)
        } else {
            slf.get().unwatch(slf.py(), false)
        }
    }

    /// A stock `StreamReaderProtocol`'s writer, made by its `connection_made`, gets ferroloop's
    /// `drain` (see `streams::adopt_writer`).
    fn on_start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let protocol = {
            let st = slf.get().state.borrow(py);
            match (st.delivery, &st.protocol) {
                (Delivery::Streams, Some(protocol)) => protocol.clone_ref(py),
                _ => return Ok(()),
            }
        };
        super::streams::adopt_writer(protocol.bind(py))
    }
}

impl Readiness for StreamTransport {
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::on_readable(slf)
    }

    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::on_writable(slf)
    }
}

core_methods!(StreamTransport, "StreamTransport");
read_methods!(StreamTransport);
write_methods!(StreamTransport);

impl StreamTransport {
    fn watch(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let watcher: Arc<dyn IoWatcher> = Arc::new(Watch(slf.clone().unbind()));
        this.event_loop(py).get().add_native(py, this.fd, watcher, write, this.context.as_ref())
    }

    fn unwatch(&self, py: Python<'_>, write: bool) -> PyResult<()> {
        self.event_loop(py).get().remove_native(py, self.fd, write)?;
        Ok(())
    }

    /// asyncio's `_fatal_error`.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        base::fatal_error(slf, err, message, Self::force_close)
    }

    /// asyncio's `_force_close`: drop the buffer, stop reading, schedule `connection_lost(exc)`.
    fn force_close(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (stop_writing, stop_reading) = {
            let mut st = this.state.borrow_mut(py);
            if st.life.is_lost() {
                return Ok(());
            }
            let stop_writing = !st.buffer.is_empty() || st.writing;
            st.buffer.clear();
            st.writing = false;
            let stop_reading = !st.life.is_closing();
            st.life.lose();
            (stop_writing, stop_reading)
        };
        if stop_writing {
            this.unwatch(py, true)?;
        }
        if stop_reading {
            this.unwatch(py, false)?;
        }
        base::schedule_connection_lost(slf, exc)
    }

    /// The socket object, made now when the transport had its descriptor alone (see [`Sock`]);
    /// for a socket closed without one, a new socket of its kind, closed, kept for `socket`.
    fn sock_object(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let (SockKind(family, kind, proto), open) = match &self.state.borrow(py).sock {
            Sock::Object(s) => return Ok(Some(s.clone_ref(py))),
            Sock::Closed(None) => return Ok(None),
            Sock::Closed(Some(kind)) => (*kind, false),
            Sock::Fd(kind) => (*kind, true),
        };
        let make = crate::pyrefs::socket_type(py)?;
        if !open {
            if let Some(closed) = self.state.borrow(py).extra.closed(py) {
                return Ok(Some(closed));
            }
            let sock = make.call1((family, kind, proto))?;
            sock.call_method0(intern!(py, "close"))?;
            let old = self.state.borrow_mut(py).extra.keep_closed(sock.clone().unbind());
            drop(old);
            return Ok(Some(sock.unbind()));
        }
        // Non-blocking already (accept4): SOCK_NONBLOCK in the type sets the object's timeout
        // to 0 without an ioctl.
        let kwargs = [(intern!(py, "fileno"), self.fd)].into_py_dict(py)?;
        let sock = make.call((family, kind | libc::SOCK_NONBLOCK, proto), Some(&kwargs))?;
        let mut st = self.state.borrow_mut(py);
        if matches!(st.sock, Sock::Fd(_)) {
            st.sock = Sock::Object(sock.clone().unbind());
            return Ok(Some(sock.unbind()));
        }
        drop(st);
        // Made meanwhile by the code the socket's constructor ran: this one lets go of the
        // descriptor, which that one owns.
        sock.call_method0(intern!(py, "detach"))?;
        self.sock_object(py)
    }

    /// `get_extra_info(name, default)`, keeping what it had to make (see `SocketExtra`).
    fn socket_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if name.eq(intern!(py, "socket"))? {
            self.sock_object(py)?;
        }
        let snapshot = {
            let st = self.state.borrow(py);
            let (object, by_fd) = match &st.sock {
                Sock::Object(s) => (Some(s), false),
                Sock::Fd(_) => (None, true),
                Sock::Closed(_) => (None, false),
            };
            ExtraSnapshot::take(py, &st.extra, object, by_fd, self.fd)
        };
        let (answer, keep) = snapshot.answer(name, default)?;
        if let Some(dict) = keep {
            let old = self.state.borrow_mut(py).extra.keep(dict.unbind());
            drop(old);
        }
        Ok(answer)
    }
}

#[pymethods]
impl StreamTransport {
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lost_now = {
            let mut st = this.state.borrow_mut(py);
            if !st.life.close() {
                return Ok(());
            }
            let empty = st.buffer.is_empty();
            if empty {
                st.life.lose();
                st.writing = false;
            }
            empty
        };
        this.unwatch(py, false)?;
        if lost_now {
            this.unwatch(py, true)?;
            base::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    /// Closes at once with `exc` for `connection_lost` (asyncio's private API, used by sslproto).
    #[pyo3(name = "_force_close")]
    fn force_close_py(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        Self::force_close(slf, exc.as_ref().filter(|e| !e.is_none()))
    }

    /// Tells the protocol the connection is lost, then releases the socket.
    #[pyo3(signature = (exc))]
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, connected) = {
            let st = this.state.borrow(py);
            (st.protocol.as_ref().map(|p| p.clone_ref(py)), st.protocol_connected)
        };
        let result = match (&protocol, connected) {
            (Some(p), true) => p.bind(py).call_method1(intern!(py, "connection_lost"), (exc,)).map(drop),
            _ => Ok(()),
        };
        if this.state.borrow(py).sock.is_open() {
            // What get_extra_info answers from the socket must outlive it, as with asyncio.
            this.socket_extra_info(py, intern!(py, "sockname"), None)?;
        }
        let (sock, protocol, server, waiter) = {
            let mut st = this.state.borrow_mut(py);
            let closed = match &st.sock {
                Sock::Fd(kind) => Sock::Closed(Some(*kind)),
                _ => Sock::Closed(None),
            };
            (std::mem::replace(&mut st.sock, closed), st.protocol.take(), st.server.take(), st.empty_waiter.take())
        };
        match sock {
            Sock::Object(sock) => {
                // The socket object, for a `socket` wrapper made if asked later.
                let old = this.state.borrow_mut(py).extra.keep_closed(sock.clone_ref(py));
                drop(old);
                this.tally.closed();
                sock.bind(py).call_method0(intern!(py, "close"))?;
            }
            Sock::Fd(_) => {
                this.tally.closed();
                // SAFETY: the transport owns the descriptor and, its state closed, never uses
                // it again.
                unsafe { libc::close(this.fd) };
            }
            Sock::Closed(_) => {}
        }
        drop(protocol);
        if let Some(server) = server {
            if crate::compat::server_attach_takes_transport(py) {
                server.bind(py).call_method1(intern!(py, "_detach"), (slf,))?;
            } else {
                server.bind(py).call_method0(intern!(py, "_detach"))?;
            }
        }
        if let Some(w) = waiter {
            let err = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            w.bind(py).call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
        }
        result
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.sock_object(py)
    }

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }

    /// `loop.start_tls` may wrap this transport.
    #[getter]
    fn _start_tls_compatible(&self) -> bool {
        true
    }

    /// asyncio's `loop.sendfile` may use `os.sendfile` on this transport's socket.
    #[getter]
    fn _sendfile_compatible<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::compat::sendfile_try_native(py).cloned()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let st = self.state.borrow(py);
        let mut info = vec!["StreamTransport".to_owned()];
        if !st.sock.is_open() {
            info.push("closed".into());
        } else if st.life.is_closing() {
            info.push("closing".into());
        }
        info.push(format!("fd={}", self.fd));
        if st.sock.is_open() && !self.event_loop.get().closed() {
            info.push(format!("read={}", if st.life.is_closing() || st.paused { "idle" } else { "polling" }));
            let state = if st.writing { "polling" } else { "idle" };
            info.push(format!("write=<{state}, bufsize={}>", st.buffer.len()));
        }
        format!("<{}>", info.join(" "))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.context)?;
        if let Some(st) = self.state.try_borrow() {
            if let Sock::Object(sock) = &st.sock {
                visit.call(sock)?;
            }
            visit.call(&st.protocol)?;
            st.extra.traverse(&visit)?;
            visit.call(&st.server)?;
            visit.call(&st.empty_waiter)?;
        }
        Ok(())
    }

    /// Breaks the cycles through the transport (with its protocol, say a TLS protocol). The
    /// socket is kept: dropping an open transport warns, and the socket object closes itself.
    fn __clear__(&self) {
        let taken =
            self.state.try_borrow_mut().map(|mut st| (st.protocol.take(), st.server.take(), st.empty_waiter.take()));
        drop(taken);
    }
}

impl Drop for StreamTransport {
    fn drop(&mut self) {
        let sock = &self.state.get_mut().sock;
        if !sock.is_open() {
            return;
        }
        let fd_only = matches!(sock, Sock::Fd(_));
        Python::attach(|py| super::warn_unclosed(py, "StreamTransport", self.fd));
        if fd_only {
            // SAFETY: the transport owns the descriptor (no socket object was made for it).
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Creates a transport for the connected socket `sock` and schedules, in order,
/// `protocol.connection_made(transport)`, the start of reading, and `waiter`'s result.
#[pyfunction]
#[pyo3(signature = (event_loop, sock, protocol, waiter=None, extra=None, server=None, context=None))]
#[allow(clippy::too_many_arguments)]
pub fn make_stream_transport<'py>(
    event_loop: &Bound<'py, EventLoop>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<&Bound<'py, PyAny>>,
    extra: Option<&Bound<'py, PyDict>>,
    server: Option<&Bound<'py, PyAny>>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, StreamTransport>> {
    let py = event_loop.py();
    let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    let extra = SocketExtra::new(sock, extra)?;
    let sock = Sock::Object(sock.clone().unbind());
    let context = context.filter(|c| !c.is_none());
    let delivery = Delivery::of(protocol)?;
    let transport = new_transport(event_loop, fd, sock, protocol, delivery, extra, server, context)?;
    start(event_loop, &transport, protocol, waiter, server)?;
    Ok(transport)
}

/// A server's accepted IPv4 connection (`serve_inet`): a transport for the descriptor `fd`
/// (non-blocking, of the listener's `kind` and `proto`), which it owns from now on, with no
/// socket object until one is asked for (see [`Sock`]); `TCP_NODELAY` set when `nodelay`.
/// Schedules what `make_stream_transport` schedules.
#[allow(clippy::too_many_arguments)]
fn accepted_transport<'py>(
    event_loop: &Bound<'py, EventLoop>,
    fd: RawFd,
    kind: i32,
    proto: i32,
    nodelay: bool,
    protocol: &Bound<'py, PyAny>,
    peername: &Bound<'py, PyAny>,
    server: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, StreamTransport>> {
    let fail = |err: PyErr| {
        // SAFETY: the caller gave the descriptor to this function, and no transport has it.
        unsafe { libc::close(fd) };
        err
    };
    if nodelay {
        net::set_nodelay(fd).map_err(|e| fail(crate::errors::os_error(&e)))?;
    }
    let delivery = Delivery::of(protocol).map_err(fail)?;
    let extra = SocketExtra::with_peername(peername);
    let sock = Sock::Fd(SockKind(libc::AF_INET, kind, proto));
    // From here the transport owns the descriptor (and closes it when dropped unclosed, also
    // when it could not be allocated).
    let transport = new_transport(event_loop, fd, sock, protocol, delivery, extra, server, None)?;
    start(event_loop, &transport, protocol, None, server)?;
    Ok(transport)
}

/// A plain IPv4 server's listener `fd` is ready: `_start_serving` (`_network.py`) registers
/// this as its reader when nothing about the server needs asyncio's general path (no TLS, no
/// context of its own, a `socket.socket` listener, the loop's own transports). Accepts up to
/// `backlog` connections, as asyncio's `_accept_connection` does, each made a transport
/// (`accepted_transport`) for the protocol `serving.protocol_factory` makes; no Python frame of
/// its own. In debug mode, which may be turned on while serving, the loop's general
/// `_accept_connection` runs instead (it logs each connection). Failures go to the general
/// path's helpers: `_accept_failed` (out of descriptors: accepting pauses), `_factory_failed`.
#[pyfunction]
#[pyo3(name = "_serve_inet")]
#[allow(clippy::too_many_arguments)]
pub fn serve_inet(
    event_loop: &Bound<'_, EventLoop>,
    serving: &Bound<'_, PyAny>,
    fd: RawFd,
    kind: i32,
    proto: i32,
    nodelay: bool,
    backlog: usize,
) -> PyResult<()> {
    let py = event_loop.py();
    if event_loop.get().debug() {
        event_loop.call_method1(intern!(py, "_accept_connection"), (serving,))?;
        return Ok(());
    }
    let factory = serving.getattr(intern!(py, "protocol_factory"))?;
    let server = serving.getattr(intern!(py, "server"))?;
    for _ in 0..backlog {
        let (conn, peer) = match crate::sock_ops::accept_inet_conn(py, fd) {
            Ok(Some(accepted)) => accepted,
            Ok(None) => return Ok(()),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyConnectionAbortedError>(py) => return Ok(()),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
                event_loop.call_method1(intern!(py, "_accept_failed"), (serving, e.into_value(py)))?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let protocol = match factory.call0() {
            Ok(protocol) => protocol,
            Err(e) => {
                if crate::errors::is_exit(py, &e) {
                    // SAFETY: the descriptor just accepted, owned by nothing else.
                    unsafe { libc::close(conn) };
                    return Err(e);
                }
                event_loop.call_method1(intern!(py, "_factory_failed"), (conn, e.into_value(py)))?;
                continue;
            }
        };
        accepted_transport(event_loop, conn, kind, proto, nodelay, &protocol, peer.as_any(), Some(&server))?;
    }
    Ok(())
}

/// The transport of `fd` (see `make_stream_transport`); it cannot fail but for its
/// allocation, which drops (and so closes) `sock`.
#[allow(clippy::too_many_arguments)]
fn new_transport<'py>(
    event_loop: &Bound<'py, EventLoop>,
    fd: RawFd,
    sock: Sock,
    protocol: &Bound<'py, PyAny>,
    delivery: Delivery,
    extra: SocketExtra,
    server: Option<&Bound<'py, PyAny>>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, StreamTransport>> {
    let py = event_loop.py();
    let tally = super::Tally::new(event_loop.get(), extra.kind(py, fd));
    let state = State {
        sock,
        protocol: Some(protocol.clone().unbind()),
        delivery,
        protocol_connected: true,
        extra,
        server: server.filter(|s| !s.is_none()).map(|s| s.clone().unbind()),
        buffer: WriteBuffer::new(),
        life: Lifecycle::Open,
        eof: false,
        paused: false,
        writing: false,
        flow: WriteFlow::default(),
        empty_waiter: None,
    };
    super::new_transport(
        py,
        StreamTransport {
            _live: crate::live::Token::new(crate::live::Kind::StreamTransport),
            event_loop: event_loop.clone().unbind(),
            fd,
            context: context.map(|c| c.clone().unbind()),
            state: GilCell::new(state),
            tally,
        },
    )
}

/// Tells `server` of the new transport, and schedules its start (see `make_stream_transport`).
fn start<'py>(
    event_loop: &Bound<'py, EventLoop>,
    transport: &Bound<'py, StreamTransport>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<&Bound<'py, PyAny>>,
    server: Option<&Bound<'py, PyAny>>,
) -> PyResult<()> {
    let py = event_loop.py();
    if let Some(server) = server.filter(|s| !s.is_none()) {
        if crate::compat::server_attach_takes_transport(py) {
            server.call_method1(intern!(py, "_attach"), (transport,))?;
        } else {
            server.call_method0(intern!(py, "_attach"))?;
        }
    }
    super::schedule_start(event_loop, protocol, transport.as_any(), waiter, transport.get().context.as_ref())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StreamTransport>()?;
    m.add_function(wrap_pyfunction!(make_stream_transport, m)?)?;
    m.add_function(wrap_pyfunction!(serve_inet, m)?)
}
