//! `WritePipeTransport`: the write end (see the parent module for both ends' rules).

use pyo3::prelude::*;

use super::*;

struct WriteState {
    end: End,
    /// Bytes accepted by `write()` and not yet written.
    buffer: WriteBuffer,
    /// asyncio's `_conn_lost`: counts failed writes and writes made after closing (a pipe
    /// drops writes from closing on, not only once lost as a socket does).
    conn_lost: u32,
    /// The descriptor is watched for writing (the buffer is not empty).
    writing: bool,
    /// The descriptor is watched for reading, to see the reader go (FIFOs and sockets).
    reading: bool,
    /// Write flow control: the watermarks, and whether the protocol is paused.
    flow: WriteFlow,
}

impl WriteState {
    /// What `__repr__` says of the descriptor's watching and the buffer.
    fn polling(&self) -> Vec<String> {
        vec![if self.writing { "polling" } else { "idle" }.into(), format!("bufsize={}", self.buffer.len())]
    }
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
    /// The loop's statistics for pipe transports.
    tally: crate::transports::Tally,
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

impl PipeEnd for WritePipeTransport {
    fn end<R>(&self, py: Python<'_>, f: impl FnOnce(&mut End) -> R) -> R {
        f(&mut self.state.borrow_mut(py).end)
    }

    fn unwatch_all(&self, py: Python<'_>) -> PyResult<()> {
        self.unwatch(py, true)?;
        self.unwatch(py, false)
    }

    /// Drops the buffer, stops watching, and schedules `connection_lost(exc)` (once).
    fn close_with(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let schedule = {
            let mut st = this.state.borrow_mut(py);
            st.end.life.close();
            st.buffer.clear();
            st.end.life.lose()
        };
        this.unwatch_all(py)?;
        if schedule {
            base::schedule_connection_lost(slf, exc)?;
        }
        Ok(())
    }
}

pipe_end!(WritePipeTransport, "WritePipeTransport");

impl WriteSide for WritePipeTransport {
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut WriteFlow, usize) -> R) -> R {
        let mut st = self.state.borrow_mut(py);
        let size = st.buffer.len();
        f(&mut st.flow, size)
    }
}

base::write_methods!(WritePipeTransport);

impl Readiness for WritePipeTransport {
    /// The descriptor became readable: the reading end was closed.
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::reader_gone(slf)
    }

    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush(slf)
    }
}

impl WritePipeTransport {
    fn watch(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let watcher: Arc<dyn IoWatcher> = Arc::new(Watch(slf.clone().unbind()));
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
        if st.conn_lost > 0 || st.end.life.is_closing() {
            st.conn_lost += 1;
            return WriteOutcome::Dropped(st.conn_lost - 1);
        }
        match st.buffer.write_or_push(data, |d| net::write(self.fd, d).inspect(|&n| self.tally.sent(n))) {
            Ok(Pushed::Written) => WriteOutcome::Done,
            Ok(Pushed::Appended) => WriteOutcome::Buffered,
            Ok(Pushed::Started) => WriteOutcome::StartWriting,
            Err(e) => {
                st.conn_lost += 1;
                WriteOutcome::Failed(e)
            }
        }
    }

    /// One `writev` of the buffer; once drained, the protocol may resume, and a closing
    /// transport is lost.
    fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = {
            let mut st = this.state.borrow_mut(py);
            if !st.writing || st.buffer.is_empty() {
                return Ok(());
            }
            st.buffer.flush_with(|slices| net::write_vectored(this.fd, slices).inspect(|&n| this.tally.sent(n)))
        };
        match result {
            Err(e) if try_later(&e) => Ok(()),
            Err(e) => {
                {
                    let mut st = this.state.borrow_mut(py);
                    st.buffer.clear();
                    st.conn_lost += 1;
                }
                this.unwatch(py, true)?;
                Self::fatal_error(slf, os_error(&e))
            }
            Ok(_) => {
                if !this.state.borrow(py).buffer.is_empty() {
                    return Ok(());
                }
                this.unwatch(py, true)?;
                // May write again, or close.
                control_flow(slf, false)?;
                let lost_now = {
                    let mut st = this.state.borrow_mut(py);
                    st.end.life.is_closing() && st.buffer.is_empty() && st.end.life.lose()
                };
                if lost_now {
                    this.unwatch(py, false)?;
                    Self::_call_connection_lost(this, py, None)?;
                }
                Ok(())
            }
        }
    }

    /// The reading end was closed: close, with `BrokenPipeError` when data was still buffered.
    fn reader_gone(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let buffered = {
            let st = this.state.borrow(py);
            if !st.reading || st.end.life.is_lost() {
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

    /// asyncio's write pipe `_fatal_error`: an `OSError` is only logged in debug mode.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let quiet = err.is_instance_of::<PyOSError>(slf.py());
        fatal_error(slf, err, "Fatal write error on pipe transport", quiet)
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

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let data = match Data::of(data) {
            Ok(d) => d,
            Err(DataError::Type(e)) => return Err(e),
            // As asyncio's `os.write(fd, data)` failing: a fatal write error.
            Err(DataError::Export(e)) => return Self::fatal_error(slf, e),
        };
        match this.write_now(py, data.as_bytes()) {
            WriteOutcome::Done => Ok(()),
            WriteOutcome::Dropped(before) => {
                if before >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                    log(py, "warning", ("pipe closed by peer or os.write(pipe, data) raised exception.",), None);
                }
                Ok(())
            }
            WriteOutcome::Failed(e) => Self::fatal_error(slf, os_error(&e)),
            WriteOutcome::StartWriting => {
                if let Err(e) = Self::watch(slf, true) {
                    // As in asyncio, data is only buffered once the descriptor is watched.
                    this.state.borrow_mut(py).buffer.clear();
                    return Err(e);
                }
                control_flow(slf, true)
            }
            WriteOutcome::Buffered => control_flow(slf, true),
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
            if !st.end.life.close() {
                return Ok(());
            }
            st.buffer.is_empty() && st.end.life.lose()
        };
        if lost_now {
            this.unwatch(py, false)?;
            base::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let open = {
            let st = slf.get().state.borrow(slf.py());
            st.end.pipe.is_some() && !st.end.life.is_closing()
        };
        if open {
            Self::write_eof(slf)?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_with(slf, None)
    }

    /// Starts watching for the reader going, for FIFOs and sockets (scheduled by the
    /// constructor, after `connection_made`).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if this.detects_reader_gone && !this.state.borrow(slf.py()).end.life.is_lost() {
            Self::watch(slf, false)?;
        }
        Ok(())
    }

    #[getter]
    fn _conn_lost(&self, py: Python<'_>) -> u32 {
        self.state.borrow(py).conn_lost
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
        end: End::new(pipe, protocol),
        buffer: WriteBuffer::new(),
        conn_lost: 0,
        writing: false,
        reading: false,
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
            tally: crate::transports::Tally::new(event_loop.get(), ferroloop_core::stats::TransportKind::Pipe),
        },
    )?;
    crate::transports::schedule_start(event_loop, protocol, transport.as_any(), waiter, None)?;
    Ok(transport)
}
