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

use std::collections::VecDeque;

use ferroloop_core::flow::{WriteFlow, LOG_THRESHOLD_FOR_CONNLOST_WRITES};
use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::errors::is_exit;
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;

/// Most plaintext one `SSLObject.read` call returns (asyncio's `max_size`).
const MAX_READ: usize = 256 * 1024;
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

fn marker_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CELL.import(py, "ferroloop._transports", "SSLTransport")
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
}

/// The application-facing transport (named like asyncio's, which code may look for).
#[pyclass(module = "ferroloop._ferroloop", name = "SSLTransport", frozen, weakref, dict)]
pub struct TlsTransport {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    /// The TLS protocol; released when `close()` is called on a closed transport.
    protocol: GilCell<Option<Py<TlsProtocol>>>,
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

    fn start_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let debug = this.lp(py).get().debug();
        if debug {
            crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r starts SSL handshake", slf))?;
        }
        this.set_tls(py, Tls::Handshake)?;
        let timer = call_later(this.lp(py), this.handshake_timeout, slf.getattr("_check_handshake_timeout")?)?;
        {
            let mut st = this.state.borrow_mut(py);
            st.handshake_started = if debug { ferroloop_core::clock::monotonic() } else { 0.0 };
            st.handshake_timer = Some(timer);
        }
        Self::do_handshake(slf)
    }

    fn do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        match slf.get().sslobj.bind(py).call_method0(intern!(py, "do_handshake")) {
            Ok(_) => Self::on_handshake_complete(slf, None),
            Err(e) if is_again(py, &e)? => Self::process_outgoing(slf),
            Err(e) if e.is_instance(py, ssl_types(py)?.ssl_error.bind(py)) => {
                Self::on_handshake_complete(slf, Some(e.into_value(py).into_bound(py).into_any()))
            }
            Err(e) => Err(e),
        }
    }

    fn cancel_timer(py: Python<'_>, timer: Option<Py<PyAny>>) -> PyResult<()> {
        if let Some(t) = timer {
            t.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }

    fn on_handshake_complete(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let timer = this.state.borrow_mut(py).handshake_timer.take();
        Self::cancel_timer(py, timer)?;
        let sslobj = this.sslobj.bind(py);
        let peercert = match exc {
            None => {
                this.set_tls(py, Tls::Wrapped)?;
                sslobj.call_method0(intern!(py, "getpeercert"))
            }
            Some(e) => Err(PyErr::from_value(e)),
        };
        let peercert = match peercert {
            Ok(p) => p,
            Err(err) => {
                this.set_tls(py, Tls::Unwrapped)?;
                let exc = err.into_value(py).into_bound(py).into_any();
                let msg = if exc.is_instance(ssl_types(py)?.certificate_error.bind(py))? {
                    "SSL handshake failed on verifying the certificate"
                } else {
                    "SSL handshake failed"
                };
                Self::fatal_error(slf, &exc, msg)?;
                return this.wakeup_waiter(py, Some(&exc));
            }
        };
        if this.lp(py).get().debug() {
            let dt = ferroloop_core::clock::monotonic() - this.state.borrow(py).handshake_started;
            crate::pyrefs::asyncio_logger(py)?
                .call_method1("debug", ("%r: SSL handshake took %.1f ms", slf, dt * 1e3))?;
        }
        let extra = this.state.borrow(py).extra.clone_ref(py);
        let extra = extra.bind(py);
        extra.set_item("peercert", peercert)?;
        extra.set_item("cipher", sslobj.call_method0(intern!(py, "cipher"))?)?;
        extra.set_item("compression", sslobj.call_method0(intern!(py, "compression"))?)?;
        extra.set_item("ssl_object", sslobj)?;
        let make = {
            let mut st = this.state.borrow_mut(py);
            if st.app == App::Init {
                st.app = App::Made;
                true
            } else {
                false
            }
        };
        if make {
            let app_transport = this.state.borrow(py).app_transport.as_ref().map(|t| t.clone_ref(py));
            if let (Some(app), Some(tr)) = (this.app_protocol(py), app_transport) {
                app.bind(py).call_method1(intern!(py, "connection_made"), (tr,))?;
            }
        }
        this.wakeup_waiter(py, None)?;
        Self::do_read(slf)
    }

    /// Sends whatever ciphertext is pending, unless the raw transport asked us to wait.
    fn process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::send_outgoing(slf, false)
    }

    /// `process_outgoing`, told whether the engine just produced records (so the outgoing BIO
    /// is known not to be empty).
    fn send_outgoing(slf: &Bound<'_, Self>, produced: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (paused, transport) = {
            let mut st = this.state.borrow_mut(py);
            st.read_since_outgoing = false;
            (st.ssl_writing_paused, st.transport.as_ref().map(|t| t.clone_ref(py)))
        };
        if paused {
            let size = this.write_buffer_size(py)?;
            return Self::control_app_writing_at(slf, size);
        }
        if produced || this.outgoing_pending(py)? > 0 {
            let data = this.calls.outgoing_read.bind(py).call0()?;
            if let Some(t) = transport {
                let t = t.into_bound(py);
                match t.cast::<super::stream::StreamTransport>() {
                    Ok(stream) => super::stream::StreamTransport::write(stream, &data)?,
                    Err(_) => drop(t.call_method1(intern!(py, "write"), (data,))?),
                }
            }
        }
        // `read()` took all the ciphertext: only the backlog is left.
        let size = this.state.borrow(py).backlog_bytes;
        Self::control_app_writing_at(slf, size)
    }

    /// Whether another read may return plaintext now: ciphertext waits in the incoming BIO, or
    /// the engine still holds decrypted bytes. `filled` says the last read returned all it was
    /// asked for; the C engine returns less only once it holds nothing more, so it is not asked
    /// (a `sslobject_class` subclass always is).
    fn more_to_read(&self, py: Python<'_>, filled: bool) -> PyResult<bool> {
        if self.incoming_pending(py)? > 0 {
            return Ok(true);
        }
        if self.calls.direct && !filled {
            return Ok(false);
        }
        let buffered: usize = self.calls.pending.bind(py).call0()?.extract()?;
        Ok(buffered > 0)
    }

    fn incoming_pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.incoming.bind(py).getattr(intern!(py, "pending"))?.extract()
    }

    fn outgoing_pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.outgoing.bind(py).getattr(intern!(py, "pending"))?.extract()
    }

    fn write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.outgoing_pending(py)? + self.state.borrow(py).backlog_bytes)
    }

    fn control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let size = slf.get().write_buffer_size(slf.py())?;
        Self::control_app_writing_at(slf, size)
    }

    /// Pauses or resumes the application's writing, `size` being the write buffer's size.
    fn control_app_writing_at(slf: &Bound<'_, Self>, size: usize) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let method = match this.state.borrow_mut(py).app_writing.control_inclusive(size) {
            Some(true) => "pause_writing",
            Some(false) => "resume_writing",
            None => return Ok(()),
        };
        let Some(app) = this.app_protocol(py) else { return Ok(()) };
        let app_transport =
            this.state.borrow(py).app_transport.as_ref().map(|t| t.clone_ref(py).into_bound(py).into_any());
        super::call_flow_control(this.lp(py), app_transport.as_ref(), slf.as_any(), app.bind(py), method)
    }

    fn control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let size = slf.get().incoming_pending(slf.py())?;
        Self::control_ssl_reading_at(slf, size)
    }

    /// Pauses or resumes the raw transport's reading, `size` being the incoming BIO's size.
    fn control_ssl_reading_at(slf: &Bound<'_, Self>, size: usize) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (method, transport) = {
            let mut st = this.state.borrow_mut(py);
            let method = match st.ssl_reading.control_inclusive(size) {
                Some(true) => "pause_reading",
                Some(false) => "resume_reading",
                None => return Ok(()),
            };
            (method, st.transport.as_ref().map(|t| t.clone_ref(py)))
        };
        if let Some(t) = transport {
            t.bind(py).call_method0(method)?;
        }
        Ok(())
    }

    /// Encrypts the backlog into the outgoing BIO, then sends it.
    fn do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let write = this.calls.write.bind(py);
        let mut produced = false;
        loop {
            let Some(data) = this.state.borrow(py).backlog.front().map(|d| d.clone_ref(py)) else { break };
            let data = data.into_bound(py);
            let count: usize = match write.call1((&data,)) {
                Ok(c) => c.extract()?,
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            };
            produced |= count > 0;
            let len = data.len()?;
            let rest = if count < len {
                Some(
                    PyMemoryView::from(&data)?
                        .get_item(pyo3::types::PySlice::new(py, count.try_into().unwrap_or(isize::MAX), isize::MAX, 1))?
                        .unbind(),
                )
            } else {
                None
            };
            let dropped = {
                let mut st = this.state.borrow_mut(py);
                st.backlog_bytes -= count.min(st.backlog_bytes);
                match rest {
                    Some(r) => st.backlog.front_mut().map(|f| std::mem::replace(f, r)),
                    None => st.backlog.pop_front(),
                }
            };
            drop(dropped);
        }
        Self::send_outgoing(slf, produced)
    }

    fn do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !matches!(this.tls(py), Tls::Wrapped | Tls::Flushing) {
            return Ok(());
        }
        Self::guarded(slf, "Fatal error on SSL protocol", || {
            let (paused, buffered, backlog) = {
                let st = this.state.borrow(py);
                (st.app_reading_paused, st.app_buffered, !st.backlog.is_empty())
            };
            let mut drained = false;
            if !paused {
                drained = if buffered { Self::read_buffered(slf)? } else { Self::read_copied(slf)? };
                if backlog {
                    Self::do_write(slf)?;
                } else if this.state.borrow(py).read_since_outgoing {
                    Self::process_outgoing(slf)?;
                }
            }
            if drained {
                Self::control_ssl_reading_at(slf, 0)
            } else {
                Self::control_ssl_reading(slf)
            }
        })
    }

    /// Reading is over: the engine may have produced ciphertext (an alert, a key update).
    fn note_read(&self, py: Python<'_>) {
        self.state.borrow_mut(py).read_since_outgoing = true;
    }

    /// Decrypts everything available and hands it to `data_received` in one call. Returns
    /// whether it left the incoming BIO empty.
    fn read_copied(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let read = this.calls.read.bind(py);
        let mut chunks: Vec<Bound<'_, PyAny>> = Vec::new();
        let mut eof = false;
        let mut drained = false;
        let buf = read_buffer(py)?;
        loop {
            match read.call1((MAX_READ, &buf)) {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count == 0 {
                        eof = true;
                        break;
                    }
                    // SAFETY: `buf` is a bytearray of MAX_READ bytes that only this thread uses
                    // (see `read_buffer`); nothing runs between the read and this copy.
                    let data = unsafe { &buf.as_bytes()[..count.min(MAX_READ)] };
                    chunks.push(PyBytes::new(py, data).into_any());
                    // Nothing left to decrypt: stop here rather than pay for SSLWantReadError.
                    if !this.more_to_read(py, count >= MAX_READ)? {
                        drained = true;
                        break;
                    }
                }
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            }
        }
        this.note_read(py);
        if !chunks.is_empty() {
            let data = if chunks.len() == 1 {
                chunks.pop().unwrap_or_else(|| PyBytes::new(py, b"").into_any())
            } else {
                PyBytes::new(py, b"").call_method1(intern!(py, "join"), (chunks,))?
            };
            if let Some(app) = this.app_protocol(py) {
                app.bind(py).call_method1(intern!(py, "data_received"), (data,))?;
            }
        }
        if eof {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
            return Ok(false);
        }
        Ok(drained)
    }

    /// Decrypts straight into the `BufferedProtocol`'s buffer. Returns whether it left the
    /// incoming BIO empty.
    fn read_buffered(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let Some(app) = this.app_protocol(py) else { return Ok(false) };
        let app = app.into_bound(py);
        let pending = this.incoming_pending(py)?;
        let buf = app.call_method1(intern!(py, "get_buffer"), (pending,))?;
        let wants = buf.len()?;
        let view = PyMemoryView::from(&buf)?;
        let read = this.calls.read.bind(py);
        let mut offset = 0usize;
        let mut count = 1usize;
        let mut again = false;
        let mut drained = false;
        loop {
            let target = if offset == 0 {
                view.clone().into_any()
            } else {
                view.get_item(pyo3::types::PySlice::new(py, offset.try_into().unwrap_or(isize::MAX), isize::MAX, 1))?
            };
            match read.call1((wants - offset, target)) {
                Ok(c) => {
                    count = c.extract()?;
                    if count == 0 {
                        break;
                    }
                    let filled = count >= wants - offset;
                    offset += count;
                    if offset >= wants {
                        again = true;
                        break;
                    }
                    if !this.more_to_read(py, filled)? {
                        drained = true;
                        break;
                    }
                }
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            }
        }
        this.note_read(py);
        if again {
            // The buffer is full: there may be more plaintext; read it on the next iteration.
            this.lp(py).get().call_soon_native(py, &slf.getattr("_do_read")?, &PyTuple::empty(py))?;
        }
        if offset > 0 {
            app.call_method1(intern!(py, "buffer_updated"), (offset,))?;
        }
        if count == 0 {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
            return Ok(false);
        }
        Ok(drained)
    }

    fn call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let app = {
            let mut st = this.state.borrow_mut(py);
            if st.app != App::Made {
                return Ok(());
            }
            st.app = App::Eof;
            st.app_protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let Some(app) = app else { return Ok(()) };
        match app.bind(py).call_method0(intern!(py, "eof_received")) {
            Ok(keep_open) => {
                if keep_open.is_truthy()? {
                    crate::pyrefs::asyncio_logger(py)?.call_method1(
                        "warning",
                        ("returning true from eof_received() has no effect when using ssl",),
                    )?;
                }
                Ok(())
            }
            Err(e) if is_exit(py, &e) => Err(e),
            Err(e) => Self::fatal_error(slf, e.value(py).as_any(), "Error calling eof_received()"),
        }
    }

    fn start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let tls = {
            let mut st = this.state.borrow_mut(py);
            if matches!(st.tls, Tls::Flushing | Tls::Shutdown | Tls::Unwrapped) {
                return Ok(());
            }
            st.app_closed = true;
            st.tls
        };
        if tls == Tls::Handshake {
            return Self::abort(slf, None);
        }
        this.set_tls(py, Tls::Flushing)?;
        let timer = call_later(this.lp(py), this.shutdown_timeout, slf.getattr("_check_shutdown_timeout")?)?;
        this.state.borrow_mut(py).shutdown_timer = Some(timer);
        Self::do_flush(slf)
    }

    fn do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)?;
        let py = slf.py();
        if slf.get().tls(py) != Tls::Flushing {
            return Ok(());
        }
        slf.get().set_tls(py, Tls::Shutdown)?;
        Self::do_shutdown(slf)
    }

    fn do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let eof = this.state.borrow(py).eof_received;
        let res = if eof { Ok(()) } else { this.sslobj.bind(py).call_method0(intern!(py, "unwrap")).map(drop) };
        match res {
            Ok(()) => {
                Self::process_outgoing(slf)?;
                Self::call_eof_received(slf)?;
                Self::on_shutdown_complete(slf, None)
            }
            Err(e) if is_again(py, &e)? => Self::process_outgoing(slf),
            Err(e) if e.is_instance(py, ssl_types(py)?.ssl_error.bind(py)) => {
                Self::on_shutdown_complete(slf, Some(e.into_value(py).into_bound(py).into_any()))
            }
            Err(e) => Err(e),
        }
    }

    /// The TLS shutdown is over. On success the raw transport is closed, which first flushes its
    /// buffer: a peer that does not read could hold that up forever, so the shutdown timeout
    /// stays (or starts, when the peer began the shutdown) until `connection_lost`, as in
    /// asyncio 3.14.
    fn on_shutdown_complete(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if let Some(e) = exc {
            let timer = this.state.borrow_mut(py).shutdown_timer.take();
            Self::cancel_timer(py, timer)?;
            return Self::fatal_error(slf, &e, "Fatal error on transport");
        }
        if this.state.borrow(py).shutdown_timer.is_none() {
            let timer = call_later(this.lp(py), this.shutdown_timeout, slf.getattr("_check_shutdown_timeout")?)?;
            this.state.borrow_mut(py).shutdown_timer = Some(timer);
        }
        match this.transport(py) {
            Some(t) => this.lp(py).get().call_soon_native(py, &t.bind(py).getattr("close")?, &PyTuple::empty(py)),
            None => Ok(()),
        }
    }

    fn abort(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.set_tls(py, Tls::Unwrapped)?;
        if let Some(t) = this.transport(py) {
            match exc {
                Some(e) => t.bind(py).call_method1(intern!(py, "_force_close"), (e,))?,
                None => t.bind(py).call_method0(intern!(py, "abort"))?,
            };
        }
        Ok(())
    }

    fn write_appdata(slf: &Bound<'_, Self>, items: &[Bound<'_, PyAny>]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lost = {
            let mut st = this.state.borrow_mut(py);
            if matches!(st.tls, Tls::Flushing | Tls::Shutdown | Tls::Unwrapped) {
                st.conn_lost += 1;
                Some(st.conn_lost - 1)
            } else {
                None
            }
        };
        if let Some(lost) = lost {
            if lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                crate::pyrefs::asyncio_logger(py)?.call_method1("warning", ("SSL connection is closed",))?;
            }
            return Ok(());
        }
        for item in items {
            let size = item.len()?;
            let mut st = this.state.borrow_mut(py);
            st.backlog.push_back(item.clone().unbind());
            st.backlog_bytes += size;
        }
        if this.tls(py) == Tls::Wrapped {
            Self::guarded(slf, "Fatal error on SSL protocol", || Self::do_write(slf))?;
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
            let cb = app.bind(py).getattr("connection_lost")?;
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

    fn _check_handshake_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().tls(py) != Tls::Handshake {
            return Ok(());
        }
        let msg = format!(
            "SSL handshake is taking longer than {} seconds: aborting the connection",
            slf.get().handshake_timeout
        );
        let exc = pyo3::exceptions::PyConnectionAbortedError::new_err(msg).into_value(py).into_bound(py).into_any();
        Self::fatal_error(slf, &exc, "Fatal error on transport")
    }

    fn _check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !matches!(slf.get().tls(py), Tls::Flushing | Tls::Shutdown) {
            return Ok(());
        }
        if let Some(t) = slf.get().transport(py) {
            let exc = py.import("asyncio")?.getattr("TimeoutError")?.call1(("SSL shutdown timed out",))?;
            t.bind(py).call_method1(intern!(py, "_force_close"), (exc,))?;
        }
        Ok(())
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

impl TlsTransport {
    /// The TLS protocol; an error once `close()` was called twice and released it.
    fn proto<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, TlsProtocol>> {
        match self.protocol.borrow(py).as_ref() {
            Some(p) => Ok(p.bind(py).clone()),
            None => Err(pyo3::exceptions::PyAttributeError::new_err("the SSL transport is closed")),
        }
    }
}

fn check_bytes_like(data: &Bound<'_, PyAny>) -> PyResult<()> {
    if data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
    {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!("data: expecting a bytes-like instance, got {}", data.get_type().name()?)))
}

#[pymethods]
impl TlsTransport {
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let proto = self.proto(py)?;
        let p = proto.get();
        let extra = p.state.borrow(py).extra.clone_ref(py);
        if let Some(v) = extra.bind(py).get_item(name)? {
            return Ok(v);
        }
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        match p.transport(py) {
            Some(t) => t.bind(py).call_method1(intern!(py, "get_extra_info"), (name, default)),
            None => Ok(default),
        }
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffered = super::stream::is_buffered_protocol(protocol)?;
        let old = {
            let p = self.proto(py)?;
            let mut st = p.get().state.borrow_mut(py);
            st.app_buffered = buffered;
            st.app_protocol.replace(protocol.clone().unbind())
        };
        drop(old);
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.proto(py).ok().and_then(|p| p.get().app_protocol(py))
    }

    /// Closed by the application, or (asyncio 3.14) its raw transport is closing.
    fn is_closing(&self, py: Python<'_>) -> PyResult<bool> {
        let Ok(p) = self.proto(py) else { return Ok(true) };
        if p.get().state.borrow(py).app_closed {
            return Ok(true);
        }
        match p.get().transport(py) {
            Some(t) => t.bind(py).call_method0(intern!(py, "is_closing"))?.is_truthy(),
            None => Ok(false),
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Ok(p) = self.proto(py) else { return Ok(()) };
        let was_closed = std::mem::replace(&mut p.get().state.borrow_mut(py).app_closed, true);
        if was_closed {
            // As asyncio: closing a closed transport releases the protocol, so a transport the
            // application keeps (in its protocol, say) holds no cycle through the TLS objects.
            let released = self.protocol.borrow_mut(py).take();
            drop(released);
        } else {
            TlsProtocol::start_shutdown(&p)?;
        }
        Ok(())
    }

    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let Ok(p) = self.proto(py) else { return Ok(()) };
        p.get().state.borrow_mut(py).app_closed = true;
        TlsProtocol::abort(&p, None)
    }

    fn _force_close(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let p = self.proto(py)?;
        p.get().state.borrow_mut(py).app_closed = true;
        TlsProtocol::abort(&p, exc.as_ref().filter(|e| !e.is_none()))
    }

    fn is_reading(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(!self.proto(py)?.get().state.borrow(py).app_reading_paused)
    }

    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.proto(py)?.get().state.borrow_mut(py).app_reading_paused = true;
        Ok(())
    }

    fn resume_reading(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.proto(py)?;
        let was_paused = std::mem::replace(&mut p.get().state.borrow_mut(py).app_reading_paused, false);
        if was_paused {
            p.get().lp(py).get().call_soon_native(py, &p.getattr("_resume")?, &PyTuple::empty(py))?;
        }
        Ok(())
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (hi, lo) = super::water_marks(py, high.as_ref(), low.as_ref(), HIGH_WATER_WRITE_KIB * 1024)?;
        let p = self.proto(py)?;
        {
            let mut st = p.get().state.borrow_mut(py);
            st.app_writing.set_limits(hi, lo);
        }
        TlsProtocol::control_app_writing(&p)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        let p = self.proto(py)?;
        let st = p.get().state.borrow(py);
        Ok(st.app_writing.limits())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.proto(py)?.get().write_buffer_size(py)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_read_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (hi, lo) = super::water_marks(py, high.as_ref(), low.as_ref(), HIGH_WATER_READ_KIB * 1024)?;
        let p = self.proto(py)?;
        {
            let mut st = p.get().state.borrow_mut(py);
            st.ssl_reading.set_limits(hi, lo);
        }
        TlsProtocol::control_ssl_reading(&p)
    }

    fn get_read_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        let p = self.proto(py)?;
        let st = p.get().state.borrow(py);
        Ok(st.ssl_reading.limits())
    }

    fn get_read_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.proto(py)?.get().incoming_pending(py)
    }

    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.proto(py)?.get().state.borrow(py).app_writing.is_paused())
    }

    #[getter]
    fn _ssl_protocol(&self, py: Python<'_>) -> Option<Py<TlsProtocol>> {
        self.protocol.borrow(py).as_ref().map(|p| p.clone_ref(py))
    }

    #[getter]
    fn _start_tls_compatible(&self) -> bool {
        true
    }

    #[getter]
    fn _sendfile_compatible<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("asyncio.constants")?.getattr("_SendfileMode")?.getattr("FALLBACK")
    }

    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        check_bytes_like(data)?;
        if data.len()? == 0 {
            return Ok(());
        }
        TlsProtocol::write_appdata(&self.proto(py)?, std::slice::from_ref(data))
    }

    fn writelines(&self, py: Python<'_>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = list_of_data.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        TlsProtocol::write_appdata(&self.proto(py)?, &items)
    }

    fn write_eof(&self) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(()))
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    /// Queues plaintext without sending it (asyncio's hook for its own tests, which use it).
    #[pyo3(name = "_test__append_write_backlog")]
    fn test_append_write_backlog(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let len = data.len()?;
        let p = self.proto(py)?;
        let mut st = p.get().state.borrow_mut(py);
        st.backlog.push_back(data.clone().unbind());
        st.backlog_bytes += len;
        Ok(())
    }

    /// `ferroloop._transports.SSLTransport`, a subclass of `asyncio.Transport`.
    #[getter(__class__)]
    fn class_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        marker_class(py).cloned()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.proto(py) {
            Ok(p) => {
                let st = p.get().state.borrow(py);
                format!("<SSLTransport state={:?}{}>", st.tls, if st.app_closed { " closed" } else { "" })
            }
            Err(_) => "<SSLTransport closed>".to_owned(),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(p) = self.protocol.try_borrow() {
            visit.call(&*p)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        drop(self.protocol.try_take());
    }
}

/// Creates the TLS protocol and its application transport. The caller makes `protocol` the
/// protocol of a raw transport (whose `connection_made` starts the handshake). With
/// `call_connection_made=False` (`start_tls`), the application protocol already had it.
#[pyfunction]
#[pyo3(signature = (event_loop, app_protocol, sslcontext, waiter, server_side=false, server_hostname=None,
                    call_connection_made=true, ssl_handshake_timeout=None, ssl_shutdown_timeout=None))]
#[allow(clippy::too_many_arguments)]
pub fn make_tls_protocol<'py>(
    event_loop: &Bound<'py, EventLoop>,
    app_protocol: &Bound<'py, PyAny>,
    sslcontext: Option<Bound<'py, PyAny>>,
    waiter: Option<Bound<'py, PyAny>>,
    server_side: bool,
    server_hostname: Option<Bound<'py, PyAny>>,
    call_connection_made: bool,
    ssl_handshake_timeout: Option<f64>,
    ssl_shutdown_timeout: Option<f64>,
) -> PyResult<Bound<'py, TlsProtocol>> {
    let py = event_loop.py();
    let constants = py.import("asyncio.constants")?;
    let handshake_timeout = match ssl_handshake_timeout {
        None => constants.getattr("SSL_HANDSHAKE_TIMEOUT")?.extract()?,
        Some(t) if t <= 0.0 => {
            return Err(PyValueError::new_err(format!("ssl_handshake_timeout should be a positive number, got {t}")))
        }
        Some(t) => t,
    };
    let shutdown_timeout = match ssl_shutdown_timeout {
        None => constants.getattr("SSL_SHUTDOWN_TIMEOUT")?.extract()?,
        Some(t) if t <= 0.0 => {
            return Err(PyValueError::new_err(format!("ssl_shutdown_timeout should be a positive number, got {t}")))
        }
        Some(t) => t,
    };
    let hostname = server_hostname.filter(|h| !server_side && h.is_truthy().unwrap_or(false));
    let sslcontext = match sslcontext.filter(|c| c.is_truthy().unwrap_or(false)) {
        Some(c) => c,
        None => py.import("asyncio.sslproto")?.getattr("_create_transport_context")?.call1((server_side, &hostname))?,
    };
    let types = ssl_types(py)?;
    let incoming = types.memory_bio.bind(py).call0()?;
    let outgoing = types.memory_bio.bind(py).call0()?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("server_side", server_side)?;
    kwargs.set_item("server_hostname", &hostname)?;
    let sslobj = sslcontext.call_method("wrap_bio", (&incoming, &outgoing), Some(&kwargs))?;
    let extra = PyDict::new(py);
    extra.set_item("sslcontext", &sslcontext)?;
    let (in_hi, in_lo) = (HIGH_WATER_READ_KIB * 1024, HIGH_WATER_READ_KIB * 1024 / 4);
    let (out_hi, out_lo) = (HIGH_WATER_WRITE_KIB * 1024, HIGH_WATER_WRITE_KIB * 1024 / 4);
    let state = State {
        tls: Tls::Unwrapped,
        app: if call_connection_made { App::Init } else { App::Made },
        app_protocol: Some(app_protocol.clone().unbind()),
        app_buffered: super::stream::is_buffered_protocol(app_protocol)?,
        transport: None,
        app_transport: None,
        app_closed: false,
        waiter: waiter.filter(|w| !w.is_none()).map(Bound::unbind),
        extra: extra.unbind(),
        backlog: VecDeque::new(),
        backlog_bytes: 0,
        conn_lost: 0,
        eof_received: false,
        ssl_writing_paused: false,
        read_since_outgoing: false,
        app_reading_paused: false,
        ssl_reading: WriteFlow::new(in_hi, in_lo),
        app_writing: WriteFlow::new(out_hi, out_lo),
        handshake_timer: None,
        shutdown_timer: None,
        handshake_started: 0.0,
    };
    let calls = RecordCalls::new(&sslobj, &incoming, &outgoing)?;
    let protocol = Bound::new(
        py,
        TlsProtocol {
            _live: crate::live::Token::new(crate::live::Kind::SslProtocol),
            event_loop: event_loop.clone().unbind(),
            sslobj: sslobj.unbind(),
            calls,
            incoming: incoming.unbind(),
            outgoing: outgoing.unbind(),
            handshake_timeout,
            shutdown_timeout,
            state: GilCell::new(state),
        },
    )?;
    let app_transport = super::new_transport(
        py,
        TlsTransport {
            _live: crate::live::Token::new(crate::live::Kind::SslTransport),
            protocol: GilCell::new(Some(protocol.clone().unbind())),
        },
    )?
    .unbind();
    protocol.get().state.borrow_mut(py).app_transport = Some(app_transport);
    Ok(protocol)
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
