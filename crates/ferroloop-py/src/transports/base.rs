//! The transport base: what the native transports share, written once (the "transport core"
//! of the design; `ferroloop_core::flow` has its rules without Python).
//!
//! - [`Watch`]: the watcher a transport registers with the loop for its descriptor; it hands
//!   readiness to the transport's [`Readiness`] methods.
//! - [`Core`]: a transport's loop, protocol and lifecycle as the shared code reads them.
//!   [`core_methods!`] makes asyncio's `get_protocol`, `set_protocol`, `is_closing`,
//!   `get_extra_info` and the private `_loop`, `_protocol`, `_closing` from it, and the
//!   `__class__` that makes `isinstance` checks hold.
//! - [`ReadSide`]: a transport's `pause_reading()` flag and how it watches for reading;
//!   [`read_methods!`] makes `is_reading`, `pause_reading`, `resume_reading`, `_paused` and
//!   `_start_reading` from it.
//! - [`WriteSide`]: a transport's write flow control and buffered byte count.
//!   [`write_methods!`] makes `get_write_buffer_size`, `get_write_buffer_limits`,
//!   `set_write_buffer_limits` and asyncio's `_protocol_paused`, `_high_water`, `_low_water`
//!   from it, and [`control_flow`] is the one place a transport pauses or resumes its protocol.
//!
//! - [`fatal_error`], [`call_soon_self`], [`schedule_connection_lost`]: asyncio's
//!   `_fatal_error` and the scheduling of a transport's own methods.
//!
//! The methods are `#[pymethods]` blocks of their own beside each transport's (PyO3's
//! `multiple-pymethods` feature): a transport states what differs (its system calls, its end of
//! file rules, its extra info) and takes the rest from here. The flow-control and lifecycle
//! rules themselves are plain Rust in `ferroloop_core::flow`.

use ferroloop_core::flow::WriteFlow;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::is_exit;
use crate::event_loop::EventLoop;
use crate::watch::IoWatcher;

/// The most one read event takes from a socket or a pipe (asyncio's `max_size`).
pub(crate) const MAX_READ: usize = 256 * 1024;

thread_local! {
    /// Where reads land before they are copied into a `bytes` object.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; MAX_READ]);
}

/// Runs `read` on the thread's read buffer ([`MAX_READ`] bytes), or on a new one when a
/// protocol called back into a read while the buffer was in use.
pub(crate) fn with_read_buf<R>(read: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => read(&mut buf),
        Err(_) => read(&mut vec![0; MAX_READ]),
    })
}

/// What a transport does when its descriptor is ready.
pub(crate) trait Readiness: pyo3::PyClass {
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()>;
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()>;
}

/// The watcher the loop calls when a transport's descriptor is ready.
pub(crate) struct Watch<T>(pub(crate) Py<T>);

impl<T: Readiness + Core + pyo3::PyClass<Frozen = True> + Send + Sync> IoWatcher for Watch<T> {
    fn io_ready(&self, py: Python<'_>, write: bool) -> PyResult<()> {
        let t = self.0.bind(py);
        if write {
            T::write_ready(t)
        } else {
            T::read_ready(t)
        }
    }

    fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }

    /// `"<protocol repr> (readable StreamTransport)"`: the protocol is the user's code that ran.
    #[cold]
    fn describe(&self, py: Python<'_>, write: bool) -> PyResult<Py<PyAny>> {
        let t = self.0.bind(py);
        let kind = t.as_any().get_type().name()?;
        let direction = if write { "writable" } else { "readable" };
        let protocol = match t.get().protocol(py) {
            Some(p) => p.bind(py).repr()?.to_string(),
            None => "no protocol".to_owned(),
        };
        Ok(PyString::new(py, &format!("{protocol} ({direction} {kind})")).into_any().unbind())
    }
}

/// A transport's loop, protocol and lifecycle, as the shared methods read them.
pub(crate) trait Core {
    fn loop_ref(&self) -> &Py<EventLoop>;

    fn event_loop<'py>(&self, py: Python<'py>) -> &Bound<'py, EventLoop> {
        self.loop_ref().bind(py)
    }

    /// The `contextvars.Context` the transport's callbacks run in, when its maker gave one
    /// (asyncio 3.15's `context=`); otherwise each runs in a copy of the current one.
    fn context(&self) -> Option<&Py<PyAny>> {
        None
    }

    /// The protocol; `None` once `connection_lost` has run.
    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>>;

    /// `set_protocol(protocol)`: returns the protocol it replaces, for the caller to drop after
    /// its borrow ends.
    fn replace_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>>;

    /// asyncio's `_closing`: `close()` was called, or the connection is lost.
    fn closing(&self, py: Python<'_>) -> bool;

    /// `get_extra_info(name, default)`.
    fn extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>>;
}

/// Schedules `self.<method>(*args)` on the transport's loop, in its context.
pub(crate) fn call_soon_self<T: Core + pyo3::PyClass<Frozen = True> + Sync>(
    slf: &Bound<'_, T>,
    method: &str,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    let py = slf.py();
    let cb = slf.as_any().getattr(method)?;
    let this = slf.get();
    this.event_loop(py).get().call_soon_in(py, &cb, args, this.context())
}

/// Schedules `self._call_connection_lost(exc)`.
pub(crate) fn schedule_connection_lost<T: Core + pyo3::PyClass<Frozen = True> + Sync>(
    slf: &Bound<'_, T>,
    exc: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    let exc = exc.map_or_else(|| py.None().into_bound(py), Clone::clone);
    call_soon_self(slf, "_call_connection_lost", &PyTuple::new(py, [exc])?)
}

/// asyncio's `_fatal_error` for socket transports: the error is reported (an `OSError` only
/// logged, in debug mode), then `force_close` closes the transport at once with it.
/// `KeyboardInterrupt` and `SystemExit` propagate untouched.
pub(crate) fn fatal_error<T: Core + pyo3::PyClass<Frozen = True> + Sync>(
    slf: &Bound<'_, T>,
    err: PyErr,
    message: &str,
    force_close: impl FnOnce(&Bound<'_, T>, Option<&Bound<'_, PyAny>>) -> PyResult<()>,
) -> PyResult<()> {
    let py = slf.py();
    if is_exit(py, &err) {
        return Err(err);
    }
    let this = slf.get();
    let exc = err.into_value(py).into_bound(py).into_any();
    super::report_fatal(this.event_loop(py), slf.as_any(), this.protocol(py).as_ref(), &exc, message)?;
    force_close(slf, Some(&exc))
}

/// `get_extra_info` from a dictionary kept as it is (datagram and pipe transports).
pub(crate) fn extra_from<'py>(
    extra: &Bound<'py, PyDict>,
    name: &Bound<'py, PyAny>,
    default: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match extra.get_item(name)? {
        Some(v) => Ok(v),
        None => Ok(default.unwrap_or_else(|| extra.py().None().into_bound(extra.py()))),
    }
}

/// asyncio's transport methods from a transport's [`Core`], and its `__class__`: the class of
/// `ferroloop._transports` named `$marker`, a subclass of the matching asyncio class.
macro_rules! core_methods {
    ($ty:ty, $marker:literal) => {
        #[pyo3::pymethods]
        impl $ty {
            #[pyo3(signature = (name, default=None))]
            fn get_extra_info<'py>(
                &self,
                py: pyo3::Python<'py>,
                name: &pyo3::Bound<'py, pyo3::PyAny>,
                default: Option<pyo3::Bound<'py, pyo3::PyAny>>,
            ) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                $crate::transports::base::Core::extra_info(self, py, name, default)
            }

            fn get_protocol(&self, py: pyo3::Python<'_>) -> Option<pyo3::Py<pyo3::PyAny>> {
                $crate::transports::base::Core::protocol(self, py)
            }

            fn set_protocol(&self, protocol: &pyo3::Bound<'_, pyo3::PyAny>) -> pyo3::PyResult<()> {
                let old = $crate::transports::base::Core::replace_protocol(self, protocol)?;
                drop(old);
                Ok(())
            }

            fn is_closing(&self, py: pyo3::Python<'_>) -> bool {
                $crate::transports::base::Core::closing(self, py)
            }

            #[getter]
            fn _closing(&self, py: pyo3::Python<'_>) -> bool {
                $crate::transports::base::Core::closing(self, py)
            }

            #[getter]
            fn _protocol(&self, py: pyo3::Python<'_>) -> Option<pyo3::Py<pyo3::PyAny>> {
                $crate::transports::base::Core::protocol(self, py)
            }

            #[getter]
            fn _loop(&self, py: pyo3::Python<'_>) -> pyo3::Py<$crate::event_loop::EventLoop> {
                $crate::transports::base::Core::loop_ref(self).clone_ref(py)
            }

            #[getter(__class__)]
            fn class_attr<'py>(&self, py: pyo3::Python<'py>) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::types::PyType>> {
                $crate::transports::base::marker_class!(py, $marker)
            }
        }
    };
}
pub(crate) use core_methods;

/// `ferroloop._transports.<name>`, the Python class a transport shows as `__class__`, imported
/// once (as `pyrefs` imports: a static per use).
macro_rules! marker_class {
    ($py:expr, $marker:literal) => {{
        static CELL: pyo3::sync::PyOnceLock<pyo3::Py<pyo3::types::PyType>> = pyo3::sync::PyOnceLock::new();
        CELL.import($py, "ferroloop._transports", $marker).cloned()
    }};
}
pub(crate) use marker_class;

/// A transport's reading: paused by `pause_reading()`, stopped for good once closing.
pub(crate) trait ReadSide: Core + pyo3::PyClass<Frozen = True> + Sync {
    /// Runs `f` on the `pause_reading()` flag and whether the transport is closing, under the
    /// state's borrow.
    fn with_paused<R>(&self, py: Python<'_>, f: impl FnOnce(&mut bool, bool) -> R) -> R;

    /// Starts (`on`) or stops watching the descriptor for reading.
    fn watch_reading(slf: &Bound<'_, Self>, on: bool) -> PyResult<()>;

    /// What `_start_reading` does first, once `connection_made` has run (nothing by default).
    fn on_start(_slf: &Bound<'_, Self>) -> PyResult<()> {
        Ok(())
    }
}

/// asyncio's `is_reading()`: neither paused nor closing.
pub(crate) fn is_reading<T: ReadSide>(this: &T, py: Python<'_>) -> bool {
    this.with_paused(py, |paused, closing| !*paused && !closing)
}

/// `pause_reading()` (`pause`) or `resume_reading()`: nothing once closing or when already so;
/// otherwise the descriptor is unwatched or watched, and debug mode logs it.
pub(crate) fn set_paused<T: ReadSide>(slf: &Bound<'_, T>, pause: bool) -> PyResult<()> {
    let py = slf.py();
    let changed = slf.get().with_paused(py, |paused, closing| {
        if closing || *paused == pause {
            return false;
        }
        *paused = pause;
        true
    });
    if !changed {
        return Ok(());
    }
    T::watch_reading(slf, !pause)?;
    if slf.get().event_loop(py).get().debug() {
        let what = if pause { "%r pauses reading" } else { "%r resumes reading" };
        crate::pyrefs::asyncio_logger(py)?.call_method1("debug", (what, slf))?;
    }
    Ok(())
}

/// asyncio's reading methods from a transport's [`ReadSide`], and `_start_reading`, which the
/// transport's maker schedules after `connection_made`.
macro_rules! read_methods {
    ($ty:ty) => {
        #[pyo3::pymethods]
        impl $ty {
            fn is_reading(&self, py: pyo3::Python<'_>) -> bool {
                $crate::transports::base::is_reading(self, py)
            }

            fn pause_reading(slf: &pyo3::Bound<'_, Self>) -> pyo3::PyResult<()> {
                $crate::transports::base::set_paused(slf, true)
            }

            fn resume_reading(slf: &pyo3::Bound<'_, Self>) -> pyo3::PyResult<()> {
                $crate::transports::base::set_paused(slf, false)
            }

            #[getter]
            fn _paused(&self, py: pyo3::Python<'_>) -> bool {
                $crate::transports::base::ReadSide::with_paused(self, py, |paused, _| *paused)
            }

            fn _start_reading(slf: &pyo3::Bound<'_, Self>) -> pyo3::PyResult<()> {
                <Self as $crate::transports::base::ReadSide>::on_start(slf)?;
                if $crate::transports::base::is_reading(slf.get(), slf.py()) {
                    <Self as $crate::transports::base::ReadSide>::watch_reading(slf, true)?;
                }
                Ok(())
            }
        }
    };
}
pub(crate) use read_methods;

/// A transport's write buffer and flow control.
pub(crate) trait WriteSide: Core + pyo3::PyClass<Frozen = True> + Sync {
    /// Runs `f` on the flow control and the number of bytes buffered, under the state's borrow.
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut WriteFlow, usize) -> R) -> R;
}

/// Pauses (after a write: `grew`) or resumes (after a flush) the protocol's writing when the
/// buffer crosses a watermark: asyncio's `_maybe_pause_protocol`/`_maybe_resume_protocol`.
pub(crate) fn control_flow<T: WriteSide>(slf: &Bound<'_, T>, grew: bool) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    if !this.with_flow(py, |flow, size| flow.update(size, grew)) {
        return Ok(());
    }
    super::tell_flow(this.event_loop(py), slf.as_any(), this.protocol(py), grew)
}

/// `set_write_buffer_limits(high, low)`: asyncio's defaults and checks, then the pause they may
/// call for.
pub(crate) fn set_write_buffer_limits<T: WriteSide>(
    slf: &Bound<'_, T>,
    high: Option<&Bound<'_, PyAny>>,
    low: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let (high, low) = super::water_marks(slf.py(), high, low, super::DEFAULT_HIGH_WATER)?;
    slf.get().with_flow(slf.py(), |flow, _| flow.set_limits(high, low));
    control_flow(slf, true)
}

/// asyncio's write-buffer methods from a transport's [`WriteSide`].
macro_rules! write_methods {
    ($ty:ty) => {
        #[pyo3::pymethods]
        impl $ty {
            fn get_write_buffer_size(&self, py: pyo3::Python<'_>) -> usize {
                $crate::transports::base::WriteSide::with_flow(self, py, |_, size| size)
            }

            fn get_write_buffer_limits(&self, py: pyo3::Python<'_>) -> (usize, usize) {
                $crate::transports::base::WriteSide::with_flow(self, py, |flow, _| flow.limits())
            }

            #[pyo3(signature = (high=None, low=None))]
            fn set_write_buffer_limits(
                slf: &pyo3::Bound<'_, Self>,
                high: Option<pyo3::Bound<'_, pyo3::PyAny>>,
                low: Option<pyo3::Bound<'_, pyo3::PyAny>>,
            ) -> pyo3::PyResult<()> {
                $crate::transports::base::set_write_buffer_limits(slf, high.as_ref(), low.as_ref())
            }

            #[getter]
            fn _protocol_paused(&self, py: pyo3::Python<'_>) -> bool {
                $crate::transports::base::WriteSide::with_flow(self, py, |flow, _| flow.is_paused())
            }

            #[getter]
            fn _high_water(&self, py: pyo3::Python<'_>) -> usize {
                $crate::transports::base::WriteSide::with_flow(self, py, |flow, _| flow.limits().1)
            }

            #[getter]
            fn _low_water(&self, py: pyo3::Python<'_>) -> usize {
                $crate::transports::base::WriteSide::with_flow(self, py, |flow, _| flow.limits().0)
            }
        }
    };
}
pub(crate) use write_methods;
