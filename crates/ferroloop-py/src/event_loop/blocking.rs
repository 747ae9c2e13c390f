//! The blocked-loop watchdog: `ferroloop.report_blocking(threshold)`.
//!
//! # What it does
//!
//! While a callback runs longer than the threshold, a native thread notices, takes the loop
//! thread's Python stack at that moment and logs it (once per episode) through the `ferroloop`
//! logger; when the callback returns, the loop logs how long it blocked, and what it was.
//!
//! # How, and what it costs
//!
//! The loop already publishes what the watchdog needs, as atomics any thread may read: the
//! statistics' *stamp* (the last callback's end, so the running callback's start), whether it
//! waits in its poller (`polling`) and which thread runs it (`thread_id`). The watchdog thread
//! sleeps a quarter of the threshold at a time (1 ms to 250 ms) and, without the GIL, reads
//! these of every running loop: a loop that is neither polling nor past its stamp by less than
//! the threshold is blocked. Only then does the thread take the GIL (which a blocking call such
//! as `time.sleep` has released, and which a CPU-bound callback hands over at the interpreter's
//! switch interval) and asks `ferroloop._blocking` for the loop thread's stack.
//!
//! The loop's hot path does not change: a batch compares each callback's duration with one
//! threshold already (the slow-callback one), now the lower of the two, and the rare callback
//! past it goes to `Stats::record_slow`, which tells slow ones from blocking ones. The cost of
//! turning the report on is the watchdog's wake-ups: a few per threshold, each reading three
//! atomics per running loop.
//!
//! The running loops are kept in `RUNNING` (a strong reference each, from `run_forever`'s start
//! to its end, so the watchdog may read them without the GIL). The episode is matched by the
//! callback's start: the watchdog marks it reported (`EventLoop::_blocking_mark`, under the GIL,
//! only if that callback is still the one running), and `record_slow` reads the mark.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ferroloop_core::clock::Ticks;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::EventLoop;
use crate::pyrefs;

/// The threshold in ticks; `u64::MAX`: off.
static THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);
/// The loops running now (`run_forever`).
static RUNNING: Mutex<Vec<Py<EventLoop>>> = Mutex::new(Vec::new());
/// The process whose watchdog thread runs (0: none yet); a forked child starts its own.
static WATCHDOG_PID: Mutex<u32> = Mutex::new(0);
/// Wakes the watchdog when the threshold changes.
static WAKE: Condvar = Condvar::new();

fn running() -> MutexGuard<'static, Vec<Py<EventLoop>>> {
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The blocked-loop threshold in ticks (`u64::MAX`: off).
pub(super) fn threshold() -> u64 {
    THRESHOLD.load(Relaxed)
}

/// `run_forever` starts: the watchdog may read this loop from now on.
pub(super) fn loop_started(slf: &Bound<'_, EventLoop>) {
    running().push(slf.clone().unbind());
    if threshold() != u64::MAX {
        ensure_watchdog();
    }
}

/// `run_forever` ends (the GIL is held).
pub(super) fn loop_stopped(this: &EventLoop) {
    let ptr: *const EventLoop = this;
    let removed = {
        let mut loops = running();
        loops.iter().position(|l| std::ptr::eq(l.get(), ptr)).map(|i| loops.swap_remove(i))
    };
    drop(removed);
}

/// The watchdog thread, started once per process when the report is first turned on.
fn ensure_watchdog() {
    let mut pid = WATCHDOG_PID.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let me = std::process::id();
    if *pid == me {
        return;
    }
    if std::thread::Builder::new().name("ferroloop-watchdog".into()).spawn(watch).is_ok() {
        *pid = me;
    }
}

fn watch() {
    let ticks = Ticks::get();
    let mut guard = running();
    loop {
        let limit = threshold();
        if limit == u64::MAX {
            guard = WAKE.wait(guard).unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        }
        let period = Duration::from_secs_f64((ticks.seconds(limit) / 4.0).clamp(0.001, 0.25));
        guard = WAKE.wait_timeout(guard, period).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        let limit = threshold();
        if limit == u64::MAX {
            continue;
        }
        let blocked: Vec<(usize, u64)> = guard
            .iter()
            .filter_map(|l| {
                let el = l.get();
                if el.thread_id.load(Relaxed) == 0 || el.polling.load(Relaxed) {
                    return None;
                }
                let stamp = el.stats.stamp();
                let late = el.stats.ticks.now().saturating_sub(stamp) >= limit;
                (late && el.stats.reported.load(Relaxed) != stamp).then_some((l.as_ptr() as usize, stamp))
            })
            .collect();
        if blocked.is_empty() {
            continue;
        }
        // The GIL is taken without holding the lock: the loop's thread takes the lock with the
        // GIL held (at the start and end of `run_forever`).
        drop(guard);
        for (ptr, stamp) in blocked {
            report(ptr, stamp);
        }
        guard = running();
    }
}

/// Asks `ferroloop._blocking` to report the loop at `ptr` blocked since `stamp`, if it still runs.
fn report(ptr: usize, stamp: u64) {
    // `None`: the interpreter is finalizing; nothing to report to.
    let _ = Python::try_attach(|py| {
        let found = running().iter().find(|l| l.as_ptr() as usize == ptr).map(|l| l.clone_ref(py));
        let Some(lp) = found else { return };
        let el = lp.get();
        let tid = el.thread_id.load(Relaxed);
        if tid == 0 || el.stats.stamp() != stamp {
            return;
        }
        let seconds = el.stats.ticks.seconds(el.stats.ticks.now().saturating_sub(stamp));
        let outcome =
            pyrefs::blocking_fn(py, "blocked").and_then(|f| f.call1((lp.bind(py), tid, stamp, seconds)).map(drop));
        if let Err(err) = outcome {
            err.write_unraisable(py, None);
        }
    });
}

/// A callback blocked the loop for `seconds` (logged by `ferroloop._blocking`; `reported`: the
/// watchdog logged its stack while it ran). A failure to log is reported as unraisable.
pub(super) fn ended(py: Python<'_>, seconds: f64, what: &Bound<'_, PyAny>, reported: bool) {
    if let Err(err) = pyrefs::blocking_fn(py, "ended").and_then(|f| f.call1((seconds, what, reported)).map(drop)) {
        err.write_unraisable(py, None);
    }
}

#[pymethods]
impl EventLoop {
    /// Marks the callback that started at `stamp` as reported, if it is still running; returns
    /// whether it is (the watchdog's report then stands for it).
    fn _blocking_mark(&self, stamp: u64) -> bool {
        let current = self.thread_id.load(Relaxed) != 0 && !self.polling.load(Relaxed) && self.stats.stamp() == stamp;
        if current {
            self.stats.reported.store(stamp, Relaxed);
        }
        current
    }
}

/// `ferroloop.report_blocking(threshold)`'s engine: `threshold` in seconds, `None` or 0 to turn
/// the report off. Returns the previous threshold (`None` if it was off).
#[pyfunction]
#[pyo3(signature = (threshold))]
pub fn _report_blocking(threshold: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let ticks = Ticks::get();
    let seconds = if threshold.is_none() {
        0.0
    } else {
        if threshold.is_instance_of::<pyo3::types::PyBool>() {
            return Err(PyTypeError::new_err("threshold must be a number of seconds or None, not bool"));
        }
        threshold.extract::<f64>().map_err(|_| {
            let name = threshold.get_type().name().map_or_else(|_| "?".into(), |n| n.to_string());
            PyTypeError::new_err(format!("threshold must be a number of seconds or None, not {name}"))
        })?
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!("threshold must be a positive number of seconds, not {seconds}")));
    }
    let new = if seconds == 0.0 { u64::MAX } else { ticks.ticks_in(seconds).max(1) };
    let old = THRESHOLD.swap(new, Relaxed);
    {
        let loops = running();
        for l in loops.iter() {
            l.get().stats.set_blocking_threshold(new);
        }
    }
    if new != u64::MAX {
        ensure_watchdog();
    }
    WAKE.notify_all();
    Ok((old != u64::MAX).then(|| ticks.seconds(old)))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_report_blocking, m)?)
}
