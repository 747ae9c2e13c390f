//! Writing: `send` at once when nothing is buffered, the rest buffered and flushed with one
//! `sendmsg` per writability event, flow control, and writes to a lost connection.

use super::*;

impl StreamTransport {
    pub(super) fn on_writable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = {
            let mut st = this.state.borrow_mut(py);
            if st.life.is_lost() || st.buffer.is_empty() {
                return Ok(());
            }
            st.buffer.flush_with(|slices| net::send_vectored(this.fd, slices).inspect(|&n| this.tally.sent(n)))
        };
        match result {
            Err(e) if try_later(&e) => Ok(()),
            Err(e) => {
                let waiter = {
                    let mut st = this.state.borrow_mut(py);
                    st.buffer.clear();
                    st.writing = false;
                    st.empty_waiter.as_ref().map(|w| w.clone_ref(py))
                };
                this.unwatch(py, true)?;
                let err: PyErr = os_error(&e);
                let exc = err.value(py).clone();
                Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
                if let Some(w) = waiter {
                    w.bind(py).call_method1(intern!(py, "set_exception"), (exc,))?;
                }
                Ok(())
            }
            Ok(_) => {
                control_flow(slf, false)?;
                let (drained, waiter, closing, eof) = {
                    let mut st = this.state.borrow_mut(py);
                    let drained = st.buffer.is_empty();
                    if drained {
                        st.writing = false;
                    }
                    (drained, st.empty_waiter.as_ref().map(|w| w.clone_ref(py)), st.life.is_closing(), st.eof)
                };
                if !drained {
                    return Ok(());
                }
                this.unwatch(py, true)?;
                if let Some(w) = waiter {
                    w.bind(py).call_method1(intern!(py, "set_result"), (py.None(),))?;
                }
                if closing {
                    Self::_call_connection_lost(slf, None)
                } else if eof {
                    net::shutdown_write(this.fd).map_err(|e| os_error(&e))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Appends `data` (after trying to send it at once when nothing is buffered).
    pub(super) fn write_bytes(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let pushed = {
            let mut st = this.state.borrow_mut(py);
            let pushed = st.buffer.write_or_push(data, |d| net::send(this.fd, d).inspect(|&n| this.tally.sent(n)));
            if pushed.as_ref().is_ok_and(|p| *p == Pushed::Started) {
                st.writing = true;
            }
            pushed
        };
        match pushed {
            Ok(Pushed::Written) => Ok(()),
            Ok(Pushed::Appended) => control_flow(slf, true),
            Ok(Pushed::Started) => {
                Self::watch(slf, true)?;
                control_flow(slf, true)
            }
            Err(e) => Self::fatal_error(slf, os_error(&e), "Fatal write error on socket transport"),
        }
    }

    /// Whether a write should be dropped because the connection is lost (asyncio logs a warning
    /// after a few such writes).
    pub(super) fn drop_lost_write(&self, py: Python<'_>) -> PyResult<bool> {
        let Some(warn) = self.state.borrow_mut(py).life.write_after_loss() else {
            return Ok(false);
        };
        if warn {
            crate::pyrefs::asyncio_logger(py)?.call_method1("warning", ("socket.send() raised exception.",))?;
        }
        Ok(true)
    }

    pub(super) fn check_writable(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        let st = self.state.borrow(py);
        if st.eof {
            return Err(PyRuntimeError::new_err(format!("Cannot call {what}() after write_eof()")));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err(format!("unable to {what}; sendfile is in progress")));
        }
        Ok(())
    }
}

/// The Python methods of the write side.
#[pymethods]
impl StreamTransport {
    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let data = match Data::of(data) {
            Ok(d) => Ok(d),
            Err(DataError::Type(e)) => return Err(e),
            Err(DataError::Export(e)) => Err(e),
        };
        this.check_writable(py, "write")?;
        match data {
            Ok(d) if d.as_bytes().is_empty() => Ok(()),
            _ if this.drop_lost_write(py)? => Ok(()),
            Ok(d) => Self::write_bytes(slf, d.as_bytes()),
            // asyncio's `sock.send(data)` fails the same way: a fatal write error.
            Err(e) => Self::fatal_error(slf, e, "Fatal write error on socket transport"),
        }
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if crate::compat::writelines_joins_first(py) {
            // The items are checked first.
            let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
            return Self::write(slf, &joined);
        }
        this.check_writable(py, "writelines")?;
        let mut joined = Vec::new();
        for item in list_of_data.try_iter()? {
            joined.extend_from_slice(Export::joinable(&item?)?.as_bytes());
        }
        if joined.is_empty() || this.drop_lost_write(py)? {
            return Ok(());
        }
        Self::write_bytes(slf, &joined)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let shutdown_now = {
            let mut st = self.state.borrow_mut(py);
            if st.life.is_closing() || st.eof {
                return Ok(());
            }
            st.eof = true;
            st.buffer.is_empty()
        };
        if shutdown_now {
            net::shutdown_write(self.fd).map_err(|e| os_error(&e))?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// A future resolved once the buffer drains (asyncio's, for `loop.sendfile`).
    fn _make_empty_waiter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.state.borrow(py).empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let waiter = EventLoop::create_future(self.event_loop(py))?;
        let empty = {
            let mut st = self.state.borrow_mut(py);
            st.empty_waiter = Some(waiter.clone_ref(py));
            st.buffer.is_empty()
        };
        if empty {
            waiter.bind(py).call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter)
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        let old = self.state.borrow_mut(py).empty_waiter.take();
        drop(old);
    }
}
