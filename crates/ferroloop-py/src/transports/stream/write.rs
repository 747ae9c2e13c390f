//! Writing: `send` at once when nothing is buffered, the rest buffered and flushed with one
//! `sendmsg` per writability event, flow control, and writes to a lost connection.

use super::*;

impl StreamTransport {
    pub(super) fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = {
            let mut st = this.state.borrow_mut(py);
            if st.life.is_lost() || st.buffer.is_empty() {
                return Ok(());
            }
            let res = net::send_vectored(this.fd, &st.buffer.io_slices());
            if let Ok(n) = res {
                st.buffer.consume(n);
            }
            res
        };
        match result {
            Err(e) if would_block(&e) => Ok(()),
            Err(e) => {
                let waiter = {
                    let mut st = this.state.borrow_mut(py);
                    st.buffer.clear();
                    st.writing = false;
                    st.empty_waiter.as_ref().map(|w| w.clone_ref(py))
                };
                this.unwatch(py, true)?;
                let err: PyErr = crate::transports::os_error(&e);
                let exc = err.value(py).clone();
                Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
                if let Some(w) = waiter {
                    w.bind(py).call_method1("set_exception", (exc,))?;
                }
                Ok(())
            }
            Ok(_) => {
                Self::control_flow(slf, false)?;
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
                    w.bind(py).call_method1("set_result", (py.None(),))?;
                }
                if closing {
                    Self::_call_connection_lost(slf, None)
                } else if eof {
                    net::shutdown_write(this.fd).map_err(|e| crate::transports::os_error(&e))
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
        let start_writing = {
            let mut st = this.state.borrow_mut(py);
            if !st.buffer.is_empty() {
                st.buffer.push(data);
                false
            } else {
                let sent = match net::send(this.fd, data) {
                    Ok(n) => n,
                    Err(e) if would_block(&e) => 0,
                    Err(e) => {
                        drop(st);
                        return Self::fatal_error(
                            slf,
                            crate::transports::os_error(&e),
                            "Fatal write error on socket transport",
                        );
                    }
                };
                if sent == data.len() {
                    return Ok(());
                }
                st.buffer.push(&data[sent..]);
                st.writing = true;
                true
            }
        };
        if start_writing {
            Self::watch(slf, true)?;
        }
        Self::control_flow(slf, true)
    }

    /// Pauses (after a write: `grew`) or resumes (after a flush) the protocol's writing when the
    /// buffer crosses a watermark.
    pub(super) fn control_flow(slf: &Bound<'_, Self>, grew: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = {
            let mut st = this.state.borrow_mut(py);
            let size = st.buffer.len();
            if !st.flow.update(size, grew) {
                return Ok(());
            }
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        crate::transports::tell_flow(this.event_loop(py), slf.as_any(), protocol, grew)
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
