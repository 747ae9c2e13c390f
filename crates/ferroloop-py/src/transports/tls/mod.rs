//! TLS over any ferroloop stream transport: a Rust state machine driving Python's
//! `ssl.SSLObject` through two `ssl.MemoryBIO`s, so every `ssl.SSLContext` a user builds
//! behaves exactly as with stdlib.
//!
//! Two objects, as in asyncio: [`TlsProtocol`] is the protocol of the raw transport (it receives
//! ciphertext and writes ciphertext), and [`TlsTransport`] is what the application protocol sees
//! (it takes and gives plaintext). The application gets `connection_made` once the handshake is
//! done, and `connection_lost` once the raw connection is gone.
//!
//! TLS states (`Tls`), with every allowed transition:
//!
//! ```text
//! Unwrapped ──connection_made──▶ Handshake ──done──▶ Wrapped ──close() / peer EOF──▶ Flushing
//!     ▲                              │                                                  │
//!     │ (any state, on error, abort or connection_lost)                    read what is left
//!     └──────────────────────────────┴──────────────── Shutdown ◀───────────────────────┘
//!                                        unwrap() exchanges close_notify, then the raw
//!                                        transport is closed
//! ```
//!
//! Application states (`App`): `Init ──connection_made──▶ Made ──eof_received──▶ Eof`, and
//! `Lost` once `connection_lost` was scheduled; each callback is delivered at most once.
//!
//! Batching: each raw read feeds the incoming BIO once, then decrypts everything available in a
//! loop and hands the application one `data_received` call; each application write encrypts the
//! whole backlog and sends all pending ciphertext in one raw `write`. Flow control: the raw
//! transport is paused while undecrypted input exceeds the read high-water mark, and the
//! application is paused while unsent ciphertext plus unencrypted backlog exceeds the write
//! high-water mark (asyncio's defaults: 256 KiB and 512 KiB).
//!
//! Files: this one has the protocol's state, its transitions and its Python-visible methods as a
//! protocol; `handshake` (with `make_tls_protocol`, which starts a connection), `read`, `write`
//! and `shutdown` the stages of a connection, each with the timeouts and methods of its own;
//! `transport` the application's side.

use std::collections::VecDeque;

use ferroloop_core::flow::{WriteFlow, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::errors::is_exit;
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;

mod handshake;
mod read;
mod shutdown;
mod transport;
mod write;
pub use handshake::make_tls_protocol;
pub use transport::TlsTransport;

// Most plaintext one `SSLObject.read` call returns: asyncio's `max_size`, as for raw reads.
use crate::transports::base::MAX_READ;
/// asyncio's `FLOW_CONTROL_HIGH_WATER_SSL_READ` and `..._WRITE`, in KiB.
const HIGH_WATER_READ_KIB: usize = 256;
const HIGH_WATER_WRITE_KIB: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tls {
    Unwrapped,
    Handshake,
    Wrapped,
    Flushing,
    Shutdown,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum App {
    Init,
    Made,
    Eof,
    Lost,
}

/// Python objects of the `ssl` module, imported once.
struct SslTypes {
    memory_bio: Py<PyType>,
    ssl_object: Py<PyType>,
    want_read: Py<PyType>,
    want_write: Py<PyType>,
    ssl_error: Py<PyType>,
    certificate_error: Py<PyType>,
}

fn ssl_types(py: Python<'_>) -> PyResult<&SslTypes> {
    static CELL: PyOnceLock<SslTypes> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        let ssl = py.import("ssl")?;
        let get = |name: &str| -> PyResult<Py<PyType>> { Ok(ssl.getattr(name)?.cast_into::<PyType>()?.unbind()) };
        Ok(SslTypes {
            memory_bio: get("MemoryBIO")?,
            ssl_object: get("SSLObject")?,
            want_read: get("SSLWantReadError")?,
            want_write: get("SSLWantWriteError")?,
            ssl_error: get("SSLError")?,
            certificate_error: get("CertificateError")?,
        })
    })
}

/// `SSLWantReadError` or `SSLWantWriteError`: the TLS engine needs more I/O first.
fn is_again(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    let t = ssl_types(py)?;
    Ok(err.is_instance(py, t.want_read.bind(py)) || err.is_instance(py, t.want_write.bind(py)))
}

thread_local! {
    /// Each thread's buffer that `SSLObject.read` decrypts into before the plaintext is copied
    /// into a `bytes` of the right size (reading into a fresh 256 KiB `bytes` costs far more).
    /// Per thread, because `SSLObject.read` releases the GIL while it decrypts.
    static READ_BUFFER: std::cell::RefCell<Option<Py<PyByteArray>>> = const { std::cell::RefCell::new(None) };
}

fn read_buffer(py: Python<'_>) -> PyResult<Bound<'_, PyByteArray>> {
    READ_BUFFER.with(|cell| {
        if let Some(b) = cell.borrow().as_ref() {
            return Ok(b.bind(py).clone());
        }
        let b = PyByteArray::new(py, &vec![0u8; MAX_READ]);
        *cell.borrow_mut() = Some(b.clone().unbind());
        Ok(b)
    })
}

struct State {
    tls: Tls,
    app: App,
    /// The application protocol; dropped after `connection_lost`.
    app_protocol: Option<Py<PyAny>>,
    /// The application protocol is an `asyncio.BufferedProtocol`.
    app_buffered: bool,
    /// The raw transport (set by `connection_made`, dropped by `connection_lost`).
    transport: Option<Py<PyAny>>,
    /// The application-facing transport (dropped by `connection_lost`).
    app_transport: Option<Py<TlsTransport>>,
    /// The application transport was closed (`close()`/`abort()`/connection lost).
    app_closed: bool,
    /// Future resolved when the handshake ends (None once resolved).
    waiter: Option<Py<PyAny>>,
    /// `get_extra_info` answers: `sslcontext`, then after the handshake `peercert`, `cipher`,
    /// `compression`, `ssl_object`.
    extra: Py<PyDict>,
    /// Plaintext the application wrote that is not encrypted yet.
    backlog: VecDeque<Py<PyAny>>,
    /// Its total size.
    backlog_bytes: usize,
    conn_lost: u32,
    eof_received: bool,
    /// The raw transport asked us to stop writing (its buffer is full).
    ssl_writing_paused: bool,
    /// The engine read since `process_outgoing` last looked at the outgoing BIO, so there may be
    /// ciphertext to send (when the application writes as it receives, there is no need to look
    /// again).
    read_since_outgoing: bool,
    /// The application paused reading.
    app_reading_paused: bool,
    /// Flow control of the raw transport's reading, over undecrypted input (paused: we paused it).
    ssl_reading: WriteFlow,
    /// Flow control of the application's writing, over the write backlog.
    app_writing: WriteFlow,
    handshake_timer: Option<Py<PyAny>>,
    shutdown_timer: Option<Py<PyAny>>,
    handshake_started: f64,
}

/// The callables used for every record, resolved once per connection: calling a cached bound
/// method skips the attribute lookup that `call_method` pays on each call.
///
/// The TLS object's methods are those of the C object an exact `ssl.SSLObject` wraps
/// (`_ssl._SSLSocket`, its `_sslobj`): `SSLObject.read(len, buffer)`, `write(data)` and
/// `pending()` only forward their arguments to the same method of that object (Lib/ssl.py, 3.11 to
/// 3.13), so results and exceptions are the same, less one Python frame per call. A subclass (set
/// as `SSLContext.sslobject_class`) may override them, so its own methods are called.
struct RecordCalls {
    /// `read(len, buffer)` of the TLS engine.
    read: Py<PyAny>,
    /// `write(data)` of the TLS engine.
    write: Py<PyAny>,
    /// `pending()` of the TLS engine: decrypted bytes not read yet.
    pending: Py<PyAny>,
    /// The engine is the C object.
    direct: bool,
    /// `write(data)` of the incoming BIO.
    incoming_write: Py<PyAny>,
    /// `read()` of the outgoing BIO.
    outgoing_read: Py<PyAny>,
}

impl RecordCalls {
    fn new(sslobj: &Bound<'_, PyAny>, incoming: &Bound<'_, PyAny>, outgoing: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = sslobj.py();
        let direct = sslobj.get_type().is(ssl_types(py)?.ssl_object.bind(py));
        let engine = if direct { sslobj.getattr(intern!(py, "_sslobj"))? } else { sslobj.clone() };
        Ok(Self {
            read: engine.getattr(intern!(py, "read"))?.unbind(),
            write: engine.getattr(intern!(py, "write"))?.unbind(),
            pending: engine.getattr(intern!(py, "pending"))?.unbind(),
            direct,
            incoming_write: incoming.getattr(intern!(py, "write"))?.unbind(),
            outgoing_read: outgoing.getattr(intern!(py, "read"))?.unbind(),
        })
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.read)?;
        visit.call(&self.write)?;
        visit.call(&self.pending)?;
        visit.call(&self.incoming_write)?;
        visit.call(&self.outgoing_read)
    }
}

#[pyclass(module = "ferroloop._ferroloop", name = "SSLProtocol", frozen, weakref)]
pub struct TlsProtocol {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    event_loop: Py<EventLoop>,
    /// `ssl.SSLObject` bound to the two BIOs.
    sslobj: Py<PyAny>,
    /// Ciphertext from the peer, not yet decrypted.
    incoming: Py<PyAny>,
    /// Ciphertext produced, not yet written to the raw transport.
    outgoing: Py<PyAny>,
    calls: RecordCalls,
    handshake_timeout: f64,
    shutdown_timeout: f64,
    state: GilCell<State>,
    /// The loop's statistics for TLS transports (plaintext bytes).
    tally: crate::transports::Tally,
}

fn call_later(lp: &Bound<'_, EventLoop>, delay: f64, cb: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    Ok(lp.call_method1(intern!(lp.py(), "call_later"), (delay, cb))?.unbind())
}

impl TlsProtocol {
    fn lp<'py>(&self, py: Python<'py>) -> &Bound<'py, EventLoop> {
        self.event_loop.bind(py)
    }

    fn tls(&self, py: Python<'_>) -> Tls {
        self.state.borrow(py).tls
    }

    fn set_tls(&self, py: Python<'_>, to: Tls) -> PyResult<()> {
        let mut st = self.state.borrow_mut(py);
        let allowed = matches!(
            (st.tls, to),
            (_, Tls::Unwrapped)
                | (Tls::Unwrapped, Tls::Handshake)
                | (Tls::Handshake, Tls::Wrapped)
                | (Tls::Wrapped, Tls::Flushing)
                | (Tls::Flushing, Tls::Shutdown)
        );
        if !allowed {
            return Err(PyRuntimeError::new_err(format!("cannot switch state from {:?} to {to:?}", st.tls)));
        }
        st.tls = to;
        Ok(())
    }

    fn app_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).app_protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).transport.as_ref().map(|t| t.clone_ref(py))
    }

    fn wakeup_waiter(&self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let Some(waiter) = self.state.borrow_mut(py).waiter.take() else { return Ok(()) };
        let waiter = waiter.into_bound(py);
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            match exc {
                Some(e) => waiter.call_method1(intern!(py, "set_exception"), (e,))?,
                None => waiter.call_method1(intern!(py, "set_result"), (py.None(),))?,
            };
        }
        Ok(())
    }

    /// asyncio's `_fatal_error`: force-close the raw transport, then report.
    fn fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let transport = this.transport(py);
        if let Some(t) = &transport {
            t.bind(py).call_method1(intern!(py, "_force_close"), (exc,))?;
        }
        if exc.is_instance_of::<pyo3::exceptions::PyOSError>() {
            if this.lp(py).get().debug() {
                crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r: %s", slf, message))?;
            }
        } else if !exc.is_instance(&py.import("asyncio")?.getattr("CancelledError")?)? {
            let transport = transport.as_ref().map(|t| t.bind(py));
            let entries = [("transport", transport), ("protocol", Some(slf.as_any()))];
            crate::event_loop::report_exception(this.lp(py), message, exc, &entries)?;
        }
        Ok(())
    }

    /// Runs `f`; an exception other than KeyboardInterrupt/SystemExit becomes a fatal error.
    fn guarded(slf: &Bound<'_, Self>, message: &str, f: impl FnOnce() -> PyResult<()>) -> PyResult<()> {
        match f() {
            Ok(()) => Ok(()),
            Err(e) if is_exit(slf.py(), &e) => Err(e),
            Err(e) => Self::fatal_error(slf, e.value(slf.py()).as_any(), message),
        }
    }

    fn cancel_timer(py: Python<'_>, timer: Option<Py<PyAny>>) -> PyResult<()> {
        if let Some(t) = timer {
            t.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }
}

#[pymethods]
impl TlsProtocol {
    // The raw transport's side: asyncio's Protocol interface.

    fn connection_made(slf: &Bound<'_, Self>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let old = slf.get().state.borrow_mut(slf.py()).transport.replace(transport.clone().unbind());
        drop(old);
        Self::start_handshake(slf)
    }

    fn connection_lost(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.tally.closed();
        this.outgoing.bind(py).call_method0(intern!(py, "read"))?;
        let (backlog, notify, app, transport, app_transport, hs, sd) = {
            let mut st = this.state.borrow_mut(py);
            st.backlog_bytes = 0;
            st.conn_lost += 1;
            st.app_closed = true;
            let notify = st.tls != Tls::Handshake && matches!(st.app, App::Made | App::Eof);
            if notify {
                st.app = App::Lost;
            }
            st.tls = Tls::Unwrapped;
            (
                std::mem::take(&mut st.backlog),
                notify,
                st.app_protocol.take(),
                st.transport.take(),
                st.app_transport.take(),
                st.handshake_timer.take(),
                st.shutdown_timer.take(),
            )
        };
        drop((backlog, transport, app_transport));
        let exc_obj = exc.clone().unwrap_or_else(|| py.None().into_bound(py));
        if let (true, Some(app)) = (notify, &app) {
            let cb = app.bind(py).getattr(intern!(py, "connection_lost"))?;
            this.lp(py).get().call_soon_native(py, &cb, &PyTuple::new(py, [&exc_obj])?)?;
        }
        drop(app);
        this.wakeup_waiter(py, exc.as_ref())?;
        Self::cancel_timer(py, sd)?;
        Self::cancel_timer(py, hs)
    }

    pub(crate) fn data_received(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        slf.get().calls.incoming_write.bind(py).call1((data,))?;
        match slf.get().tls(py) {
            Tls::Handshake => Self::do_handshake(slf),
            Tls::Wrapped => Self::do_read(slf),
            Tls::Flushing => Self::do_flush(slf),
            Tls::Shutdown => Self::do_shutdown(slf),
            Tls::Unwrapped => Ok(()),
        }
    }

    fn eof_received(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        this.state.borrow_mut(py).eof_received = true;
        if this.lp(py).get().debug() {
            crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r received EOF", slf))?;
        }
        let result = (|| -> PyResult<bool> {
            match this.tls(py) {
                Tls::Handshake => {
                    let exc =
                        pyo3::exceptions::PyConnectionResetError::new_err(()).into_value(py).into_bound(py).into_any();
                    Self::on_handshake_complete(slf, Some(exc))?;
                }
                Tls::Wrapped => {
                    this.set_tls(py, Tls::Flushing)?;
                    if this.state.borrow(py).app_reading_paused {
                        return Ok(true);
                    }
                    Self::do_flush(slf)?;
                }
                Tls::Flushing => {
                    Self::do_write(slf)?;
                    this.set_tls(py, Tls::Shutdown)?;
                    Self::do_shutdown(slf)?;
                }
                Tls::Shutdown => Self::do_shutdown(slf)?,
                Tls::Unwrapped => {}
            }
            Ok(false)
        })();
        if result.is_err() {
            if let Some(t) = this.transport(py) {
                t.bind(py).call_method0(intern!(py, "close"))?;
            }
        }
        result
    }

    fn pause_writing(&self, py: Python<'_>) {
        self.state.borrow_mut(py).ssl_writing_paused = true;
    }

    fn resume_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().state.borrow_mut(slf.py()).ssl_writing_paused = false;
        Self::process_outgoing(slf)
    }

    /// Reads again (scheduled when the application's buffer filled up, or on resume_reading).
    fn _do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)
    }

    /// Continues whatever reading was paused, after the application resumes reading.
    fn _resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        match slf.get().tls(slf.py()) {
            Tls::Wrapped => Self::do_read(slf),
            Tls::Flushing => Self::do_flush(slf),
            Tls::Shutdown => Self::do_shutdown(slf),
            _ => Ok(()),
        }
    }

    #[getter]
    fn _app_transport(&self, py: Python<'_>) -> Option<Py<TlsTransport>> {
        self.state.borrow(py).app_transport.as_ref().map(|t| t.clone_ref(py))
    }

    /// The incoming (ciphertext) BIO: asyncio's `SSLProtocol._incoming`, where `start_tls` puts
    /// what a server's stream reader had already read of the handshake.
    #[getter]
    fn _incoming(&self, py: Python<'_>) -> Py<PyAny> {
        self.incoming.clone_ref(py)
    }

    /// The raw transport: asyncio's `SSLProtocol._transport` (CPython's tests reach it).
    #[getter]
    fn _transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).transport.as_ref().map(|t| t.clone_ref(py))
    }

    /// Whether the application paused reading: asyncio's `SSLProtocol._app_reading_paused`.
    #[getter]
    fn _app_reading_paused(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).app_reading_paused
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("<SSLProtocol state={:?}>", self.tls(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.sslobj)?;
        visit.call(&self.incoming)?;
        visit.call(&self.outgoing)?;
        self.calls.traverse(&visit)?;
        if let Some(st) = self.state.try_borrow() {
            visit.call(&st.app_protocol)?;
            visit.call(&st.transport)?;
            visit.call(&st.app_transport)?;
            visit.call(&st.waiter)?;
            visit.call(&st.extra)?;
            visit.call(&st.handshake_timer)?;
            visit.call(&st.shutdown_timer)?;
            for b in &st.backlog {
                visit.call(b)?;
            }
        }
        Ok(())
    }

    /// Breaks the cycles through the protocol: with its application transport, its raw
    /// transport and the application protocol (a connection whose setup failed leaves them).
    fn __clear__(&self) {
        let taken = self.state.try_borrow_mut().map(|mut st| {
            (
                st.app_protocol.take(),
                st.transport.take(),
                st.app_transport.take(),
                st.waiter.take(),
                st.handshake_timer.take(),
                st.shutdown_timer.take(),
                std::mem::take(&mut st.backlog),
            )
        });
        drop(taken);
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    super::stream::set_native_receiver(super::stream::NativeReceiver {
        class: |py| <TlsProtocol as pyo3::PyTypeInfo>::type_object_raw(py),
        data_received: |protocol, data| match protocol.cast::<TlsProtocol>() {
            Ok(tls) => TlsProtocol::data_received(tls, data),
            Err(_) => protocol.call_method1(intern!(protocol.py(), "data_received"), (data,)).map(drop),
        },
    });
    m.add_class::<TlsProtocol>()?;
    m.add_class::<TlsTransport>()?;
    m.add_function(wrap_pyfunction!(make_tls_protocol, m)?)
}
