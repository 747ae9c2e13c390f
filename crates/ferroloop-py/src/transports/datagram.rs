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
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::report_fatal;
use crate::errors::is_exit;
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
    /// `get_extra_info`'s answers.
    extra: Py<PyDict>,
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
    state: GilCell<State>,
}

struct Watch(Py<DatagramTransport>);

impl IoWatcher for Watch {
    fn io_ready(&self, py: Python<'_>, write: bool) -> PyResult<()> {
        let t = self.0.bind(py);
        if write {
            DatagramTransport::send_queued(t)
        } else {
            DatagramTransport::read_ready(t)
        }
    }

    fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }
}

fn marker_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CELL.import(py, "ferroloop._transports", "DatagramTransport")
}

enum SendOutcome {
    Sent,
    WouldBlock,
    Failed(PyErr),
}

impl DatagramTransport {
    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).protocol.as_ref().map(|p| p.clone_ref(py))
    }

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

    fn call_soon_self(slf: &Bound<'_, Self>, method: &str, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let py = slf.py();
        let cb = slf.getattr(method)?;
        slf.get().event_loop.bind(py).get().call_soon_native(py, &cb, args)
    }

    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let this = slf.get();
        let exc = err.into_value(py).into_bound(py).into_any();
        report_fatal(this.event_loop.bind(py), slf.as_any(), this.protocol(py).as_ref(), &exc, message)?;
        Self::force_close(slf, Some(&exc))
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
        let exc = exc.map_or_else(|| py.None().into_bound(py), Clone::clone);
        Self::call_soon_self(slf, "_call_connection_lost", &PyTuple::new(py, [exc])?)
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

    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
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
            Ok(_) => SendOutcome::Sent,
            Err(e) if e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py) => {
                SendOutcome::WouldBlock
            }
            Err(e) => SendOutcome::Failed(e),
        }
    }

    fn send_queued(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let header = if crate::compat::datagram_modern_accounting(py) { 8 } else { 0 };
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
            let len = data.bind(py).as_bytes().len() + header;
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
        Self::control_flow(slf, false)?;
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

    /// Pauses (after a write: `grew`) or resumes (after a flush) the protocol's writing when the
    /// buffer crosses a watermark.
    fn control_flow(slf: &Bound<'_, Self>, grew: bool) -> PyResult<()> {
        let py = slf.py();
        let protocol = {
            let mut st = slf.get().state.borrow_mut(py);
            let size = st.queued_bytes;
            if !st.flow.update(size, grew) {
                return Ok(());
            }
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        super::tell_flow(slf.get().event_loop.bind(py), slf.as_any(), protocol, grew)
    }
}

#[pymethods]
impl DatagramTransport {
    #[pyo3(signature = (data, addr=None))]
    fn sendto(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>, addr: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
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
            st.queued_bytes += nbytes + if crate::compat::datagram_modern_accounting(py) { 8 } else { 0 };
        }
        Self::control_flow(slf, true)
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let extra = self.state.borrow(py).extra.clone_ref(py);
        match extra.bind(py).get_item(name)? {
            Some(v) => Ok(v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).life.is_closing()
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) {
        let old = self.state.borrow_mut(py).protocol.replace(protocol.clone().unbind());
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
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
            Self::call_soon_self(slf, "_call_connection_lost", &PyTuple::new(py, [py.None()])?)?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.state.borrow(py).queued_bytes
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
        let st = self.state.borrow(py);
        st.flow.limits()
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (high, low) = super::water_marks(slf.py(), high.as_ref(), low.as_ref(), super::DEFAULT_HIGH_WATER)?;
        {
            let mut st = slf.get().state.borrow_mut(slf.py());
            st.flow.set_limits(high, low);
        }
        Self::control_flow(slf, true)
    }

    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let st = slf.get().state.borrow(slf.py());
        if st.life.is_closing() || st.paused {
            return Ok(());
        }
        drop(st);
        Self::set_watch(slf, false, true)
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        let st = self.state.borrow(py);
        !st.life.is_closing() && !st.paused
    }

    /// asyncio's selector transports (datagram ones too) stop and restart reading.
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut st = slf.get().state.borrow_mut(py);
            if st.life.is_closing() || st.paused {
                return Ok(());
            }
            st.paused = true;
        }
        Self::set_watch(slf, false, false)?;
        if slf.get().event_loop.bind(py).get().debug() {
            crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r pauses reading", slf))?;
        }
        Ok(())
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut st = slf.get().state.borrow_mut(py);
            if st.life.is_closing() || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        Self::set_watch(slf, false, true)?;
        if slf.get().event_loop.bind(py).get().debug() {
            crate::pyrefs::asyncio_logger(py)?.call_method1("debug", ("%r resumes reading", slf))?;
        }
        Ok(())
    }

    /// asyncio's private flags, which tests and libraries read.
    #[getter]
    fn _paused(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).paused
    }

    #[getter]
    fn _closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).life.is_closing()
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

    /// `ferroloop._transports.DatagramTransport`, a subclass of `asyncio.DatagramTransport`.
    #[getter(__class__)]
    fn class_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        marker_class(py).cloned()
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
        if let Some(st) = self.state.try_borrow() {
            visit.call(&st.sock)?;
            visit.call(&st.protocol)?;
            visit.call(&st.extra)?;
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
    let fd: RawFd = sock.call_method0("fileno")?.extract()?;
    let extra = super::socket_extra(sock, extra)?;
    let connected = extra.get_item("peername")?.is_some_and(|p| p.is_truthy().unwrap_or(false));
    let state = State {
        sock: Some(sock.clone().unbind()),
        protocol: Some(protocol.clone().unbind()),
        extra: extra.unbind(),
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
            state: GilCell::new(state),
        },
    )?;
    super::schedule_start(event_loop, protocol, transport.as_any(), waiter, None)?;
    Ok(transport)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DatagramTransport>()?;
    m.add_function(wrap_pyfunction!(make_datagram_transport, m)?)
}
