//! `SSLTransport`: what the application protocol sees of a TLS connection (asyncio's
//! `_SSLProtocolTransport`). It holds the TLS protocol ([`super::TlsProtocol`]) and asks it for
//! everything: writes go to its backlog, reading and flow control to its state.

use pyo3::exceptions::{PyNotImplementedError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::*;
use crate::gil_cell::GilCell;

/// The application-facing transport (named like asyncio's, which code may look for).
#[pyclass(module = "ferroloop._ferroloop", name = "SSLTransport", frozen, weakref, dict)]
pub struct TlsTransport {
    /// Counts the object in leak-check builds (`live`).
    pub(super) _live: crate::live::Token,
    /// The TLS protocol; released when `close()` is called on a closed transport.
    pub(super) protocol: GilCell<Option<Py<TlsProtocol>>>,
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
    if crate::buffers::is_bytes_like(data) {
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
        let buffered = crate::transports::stream::is_buffered_protocol(protocol)?;
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
            p.get().lp(py).get().call_soon_native(py, &p.getattr(intern!(py, "_resume"))?, &PyTuple::empty(py))?;
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
        let (hi, lo) = crate::transports::water_marks(py, high.as_ref(), low.as_ref(), HIGH_WATER_WRITE_KIB * 1024)?;
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
        let (hi, lo) = crate::transports::water_marks(py, high.as_ref(), low.as_ref(), HIGH_WATER_READ_KIB * 1024)?;
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
        crate::compat::sendfile_fallback(py).cloned()
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
        crate::transports::base::marker_class!(py, "SSLTransport")
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
