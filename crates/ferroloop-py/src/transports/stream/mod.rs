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
use pyo3::types::{PyBytes, PyDict};
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

struct State {
    /// The Python socket; closed and dropped when `connection_lost` has run.
    sock: Option<Py<PyAny>>,
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
    /// The socket's descriptor (valid while `state.sock` is `Some`).
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
        self.socket_extra_info(py, name, default, None)
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

    /// `get_extra_info(name, default)`, keeping what it had to make (see `SocketExtra`); `sock`
    /// stands in for the socket once the state no longer holds it (while it is being closed).
    fn socket_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        sock: Option<&Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let snapshot = {
            let st = self.state.borrow(py);
            ExtraSnapshot::take(py, &st.extra, sock.or(st.sock.as_ref()), self.fd)
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
        let (sock, protocol, server, waiter) = {
            let mut st = this.state.borrow_mut(py);
            (st.sock.take(), st.protocol.take(), st.server.take(), st.empty_waiter.take())
        };
        if let Some(sock) = sock {
            // What get_extra_info answers from the socket must outlive it, as with asyncio: its
            // address now, and the socket object for a `socket` wrapper made if asked.
            this.socket_extra_info(py, intern!(py, "sockname"), None, Some(&sock))?;
            let old = this.state.borrow_mut(py).extra.keep_closed(sock.clone_ref(py));
            drop(old);
            this.tally.closed();
            sock.bind(py).call_method0(intern!(py, "close"))?;
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
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).sock.as_ref().map(|s| s.clone_ref(py))
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
        if st.sock.is_none() {
            info.push("closed".into());
        } else if st.life.is_closing() {
            info.push("closing".into());
        }
        info.push(format!("fd={}", self.fd));
        if st.sock.is_some() && !self.event_loop.get().closed() {
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
            visit.call(&st.sock)?;
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
        if self.state.get_mut().sock.is_none() {
            return;
        }
        Python::attach(|py| super::warn_unclosed(py, "StreamTransport", self.fd));
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
    let tally = super::Tally::new(event_loop.get(), extra.kind(py, fd));
    let state = State {
        sock: Some(sock.clone().unbind()),
        protocol: Some(protocol.clone().unbind()),
        delivery: Delivery::of(protocol)?,
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
    let transport = super::new_transport(
        py,
        StreamTransport {
            _live: crate::live::Token::new(crate::live::Kind::StreamTransport),
            event_loop: event_loop.clone().unbind(),
            fd,
            context: context.filter(|c| !c.is_none()).map(|c| c.clone().unbind()),
            state: GilCell::new(state),
            tally,
        },
    )?;
    if let Some(server) = server.filter(|s| !s.is_none()) {
        if crate::compat::server_attach_takes_transport(py) {
            server.call_method1(intern!(py, "_attach"), (&transport,))?;
        } else {
            server.call_method0(intern!(py, "_attach"))?;
        }
    }
    super::schedule_start(event_loop, protocol, transport.as_any(), waiter, transport.get().context.as_ref())?;
    Ok(transport)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StreamTransport>()?;
    m.add_function(wrap_pyfunction!(make_stream_transport, m)?)
}
