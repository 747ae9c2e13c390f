//! `DatagramTransport`: a UDP or Unix datagram socket, asyncio's `_SelectorDatagramTransport`
//! in Rust.
//!
//! Each read event receives one datagram (`recvfrom`) and passes it to `datagram_received`;
//! an `OSError` from the socket goes to the protocol's `error_received` and the transport stays
//! open, as in asyncio. `sendto()` sends at once when nothing is queued; otherwise the datagram
//! is queued whole and the descriptor watched for writing until the queue drains. Datagrams go
//! through the Python socket's `recvfrom`/`sendto`/`send`, which own address conversion.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use ferroloop_core::flow::{Lifecycle, WriteFlow};
use ferroloop_core::stats::TransportKind;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::base::{
    self, control_flow, core_methods, read_methods, write_methods, Core, ReadSide, Readiness, Watch, WriteSide,
};
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;
use crate::watch::IoWatcher;

/// The largest datagram one read takes (asyncio's `max_size`).
const MAX_DATAGRAM: usize = 256 * 1024;

struct State {
    /// The Python socket; closed when `connection_lost` has run.
    sock: Option<Py<PyAny>>,
    /// The protocol; dropped when `connection_lost` has run.
    protocol: Option<Py<PyAny>>,
    /// The connected peer (`remote_addr`), or None.
    address: Option<Py<PyAny>>,
    /// The socket is connected: datagrams go with `send`, not `sendto`.
    connected: bool,
    /// Datagrams waiting to be sent, with their addresses.
    queue: VecDeque<(Py<PyBytes>, Py<PyAny>)>,
    /// What asyncio reports as the write buffer size.
    queued_bytes: usize,
    /// Open, closing (`close()`), or lost (`connection_lost` scheduled).
    life: Lifecycle,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// Write flow control over `queued_bytes`.
    flow: WriteFlow,
}

#[pyclass(module = "ferroloop._ferroloop", frozen, weakref, dict)]
pub struct DatagramTransport {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    event_loop: Py<EventLoop>,
    fd: RawFd,
    /// `get_extra_info`'s answers.
    extra: Py<PyDict>,
    state: GilCell<State>,
    /// The loop's statistics for datagram transports.
    tally: super::Tally,
}

/// What a queued datagram of `nbytes` adds to the write buffer size: its bytes, plus asyncio
/// 3.13's 8 bytes of header per datagram.
fn queued_size(py: Python<'_>, nbytes: usize) -> usize {
    nbytes + if crate::compat::datagram_modern_accounting(py) { 8 } else { 0 }
}

enum SendOutcome {
    Sent,
    WouldBlock,
    Failed(PyErr),
}

impl Core for DatagramTransport {
    fn loop_ref(&self) -> &Py<EventLoop> {
        &self.event_loop
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn replace_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.state.borrow_mut(protocol.py()).protocol.replace(protocol.clone().unbind()))
    }

    fn closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).life.is_closing()
    }

    fn extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        base::extra_from(self.extra.bind(py), name, default)
    }
}

impl ReadSide for DatagramTransport {
    fn with_paused<R>(&self, py: Python<'_>, f: impl FnOnce(&mut bool, bool) -> R) -> R {
        let mut st = self.state.borrow_mut(py);
        let closing = st.life.is_closing();
        f(&mut st.paused, closing)
    }

    fn watch_reading(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        Self::set_watch(slf, false, on)
    }
}

impl WriteSide for DatagramTransport {
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut WriteFlow, usize) -> R) -> R {
        let mut st = self.state.borrow_mut(py);
        let size = st.queued_bytes;
        f(&mut st.flow, size)
    }
}

impl Readiness for DatagramTransport {
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::receive(slf)
    }

    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::send_queued(slf)
    }
}

core_methods!(DatagramTransport, "DatagramTransport");
read_methods!(DatagramTransport);
write_methods!(DatagramTransport);

impl DatagramTransport {
    fn set_watch(slf: &Bound<'_, Self>, write: bool, on: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lp = this.event_loop.bind(py).get();
        if on {
            let watcher: Arc<dyn IoWatcher> = Arc::new(Watch(slf.clone().unbind()));
            lp.add_native(py, this.fd, watcher, write, None)
        } else {
            lp.remove_native(py, this.fd, write).map(drop)
        }
    }

    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        base::fatal_error(slf, err, message, Self::force_close)
    }

    fn force_close(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let (dropped, stop_writing, stop_reading) = {
            let mut st = slf.get().state.borrow_mut(py);
            if st.life.is_lost() {
                return Ok(());
            }
            let stop_writing = !st.queue.is_empty();
            let dropped = std::mem::take(&mut st.queue);
            st.queued_bytes = 0;
            let stop_reading = !st.life.is_closing();
            st.life.lose();
            (dropped, stop_writing, stop_reading)
        };
        drop(dropped);
        if stop_writing {
            Self::set_watch(slf, true, false)?;
        }
        if stop_reading {
            Self::set_watch(slf, false, false)?;
        }
        base::schedule_connection_lost(slf, exc)
    }

    /// Gives an `OSError` to the protocol's `error_received`; anything else is fatal.
    fn socket_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyOSError>(py) {
            if let Some(p) = slf.get().protocol(py) {
                p.bind(py).call_method1(intern!(py, "error_received"), (err.into_value(py),))?;
            }
            return Ok(());
        }
        Self::fatal_error(slf, err, message)
    }

    /// One datagram to `datagram_received`.
    fn receive(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (sock, protocol) = {
            let st = this.state.borrow(py);
            if st.life.is_closing() || st.paused {
                return Ok(());
            }
            match (&st.sock, &st.protocol) {
                (Some(s), Some(p)) => (s.clone_ref(py), p.clone_ref(py)),
                _ => return Ok(()),
            }
        };
        match sock.bind(py).call_method1(intern!(py, "recvfrom"), (MAX_DATAGRAM,)) {
            Err(e) if e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py) => Ok(()),
            Err(e) => Self::socket_error(slf, e, "Fatal read error on datagram transport"),
            Ok(pair) => {
                let (data, addr): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                this.tally.received(data.len().unwrap_or(0));
                protocol.bind(py).call_method1(intern!(py, "datagram_received"), (data, addr))?;
                Ok(())
            }
        }
    }

    fn try_send(
        &self,
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> SendOutcome {
        let connected = self.state.borrow(py).connected;
        let res = if connected {
            sock.call_method1(intern!(py, "send"), (data,))
        } else {
            sock.call_method1(intern!(py, "sendto"), (data, addr))
        };
        match res {
            Ok(n) => {
                self.tally.sent(n.extract().unwrap_or(0));
                SendOutcome::Sent
            }
            Err(e) if e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py) => {
                SendOutcome::WouldBlock
            }
            Err(e) => SendOutcome::Failed(e),
        }
    }

    fn send_queued(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        loop {
            let (sock, head) = {
                let mut st = this.state.borrow_mut(py);
                let Some(sock) = st.sock.as_ref().map(|s| s.clone_ref(py)) else {
                    return Ok(());
                };
                match st.queue.pop_front() {
                    Some(head) => (sock, head),
                    None => break,
                }
            };
            let (data, addr) = head;
            let len = queued_size(py, data.bind(py).as_bytes().len());
            match this.try_send(py, sock.bind(py), data.bind(py).as_any(), addr.bind(py)) {
                SendOutcome::Sent => {
                    let mut st = this.state.borrow_mut(py);
                    st.queued_bytes = st.queued_bytes.saturating_sub(len);
                }
                SendOutcome::WouldBlock => {
                    this.state.borrow_mut(py).queue.push_front((data, addr));
                    break;
                }
                SendOutcome::Failed(e) => {
                    let mut st = this.state.borrow_mut(py);
                    st.queued_bytes = st.queued_bytes.saturating_sub(len);
                    drop(st);
                    return Self::socket_error(slf, e, "Fatal write error on datagram transport");
                }
            }
        }
        control_flow(slf, false)?;
        let (empty, closing) = {
            let st = this.state.borrow(py);
            (st.queue.is_empty(), st.life.is_closing())
        };
        if empty {
            Self::set_watch(slf, true, false)?;
            if closing {
                Self::_call_connection_lost(slf, None)?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl DatagramTransport {
    #[pyo3(signature = (data, addr=None))]
    fn sendto(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>, addr: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !crate::buffers::is_bytes_like(data) {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {:?}",
                data.get_type().name()?.to_string()
            )));
        }
        // Before 3.13 asyncio returns early on empty data (`if not data`, which raises for a
        // 0-dim view); 3.13 sends whatever it is given.
        if !crate::compat::datagram_modern_accounting(py) && data.len()? == 0 {
            return Ok(());
        }
        let mut addr = addr.unwrap_or_else(|| py.None().into_bound(py));
        let fixed = this.state.borrow(py).address.as_ref().map(|a| a.clone_ref(py));
        if let Some(fixed) = fixed {
            let fixed = fixed.into_bound(py);
            if !addr.is_none() && !addr.eq(&fixed)? {
                return Err(PyValueError::new_err(format!("Invalid address: must be None or {}", fixed.str()?)));
            }
            addr = fixed;
            let lost = this.state.borrow_mut(py).life.write_after_loss();
            if let Some(warn) = lost {
                if warn {
                    crate::pyrefs::asyncio_logger(py)?.call_method1("warning", ("socket.send() raised exception.",))?;
                }
                return Ok(());
            }
        }
        let (sock, queue_empty) = {
            let st = this.state.borrow(py);
            (st.sock.as_ref().map(|s| s.clone_ref(py)), st.queue.is_empty())
        };
        let Some(sock) = sock else { return Ok(()) };
        if queue_empty {
            match this.try_send(py, sock.bind(py), data, &addr) {
                SendOutcome::Sent => return Ok(()),
                SendOutcome::WouldBlock => Self::set_watch(slf, true, true)?,
                SendOutcome::Failed(e) => return Self::socket_error(slf, e, "Fatal write error on datagram transport"),
            }
        }
        // `bytes(data)`, as asyncio queues it: any shape and format, contiguous or not. The
        // count is of those bytes, which the queue's draining subtracts (not `len(data)`, the
        // items of a view's first dimension).
        let owned = py.get_type::<PyBytes>().call1((data,))?.cast_into::<PyBytes>()?;
        {
            let nbytes = owned.as_bytes().len();
            let mut st = this.state.borrow_mut(py);
            st.queue.push_back((owned.unbind(), addr.unbind()));
            st.queued_bytes += queued_size(py, nbytes);
        }
        control_flow(slf, true)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let lost_now = {
            let mut st = slf.get().state.borrow_mut(py);
            if !st.life.close() {
                return Ok(());
            }
            let empty = st.queue.is_empty();
            if empty {
                st.life.lose();
            }
            empty
        };
        Self::set_watch(slf, false, false)?;
        if lost_now {
            Self::set_watch(slf, true, false)?;
            base::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    #[pyo3(signature = (exc))]
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = this.protocol(py);
        let result = match &protocol {
            Some(p) => p.bind(py).call_method1(intern!(py, "connection_lost"), (exc,)).map(drop),
            None => Ok(()),
        };
        let (sock, protocol) = {
            let mut st = this.state.borrow_mut(py);
            (st.sock.take(), st.protocol.take())
        };
        if let Some(sock) = sock {
            this.tally.closed();
            sock.bind(py).call_method0(intern!(py, "close"))?;
        }
        drop(protocol);
        result
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).sock.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }

    #[getter]
    fn _address(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).address.as_ref().map(|a| a.clone_ref(py))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let st = self.state.borrow(py);
        let status = if st.sock.is_none() {
            " closed"
        } else if st.life.is_closing() {
            " closing"
        } else {
            ""
        };
        format!("<DatagramTransport{status} fd={} bufsize={}>", self.fd, st.queued_bytes)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.extra)?;
        if let Some(st) = self.state.try_borrow() {
            visit.call(&st.sock)?;
            visit.call(&st.protocol)?;
            visit.call(&st.address)?;
            for (d, a) in &st.queue {
                visit.call(d)?;
                visit.call(a)?;
            }
        }
        Ok(())
    }
}

impl Drop for DatagramTransport {
    fn drop(&mut self) {
        if self.state.get_mut().sock.is_none() {
            return;
        }
        Python::attach(|py| super::warn_unclosed(py, "DatagramTransport", self.fd));
    }
}

/// Creates a datagram transport and schedules `connection_made`, reading, and `waiter`.
#[pyfunction]
#[pyo3(signature = (event_loop, sock, protocol, address=None, waiter=None, extra=None))]
pub fn make_datagram_transport<'py>(
    event_loop: &Bound<'py, EventLoop>,
    sock: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    address: Option<&Bound<'py, PyAny>>,
    waiter: Option<&Bound<'py, PyAny>>,
    extra: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, DatagramTransport>> {
    let py = event_loop.py();
    let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    let extra = super::socket_extra(sock, extra)?;
    let connected = extra.get_item("peername")?.is_some_and(|p| p.is_truthy().unwrap_or(false));
    let state = State {
        sock: Some(sock.clone().unbind()),
        protocol: Some(protocol.clone().unbind()),
        address: address.filter(|a| a.is_truthy().unwrap_or(false)).map(|a| a.clone().unbind()),
        connected,
        queue: VecDeque::new(),
        queued_bytes: 0,
        life: Lifecycle::Open,
        paused: false,
        flow: WriteFlow::default(),
    };
    let transport = super::new_transport(
        py,
        DatagramTransport {
            _live: crate::live::Token::new(crate::live::Kind::DatagramTransport),
            event_loop: event_loop.clone().unbind(),
            fd,
            extra: extra.unbind(),
            state: GilCell::new(state),
            tally: super::Tally::new(event_loop.get(), TransportKind::Datagram),
        },
    )?;
    super::schedule_start(event_loop, protocol, transport.as_any(), waiter, None)?;
    Ok(transport)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DatagramTransport>()?;
    m.add_function(wrap_pyfunction!(make_datagram_transport, m)?)
}
