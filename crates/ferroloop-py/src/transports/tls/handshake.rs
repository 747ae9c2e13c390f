//! The TLS handshake: started by `connection_made`, driven by incoming data, bounded by the
//! handshake timeout; its completion wakes `start_tls`/`create_connection`'s waiter and makes the
//! application protocol's connection.

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
        let timer = call_later(this.lp(py), this.handshake_timeout, slf.getattr("_check_handshake_timeout")?)?;
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
