//! `ReadPipeTransport`: the read end (see the parent module for both ends' rules).

use pyo3::prelude::*;

use super::*;

fn read_marker_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CELL.import(py, "ferroloop._transports", "ReadPipeTransport")
}

struct ReadState {
    /// The file object; closed and dropped once `connection_lost` has run (or set by `_pipe`).
    pipe: Option<Py<PyAny>>,
    /// The protocol; dropped once `connection_lost` has run.
    protocol: Option<Py<PyAny>>,
    /// `close()` was called, end of file was read, or reading failed.
    closing: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// The descriptor is registered with the loop for reading.
    watching: bool,
    /// `connection_lost` is scheduled (or ran).
    lost_scheduled: bool,
}

#[pyclass(module = "ferroloop._ferroloop", frozen, weakref, dict)]
pub struct ReadPipeTransport {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    event_loop: Py<EventLoop>,
    /// The pipe's descriptor (valid while `state.pipe` is open).
    fd: RawFd,
    /// `get_extra_info`'s answers.
    extra: Py<PyDict>,
    state: GilCell<ReadState>,
}

struct ReadWatch(Py<ReadPipeTransport>);

impl IoWatcher for ReadWatch {
    fn io_ready(&self, py: Python<'_>, _write: bool) -> PyResult<()> {
        ReadPipeTransport::read_ready(self.0.bind(py))
    }

    fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }
}

impl ReadPipeTransport {
    fn event_loop<'py>(&self, py: Python<'py>) -> &Bound<'py, EventLoop> {
        self.event_loop.bind(py)
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).protocol.as_ref().map(|p| p.clone_ref(py))
    }

    fn watch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let watcher: Arc<dyn IoWatcher> = Arc::new(ReadWatch(slf.clone().unbind()));
        this.event_loop(py).get().add_native(py, this.fd, watcher, false, None)?;
        this.state.borrow_mut(py).watching = true;
        Ok(())
    }

    fn unwatch(&self, py: Python<'_>) -> PyResult<()> {
        let watching = std::mem::replace(&mut self.state.borrow_mut(py).watching, false);
        if watching {
            self.event_loop(py).get().remove_native(py, self.fd, false)?;
        }
        Ok(())
    }

    fn call_soon_self(slf: &Bound<'_, Self>, method: &str, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let py = slf.py();
        let cb = slf.getattr(method)?;
        slf.get().event_loop(py).get().call_soon_native(py, &cb, args)
    }

    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = {
            let st = this.state.borrow(py);
            if !st.watching || st.closing || st.paused {
                return Ok(());
            }
            match &st.protocol {
                Some(p) => p.clone_ref(py),
                None => return Ok(()),
            }
        };
        let received = READ_BUF.with(|cell| {
            let mut fallback;
            let mut guard = cell.try_borrow_mut();
            let buf: &mut Vec<u8> = match guard.as_mut() {
                Ok(b) => b,
                Err(_) => {
                    fallback = vec![0; MAX_READ];
                    &mut fallback
                }
            };
            net::read(this.fd, buf).map(|n| (n > 0).then(|| PyBytes::new(py, &buf[..n])))
        });
        match received {
            Err(e) if would_block(&e) => Ok(()),
            Err(e) => {
                let quiet = e.raw_os_error() == Some(libc::EIO);
                Self::fatal_error(slf, os_error(&e), "Fatal read error on pipe transport", quiet)
            }
            Ok(Some(data)) => protocol.bind(py).call_method1(intern!(py, "data_received"), (data,)).map(drop),
            Ok(None) => Self::on_eof(slf, protocol.bind(py)),
        }
    }

    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.event_loop(py).get().debug() {
            log(py, "info", ("%r was closed by peer", slf), None);
        }
        this.state.borrow_mut(py).closing = true;
        this.unwatch(py)?;
        let eof_received = protocol.getattr(intern!(py, "eof_received"))?;
        this.event_loop(py).get().call_soon_native(py, &eof_received, &PyTuple::empty(py))?;
        Self::schedule_connection_lost(slf, None)
    }

    /// asyncio's `_fatal_error`: report (or, when `quiet`, log in debug mode), then close.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str, quiet: bool) -> PyResult<()> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let this = slf.get();
        let exc = err.into_value(py).into_bound(py).into_any();
        if quiet {
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

    /// asyncio's `_close`: stop reading and schedule `connection_lost(exc)`.
    fn close_with(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.state.borrow_mut(py).closing = true;
        this.unwatch(py)?;
        Self::schedule_connection_lost(slf, exc)
    }

    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        if std::mem::replace(&mut slf.get().state.borrow_mut(py).lost_scheduled, true) {
            return Ok(());
        }
        let exc = exc.map_or_else(|| py.None().into_bound(py), Clone::clone);
        Self::call_soon_self(slf, "_call_connection_lost", &PyTuple::new(py, [exc])?)
    }
}

#[pymethods]
impl ReadPipeTransport {
    /// The most one read takes from the pipe.
    #[classattr]
    fn max_size() -> usize {
        MAX_READ
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

    fn is_reading(&self, py: Python<'_>) -> bool {
        let st = self.state.borrow(py);
        !st.paused && !st.closing
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.state.borrow_mut(py);
            if st.paused || st.closing {
                return Ok(());
            }
            st.paused = true;
        }
        this.unwatch(py)?;
        if this.event_loop(py).get().debug() {
            log(py, "debug", ("%r pauses reading", slf), None);
        }
        Ok(())
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.state.borrow_mut(py);
            if st.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        Self::watch(slf)?;
        if this.event_loop(py).get().debug() {
            log(py, "debug", ("%r resumes reading", slf), None);
        }
        Ok(())
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) {
        let old = self.state.borrow_mut(py).protocol.replace(protocol.clone().unbind());
        drop(old);
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().state.borrow(slf.py()).closing {
            return Ok(());
        }
        Self::close_with(slf, None)
    }

    /// Starts reading (scheduled by the constructor, after `connection_made`).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_reading(slf.py()) {
            Self::watch(slf)?;
        }
        Ok(())
    }

    /// Tells the protocol the pipe is closed, then closes the pipe object (once).
    #[pyo3(signature = (exc))]
    fn _call_connection_lost(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.unwatch(py)?;
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
    fn _paused(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).paused
    }

    /// `ferroloop._transports.ReadPipeTransport`, a subclass of `asyncio.ReadTransport`.
    #[getter(__class__)]
    fn class_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        read_marker_class(py).cloned()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let st = self.state.borrow(py);
        let mut info = vec!["ReadPipeTransport".to_owned()];
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
                info.push(if st.watching { "polling" } else { "idle" }.into());
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

impl Drop for ReadPipeTransport {
    fn drop(&mut self) {
        if let Some(pipe) = self.state.get_mut().pipe.take() {
            Python::attach(|py| close_on_drop(py, "ReadPipeTransport", self.fd, &pipe));
        }
    }
}

/// Creates a transport reading `pipe` and schedules, in order, `protocol.connection_made`, the
/// start of reading, and `waiter`'s result. `ValueError` for a file that is not a pipe, a
/// socket or a character device.
#[pyfunction]
#[pyo3(signature = (event_loop, pipe, protocol, waiter=None, extra=None))]
pub fn make_read_pipe_transport<'py>(
    event_loop: &Bound<'py, EventLoop>,
    pipe: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    waiter: Option<&Bound<'py, PyAny>>,
    extra: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, ReadPipeTransport>> {
    let py = event_loop.py();
    let (extra, fd, _) = open_pipe(pipe, extra, "Pipe transport is for pipes/sockets only.")?;
    let state = ReadState {
        pipe: Some(pipe.clone().unbind()),
        protocol: Some(protocol.clone().unbind()),
        closing: false,
        paused: false,
        watching: false,
        lost_scheduled: false,
    };
    let transport = crate::transports::new_transport(
        py,
        ReadPipeTransport {
            _live: crate::live::Token::new(crate::live::Kind::ReadPipeTransport),
            event_loop: event_loop.clone().unbind(),
            fd,
            extra: extra.unbind(),
            state: GilCell::new(state),
        },
    )?;
    crate::transports::schedule_start(event_loop, protocol, transport.as_any(), waiter, None)?;
    Ok(transport)
}
