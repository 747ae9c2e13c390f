//! Reading: one `recv` per readiness event, into a reused buffer (or the `BufferedProtocol`'s),
//! delivered to the protocol (TLS's and asyncio's stock streams' without a Python call), and end
//! of file.

use super::*;
use crate::transports::streams;

/// What one read gave.
enum Received<'py> {
    Eof,
    /// Taken by a stock `StreamReader` ([`streams::feed`]).
    Fed,
    /// For the protocol's `data_received`.
    Data(Bound<'py, PyBytes>),
}

impl StreamTransport {
    pub(super) fn on_readable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, delivery) = {
            let st = this.state.borrow(py);
            if st.life.is_closing() || st.paused {
                return Ok(());
            }
            match &st.protocol {
                Some(p) => (p.clone_ref(py), st.delivery),
                None => return Ok(()),
            }
        };
        let protocol = protocol.bind(py);
        if delivery == Delivery::Buffered {
            return Self::read_into_buffer(slf, protocol);
        }
        // Bytes for `data_received`, unless asyncio's stock streams took them (`streams::feed`).
        let received = base::with_read_buf(|buf| {
            net::recv(this.fd, buf).map(|n| {
                this.tally.received(n);
                if n == 0 {
                    return Ok(Received::Eof);
                }
                if delivery == Delivery::Streams && streams::feed(protocol, &buf[..n])? {
                    return Ok(Received::Fed);
                }
                Ok(Received::Data(PyBytes::new(py, &buf[..n])))
            })
        });
        match received {
            Err(e) if try_later(&e) => Ok(()),
            Err(e) => Self::fatal_error(slf, os_error(&e), "Fatal read error on socket transport"),
            Ok(Ok(Received::Eof)) => Self::on_eof(slf, protocol),
            Ok(Ok(Received::Fed)) => Ok(()),
            Ok(Err(err)) => Self::fatal_error(slf, err, "Fatal error: protocol.data_received() call failed."),
            Ok(Ok(Received::Data(data))) => {
                // TLS over this transport: hand the ciphertext over without a Python call.
                let native = if delivery == Delivery::Tls { NATIVE_RECEIVER.get() } else { None };
                let delivered = match native {
                    Some(receiver) => (receiver.data_received)(protocol, data.as_any()),
                    None => protocol.call_method1(intern!(py, "data_received"), (data,)).map(drop),
                };
                if let Err(err) = delivered {
                    return Self::fatal_error(slf, err, "Fatal error: protocol.data_received() call failed.");
                }
                Ok(())
            }
        }
    }

    pub(super) fn read_into_buffer(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let buf = match protocol.call_method1(intern!(py, "get_buffer"), (-1,)).and_then(|b| {
            if b.len()? == 0 {
                return Err(PyRuntimeError::new_err("get_buffer() returned an empty buffer"));
            }
            Ok(b)
        }) {
            Ok(b) => b,
            Err(err) => return Self::fatal_error(slf, err, "Fatal error: protocol.get_buffer() call failed."),
        };
        // As asyncio's `sock.recv_into(buf)`: a buffer that is not writable and contiguous is a
        // read error.
        let mut buf = match Export::writable(&buf) {
            Ok(b) => b,
            Err(err) => return Self::fatal_error(slf, err, "Fatal read error on socket transport"),
        };
        // SAFETY: a writable export of its own; nothing else borrows it.
        let res = net::recv(this.fd, unsafe { buf.as_mut_bytes() });
        drop(buf);
        match res {
            Err(e) if try_later(&e) => Ok(()),
            Err(e) => Self::fatal_error(slf, os_error(&e), "Fatal read error on socket transport"),
            Ok(0) => Self::on_eof(slf, protocol),
            Ok(n) => {
                this.tally.received(n);
                if let Err(err) = protocol.call_method1(intern!(py, "buffer_updated"), (n,)) {
                    return Self::fatal_error(slf, err, "Fatal error: protocol.buffer_updated() call failed.");
                }
                Ok(())
            }
        }
    }

    pub(super) fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.event_loop(py).get().debug() {
            crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r received EOF", slf))?;
        }
        let keep_open = match protocol.call_method0(intern!(py, "eof_received")) {
            Ok(v) => v.is_truthy()?,
            Err(err) => return Self::fatal_error(slf, err, "Fatal error: protocol.eof_received() call failed."),
        };
        if keep_open {
            this.unwatch(py, false)
        } else {
            Self::close(slf)
        }
    }
}
