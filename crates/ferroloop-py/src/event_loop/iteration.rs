//! One iteration of the loop (see the parent module's documentation): timers pruned, the poll,
//! due timers queued, and the ready callbacks run within the fairness budget.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use ferroloop_core::fd_map::FdHasher;

use super::stats::{Batch, Ran};
use super::*;

/// Identities of queued readiness reports (see [`report_key`]).
type Reports = HashSet<usize, BuildHasherDefault<FdHasher>>;

/// What a readiness report runs, as a number: the handle's or the native watcher's address,
/// with the direction in the low bit for a native watcher (which watches both with one object;
/// both addresses are aligned).
fn report_key(w: &Watcher, write: bool) -> usize {
    match w {
        Watcher::Handle(h) => h.as_ptr() as usize,
        Watcher::Native(w, _) | Watcher::Op(w) => native_key(w, write),
    }
}

/// A native watcher's [`report_key`].
fn native_key(w: &Arc<dyn IoWatcher>, write: bool) -> usize {
    Arc::as_ptr(w).cast::<()>() as usize | usize::from(write)
}

/// Queues the callbacks of the descriptors the poll reported ready (`ready_at`: when), but
/// those `skip` says are queued already; collects the cancelled reader handles it finds in
/// `stale`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn queue_reports(
    py: Python<'_>,
    poller: &Poller,
    readers: &FdMap<Watcher>,
    writers: &FdMap<Watcher>,
    ready: &mut VecDeque<Ready>,
    stale: &mut Vec<(RawFd, bool)>,
    ready_at: u64,
    skip: impl Fn(&Watcher, bool) -> bool,
) {
    for ev in poller.ready() {
        for (is_ready, write) in [(ev.readable, false), (ev.writable, true)] {
            if !is_ready {
                continue;
            }
            let map = if write { writers } else { readers };
            let Some(watcher) = map.get(&ev.fd) else { continue };
            if skip(watcher, write) {
                continue;
            }
            match watcher {
                Watcher::Handle(h) if h.get().is_cancelled() => stale.push((ev.fd, write)),
                Watcher::Handle(h) => ready.push_back(Ready::Handle(h.clone_ref(py), ready_at)),
                Watcher::Native(w, context) => {
                    let context = Some(context.clone_ref(py));
                    ready.push_back(Ready::Io(Arc::clone(w), write, context, ready_at));
                }
                Watcher::Op(w) => ready.push_back(Ready::Io(Arc::clone(w), write, None, ready_at)),
            }
        }
    }
}

/// The keys of the reports in `ready` (handles included: a reader's handle is one of them).
#[cold]
fn reports_left(ready: &VecDeque<Ready>) -> Reports {
    ready
        .iter()
        .map(|r| match r {
            Ready::Handle(h, _) => h.as_ptr() as usize,
            Ready::Io(w, write, _, _) => native_key(w, *write),
        })
        .collect()
}

impl EventLoop {
    /// One iteration (see the module documentation).
    pub(super) fn run_iteration(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // One clock reading per iteration, two when it waited in the poll: they are a good part
        // of its cost.
        let now = this.now(py)?;
        let now_ticks = this.stats.iteration_started();
        let timeout = this.prune_timers_and_timeout(py, now);
        // Every iteration polls, as asyncio's does: what a peer sent before the iteration began
        // is seen in it (code that yields with `await asyncio.sleep(0)` relies on this). A poll
        // that would not wait and has no descriptor to report is skipped: it could find nothing.
        let nothing_watched = {
            let q = this.queues.borrow(py);
            q.readers.is_empty() && q.writers.is_empty()
        };
        let (now, now_ticks) = if timeout == Some(Duration::ZERO) && nothing_watched {
            (now, now_ticks)
        } else {
            match this.poll(py, timeout)? {
                Some(waited) => (this.now(py)?, waited),
                None => (now, now_ticks),
            }
        };
        this.queue_due_timers(py, now, now_ticks);
        Self::run_ready(slf, py)
    }

    /// Step 1 of an iteration: drops cancelled timers; returns how long the poll may wait.
    pub(super) fn prune_timers_and_timeout(&self, py: Python<'_>, now: f64) -> Option<Duration> {
        let mut dropped: Vec<Py<TimerHandle>> = Vec::new();
        let timeout = {
            let mut q = self.queues.borrow_mut(py);
            // A plain load first: the swap is a locked instruction, and cancellations are rare.
            if self.timers_cancelled.load(Relaxed) != 0 {
                q.timers.note_cancelled(self.timers_cancelled.swap(0, Relaxed));
            }
            if q.timers.should_compact() {
                dropped = q.timers.compact(|t| !t.bind(py).as_super().get().is_cancelled());
            } else {
                while let Some((_, t)) = q.timers.peek() {
                    if !t.bind(py).as_super().get().is_cancelled() {
                        break;
                    }
                    if let Some((_, t)) = q.timers.pop() {
                        q.timers.forget_cancelled();
                        dropped.push(t);
                    }
                }
            }
            if !q.ready.is_empty() || self.stopping.load(Relaxed) {
                Some(Duration::ZERO)
            } else {
                q.timers
                    .peek()
                    // Deadlines are never NaN in the heap (see `schedule_timer`); an infinite
                    // one waits the longest select timeout, as asyncio's does.
                    .map(|(when, _)| {
                        Duration::try_from_secs_f64((when - now).clamp(0.0, MAXIMUM_SELECT_TIMEOUT))
                            .unwrap_or(Duration::ZERO)
                    })
            }
        };
        if !dropped.is_empty() {
            for t in dropped {
                t.get().unschedule();
                handles::release(t);
            }
        }
        timeout
    }

    /// Step 2: polls, and queues the callbacks of ready file descriptors. Returns, when it
    /// waited (the clock has moved), the statistics' reading after the wait.
    pub(super) fn poll(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<u64>> {
        let blocked = {
            let mut guard = self.poller.borrow_mut(py);
            let poller: &mut Poller = guard.as_mut().ok_or_else(closed_error)?;
            // A poll that may wait looks first without waiting, with the GIL held, while the
            // loop is busy (its last wait was short, or its last look found something):
            // readiness already reported then needs no wait, and releasing the GIL and taking it
            // back costs about 500 instructions. A look that finds nothing costs a system call,
            // so an idle loop stops looking first until a wait is short again.
            let waits = timeout != Some(Duration::ZERO);
            let look = !waits || self.look_first.load(Relaxed);
            let found = if look { poller.poll(Some(Duration::ZERO)).map_err(|e| os_error(&e))? } else { 0 };
            if !waits || found > 0 {
                false
            } else {
                self.look_first.store(false, Relaxed);
                self.polling.store(true, Relaxed);
                let res = py.detach(|| poller.poll(timeout));
                self.polling.store(false, Relaxed);
                self.apply_deferred(py, poller);
                res.map_err(|e| os_error(&e))?;
                true
            }
        };
        // The time the reports below became ready (a blocked wait's end), for the statistics.
        let waited = if blocked {
            let (now, short) = self.stats.waited();
            if short {
                self.look_first.store(true, Relaxed);
            }
            Some(now)
        } else {
            None
        };
        let ready_at = waited.unwrap_or_else(|| self.stats.stamp());
        if blocked {
            // A signal may have cut the wait short: run Python's handlers now (they may raise
            // KeyboardInterrupt), not whenever the next callback happens to run.
            py.check_signals()?;
        }
        // Stays unallocated unless a cancelled reader handle is found.
        let mut stale: Vec<(RawFd, bool)> = Vec::new();
        {
            let guard = self.poller.borrow(py);
            let poller = guard.as_ref().ok_or_else(closed_error)?;
            let mut q = self.queues.borrow_mut(py);
            let Queues { ready, readers, writers, .. } = &mut *q;
            let queued_before = ready.len();
            // A plain load first: the swap is a locked instruction, and cut batches are rare.
            if self.cut_short.load(Relaxed) && self.cut_short.swap(false, Relaxed) {
                // Reports a batch cut short left queued are not queued again (module docs).
                let left = reports_left(ready);
                let skip = |w: &Watcher, write| left.contains(&report_key(w, write));
                queue_reports(py, poller, readers, writers, ready, &mut stale, ready_at, skip);
            } else {
                queue_reports(py, poller, readers, writers, ready, &mut stale, ready_at, |_, _| false);
            }
            self.stats.io_events(ready.len() - queued_before);
        }
        for (fd, write) in stale {
            self.unwatch(py, fd, write)?;
        }
        Ok(waited)
    }

    /// Step 3: moves the timers due by `now` (`now_ticks` is the statistics' reading taken with
    /// it) to the ready queue.
    pub(super) fn queue_due_timers(&self, py: Python<'_>, now: f64, now_ticks: u64) {
        let end = now + self.clock_resolution;
        // A deadline on a patched clock says nothing of the real lag: the reading stands in.
        let real_deadlines = !self.custom_time.load(Relaxed);
        let mut due = 0;
        let mut q = self.queues.borrow_mut(py);
        while let Some((when, _)) = q.timers.peek() {
            if when >= end {
                break;
            }
            let Some((_, t)) = q.timers.pop() else { break };
            t.get().unschedule();
            let h: Py<Handle> = t.into_bound(py).into_super().unbind();
            due += usize::from(!h.get().is_cancelled());
            let ready_at = if real_deadlines { self.stats.deadline(when, now, now_ticks) } else { now_ticks };
            q.ready.push_back(Ready::Handle(h, ready_at));
        }
        drop(q);
        self.stats.timers_due(due);
    }

    /// Step 4: runs the callbacks that were ready when the iteration began.
    pub(super) fn run_ready(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<()> {
        let stats = &slf.get().stats;
        let mut batch = stats.batch();
        let outcome = Self::run_batch(slf, py, &mut batch);
        batch.finish(stats);
        outcome
    }

    fn run_batch(slf: &Bound<'_, Self>, py: Python<'_>, batch: &mut Batch) -> PyResult<()> {
        let this = slf.get();
        let ntodo = this.queues.borrow(py).ready.len();
        let debug = this.debug.load(Relaxed);
        for i in 0..ntodo {
            if i % 64 == 63 && this.stats.ticks.seconds(batch.elapsed()) > POLL_INTERVAL && !this.stopping.load(Relaxed)
            {
                this.cut_short.store(true, Relaxed);
                break;
            }
            let Some(item) = this.queues.borrow_mut(py).ready.pop_front() else {
                break;
            };
            let handle = match item {
                Ready::Handle(handle, _) if handle.get().is_cancelled() => {
                    this.retire(py, handle);
                    continue;
                }
                Ready::Handle(handle, ready_at) => {
                    batch.starting(ready_at);
                    handle
                }
                Ready::Io(watcher, write, context, ready_at) => {
                    batch.starting(ready_at);
                    Self::run_io(slf, py, &watcher, write, context.as_ref())?;
                    drop(context);
                    if let Some(took) = batch.ended(&this.stats) {
                        this.stats.record_slow(py, Ran::Io(&watcher, write), took)?;
                    }
                    continue;
                }
            };
            let mut outcome = Self::run_handle(slf, py, &handle, debug);
            if let Some(took) = batch.ended(&this.stats) {
                if outcome.is_ok() {
                    outcome = this.stats.record_slow(py, Ran::Handle(&handle), took);
                }
            }
            // Every way out of running the handle goes through `retire` (see `handles`).
            this.retire(py, handle);
            outcome?;
        }
        Ok(())
    }

    /// Runs a native watcher's readiness callback in its context; its error goes to the
    /// exception handler (`Err` leaves the loop).
    fn run_io(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        watcher: &Arc<dyn IoWatcher>,
        write: bool,
        context: Option<&Py<PyAny>>,
    ) -> PyResult<()> {
        let outcome = match context {
            Some(c) => handles::run_in_context(py, c, || watcher.io_ready(py, write)),
            None => watcher.io_ready(py, write),
        };
        if let Err(err) = outcome {
            if is_exit(py, &err) {
                return Err(err);
            }
            report_watcher_error(slf, err)?;
        }
        Ok(())
    }

    /// Runs one handle's callback (the caller skips cancelled ones), reporting its error; in debug mode records
    /// it as the current handle and warns when it was slow. `Err` leaves the loop.
    pub(super) fn run_handle(slf: &Bound<'_, Self>, py: Python<'_>, handle: &Py<Handle>, debug: bool) -> PyResult<()> {
        let this = slf.get();
        let h = handle.get();
        let t0 = if debug {
            let previous = this.current_handle.borrow_mut(py).replace(handle.clone_ref(py));
            drop(previous);
            clock::monotonic()
        } else {
            0.0
        };
        let result = h.run(py);
        if debug {
            let ran = this.current_handle.borrow_mut(py).take();
            drop(ran);
        }
        if let Err(err) = result {
            if is_exit(py, &err) {
                return Err(err);
            }
            report_callback_error(slf, handle.bind(py), err)?;
        }
        if debug {
            let dt = clock::monotonic() - t0;
            if dt >= *this.slow_callback_duration.borrow(py) {
                let what = pyrefs::format_fn(py, "format_handle")?.call1((handle.bind(py),))?;
                pyrefs::asyncio_logger(py)?.call_method1("warning", ("Executing %s took %.3f seconds", what, dt))?;
            }
        }
        Ok(())
    }
}
