//! Scheduling: handles made (or reused) for the ready queue and the timer heap, tasks made,
//! and the loop's clock and waker.

use super::*;

impl EventLoop {
    /// Debug-mode checks of `call_soon` and friends, as asyncio makes them.
    #[cold]
    pub(super) fn debug_checks(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        let tid = self.thread_id.load(Relaxed);
        if check_thread && tid != 0 && tid != current_thread_id() {
            return Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            ));
        }
        pyrefs::format_fn(py, "check_callback")?.call1((callback, method))?;
        Ok(())
    }

    /// A new handle the loop will queue, untracked by the cycle collector (see `handles`).
    #[inline]
    pub(super) fn new_queued<T: pyo3::PyClass>(
        &self,
        py: Python<'_>,
        init: impl Into<PyClassInitializer<T>>,
    ) -> PyResult<Py<T>> {
        let handle = Py::new(py, init)?;
        handles::untrack(&handle);
        Ok(handle)
    }

    /// What a new handle holds: the callback, its arguments, its context (a copy of the current
    /// one unless given) and, in debug mode, where it was created.
    pub(super) fn handle_parts(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Parts> {
        let context = match context {
            Some(c) if !c.is_none() => c.clone().unbind(),
            _ => copy_current_context(py)?,
        };
        let tb = if self.debug.load(Relaxed) { Some(source_traceback(py)?) } else { None };
        Ok(Parts::new(callback.clone().unbind(), args.clone().unbind(), context, tb))
    }

    /// `asyncio.Task(coro, **kw)`, its debug-mode traceback ending in `create_task`, not in
    /// `Task`'s constructor.
    pub(super) fn new_task<'py>(
        &self,
        py: Python<'py>,
        coro: &Bound<'py, PyAny>,
        kw: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let task = pyrefs::task_type(py)?.call((coro,), Some(kw))?;
        if self.debug.load(Relaxed) {
            let tb = task.getattr(intern!(py, "_source_traceback"))?;
            if tb.is_truthy()? {
                tb.del_item(-1)?;
            }
        }
        Ok(task)
    }

    /// A handle for the ready queue: a spare one refilled, or a new one, untracked.
    pub(super) fn queued_handle(&self, py: Python<'_>, parts: Parts) -> PyResult<Py<Handle>> {
        let spare = self.spare_handles.borrow_mut(py).pop();
        match spare {
            Some(handle) => {
                handle.get().refill(py, parts);
                Ok(handle)
            }
            None => self.new_queued(py, Handle::new(parts)),
        }
    }

    /// The loop is done with a handle it ran or skipped: kept for reuse if nobody else can see
    /// it and there is room, else released (see `handles`).
    #[inline(always)]
    pub(super) fn retire(&self, py: Python<'_>, handle: Py<Handle>) {
        let mut spare = self.spare_handles.borrow_mut(py);
        if spare.len() < SPARE_HANDLES && !self.closed.load(Relaxed) {
            // No Python runs here: what the handle held is dropped after the borrow ends.
            if let Some(emptied) = handles::take_for_reuse(py, &handle) {
                spare.push(handle);
                drop(spare);
                drop(emptied);
                return;
            }
        }
        drop(spare);
        handles::release(handle);
    }

    pub(super) fn schedule_timer(
        &self,
        py: Python<'_>,
        when: f64,
        when_int: Option<Py<PyAny>>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        self.check_closed()?;
        if self.debug.load(Relaxed) {
            self.debug_checks(py, callback, "call_at", true)?;
        }
        let base = Handle::new(self.handle_parts(py, callback, args, context)?);
        let init = PyClassInitializer::from(base).add_subclass(TimerHandle::new(
            when,
            when_int,
            Arc::clone(&self.timers_cancelled),
        ));
        let timer = self.new_queued(py, init)?;
        // A NaN deadline is due at once (asyncio 3.11 and 3.12 run it in the next iteration;
        // 3.13 raises from its selector instead). In the heap it sorts first, not after every
        // other deadline, so it cannot wait behind an infinite one.
        let key = if when.is_nan() { f64::NEG_INFINITY } else { when };
        self.queues.borrow_mut(py).timers.push(key, timer.clone_ref(py));
        Ok(timer)
    }

    /// For native transports: `call_soon(callback, *args)` in a copy of the current context.
    pub(crate) fn call_soon_native(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        self.call_soon_in(py, callback, args, None)
    }

    /// [`EventLoop::call_soon_native`] in `context` when given.
    pub(crate) fn call_soon_in(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Py<PyAny>>,
    ) -> PyResult<()> {
        self.check_closed()?;
        let parts = self.handle_parts(py, callback, args, context.map(|c| c.bind(py)))?;
        let handle = self.queued_handle(py, parts)?;
        let queued = self.queued_at();
        self.queues.borrow_mut(py).ready.push_back(Ready::Handle(handle, queued));
        Ok(())
    }

    /// When a handle `call_soon` queues now became ready, for the lag statistics (see
    /// `stats`): the stamp while the loop runs, no lag while it does not.
    #[inline]
    fn queued_at(&self) -> u64 {
        if self.thread_id.load(Relaxed) == 0 {
            stats::NO_LAG
        } else {
            self.stats.stamp()
        }
    }

    /// The loop's time: `time.monotonic()`, or what the patched or overridden `time()` says.
    #[inline]
    pub(super) fn now(&self, py: Python<'_>) -> PyResult<f64> {
        if !self.custom_time.load(Relaxed) {
            return Ok(clock::monotonic());
        }
        let source = self.time_source.borrow(py).as_ref().map(|f| f.clone_ref(py));
        match source {
            Some(f) => f.bind(py).call0()?.extract(),
            None => Ok(clock::monotonic()),
        }
    }

    /// Interrupts the poller's wait (from any thread).
    pub(super) fn wake(&self, py: Python<'_>) {
        if let Some(waker) = self.waker.borrow(py).as_ref() {
            waker.wake();
        }
    }
}

/// Callbacks, timers, tasks and futures.
#[pymethods]
impl EventLoop {
    #[pyo3(signature = (callback, *args, context=None))]
    pub(crate) fn call_soon(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed()?;
        if self.debug.load(Relaxed) {
            self.debug_checks(py, callback, "call_soon", true)?;
        }
        let handle = self.queued_handle(py, self.handle_parts(py, callback, args, context)?)?;
        let queued = self.queued_at();
        self.queues.borrow_mut(py).ready.push_back(Ready::Handle(handle.clone_ref(py), queued));
        Ok(handle)
    }

    #[pyo3(signature = (callback, *args, context=None))]
    pub(crate) fn call_soon_threadsafe(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed()?;
        if self.debug.load(Relaxed) {
            self.debug_checks(py, callback, "call_soon_threadsafe", false)?;
        }
        let mut parts = self.handle_parts(py, callback, args, context)?;
        if compat::thread_safe_handles(py)? {
            parts = parts.thread_safe();
        }
        let handle = self.queued_handle(py, parts)?;
        // Another thread: the loop's stamp may be the start of a long wait.
        let queued = self.stats.now();
        self.queues.borrow_mut(py).ready.push_back(Ready::Handle(handle.clone_ref(py), queued));
        if self.polling.load(Relaxed) {
            self.wake(py);
        }
        Ok(handle)
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    pub(crate) fn call_later(
        &self,
        py: Python<'_>,
        delay: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let delay: f64 = delay.extract()?;
        self.schedule_timer(py, self.now(py)? + delay, None, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    pub(crate) fn call_at(
        &self,
        py: Python<'_>,
        when: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when_int = when.is_exact_instance_of::<PyInt>() || when.is_exact_instance_of::<PyBool>();
        let when_int = when_int.then(|| when.clone().unbind());
        let when_f: f64 = match (when.extract(), &when_int) {
            (Ok(w), _) => w,
            // An int beyond any float: after (or before) every other deadline; `when()` keeps it.
            (Err(_), Some(w)) => {
                if w.bind(py).lt(0)? {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            }
            (Err(e), None) => return Err(e),
        };
        self.schedule_timer(py, when_f, when_int, callback, args, context)
    }

    /// Schedules a coroutine; returns its task (stdlib's `asyncio.Task`, or the task factory's).
    /// Its keywords are those of asyncio's on this Python (see `compat::create_task_takes_kwargs`).
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let factory = this.task_factory.borrow(py).as_ref().map(|f| f.clone_ref(py));
        if compat::create_task_takes_kwargs(py) {
            // Every keyword, as given, to the factory or to `Task` (eager_start among them).
            if let Some(factory) = factory {
                return factory.bind(py).call((slf, coro), kwargs);
            }
            let kw = match kwargs {
                Some(k) if k.contains(intern!(py, "loop"))? => {
                    return Err(PyTypeError::new_err("create_task() got multiple values for keyword argument 'loop'"));
                }
                Some(k) => k.copy()?,
                None => PyDict::new(py),
            };
            kw.set_item(intern!(py, "loop"), slf)?;
            return this.new_task(py, coro, &kw);
        }
        let (mut name, mut context) = (None, None);
        for (key, value) in kwargs.into_iter().flatten() {
            match key.extract::<&str>()? {
                "name" => name = Some(value).filter(|v| !v.is_none()),
                "context" => context = Some(value).filter(|v| !v.is_none()),
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "create_task() got an unexpected keyword argument '{other}'"
                    )))
                }
            }
        }
        let Some(factory) = factory else {
            let kw = PyDict::new(py);
            kw.set_item(intern!(py, "loop"), slf)?;
            // None is the constructor's default for both: fewer keywords to build and parse.
            if let Some(name) = name {
                kw.set_item(intern!(py, "name"), name)?;
            }
            if let Some(ctx) = context {
                kw.set_item(intern!(py, "context"), ctx)?;
            }
            return this.new_task(py, coro, &kw);
        };
        // The factory gets `context` only when there is one (its older signature is `(loop, coro)`).
        let task = match context {
            Some(ctx) => {
                factory.bind(py).call((slf, coro), Some(&[(intern!(py, "context"), ctx)].into_py_dict(py)?))?
            }
            None => factory.bind(py).call1((slf, coro))?,
        };
        if let Some(name) = name {
            task.call_method1(intern!(py, "set_name"), (name,))?;
        }
        Ok(task)
    }

    fn set_task_factory(&self, py: Python<'_>, factory: &Bound<'_, PyAny>) -> PyResult<()> {
        if !factory.is_none() && !factory.is_callable() {
            return Err(PyTypeError::new_err("task factory must be a callable or None"));
        }
        let new = (!factory.is_none()).then(|| factory.clone().unbind());
        let old = std::mem::replace(&mut *self.task_factory.borrow_mut(py), new);
        drop(old);
        Ok(())
    }

    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory.borrow(py).as_ref().map(|f| f.clone_ref(py))
    }

    #[getter(_task_factory)]
    fn task_factory_attr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get_task_factory(py)
    }

    pub(crate) fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cached = this.queues.borrow(py).future_kwargs.as_ref().map(|k| k.clone_ref(py));
        let kwargs = match cached {
            Some(k) => k.into_bound(py),
            None => {
                let k = PyDict::new(py);
                k.set_item(pyo3::intern!(py, "loop"), slf)?;
                let old = this.queues.borrow_mut(py).future_kwargs.replace(k.clone().unbind());
                drop(old);
                k
            }
        };
        Ok(pyrefs::future_type(py)?.call((), Some(&kwargs))?.unbind())
    }
}
