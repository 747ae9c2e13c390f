//! `EventLoop`: the Rust base class of `ferroloop.Loop`.
//!
//! It owns the three queues of an asyncio loop and runs them the way `BaseEventLoop._run_once`
//! does, one iteration at a time:
//!
//! 1. drop cancelled timers at the head of the heap (or compact the heap when more than half of
//!    it is cancelled);
//! 2. poll file descriptors: without waiting when callbacks are ready or the loop is stopping,
//!    otherwise until the earliest timer (or forever); the GIL is released only while blocked.
//!    Every iteration polls, as asyncio's does, so what a peer sent before an iteration began is
//!    seen in it (unless no descriptor is watched and the poll would not wait: it could report
//!    nothing);
//! 3. queue the callbacks of ready descriptors, then the timers due by now;
//! 4. run the callbacks that were ready when the iteration began, in order. Callbacks scheduled
//!    by these wait for the next iteration. When one iteration's batch runs longer than
//!    `POLL_INTERVAL`, the rest waits for the next iteration, so file descriptors are polled
//!    at least every [`FAIRNESS_BUDGET`]. A descriptor whose readiness report is among the
//!    rest is not queued again by that poll: each report still runs once per poll that saw it,
//!    as in asyncio (where a batch is never cut), and no reader runs twice to find nothing.
//!
//! Invariants: all mutable state sits in [`GilCell`]s (see its rules: no Python call, object
//! creation or drop while borrowed). `call_soon_threadsafe` runs with the GIL like everything
//! else, so it appends to the ready queue directly and only writes to the waker when the loop is
//! blocked in the poller (`polling`): the flag is set before the GIL is released for the wait, so
//! a thread that sees it unset ran before the timeout was computed and is seen by that.
//!
//! What is not hot lives in Python (`python/ferroloop/_loop.py`): `run_forever`'s bookkeeping,
//! `run_until_complete`, exception handlers, executors, DNS, signals.
//!
//! Files: this one has the loop's state and the Python methods of its life (running, stopping,
//! closing, debug); `iteration` runs one iteration; `io` watches file descriptors (readers,
//! writers, native transports, socket operations) and has `add_reader` and its kin; `schedule`
//! makes and reuses handles and tasks and has `call_soon`, `call_later`, `call_at`,
//! `create_task` and `create_future`; `stats` keeps the statistics `ferroloop.stats()` reads
//! (each queued entry carries when it became ready, for the lag); `blocking` is the blocked-loop
//! watchdog (`ferroloop.report_blocking`), which reads them. Each file's Python methods are
//! a `#[pymethods]` block of its own (PyO3's `multiple-pymethods`).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ferroloop_core::clock;
use ferroloop_core::fd_map::FdMap;
use ferroloop_core::poller::{Mode, Poller, Waker};
use ferroloop_core::timers::TimerQueue;
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBool, PyDict, PyInt, PyTuple, PyWeakrefMethods, PyWeakrefReference};
use pyo3::{ffi, PyTraverseError, PyVisit};

use crate::compat;
use crate::errors::{is_exit, os_error};
use crate::gil_cell::GilCell;
use crate::handles::{self, copy_current_context, Handle, Parts, TimerHandle};
use crate::pyrefs;
use crate::watch::{IoWatcher, Ready, Watcher};

mod blocking;
mod io;
mod iteration;
mod schedule;
mod stats;

/// The promise: while callbacks keep the loop busy, file descriptors are still polled at least
/// this often (seconds).
pub const FAIRNESS_BUDGET: f64 = 250e-6;
/// How the promise is kept, with margin for the callback running when the time is up: a batch
/// of callbacks yields to a poll after running this long (seconds).
const POLL_INTERVAL: f64 = 100e-6;
/// asyncio's cap on one wait in the poller: a day.
const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;
/// How many emptied handles a loop keeps for reuse (see [`EventLoop::retire`]).
const SPARE_HANDLES: usize = 64;

/// The loop's queues.
#[derive(Default)]
struct Queues {
    /// Callbacks to run, in order.
    ready: VecDeque<Ready>,
    /// `call_at` timers, by (deadline, scheduling order).
    timers: TimerQueue<Py<TimerHandle>>,
    /// `add_reader` callbacks by file descriptor.
    readers: FdMap<Watcher>,
    /// `add_writer` callbacks by file descriptor.
    writers: FdMap<Watcher>,
    /// The object (not an int) `add_reader` or `add_writer` was given for a descriptor that
    /// has a callback: once closed, it has no `fileno()`, and `remove_reader(obj)` finds its
    /// registration by the object, as asyncio's selector does. The first one given is kept
    /// while either direction is watched.
    fileobjs: FdMap<Py<PyAny>>,
    /// For each descriptor a socket operation waited on: a weak reference to the socket object
    /// that last registered it with a verified system call. The same object asking again, still
    /// open under the same number, never closed it meanwhile: the poller may trust its kept
    /// registration (see `ferroloop_core::poller`).
    owners: FdMap<Py<PyWeakrefReference>>,
    /// `{"loop": self}`, the keyword arguments of every `asyncio.Future` the loop creates
    /// (read, never changed, by the constructor); made on first use.
    future_kwargs: Option<Py<PyDict>>,
    /// Changes to what the poller watches, made by another thread while the loop's thread
    /// waits in the poller (which it holds for the wait): applied when the wait ends (see
    /// `io::EventLoop::watch`).
    deferred: Vec<(RawFd, bool, Option<Mode>, bool)>,
}

impl Queues {
    /// Takes the file object kept for `fd` once no `add_reader`/`add_writer` callback watches
    /// it any more, for the caller to drop after its borrow.
    fn forget_fileobj(&mut self, fd: RawFd) -> Option<Py<PyAny>> {
        let callback = |m: &FdMap<Watcher>| matches!(m.get(&fd), Some(Watcher::Handle(_)));
        if callback(&self.readers) || callback(&self.writers) {
            return None;
        }
        self.fileobjs.remove(&fd)
    }

    /// Puts the queued handles somebody else holds too under the cycle collector: the loop is
    /// about to drop its references (see `handles`).
    fn track_shared_handles(&self) {
        for r in &self.ready {
            if let Ready::Handle(h, _) = r {
                handles::track_if_shared(h);
            }
        }
        self.timers.for_each(handles::track_if_shared);
    }
}

#[pyclass(module = "ferroloop._ferroloop", subclass, frozen)]
pub struct EventLoop {
    /// Ready queue, timers, readers and writers.
    queues: GilCell<Queues>,
    /// The poller; borrowed for the whole wait (with the GIL released) by the loop's thread.
    /// `None` once the loop is closed: closing releases its file descriptors at once.
    poller: GilCell<Option<Poller>>,
    /// Interrupts a blocked poll; used by `call_soon_threadsafe` from other threads.
    /// `None` once the loop is closed.
    waker: GilCell<Option<Arc<Waker>>>,
    /// True while the loop's thread waits in the poller with the GIL released.
    polling: AtomicBool,
    /// Another thread queued changes to what the poller watches (`Queues::deferred`).
    deferred_changes: AtomicBool,
    /// The loop is busy: a poll that may wait looks without waiting first (`iteration::poll`).
    look_first: AtomicBool,
    /// The last batch was cut short by the fairness budget: readiness reports it left in the
    /// ready queue are not queued again by the next poll (`iteration::poll`).
    cut_short: AtomicBool,
    /// Cancelled timers still in the heap, counted by `TimerHandle.cancel()`.
    timers_cancelled: Arc<AtomicUsize>,
    /// `stop()` was called: finish this iteration, then return from `run_forever`.
    stopping: AtomicBool,
    /// `close()` was called.
    closed: AtomicBool,
    /// Debug mode (`set_debug`).
    debug: AtomicBool,
    /// Thread identifier of the thread running the loop, 0 when not running.
    thread_id: AtomicU64,
    /// Debug mode logs callbacks that take longer than this (seconds).
    slow_callback_duration: GilCell<f64>,
    /// The clock's resolution: timers due within it are run in this iteration.
    clock_resolution: f64,
    /// `set_task_factory`'s factory, or None for stdlib's `asyncio.Task`.
    task_factory: GilCell<Option<Py<PyAny>>>,
    /// In debug mode, the handle whose callback is running (`_current_handle`: the exception
    /// handler shows where it was created).
    current_handle: GilCell<Option<Py<Handle>>>,
    /// `time()` when it is not the loop's own clock: a callable set on the instance
    /// (`loop.time = f`, as tests and libraries patch it) or a subclass's `time` method, which
    /// asyncio's loop calls for every deadline and every iteration. `custom_time` says whether
    /// it is set, so the common case costs one load.
    time_source: GilCell<Option<Py<PyAny>>>,
    custom_time: AtomicBool,
    /// Emptied `call_soon` handles nobody else can see, for the next `call_soon` to refill:
    /// a handle's allocation, initialisation and deallocation were a good part of what the loop
    /// spends on a task step (callgrind).
    spare_handles: GilCell<Vec<Py<Handle>>>,
    /// The loop's statistics (`ferroloop.stats()`; see `stats`).
    stats: stats::Stats,
}

/// `RuntimeError('Event loop is closed')`, as asyncio raises it.
#[cold]
fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// asyncio's `selectors._fileobj_to_fd`: an int, or an object with `fileno()`. A number too
/// large for a descriptor is an `OverflowError`, as the selector's own system call raises it.
pub fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let py = obj.py();
    let number = if obj.is_instance_of::<PyInt>() {
        obj.clone()
    } else {
        obj.call_method0(intern!(py, "fileno")).and_then(|f| py.get_type::<PyInt>().call1((f,))).map_err(|_| {
            PyValueError::new_err(format!(
                "Invalid file object: {}",
                obj.repr().map_or_else(|_| "?".into(), |r| r.to_string())
            ))
        })?
    };
    if number.lt(0)? {
        return Err(PyValueError::new_err(format!("Invalid file descriptor: {number}")));
    }
    number.extract::<RawFd>().map_err(|_| PyOverflowError::new_err("file descriptor is greater than maximum"))
}

// `c_ulong` is only 32 bits wide on some targets.
#[allow(clippy::useless_conversion)]
fn current_thread_id() -> u64 {
    // SAFETY: reads the calling thread's identifier; no preconditions.
    u64::from(unsafe { ffi::PyThread_get_thread_ident() })
}

/// Some loop of this process has been in debug mode (it is never cleared): until then no loop
/// is, and code that must ask a loop whether it is need not.
pub(crate) static DEBUG_EVER: AtomicBool = AtomicBool::new(false);

impl EventLoop {
    #[inline]
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Relaxed) {
            return Err(closed_error());
        }
        Ok(())
    }

    pub(crate) fn debug(&self) -> bool {
        self.debug.load(Relaxed)
    }

    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Relaxed)
    }
}

/// Marks the loop stopped when dropped: the end of `run_forever`, however it ends.
struct StopOnExit<'a>(&'a EventLoop);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.stats.run_ended();
        self.0.stopping.store(false, Relaxed);
        self.0.thread_id.store(0, Relaxed);
        blocking::loop_stopped(self.0);
    }
}

/// Calls the loop's exception handler with asyncio's context: `message`, `exception`, then each
/// of `entries` (`("transport", ...)`, `("protocol", ...)`; `None` is set as `None`, as asyncio
/// sets a missing protocol). The one place such a context is built.
#[cold]
pub(crate) fn report_exception(
    event_loop: &Bound<'_, EventLoop>,
    message: &str,
    exc: &Bound<'_, PyAny>,
    entries: &[(&str, Option<&Bound<'_, PyAny>>)],
) -> PyResult<()> {
    let py = event_loop.py();
    let context = PyDict::new(py);
    context.set_item(intern!(py, "message"), message)?;
    context.set_item(intern!(py, "exception"), exc)?;
    for (key, value) in entries {
        context.set_item(*key, *value)?;
    }
    event_loop.call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

/// A native watcher's unexpected error, sent to the exception handler.
#[cold]
fn report_watcher_error(slf: &Bound<'_, EventLoop>, err: PyErr) -> PyResult<()> {
    let exc = err.into_value(slf.py()).into_bound(slf.py()).into_any();
    report_exception(slf, "Unhandled exception in an I/O callback", &exc, &[])
}

/// The caller's stack, for debug mode's `_source_traceback`.
#[cold]
fn source_traceback(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let frame = pyrefs::getframe(py)?.call1((0,))?;
    Ok(pyrefs::extract_stack(py)?.call1((frame,))?.unbind())
}

/// Sends a callback's exception to the loop's exception handler, as `Handle._run` does.
#[cold]
fn report_callback_error(slf: &Bound<'_, EventLoop>, handle: &Bound<'_, Handle>, err: PyErr) -> PyResult<()> {
    let py = slf.py();
    let context = pyrefs::format_fn(py, "callback_error_context")?.call1((
        handle,
        err.into_value(py),
        slf.get().debug.load(Relaxed),
    ))?;
    slf.call_method1("call_exception_handler", (context,))?;
    Ok(())
}

#[pymethods]
impl EventLoop {
    #[new]
    fn new() -> PyResult<Self> {
        let poller = Poller::new().map_err(|e| os_error(&e))?;
        Ok(Self {
            waker: GilCell::new(Some(poller.waker())),
            poller: GilCell::new(Some(poller)),
            queues: GilCell::new(Queues::default()),
            polling: AtomicBool::new(false),
            deferred_changes: AtomicBool::new(false),
            look_first: AtomicBool::new(false),
            cut_short: AtomicBool::new(false),
            timers_cancelled: Arc::new(AtomicUsize::new(0)),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            thread_id: AtomicU64::new(0),
            slow_callback_duration: GilCell::new(0.1),
            clock_resolution: clock::resolution(),
            task_factory: GilCell::new(None),
            current_handle: GilCell::new(None),
            spare_handles: GilCell::new(Vec::new()),
            time_source: GilCell::new(None),
            custom_time: AtomicBool::new(false),
            stats: stats::Stats::new(0.1),
        })
    }

    /// The loop's clock: `time.monotonic()`.
    fn time(&self) -> f64 {
        clock::monotonic()
    }

    fn stop(&self) {
        self.stopping.store(true, Relaxed);
    }

    fn is_running(&self) -> bool {
        self.thread_id.load(Relaxed) != 0
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    fn get_debug(&self) -> bool {
        self.debug.load(Relaxed)
    }

    fn set_debug(&self, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        let enabled = enabled.is_truthy()?;
        if enabled {
            DEBUG_EVER.store(true, Relaxed);
        }
        self.debug.store(enabled, Relaxed);
        Ok(())
    }

    #[getter]
    fn get_slow_callback_duration(&self, py: Python<'_>) -> f64 {
        *self.slow_callback_duration.borrow(py)
    }

    #[setter]
    fn set_slow_callback_duration(&self, py: Python<'_>, value: f64) {
        *self.slow_callback_duration.borrow_mut(py) = value;
        self.stats.set_slow_threshold(value);
    }

    /// `threading.get_ident()` of the thread running the loop, or None.
    #[getter(_thread_id)]
    fn thread_id_attr(&self) -> Option<u64> {
        match self.thread_id.load(Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    #[getter(_debug)]
    fn debug_attr(&self) -> bool {
        self.debug.load(Relaxed)
    }

    #[getter(_stopping)]
    fn stopping_attr(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    #[getter(_closed)]
    fn closed_attr(&self) -> bool {
        self.closed.load(Relaxed)
    }

    #[getter(_clock_resolution)]
    fn clock_resolution_attr(&self) -> f64 {
        self.clock_resolution
    }

    /// Called by a socket coroutine cancelled (or closed) while awaiting `fut`: stops the
    /// operation's watching, unless it completed or was replaced meanwhile.
    fn _sock_abandon(&self, py: Python<'_>, sock: &Bound<'_, PyAny>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        let fd = sock.call_method0(intern!(py, "fileno")).and_then(|f| f.extract()).unwrap_or(-1);
        self.abandon_op(py, fd, fut)?;
        Ok(())
    }

    /// Runs iterations until `stop()`; `run_forever` (in Python) does the bookkeeping around it.
    fn _run_forever_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.thread_id.store(current_thread_id(), Relaxed);
        this.stats.run_started();
        blocking::loop_started(slf);
        // However the run ends, a panic included, the loop is left stopped: not running, and
        // closable or runnable again.
        let _stopped = StopOnExit(this);
        loop {
            Self::run_iteration(slf)?;
            if this.stopping.load(Relaxed) {
                return Ok(());
            }
        }
    }

    /// One iteration, outside `run_forever` (asyncio's tests call it).
    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().stats.restamp();
        Self::run_iteration(slf)
    }

    /// Sets the callable `time()` stands for (None: the loop's own clock); see `time_source`.
    fn _set_time_source(&self, py: Python<'_>, source: Option<Py<PyAny>>) {
        self.custom_time.store(source.is_some(), Relaxed);
        let old = std::mem::replace(&mut *self.time_source.borrow_mut(py), source);
        drop(old);
    }

    /// Closes the loop's own resources; `close()` (in Python) checks and does the rest.
    fn _close_native(&self, py: Python<'_>) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        let queues = std::mem::take(&mut *self.queues.borrow_mut(py));
        queues.track_shared_handles();
        let poller = self.poller.borrow_mut(py).take();
        let waker = self.waker.borrow_mut(py).take();
        let spare = std::mem::take(&mut *self.spare_handles.borrow_mut(py));
        drop((poller, waker, spare));
        drop(queues);
    }

    /// A handle that is not scheduled (for signal handlers, queued by `_call_handle` later).
    #[pyo3(signature = (callback, args))]
    fn _make_handle(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Py::new(py, Handle::new(self.handle_parts(py, callback, args, None)?))
    }

    /// Queues an existing handle, from any thread (signal delivery).
    fn _call_handle(&self, py: Python<'_>, handle: Py<Handle>) {
        self.queues.borrow_mut(py).ready.push_back(Ready::Handle(handle, self.stats.now()));
        if self.polling.load(Relaxed) {
            self.wake(py);
        }
    }

    /// The handle whose callback is running, in debug mode (asyncio's `_current_handle`).
    #[getter]
    fn _current_handle(&self, py: Python<'_>) -> Option<Py<Handle>> {
        self.current_handle.borrow(py).as_ref().map(|h| h.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(f) = self.task_factory.try_borrow() {
            visit.call(&*f)?;
        }
        if let Some(h) = self.current_handle.try_borrow() {
            visit.call(&*h)?;
        }
        if let Some(t) = self.time_source.try_borrow() {
            visit.call(&*t)?;
        }
        if let Some(q) = self.queues.try_borrow() {
            for r in &q.ready {
                match r {
                    Ready::Handle(h, _) => handles::traverse_queued(h, &visit)?,
                    Ready::Io(..) => r.traverse(visit)?,
                }
            }
            for w in q.readers.values().chain(q.writers.values()) {
                w.traverse(visit)?;
            }
            for w in q.owners.values() {
                visit.call(w)?;
            }
            for obj in q.fileobjs.values() {
                visit.call(obj)?;
            }
            visit.call(&q.future_kwargs)?;
            // The heap's order is irrelevant here; only membership matters.
            let mut err = Ok(());
            q.timers.for_each(|t| {
                if err.is_ok() {
                    err = handles::traverse_queued(handles::timer_as_handle(t), &visit);
                }
            });
            err?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        drop(self.task_factory.try_take());
        drop(self.current_handle.try_take());
        drop(self.time_source.try_take());
        if let Some(queues) = self.queues.try_take() {
            queues.track_shared_handles();
            drop(queues);
        }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EventLoop>()?;
    stats::register(m)?;
    blocking::register(m)?;
    m.add("FAIRNESS_BUDGET", FAIRNESS_BUDGET)
}
