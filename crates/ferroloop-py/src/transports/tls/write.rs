//! Writing: the application's data encrypted from the backlog into the outgoing BIO and sent on
//! the raw transport in one write, and the application paused while the backlog is large.

use pyo3::prelude::*;

use super::*;

impl TlsProtocol {
    /// Sends whatever ciphertext is pending, unless the raw transport asked us to wait.
    pub(super) fn process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::send_outgoing(slf, false)
    }

    /// `process_outgoing`, told whether the engine just produced records (so the outgoing BIO
    /// is known not to be empty).
    pub(super) fn send_outgoing(slf: &Bound<'_, Self>, produced: bool) -> PyResult<()> {
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
                match t.cast::<crate::transports::stream::StreamTransport>() {
                    Ok(stream) => crate::transports::stream::StreamTransport::write(stream, &data)?,
                    Err(_) => drop(t.call_method1(intern!(py, "write"), (data,))?),
                }
            }
        }
        // `read()` took all the ciphertext: only the backlog is left.
        let size = this.state.borrow(py).backlog_bytes;
        Self::control_app_writing_at(slf, size)
    }

    pub(super) fn outgoing_pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.outgoing.bind(py).getattr(intern!(py, "pending"))?.extract()
    }

    pub(super) fn write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.outgoing_pending(py)? + self.state.borrow(py).backlog_bytes)
    }

    pub(super) fn control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let size = slf.get().write_buffer_size(slf.py())?;
        Self::control_app_writing_at(slf, size)
    }

    /// Pauses or resumes the application's writing, `size` being the write buffer's size.
    pub(super) fn control_app_writing_at(slf: &Bound<'_, Self>, size: usize) -> PyResult<()> {
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
        crate::transports::call_flow_control(this.lp(py), app_transport.as_ref(), slf.as_any(), app.bind(py), method)
    }

    /// Encrypts the backlog into the outgoing BIO, then sends it.
    pub(super) fn do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
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
            this.tally.sent(count);
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

    pub(super) fn write_appdata(slf: &Bound<'_, Self>, items: &[Bound<'_, PyAny>]) -> PyResult<()> {
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
