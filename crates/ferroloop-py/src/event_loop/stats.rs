//! The loop's statistics as the loop keeps them (the figures and their definitions are
//! `ferroloop_core::stats`'s), and `_stats()`, which `ferroloop.stats()` reads.
//!
//! Time is counted in ticks (`ferroloop_core::clock::Ticks`: the CPU's time-stamp counter where
//! the kernel trusts it, one instruction to read), so the hot path adds one reading per callback
//! and only integer arithmetic; seconds are made when a snapshot is read, a lag is recorded
//! (once per iteration) or a callback was slow. The *stamp* is the loop thread's last reading:
//! an iteration's start, a poll's return, a callback's end. A callback's duration is its end
//! minus the stamp before it; busy time is never added up on the hot path (it is the run's time
//! less the idle time). Each entry of the ready queue carries when it became ready, in ticks: a
//! handle queued by `call_soon` while the loop runs is stamped with the stamp (at most the
//! running callback's duration early, so lags are never under-reported); handles queued from
//! other threads read the counter; handles queued while the loop does not run count no lag
//! ([`NO_LAG`]: they wait for the loop, not behind other callbacks); a timer is ready at its
//! deadline, converted with the iteration's clock reading. `loop.time` may be patched: the
//! figures keep to the real clock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use ferroloop_core::clock::{self, Ticks};
use ferroloop_core::stats::{LoopStats, Snapshot, Traffic, TransportKind};
use pyo3::prelude::*;

use super::EventLoop;
use crate::gil_cell::GilCell;
use crate::handles::Handle;
use crate::pyrefs;
use crate::watch::IoWatcher;

/// The ready time of an entry that counts no lag (the latest possible reading).
pub(super) const NO_LAG: u64 = u64::MAX;

/// What a callback that ran was (for naming a slow one).
pub(super) enum Ran<'a> {
    Handle(&'a Py<Handle>),
    Io(&'a Arc<dyn IoWatcher>, bool),
}

/// How many of the slowest callbacks a loop remembers.
const SLOWEST_KEPT: usize = 5;

/// One slow callback: how long it ran (seconds), when it ended (`time.monotonic()`) and what it
/// was (a `str`).
struct Slow {
    seconds: f64,
    ended: f64,
    what: Py<PyAny>,
}

pub(super) struct Stats {
    figures: LoopStats,
    /// The loop thread's last reading (ticks).
    stamp: AtomicU64,
    /// When the current run began (ticks; meaningful while the loop runs).
    run_began: AtomicU64,
    /// Callbacks that run longer than this (ticks) are slow: the loop's
    /// `slow_callback_duration`, asyncio's debug-mode threshold.
    slow_limit: AtomicU64,
    /// Callbacks that run longer than this (ticks) blocked the loop (`ferroloop.report_blocking`;
    /// `u64::MAX` when off; see `blocking`).
    pub(super) blocking: AtomicU64,
    /// The lower of the two: what a batch compares each callback's duration with, so that
    /// either rule costs the hot path one comparison together.
    slow: AtomicU64,
    /// The stamp (start) of the callback the watchdog reported as blocking, so that its end
    /// says so.
    pub(super) reported: AtomicU64,
    /// The slowest callbacks, slowest first; touched only when one is slow.
    slowest: GilCell<Vec<Slow>>,
    pub(super) ticks: Ticks,
    /// A wait shorter than this (ticks, 20 µs) found readiness already reported, or nearly.
    short_wait: u64,
}

impl Stats {
    pub(super) fn new(slow_seconds: f64) -> Self {
        let ticks = Ticks::get();
        let now = ticks.now();
        Self {
            figures: LoopStats::default(),
            stamp: AtomicU64::new(now),
            run_began: AtomicU64::new(now),
            slow_limit: AtomicU64::new(ticks.ticks_in(slow_seconds)),
            blocking: AtomicU64::new(u64::MAX),
            slow: AtomicU64::new(ticks.ticks_in(slow_seconds)),
            reported: AtomicU64::new(0),
            short_wait: ticks.ticks_in(20e-6),
            slowest: GilCell::new(Vec::new()),
            ticks,
        }
    }

    /// The stamp (ticks).
    #[inline]
    pub(super) fn stamp(&self) -> u64 {
        self.stamp.load(Relaxed)
    }

    #[inline]
    fn set_stamp(&self, t: u64) {
        self.stamp.store(t, Relaxed);
    }

    /// A reading now, for a handle queued from another thread.
    #[inline]
    pub(super) fn now(&self) -> u64 {
        self.ticks.now()
    }

    pub(super) fn set_slow_threshold(&self, seconds: f64) {
        self.slow_limit.store(self.ticks.ticks_in(seconds), Relaxed);
        self.refresh_slow();
    }

    /// The blocked-loop threshold (ticks, `u64::MAX`: off).
    pub(super) fn set_blocking_threshold(&self, ticks: u64) {
        self.blocking.store(ticks, Relaxed);
        self.refresh_slow();
    }

    fn refresh_slow(&self) {
        self.slow.store(self.slow_limit.load(Relaxed).min(self.blocking.load(Relaxed)), Relaxed);
    }

    /// `run_forever` starts now.
    pub(super) fn run_started(&self) {
        self.set_blocking_threshold(super::blocking::threshold());
        let now = self.ticks.now();
        self.run_began.store(now, Relaxed);
        self.set_stamp(now);
    }

    /// `run_forever` ends.
    pub(super) fn run_ended(&self) {
        let now = self.ticks.now();
        self.figures.run.add(now.saturating_sub(self.run_began.load(Relaxed)));
        self.set_stamp(now);
    }

    /// An iteration starts; returns the stamp, which stands for its start: within
    /// `run_forever` the last reading is at most the loop's own bookkeeping old (the end of the
    /// last callback, or a poll's return; see `EventLoop::_run_once` for a bare iteration).
    #[inline]
    pub(super) fn iteration_started(&self) -> u64 {
        self.stamp()
    }

    /// A reading now becomes the stamp (an iteration run outside `run_forever`).
    pub(super) fn restamp(&self) {
        self.set_stamp(self.ticks.now());
    }

    /// The poll waited since the stamp; returns the reading now, and whether the wait was short
    /// (readiness was probably reported already when it began: see `EventLoop::poll`).
    #[inline]
    pub(super) fn waited(&self) -> (u64, bool) {
        let now = self.ticks.now();
        let idle = now.saturating_sub(self.stamp());
        self.figures.idle.add(idle);
        self.set_stamp(now);
        (now, idle < self.short_wait)
    }

    #[inline]
    pub(super) fn io_events(&self, n: usize) {
        self.figures.io_events.add(n as u64);
    }

    #[inline]
    pub(super) fn timers_due(&self, n: usize) {
        if n > 0 {
            self.figures.timers.add(n as u64);
        }
    }

    /// When a timer due at `when` became ready (ticks), given the clock's `now` and the reading
    /// `now_ticks` taken with it.
    #[inline]
    pub(super) fn deadline(&self, when: f64, now: f64, now_ticks: u64) -> u64 {
        now_ticks.saturating_sub(self.ticks.ticks_in(now - when))
    }

    /// A batch of callbacks starts (after the poll and the due timers).
    #[inline]
    pub(super) fn batch(&self) -> Batch {
        let started = self.stamp();
        Batch { started, last: started, slow: self.slow.load(Relaxed), ran: 0, lag: 0 }
    }

    /// A callback ran for `took` ticks, more than the lower threshold: it was slow, or it
    /// blocked the loop (`ferroloop.report_blocking`), or both.
    #[cold]
    #[inline(never)]
    pub(super) fn record_slow(&self, py: Python<'_>, what: Ran<'_>, took: u64) -> PyResult<()> {
        let seconds = self.ticks.seconds(took);
        let mut described = None;
        if took > self.slow_limit.load(Relaxed) {
            self.figures.slow.add(1);
            let kept = self.slowest.borrow(py);
            let keep = kept.len() < SLOWEST_KEPT || kept.last().is_some_and(|s| s.seconds < seconds);
            drop(kept);
            if keep {
                let what = describe(py, &what)?;
                let ended = clock::monotonic();
                let mut kept = self.slowest.borrow_mut(py);
                let at = kept.iter().position(|s| s.seconds < seconds).unwrap_or(kept.len());
                kept.insert(at, Slow { seconds, ended, what: what.clone_ref(py) });
                let keep = kept.len().min(SLOWEST_KEPT);
                let dropped = kept.split_off(keep);
                drop(kept);
                drop(dropped);
                described = Some(what);
            }
        }
        if took > self.blocking.load(Relaxed) {
            let what = match described {
                Some(what) => what,
                None => describe(py, &what)?,
            };
            // The watchdog marks the episode with the callback's start, which is the stamp
            // before this callback's end.
            let reported = self.reported.load(Relaxed) == self.stamp().wrapping_sub(took);
            super::blocking::ended(py, seconds, what.bind(py), reported);
        }
        Ok(())
    }
}

/// What a callback that ran was, for a person (a `str`).
fn describe(py: Python<'_>, what: &Ran<'_>) -> PyResult<Py<PyAny>> {
    Ok(match what {
        Ran::Handle(handle) => pyrefs::format_fn(py, "describe_callback")?.call1((handle.bind(py),))?.unbind(),
        Ran::Io(watcher, write) => watcher.describe(py, *write)?,
    })
}

/// One iteration's batch of callbacks, as the statistics see it (ticks).
pub(super) struct Batch {
    /// When it started (the stamp then).
    started: u64,
    /// The end of the last callback that ran (or the start).
    last: u64,
    /// The slow-callback threshold.
    slow: u64,
    /// Callbacks run.
    ran: u64,
    /// The longest any of them waited.
    lag: u64,
}

impl Batch {
    /// Ticks since the batch started, as of the last callback's end.
    #[inline]
    pub(super) fn elapsed(&self) -> u64 {
        self.last - self.started
    }

    /// A callback that became ready at `ready_at` starts now.
    #[inline]
    pub(super) fn starting(&mut self, ready_at: u64) {
        self.lag = self.lag.max(self.last.saturating_sub(ready_at));
    }

    /// A callback returned: its end is the stamp. Returns how long it ran (ticks) when that
    /// was more than the threshold (the caller records it with [`Stats::record_slow`]).
    #[inline]
    pub(super) fn ended(&mut self, stats: &Stats) -> Option<u64> {
        let end = stats.ticks.now();
        stats.set_stamp(end);
        let took = end.wrapping_sub(self.last);
        self.last = end;
        self.ran += 1;
        (took > self.slow).then_some(took)
    }

    /// The batch is over (or cut short by an error).
    #[inline]
    pub(super) fn finish(&self, stats: &Stats) {
        if self.ran > 0 {
            stats.figures.callbacks.add(self.ran);
            stats.figures.record_lag(self.lag);
        } else {
            stats.figures.empty_iterations.add(1);
        }
    }
}

/// A snapshot of a loop's statistics (`ferroloop.stats()` builds its `LoopStats` from one).
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct StatsSnapshot {
    figures: Snapshot,
    /// When it was taken (the loop's clock, `time.monotonic()`).
    #[pyo3(get)]
    taken: f64,
    /// `(seconds, ended, what)` of the slowest callbacks, slowest first.
    slowest: Vec<(f64, f64, Py<PyAny>)>,
}

#[pymethods]
impl StatsSnapshot {
    #[getter]
    fn iterations(&self) -> u64 {
        self.figures.iterations
    }
    #[getter]
    fn callbacks(&self) -> u64 {
        self.figures.callbacks
    }
    #[getter]
    fn io_events(&self) -> u64 {
        self.figures.io_events
    }
    #[getter]
    fn timers(&self) -> u64 {
        self.figures.timers
    }
    #[getter]
    fn slow_callbacks(&self) -> u64 {
        self.figures.slow
    }
    /// Seconds.
    #[getter]
    fn busy(&self) -> f64 {
        self.figures.busy_seconds()
    }
    /// Seconds.
    #[getter]
    fn idle(&self) -> f64 {
        self.figures.idle_seconds()
    }
    #[getter]
    fn lag_samples(&self) -> u64 {
        self.figures.lag_samples()
    }
    /// Seconds.
    #[getter]
    fn lag_max(&self) -> f64 {
        self.figures.lag_max_seconds()
    }
    /// Seconds.
    #[getter]
    fn lag_sum(&self) -> f64 {
        self.figures.lag_sum_seconds()
    }
    /// `(upper bound in seconds, samples)` of each lag bucket that has samples, ascending.
    #[getter]
    fn lag_buckets(&self) -> Vec<(f64, u64)> {
        self.figures.lag_buckets()
    }
    /// `(kind, open, opened, bytes_in, bytes_out)` per kind of transport.
    #[getter]
    fn transports(&self) -> Vec<(&'static str, u64, u64, u64, u64)> {
        TransportKind::ALL
            .iter()
            .zip(&self.figures.transports)
            .map(|(kind, t)| (kind.name(), t.open, t.opened, t.bytes_in, t.bytes_out))
            .collect()
    }
    /// The lag at quantile `q` (0 to 1), in seconds (see `ferroloop_core::stats`).
    fn lag_quantile(&self, q: f64) -> f64 {
        self.figures.lag_quantile(q)
    }
    /// The slowest callbacks, slowest first: `(seconds, ended, what)`; in an interval, those
    /// that ended in it.
    #[getter]
    fn slowest(&self, py: Python<'_>) -> Vec<(f64, f64, Py<PyAny>)> {
        self.slowest.iter().map(|(s, e, w)| (*s, *e, w.clone_ref(py))).collect()
    }
    /// The figures of the interval from `earlier` to this snapshot.
    fn since(&self, py: Python<'_>, earlier: &Self) -> Self {
        Self {
            figures: self.figures.since(&earlier.figures),
            taken: self.taken,
            slowest: self
                .slowest
                .iter()
                .filter(|(_, ended, _)| *ended > earlier.taken)
                .map(|(s, e, w)| (*s, *e, w.clone_ref(py)))
                .collect(),
        }
    }
}

impl EventLoop {
    /// The counters of the loop's transports of `kind`, for a new transport to keep.
    pub(crate) fn traffic(&self, kind: TransportKind) -> Arc<Traffic> {
        self.stats.figures.traffic(kind)
    }
}

/// `ferroloop.stats()`'s source.
#[pymethods]
impl EventLoop {
    /// The statistics since the loop was made, up to now: while the loop runs, the time since
    /// its last stamp counts as idle if it is waiting in the poller, busy otherwise (a callback
    /// running now, this one included). Callable from any thread.
    fn _stats(&self, py: Python<'_>) -> StatsSnapshot {
        let taken = clock::monotonic();
        let stats = &self.stats;
        let now = stats.ticks.now();
        let mut figures = stats.figures.snapshot(stats.ticks.seconds(1));
        if self.thread_id.load(Relaxed) != 0 {
            figures.run += now.saturating_sub(stats.run_began.load(Relaxed));
            if self.polling.load(Relaxed) {
                figures.idle += now.saturating_sub(stats.stamp());
            }
        }
        let slowest = stats.slowest.borrow(py).iter().map(|s| (s.seconds, s.ended, s.what.clone_ref(py))).collect();
        StatsSnapshot { figures, taken, slowest }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StatsSnapshot>()
}
