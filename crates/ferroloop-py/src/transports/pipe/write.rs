//! `WritePipeTransport`: the write end (see the parent module for both ends' rules).

use pyo3::prelude::*;

use super::*;

fn write_marker_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CELL.import(py, "ferroloop._transports", "WritePipeTransport")
}

struct WriteState {
    /// The file object; closed and dropped once `connection_lost` has run (or set by `_pipe`).
    pipe: Option<Py<PyAny>>,
    /// The protocol; dropped once `connection_lost` has run.
    protocol: Option<Py<PyAny>>,
    /// Bytes accepted by `write()` and not yet written.
    buffer: WriteBuffer,
    /// asyncio's `_conn_lost`: counts failed writes and writes made after closing.
    conn_lost: u32,
    /// `close()`, `write_eof()` or `abort()` was called, or the pipe failed.
    closing: bool,
    /// The descriptor is watched for writing (the buffer is not empty).
    writing: bool,
    /// The descriptor is watched for reading, to see the reader go (FIFOs and sockets).
    reading: bool,
    /// `connection_lost` is scheduled (or ran).
    lost_scheduled: bool,
    /// Write flow control: the watermarks, and whether the protocol is paused.
    flow: WriteFlow,
}

#[pyclass(module = "ferroloop._ferroloop", frozen, weakref, dict)]
pub struct WritePipeTransport {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    event_loop: Py<EventLoop>,
    /// The pipe's descriptor (valid while `state.pipe` is open).
    fd: RawFd,
    /// A FIFO or a socket: the descriptor reports the reader going as readability.
    detects_reader_gone: bool,
    /// `get_extra_info`'s answers.
    extra: Py<PyDict>,
    state: GilCell<WriteState>,
}

struct WriteWatch(Py<WritePipeTransport>);

impl IoWatcher for WriteWatch {
    fn io_ready(&self, py: Python<'_>, write: bool) -> PyResult<()> {
        let t = self.0.bind(py);
        if write {
            WritePipeTransport::write_ready(t)
        } else {
            WritePipeTransport::reader_gone(t)
        }
    }

    fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }
}

/// What `write()` did with the data, decided without calling into Python.
enum WriteOutcome {
    /// Nothing to do (empty data, or everything was written).
    Done,
    /// The transport is closing: the write was dropped; the count of such writes before it.
    Dropped(u32),
    /// The rest was buffered; the descriptor must now be watched for writing.
    StartWriting,
    /// Appended to the buffer that was already waiting.
    Buffered,
    /// `write(2)` failed.
    Failed(io::Error),
}

impl WritePipeTransport {
    fn event_loop<'py>(&self, py: Python<'py>) -> &Bound<'py, EventLoop> {
        self.event_loop.bind(py)
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn watch(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let watcher: Arc<dyn IoWatcher> = Arc::new(WriteWatch(slf.clone().unbind()));
        this.event_loop(py).get().add_native(py, this.fd, watcher, write, None)?;
        let mut st = this.state.borrow_mut(py);
        if write {
            st.writing = true;
        } else {
            st.reading = true;
        }
        Ok(())
    }

    fn unwatch(&self, py: Python<'_>, write: bool) -> PyResult<()> {
        let was = {
            let mut st = self.state.borrow_mut(py);
            std::mem::replace(if write { &mut st.writing } else { &mut st.reading }, false)
        };
        if was {
            self.event_loop(py).get().remove_native(py, self.fd, write)?;
        }
        Ok(())
    }

    /// Tries to write `data` at once when nothing is buffered; buffers the rest.
    fn write_now(&self, py: Python<'_>, data: &[u8]) -> WriteOutcome {
        if data.is_empty() {
            return WriteOutcome::Done;
        }
        let mut st = self.state.borrow_mut(py);
        if st.conn_lost > 0 || st.closing {
            st.conn_lost += 1;
            return WriteOutcome::Dropped(st.conn_lost - 1);
        }
        if !st.buffer.is_empty() {
            st.buffer.push(data);
            return WriteOutcome::Buffered;
        }
        let written = match net::write(self.fd, data) {
            Ok(n) => n,
            Err(e) if would_block(&e) => 0,
            Err(e) => {
                st.conn_lost += 1;
                return WriteOutcome::Failed(e);
            }
        };
        if written >= data.len() {
            return WriteOutcome::Done;
        }
        st.buffer.push(&data[written..]);
        WriteOutcome::StartWriting
    }

    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = {
            let mut st = this.state.borrow_mut(py);
            if !st.writing || st.buffer.is_empty() {
                return Ok(());
            }
            let res = net::write_vectored(this.fd, &st.buffer.io_slices());
            if let Ok(n) = res {
                st.buffer.consume(n);
            }
            res
        };
        match result {
            Err(e) if would_block(&e) => Ok(()),
            Err(e) => {
                {
                    let mut st = this.state.borrow_mut(py);
                    st.buffer.clear();
                    st.conn_lost += 1;
                }
                this.unwatch(py, true)?;
                Self::fatal_error(slf, os_error(&e), "Fatal write error on pipe transport")
            }
            Ok(_) => {
                if !this.state.borrow(py).buffer.is_empty() {
                    return Ok(());
                }
                this.unwatch(py, true)?;
                // May write again, or close.
                Self::control_flow(slf, false)?;
                let lost_now = {
                    let mut st = this.state.borrow_mut(py);
                    st.closing && st.buffer.is_empty() && !std::mem::replace(&mut st.lost_scheduled, true)
                };
                if lost_now {
                    this.unwatch(py, false)?;
                    Self::_call_connection_lost(this, py, None)?;
                }
                Ok(())
            }
        }
    }

    /// The descriptor became readable: the reading end was closed.
    fn reader_gone(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let buffered = {
            let st = this.state.borrow(py);
            if !st.reading || st.lost_scheduled {
                return Ok(());
            }
            !st.buffer.is_empty()
        };
        if this.event_loop(py).get().debug() {
            log(py, "info", ("%r was closed by peer", slf), None);
        }
        if buffered {
            let exc = PyBrokenPipeError::new_err(()).into_value(py).into_bound(py).into_any();
            Self::close_with(slf, Some(&exc))
        } else {
            Self::close_with(slf, None)
        }
    }

    /// asyncio's `_fatal_error`: an `OSError` is only logged in debug mode, anything else goes
    /// to the exception handler; then the transport closes.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let this = slf.get();
        let exc = err.into_value(py).into_bound(py).into_any();
        if exc.is_instance_of::<PyOSError>() {
            if this.event_loop(py).get().debug() {
                log(py, "debug", ("%r: %s", slf, message), Some(&exc));
            }
        } else {
            crate::transports::report_error(
                this.event_loop(py),
                slf.as_any(),
                this.protocol(py).as_ref(),
                &exc,
                message,
            )?;
        }
        Self::close_with(slf, Some(&exc))
    }

    /// asyncio's `_close`: drop the buffer, stop watching, schedule `connection_lost(exc)`.
    fn close_with(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let schedule = {
            let mut st = this.state.borrow_mut(py);
            st.closing = true;
            st.buffer.clear();
            !std::mem::replace(&mut st.lost_scheduled, true)
        };
        this.unwatch(py, true)?;
        this.unwatch(py, false)?;
        if !schedule {
            return Ok(());
        }
        let exc = exc.map_or_else(|| py.None().into_bound(py), Clone::clone);
        let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
        this.event_loop(py).get().call_soon_native(py, &cb, &PyTuple::new(py, [exc])?)
    }

    /// Pauses (after a write: `grew`) or resumes (after a flush) the protocol's writing when the
    /// buffer crosses a watermark.
    fn control_flow(slf: &Bound<'_, Self>, grew: bool) -> PyResult<()> {
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
}

#[pymethods]
impl WritePipeTransport {
    /// asyncio's write pipe transport is an `asyncio.Transport` (through its flow-control base),
    /// whose read side raises `NotImplementedError`.
    fn is_reading(&self) -> PyResult<bool> {
        Err(PyNotImplementedError::new_err(()))
    }

    fn pause_reading(&self) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(()))
    }

    fn resume_reading(&self) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(()))
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.extra.bind(py).get_item(name)? {
            Some(v) => Ok(v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).closing
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) {
        let old = self.state.borrow_mut(py).protocol.replace(protocol.clone().unbind());
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let data = match Data::of(data) {
            Ok(d) => d,
            Err(DataError::Type(e)) => return Err(e),
            // As asyncio's `os.write(fd, data)` failing: a fatal write error.
            Err(DataError::Export(e)) => return Self::fatal_error(slf, e, "Fatal write error on pipe transport"),
        };
        match this.write_now(py, data.as_bytes()) {
            WriteOutcome::Done => Ok(()),
            WriteOutcome::Dropped(before) => {
                if before >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                    log(py, "warning", ("pipe closed by peer or os.write(pipe, data) raised exception.",), None);
                }
                Ok(())
            }
            WriteOutcome::Failed(e) => Self::fatal_error(slf, os_error(&e), "Fatal write error on pipe transport"),
            WriteOutcome::StartWriting => {
                if let Err(e) = Self::watch(slf, true) {
                    // As in asyncio, data is only buffered once the descriptor is watched.
                    this.state.borrow_mut(py).buffer.clear();
                    return Err(e);
                }
                Self::control_flow(slf, true)
            }
            WriteOutcome::Buffered => Self::control_flow(slf, true),
        }
    }

    /// `b"".join(list_of_data)`, then `write()`, as `asyncio.WriteTransport` does.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write(slf, &joined)
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes the pipe once the buffer has drained (a pipe has no half-close).
    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lost_now = {
            let mut st = this.state.borrow_mut(py);
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            st.buffer.is_empty() && !std::mem::replace(&mut st.lost_scheduled, true)
        };
        if lost_now {
            this.unwatch(py, false)?;
            let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
            this.event_loop(py).get().call_soon_native(py, &cb, &PyTuple::new(py, [py.None()])?)?;
        }
        Ok(())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let open = {
            let st = slf.get().state.borrow(slf.py());
            st.pipe.is_some() && !st.closing
        };
        if open {
            Self::write_eof(slf)?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_with(slf, None)
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.state.borrow(py).buffer.len()
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
        let (high, low) = crate::transports::water_marks(
            slf.py(),
            high.as_ref(),
            low.as_ref(),
            crate::transports::DEFAULT_HIGH_WATER,
        )?;
        {
            let mut st = slf.get().state.borrow_mut(slf.py());
            st.flow.set_limits(high, low);
        }
        Self::control_flow(slf, true)
    }

    /// Starts watching for the reader going, for FIFOs and sockets (scheduled by the
    /// constructor, after `connection_made`).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if this.detects_reader_gone && !this.state.borrow(slf.py()).lost_scheduled {
            Self::watch(slf, false)?;
        }
        Ok(())
    }

    /// Tells the protocol the pipe is closed, then closes the pipe object (once).
    #[pyo3(signature = (exc))]
    fn _call_connection_lost(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.unwatch(py, true)?;
        self.unwatch(py, false)?;
        let (protocol, pipe) = {
            let mut st = self.state.borrow_mut(py);
            st.lost_scheduled = true;
            (st.protocol.take(), st.pipe.take())
        };
        connection_lost(py, protocol, pipe, exc)
    }

    /// The file object; `None` once closed. Setting it to `None` silences the `ResourceWarning`
    /// of a transport dropped while open (asyncio's tests do so).
    #[getter(_pipe)]
    fn pipe_attr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).pipe.as_ref().map(|p| p.clone_ref(py))
    }

    #[setter(_pipe)]
    fn set_pipe_attr(&self, py: Python<'_>, pipe: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.state.borrow_mut(py).pipe, pipe);
        drop(old);
    }

    #[getter]
    fn _fileno(&self) -> RawFd {
        self.fd
    }

    #[getter]
    fn _protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<EventLoop> {
        self.event_loop.clone_ref(py)
    }

    #[getter]
    fn _closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).closing
    }

    #[getter]
    fn _conn_lost(&self, py: Python<'_>) -> u32 {
        self.state.borrow(py).conn_lost
    }

    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).flow.is_paused()
    }

    #[getter]
    fn _high_water(&self, py: Python<'_>) -> usize {
        self.state.borrow(py).flow.limits().1
    }

    #[getter]
    fn _low_water(&self, py: Python<'_>) -> usize {
        self.state.borrow(py).flow.limits().0
    }

    /// `ferroloop._transports.WritePipeTransport`, a subclass of `asyncio.WriteTransport`.
    #[getter(__class__)]
    fn class_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        write_marker_class(py).cloned()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let st = self.state.borrow(py);
        let mut info = vec!["WritePipeTransport".to_owned()];
        if st.pipe.is_none() {
            info.push("closed".into());
        } else if st.closing {
            info.push("closing".into());
        }
        info.push(format!("fd={}", self.fd));
        if st.pipe.is_some() {
            if self.event_loop.get().closed() {
                info.push("open".into());
            } else {
                info.push(if st.writing { "polling" } else { "idle" }.into());
                info.push(format!("bufsize={}", st.buffer.len()));
            }
        }
        format!("<{}>", info.join(" "))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.extra)?;
        if let Some(st) = self.state.try_borrow() {
            visit.call(&st.pipe)?;
            visit.call(&st.protocol)?;
        }
        Ok(())
    }
}

impl Drop for WritePipeTransport {
    fn drop(&mut self) {
        if let Some(pipe) = self.state.get_mut().pipe.take() {
            Python::attach(|py| close_on_drop(py, "WritePipeTransport", self.fd, &pipe));
        }
    }
}

/// Creates a transport writing to `pipe` and schedules, in order, `protocol.connection_made`,
/// (for FIFOs and sockets) watching for the reader going, and `waiter`'s result. `ValueError`
/// for a file that is not a pipe, a socket or a character device.
#[pyfunction]
#[pyo3(signature = (event_loop, pipe, protocol, waiter=None, extra=None))]
pub fn make_write_pipe_transport<'py>(
    event_loop: &Bound<'py, EventLoop>,
    pipe: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<&Bound<'py, PyAny>>,
    extra: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, WritePipeTransport>> {
    let py = event_loop.py();
    let (extra, fd, kind) = open_pipe(pipe, extra, "Pipe transport is only for pipes, sockets and character devices")?;
    let state = WriteState {
        pipe: Some(pipe.clone().unbind()),
        protocol: Some(protocol.clone().unbind()),
        buffer: WriteBuffer::new(),
        conn_lost: 0,
        closing: false,
        writing: false,
        reading: false,
        lost_scheduled: false,
        flow: WriteFlow::default(),
    };
    let transport = crate::transports::new_transport(
        py,
        WritePipeTransport {
            _live: crate::live::Token::new(crate::live::Kind::WritePipeTransport),
            event_loop: event_loop.clone().unbind(),
            fd,
            detects_reader_gone: matches!(kind, FileType::Fifo | FileType::Socket),
            extra: extra.unbind(),
            state: GilCell::new(state),
        },
    )?;
    crate::transports::schedule_start(event_loop, protocol, transport.as_any(), waiter, None)?;
    Ok(transport)
}
