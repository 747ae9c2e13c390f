//! What the loop's queues hold: Python handles, and native (Rust) I/O watchers.
//!
//! A transport or a listening socket written in Rust does not go through a Python callable: it
//! registers an [`IoWatcher`] for its file descriptor, and the loop queues and runs it in order
//! with the Python callbacks, as asyncio queues the handles of `add_reader`. The loop knows
//! nothing else of transports.
//!
//! A pending socket operation (`loop.sock_recv` and friends, see `sock_ops`) is a native watcher
//! too, registered as [`Watcher::Op`]: it waits until the call it retries stops blocking (the
//! poller's `Mode::Once`), and unlike a transport it does not own its descriptor, so
//! `add_reader` may replace it as it replaces a handle.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::handles::Handle;

/// A native object watching a file descriptor.
pub trait IoWatcher: Send + Sync {
    /// The descriptor is ready for reading (`write == false`) or writing. The watcher checks its
    /// own state first: it may have stopped watching since the event was queued. An error is
    /// reported through the loop's exception handler (`KeyboardInterrupt` and `SystemExit`
    /// propagate); watchers report their own expected errors themselves.
    fn io_ready(&self, py: Python<'_>, write: bool) -> PyResult<()>;

    /// Visits the Python objects the watcher holds, for the loop's garbage-collector support.
    fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError>;

    /// Whether this is a pending socket operation completing the future `fut` (by identity).
    fn completes(&self, _fut: &Bound<'_, PyAny>) -> bool {
        false
    }

    /// What ran when this watcher was called for readiness (a `str`, for the loop's list of
    /// slow callbacks).
    #[cold]
    fn describe(&self, py: Python<'_>, write: bool) -> PyResult<Py<PyAny>> {
        let what = if write { "a native writer" } else { "a native reader" };
        Ok(pyo3::types::PyString::new(py, what).into_any().unbind())
    }
}

/// Who is called when a descriptor is ready.
pub enum Watcher {
    /// `add_reader`/`add_writer` from Python.
    Handle(Py<Handle>),
    /// A transport or listener written in Rust, and the `contextvars.Context` it runs in: a
    /// copy of the one current when it started watching, as asyncio's `add_reader` handle
    /// copies it. Every readiness report runs in that same context, so a transport's protocol
    /// sees the context its connection was made in (and what it sets there itself).
    Native(Arc<dyn IoWatcher>, Py<PyAny>),
    /// A pending socket operation, waiting for one readiness report.
    Op(Arc<dyn IoWatcher>),
}

/// An entry of the ready queue. Each ends with when it became ready, in the statistics' ticks
/// (its timer's deadline, or when it was queued; see `event_loop::stats`).
pub enum Ready {
    Handle(Py<Handle>, u64),
    /// A native watcher, the direction it is ready for (`true`: writable), and the context to
    /// run it in (none for a socket operation: it runs no user code but the socket's own).
    Io(Arc<dyn IoWatcher>, bool, Option<Py<PyAny>>, u64),
}

impl Watcher {
    pub fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Self::Handle(h) => visit.call(h),
            Self::Native(w, context) => {
                visit.call(context)?;
                w.traverse(visit)
            }
            Self::Op(w) => w.traverse(visit),
        }
    }
}

impl Ready {
    pub fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Self::Handle(h, _) => visit.call(h),
            Self::Io(w, _, context, _) => {
                visit.call(context)?;
                w.traverse(visit)
            }
        }
    }
}
