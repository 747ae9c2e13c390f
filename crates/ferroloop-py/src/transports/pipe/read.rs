//! `ReadPipeTransport`: the read end (see the parent module for both ends' rules).

use pyo3::prelude::*;

use super::*;

struct ReadState {
    end: End,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// The descriptor is registered with the loop for reading.
    watching: bool,
}

impl ReadState {
    /// What `__repr__` says of the descriptor's watching.
    fn polling(&self) -> Vec<String> {
        vec![if self.watching { "polling" } else { "idle" }.into()]
    }
}

#[pyclass(module = "ferroloop._ferroloop", frozen, weakref, dict)]
pub struct ReadPipeTransport {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    event_loop: Py<EventLoop>,
    /// The pipe's descriptor (valid while `state.end.pipe` is open).
    fd: RawFd,
    /// `get_extra_info`'s answers.
    extra: Py<PyDict>,
    state: GilCell<ReadState>,
    /// The loop's statistics for pipe transports.
    tally: crate::transports::Tally,
}

impl PipeEnd for ReadPipeTransport {
    fn end<R>(&self, py: Python<'_>, f: impl FnOnce(&mut End) -> R) -> R {
        f(&mut self.state.borrow_mut(py).end)
    }

    fn unwatch_all(&self, py: Python<'_>) -> PyResult<()> {
        let watching = std::mem::replace(&mut self.state.borrow_mut(py).watching, false);
        if watching {
            self.event_loop(py).get().remove_native(py, self.fd, false)?;
        }
        Ok(())
    }

    /// Stops reading and schedules `connection_lost(exc)` (once).
    fn close_with(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.end(py, |end| end.life.close());
        this.unwatch_all(py)?;
        if lose(this, py) {
            base::schedule_connection_lost(slf, exc)?;
        }
        Ok(())
    }
}

pipe_end!(ReadPipeTransport, "ReadPipeTransport");

impl ReadSide for ReadPipeTransport {
    fn with_paused<R>(&self, py: Python<'_>, f: impl FnOnce(&mut bool, bool) -> R) -> R {
        let mut st = self.state.borrow_mut(py);
        let closing = st.end.life.is_closing();
        f(&mut st.paused, closing)
    }

    fn watch_reading(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !on {
            return this.unwatch_all(py);
        }
        let watcher: Arc<dyn IoWatcher> = Arc::new(Watch(slf.clone().unbind()));
        this.event_loop(py).get().add_native(py, this.fd, watcher, false, None)?;
        this.state.borrow_mut(py).watching = true;
        Ok(())
    }
}

base::read_methods!(ReadPipeTransport);

impl Readiness for ReadPipeTransport {
    /// One `read(2)` to `data_received`; end of file; a read error (`EIO`, what a
    /// pseudo-terminal's master reads once the other side is closed, only logged in debug mode).
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = {
            let st = this.state.borrow(py);
            if !st.watching || st.end.life.is_closing() || st.paused {
                return Ok(());
            }
            match &st.end.protocol {
                Some(p) => p.clone_ref(py),
                None => return Ok(()),
            }
        };
        let received = base::with_read_buf(|buf| {
            net::read(this.fd, buf).map(|n| {
                this.tally.received(n);
                (n > 0).then(|| PyBytes::new(py, &buf[..n]))
            })
        });
        match received {
            Err(e) if try_later(&e) => Ok(()),
            Err(e) => {
                let quiet = e.raw_os_error() == Some(libc::EIO);
                fatal_error(slf, os_error(&e), "Fatal read error on pipe transport", quiet)
            }
            Ok(Some(data)) => {
                let protocol = protocol.bind(py);
                if crate::transports::streams::feed(protocol, data.as_bytes())? {
                    return Ok(());
                }
                protocol.call_method1(intern!(py, "data_received"), (data,)).map(drop)
            }
            Ok(None) => Self::on_eof(slf, protocol.bind(py)),
        }
    }

    fn write_ready(_slf: &Bound<'_, Self>) -> PyResult<()> {
        Ok(())
    }
}

impl ReadPipeTransport {
    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.event_loop(py).get().debug() {
            log(py, "info", ("%r was closed by peer", slf), None);
        }
        this.end(py, |end| end.life.close());
        this.unwatch_all(py)?;
        let eof_received = protocol.getattr(intern!(py, "eof_received"))?;
        this.event_loop(py).get().call_soon_native(py, &eof_received, &PyTuple::empty(py))?;
        if lose(this, py) {
            base::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }
}

#[pymethods]
impl ReadPipeTransport {
    /// The most one read takes from the pipe.
    #[classattr]
    fn max_size() -> usize {
        base::MAX_READ
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().closing(slf.py()) {
            return Ok(());
        }
        Self::close_with(slf, None)
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
    let state = ReadState { end: End::new(pipe, protocol), paused: false, watching: false };
    let transport = crate::transports::new_transport(
        py,
        ReadPipeTransport {
            _live: crate::live::Token::new(crate::live::Kind::ReadPipeTransport),
            event_loop: event_loop.clone().unbind(),
            fd,
            extra: extra.unbind(),
            state: GilCell::new(state),
            tally: crate::transports::Tally::new(event_loop.get(), ferroloop_core::stats::TransportKind::Pipe),
        },
    )?;
    crate::transports::schedule_start(event_loop, protocol, transport.as_any(), waiter, None)?;
    Ok(transport)
}
