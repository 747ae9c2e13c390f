//! The TLS handshake: started by `connection_made`, driven by incoming data, bounded by the
//! handshake timeout; its completion wakes `start_tls`/`create_connection`'s waiter and makes the
//! application protocol's connection.

use pyo3::intern;
use pyo3::prelude::*;

use super::*;

impl TlsProtocol {
    pub(super) fn start_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let debug = this.lp(py).get().debug();
        if debug {
            crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r starts SSL handshake", slf))?;
        }
        this.set_tls(py, Tls::Handshake)?;
        let timer =
            call_later(this.lp(py), this.handshake_timeout, slf.getattr(intern!(py, "_check_handshake_timeout"))?)?;
        {
            let mut st = this.state.borrow_mut(py);
            st.handshake_started = if debug { ferroloop_core::clock::monotonic() } else { 0.0 };
            st.handshake_timer = Some(timer);
        }
        Self::do_handshake(slf)
    }

    pub(super) fn do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
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

    pub(super) fn on_handshake_complete(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
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
}

#[pymethods]
impl TlsProtocol {
    /// The handshake timer's callback.
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
        None => crate::compat::create_transport_context(py)?.call1((server_side, &hostname))?,
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
    // asyncio's stock streams over TLS get ferroloop's reads too (`streams::feed` delivers).
    crate::transports::streams::adopt_protocol(app_protocol)?;
    let state = State {
        tls: Tls::Unwrapped,
        app: if call_connection_made { App::Init } else { App::Made },
        app_protocol: Some(app_protocol.clone().unbind()),
        app_buffered: crate::transports::stream::is_buffered_protocol(app_protocol)?,
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
            tally: crate::transports::Tally::new(event_loop.get(), ferroloop_core::stats::TransportKind::Tls),
        },
    )?;
    let app_transport = crate::transports::new_transport(
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
