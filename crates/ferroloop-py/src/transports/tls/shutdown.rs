//! Closing: the flush of what the application wrote, the TLS shutdown (close_notify) within the
//! shutdown timeout, and `abort`.

use pyo3::intern;
use pyo3::prelude::*;

use super::*;

impl TlsProtocol {
    pub(super) fn start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
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
        let timer =
            call_later(this.lp(py), this.shutdown_timeout, slf.getattr(intern!(py, "_check_shutdown_timeout"))?)?;
        this.state.borrow_mut(py).shutdown_timer = Some(timer);
        Self::do_flush(slf)
    }

    pub(super) fn do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)?;
        let py = slf.py();
        if slf.get().tls(py) != Tls::Flushing {
            return Ok(());
        }
        slf.get().set_tls(py, Tls::Shutdown)?;
        Self::do_shutdown(slf)
    }

    pub(super) fn do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
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
    pub(super) fn on_shutdown_complete(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if let Some(e) = exc {
            let timer = this.state.borrow_mut(py).shutdown_timer.take();
            Self::cancel_timer(py, timer)?;
            return Self::fatal_error(slf, &e, "Fatal error on transport");
        }
        if this.state.borrow(py).shutdown_timer.is_none() {
            let timer =
                call_later(this.lp(py), this.shutdown_timeout, slf.getattr(intern!(py, "_check_shutdown_timeout"))?)?;
            this.state.borrow_mut(py).shutdown_timer = Some(timer);
        }
        match this.transport(py) {
            Some(t) => {
                this.lp(py).get().call_soon_native(py, &t.bind(py).getattr(intern!(py, "close"))?, &PyTuple::empty(py))
            }
            None => Ok(()),
        }
    }

    pub(super) fn abort(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
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
}

#[pymethods]
impl TlsProtocol {
    /// The shutdown timer's callback.
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
}
