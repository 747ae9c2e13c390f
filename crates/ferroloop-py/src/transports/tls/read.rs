//! Reading: ciphertext in, plaintext to the application protocol (copied, or into a
//! `BufferedProtocol`'s buffer), and the raw transport paused while undecrypted input piles up.

use pyo3::intern;
use pyo3::prelude::*;

use super::*;

impl TlsProtocol {
    /// Whether another read may return plaintext now: ciphertext waits in the incoming BIO, or
    /// the engine still holds decrypted bytes. `filled` says the last read returned all it was
    /// asked for; the C engine returns less only once it holds nothing more, so it is not asked
    /// (a `sslobject_class` subclass always is).
    pub(super) fn more_to_read(&self, py: Python<'_>, filled: bool) -> PyResult<bool> {
        if self.incoming_pending(py)? > 0 {
            return Ok(true);
        }
        if self.calls.direct && !filled {
            return Ok(false);
        }
        let buffered: usize = self.calls.pending.bind(py).call0()?.extract()?;
        Ok(buffered > 0)
    }

    pub(super) fn incoming_pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.incoming.bind(py).getattr(intern!(py, "pending"))?.extract()
    }

    pub(super) fn control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let size = slf.get().incoming_pending(slf.py())?;
        Self::control_ssl_reading_at(slf, size)
    }

    /// Pauses or resumes the raw transport's reading, `size` being the incoming BIO's size.
    pub(super) fn control_ssl_reading_at(slf: &Bound<'_, Self>, size: usize) -> PyResult<()> {
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

    pub(super) fn do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
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
    pub(super) fn note_read(&self, py: Python<'_>) {
        self.state.borrow_mut(py).read_since_outgoing = true;
    }

    /// Decrypts everything available and hands it to `data_received` in one call. Returns
    /// whether it left the incoming BIO empty.
    pub(super) fn read_copied(slf: &Bound<'_, Self>) -> PyResult<bool> {
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
                    this.tally.received(count.min(MAX_READ));
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
                let app = app.bind(py);
                if !crate::transports::streams::feed(app, data.cast::<PyBytes>()?.as_bytes())? {
                    app.call_method1(intern!(py, "data_received"), (data,))?;
                }
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
    pub(super) fn read_buffered(slf: &Bound<'_, Self>) -> PyResult<bool> {
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
            this.lp(py).get().call_soon_native(py, &slf.getattr(intern!(py, "_do_read"))?, &PyTuple::empty(py))?;
        }
        if offset > 0 {
            this.tally.received(offset);
            app.call_method1(intern!(py, "buffer_updated"), (offset,))?;
        }
        if count == 0 {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
            return Ok(false);
        }
        Ok(drained)
    }

    pub(super) fn call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
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
}
