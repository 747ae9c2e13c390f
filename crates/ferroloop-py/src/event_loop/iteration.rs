//! One iteration of the loop (see the parent module's documentation): timers pruned, the poll,
//! due timers queued, and the ready callbacks run within the fairness budget.

use super::*;

impl EventLoop {
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

    /// Step 2: polls, and queues the callbacks of ready file descriptors. Returns whether it
    /// waited (the clock has moved).
    pub(super) fn poll(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<bool> {
        let blocking = timeout != Some(Duration::ZERO);
        {
            let mut guard = self.poller.borrow_mut(py);
            let poller: &mut Poller = guard.as_mut().ok_or_else(closed_error)?;
            if blocking {
                self.polling.store(true, Relaxed);
                let res = py.detach(|| poller.poll(timeout));
                self.polling.store(false, Relaxed);
                res.map_err(|e| os_error(&e))?;
            } else {
                poller.poll(timeout).map_err(|e| os_error(&e))?;
            }
        }
        if blocking {
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
            for ev in poller.ready() {
                for (is_ready, write) in [(ev.readable, false), (ev.writable, true)] {
                    if !is_ready {
                        continue;
                    }
                    let map = if write { &*writers } else { &*readers };
                    match map.get(&ev.fd) {
                        None => {}
                        Some(Watcher::Handle(h)) if h.get().is_cancelled() => stale.push((ev.fd, write)),
                        Some(Watcher::Handle(h)) => ready.push_back(Ready::Handle(h.clone_ref(py))),
                        Some(Watcher::Native(w, context)) => {
                            ready.push_back(Ready::Io(Arc::clone(w), write, Some(context.clone_ref(py))));
                        }
                        Some(Watcher::Op(w)) => ready.push_back(Ready::Io(Arc::clone(w), write, None)),
                    }
                }
            }
        }
        for (fd, write) in stale {
            self.unwatch(py, fd, write)?;
        }
        Ok(blocking)
    }

    /// Step 3: moves the timers due by now to the ready queue.
    pub(super) fn queue_due_timers(&self, py: Python<'_>, now: f64) {
        let end = now + self.clock_resolution;
        let mut q = self.queues.borrow_mut(py);
        while let Some((when, _)) = q.timers.peek() {
            if when >= end {
                break;
            }
            let Some((_, t)) = q.timers.pop() else { break };
            t.get().unschedule();
            let h: Py<Handle> = t.into_bound(py).into_super().unbind();
            q.ready.push_back(Ready::Handle(h));
        }
    }

    /// Step 4: runs the callbacks that were ready when the iteration began.
    pub(super) fn run_ready(slf: &Bound<'_, Self>, py: Python<'_>, started: f64) -> PyResult<()> {
        let this = slf.get();
        let ntodo = this.queues.borrow(py).ready.len();
        let debug = this.debug.load(Relaxed);
        for i in 0..ntodo {
            if i % 64 == 63 && clock::monotonic() - started > POLL_INTERVAL && !this.stopping.load(Relaxed) {
                break;
            }
            let Some(item) = this.queues.borrow_mut(py).ready.pop_front() else {
                break;
            };
            let handle = match item {
                Ready::Handle(handle) => handle,
                Ready::Io(watcher, write, context) => {
                    let outcome = match &context {
                        Some(c) => handles::run_in_context(py, c, || watcher.io_ready(py, write)),
                        None => watcher.io_ready(py, write),
                    };
                    drop(context);
                    if let Err(err) = outcome {
                        if is_exit(py, &err) {
                            return Err(err);
                        }
                        report_watcher_error(slf, err)?;
                    }
                    continue;
                }
            };
            // Every way out of running the handle goes through `retire` (see `handles`).
            let outcome = Self::run_handle(slf, py, &handle, debug);
            this.retire(py, handle);
            outcome?;
        }
        Ok(())
    }

    /// Runs one handle's callback (unless cancelled), reporting its error; in debug mode records
    /// it as the current handle and warns when it was slow. `Err` leaves the loop.
    pub(super) fn run_handle(slf: &Bound<'_, Self>, py: Python<'_>, handle: &Py<Handle>, debug: bool) -> PyResult<()> {
        let this = slf.get();
        let h = handle.get();
        if h.is_cancelled() {
            return Ok(());
        }
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
