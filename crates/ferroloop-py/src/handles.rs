//! `Handle` and `TimerHandle`: what `call_soon`, `call_later`, `call_at` and `add_reader` return,
//! with asyncio's interface (`cancel`, `cancelled`, `when`, `get_context`).
//!
//! A handle owns its callback, its arguments and the `contextvars.Context` the callback runs in.
//! `cancel()` drops the callback and arguments at once (as asyncio does) so that whatever they
//! keep alive is released even while the handle sits in a queue; the loop skips cancelled
//! handles when it reaches them. A `TimerHandle` also knows whether it is still in the loop's
//! timer heap (`scheduled`) and, when cancelled there, counts itself in the loop's cancelled-timer
//! counter, which drives the heap's compaction.
//!
//! Garbage collection: the handles of `call_soon`, `call_later` and `call_at` are taken off the
//! cycle collector's lists ([`untrack`]) while they sit in the loop's queues: most of them die
//! right after running, and a collector walking hundreds of thousands of queued handles on every
//! full collection was a good part of the cost of `call_soon`. The loop's own traversal visits
//! what such a handle holds in its place ([`traverse_queued`]: each queued handle is in exactly
//! one queue, once), so a cycle through a queued handle (a loop that is dropped unclosed with a
//! callback bound to itself) is still found. The loop puts a handle back under the collector
//! ([`release`]) whenever it lets go of one that someone else still holds (a handle kept by the
//! object its callback belongs to makes a cycle). (A pyclass freelist for handles was tried and
//! dropped: its mutex cost more than the allocations it saved, 0.133 -> 0.153 µs per `call_soon`
//! chain link.)
//!
//! Reuse: when the loop is done with a plain `Handle` that nobody else can see (it holds the only
//! reference, no weak reference exists, and the handle is untracked), it empties it
//! ([`take_for_reuse`]: what the callback, arguments and context kept alive is released then,
//! as if the handle had died) and keeps it for the next `call_soon` to refill, up to a few dozen
//! per loop. A task step or a future's wake-up then costs no allocation, initialisation or
//! deallocation of a handle: callgrind, per operation, `sleep(0)` 5,909 -> 5,653 instructions,
//! `call_soon` chain link 2,479 -> 2,267, Future round trip 8,239 -> 7,662. No one can tell a
//! reused handle from a new one: only an object nobody references is reused, as CPython's own
//! free lists do.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};
use pyo3::{ffi, PyTraverseError, PyTypeInfo, PyVisit};

use crate::compat;
use crate::gil_cell::GilCell;
use crate::pyrefs;

/// What a handle holds. `cancel()` takes the callback and its arguments; a handle the loop
/// reuses ([`take_for_reuse`]) gives up everything and is filled again by [`Handle::refill`].
#[derive(Default)]
pub(crate) struct Parts {
    /// The callable; `None` once cancelled.
    func: Option<Py<PyAny>>,
    /// Positional arguments for `func`; `None` once cancelled.
    args: Option<Py<PyTuple>>,
    /// The `contextvars.Context` the callback runs in.
    context: Option<Py<PyAny>>,
    /// In debug mode, where the handle was created (`asyncio.format_helpers.extract_stack`).
    source_traceback: Option<Py<PyAny>>,
    /// Only for `call_soon_threadsafe`'s handles: see [`Gate`].
    gate: Option<Arc<Gate>>,
}

/// A handle's callback, arguments and context, cloned out of its parts to be called.
type Callable = (Py<PyAny>, Py<PyTuple>, Py<PyAny>);

impl Parts {
    /// What to call, unless the handle was cancelled (or emptied for reuse).
    #[inline]
    fn callable(&self, py: Python<'_>) -> Option<Callable> {
        match (&self.func, &self.args, &self.context) {
            (Some(f), Some(a), Some(c)) => Some((f.clone_ref(py), a.clone_ref(py), c.clone_ref(py))),
            _ => None,
        }
    }

    pub(crate) fn new(
        func: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        source_traceback: Option<Py<PyAny>>,
    ) -> Self {
        Self { func: Some(func), args: Some(args), context: Some(context), source_traceback, gate: None }
    }

    /// The parts of a handle that another thread may cancel while the loop runs it.
    pub(crate) fn thread_safe(self) -> Self {
        Self { gate: Some(Arc::new(Gate::default())), ..self }
    }
}

/// What makes a `call_soon_threadsafe` handle safe to cancel from another thread, as asyncio's
/// `_ThreadSafeHandle` (3.14) is: running the callback, `cancel()` and `cancelled()` each hold
/// the gate, so a thread that cancels while the callback runs waits until it has finished (and
/// then knows it ran), and a handle cancelled before the loop takes the gate does not run. The
/// gate is reentrant: the callback may cancel its own handle. Whoever waits for it waits with the
/// GIL released, so the thread holding it can always go on.
#[derive(Default)]
pub(crate) struct Gate {
    /// The holding thread and how many times it entered.
    holder: Mutex<Option<(ThreadId, u32)>>,
    free: Condvar,
}

impl Gate {
    fn enter(&self, py: Python<'_>) -> GateHeld<'_> {
        let me = std::thread::current().id();
        {
            let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *holder {
                Some((id, depth)) if *id == me => *depth += 1,
                Some(_) => {
                    drop(holder);
                    py.detach(|| {
                        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
                        while holder.is_some() {
                            holder = self.free.wait(holder).unwrap_or_else(|e| e.into_inner());
                        }
                        *holder = Some((me, 1));
                    });
                }
                None => *holder = Some((me, 1)),
            }
        }
        GateHeld(self)
    }
}

/// The gate, held until dropped.
struct GateHeld<'a>(&'a Gate);

impl Drop for GateHeld<'_> {
    fn drop(&mut self) {
        let mut holder = self.0.holder.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, depth)) = &mut *holder {
            *depth -= 1;
            if *depth == 0 {
                *holder = None;
                self.0.free.notify_one();
            }
        }
    }
}

#[pyclass(module = "ferroloop._ferroloop", subclass, frozen, weakref)]
pub struct Handle {
    /// Counts the object in leak-check builds (`live`).
    _live: crate::live::Token,
    /// Callback, arguments, context and creation traceback.
    parts: GilCell<Parts>,
    /// Set by `cancel()`; cleared only when the loop reuses the handle.
    cancelled: AtomicBool,
}

impl Handle {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            _live: crate::live::Token::new(crate::live::Kind::Handle),
            parts: GilCell::new(parts),
            cancelled: AtomicBool::new(false),
        }
    }

    /// Fills a handle emptied by [`take_for_reuse`], as [`Handle::new`] would have made it.
    pub(crate) fn refill(&self, py: Python<'_>, parts: Parts) {
        let mut mine = self.parts.borrow_mut(py);
        debug_assert!(mine.func.is_none() && mine.args.is_none() && mine.context.is_none());
        *mine = parts;
        self.cancelled.store(false, Relaxed);
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Relaxed)
    }

    /// Marks the handle cancelled; returns the callback and arguments for the caller to drop
    /// outside any borrow (dropping them may run Python code), or `None` if already cancelled.
    fn cancel_inner(&self, py: Python<'_>) -> Option<Parts> {
        if self.cancelled.swap(true, Relaxed) {
            return None;
        }
        let mut parts = self.parts.borrow_mut(py);
        Some(Parts { func: parts.func.take(), args: parts.args.take(), ..Parts::default() })
    }

    /// Runs the callback in the handle's context. An error is the callback's exception, for the
    /// loop to report or propagate.
    #[inline]
    pub(crate) fn run(&self, py: Python<'_>) -> PyResult<()> {
        let call = {
            let parts = self.parts.borrow(py);
            match &parts.gate {
                None => parts.callable(py),
                Some(gate) => {
                    let gate = Arc::clone(gate);
                    drop(parts);
                    return self.run_gated(py, &gate);
                }
            }
        };
        call.map_or(Ok(()), |call| Self::call(py, call))
    }

    /// [`Handle::run`] for a thread-safe handle: holding its gate, and only if not cancelled
    /// by the time the gate is taken.
    #[cold]
    fn run_gated(&self, py: Python<'_>, gate: &Gate) -> PyResult<()> {
        let _held = gate.enter(py);
        let call = self.parts.borrow(py).callable(py);
        call.map_or(Ok(()), |call| Self::call(py, call))
    }

    /// Calls `callback(*args)` in `context` (taken out of the parts first: no borrow is held while
    /// Python code runs).
    #[inline]
    fn call(py: Python<'_>, (func, args, ctx): Callable) -> PyResult<()> {
        // SAFETY: a type check of a live object.
        if unsafe { ffi::PyContext_CheckExact(ctx.as_ptr()) } == 0 {
            return call_in_foreign_context(ctx.bind(py), func.bind(py), args.bind(py));
        }
        run_in_context(py, &ctx, || func.bind(py).call1(args.bind(py)).map(drop))
    }

    pub(crate) fn callback_parts(&self, py: Python<'_>) -> (Option<Py<PyAny>>, Option<Py<PyTuple>>) {
        let parts = self.parts.borrow(py);
        (parts.func.as_ref().map(|f| f.clone_ref(py)), parts.args.as_ref().map(|a| a.clone_ref(py)))
    }

    pub(crate) fn source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.parts.borrow(py).source_traceback.as_ref().map(|t| t.clone_ref(py))
    }

    fn gate(&self, py: Python<'_>) -> Option<Arc<Gate>> {
        self.parts.borrow(py).gate.clone()
    }

    fn context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.parts.borrow(py).context.as_ref().map(|c| c.clone_ref(py))
    }
}

#[pymethods]
impl Handle {
    pub(crate) fn cancel(&self, py: Python<'_>) {
        match self.gate(py) {
            None => drop(self.cancel_inner(py)),
            Some(gate) => {
                let _held = gate.enter(py);
                drop(self.cancel_inner(py));
            }
        }
    }

    fn cancelled(&self, py: Python<'_>) -> bool {
        match self.gate(py) {
            None => self.is_cancelled(),
            Some(gate) => {
                let _held = gate.enter(py);
                self.is_cancelled()
            }
        }
    }

    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context(py)
    }

    /// Runs the callback now, reporting its exception like the loop would not: raises it.
    fn _run(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.callback_parts(py).0
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.callback_parts(py).1
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback(py)
    }

    /// `asyncio.Handle`, so that `isinstance(handle, asyncio.Handle)` holds as the docs promise
    /// (`isinstance` consults `__class__` when the type itself is not a subclass).
    #[getter(__class__)]
    fn class_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        if self.parts.borrow(py).gate.is_some() {
            return compat::thread_safe_handle_type(py).cloned();
        }
        pyrefs::asyncio_handle_type(py).cloned()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        pyrefs::format_fn(slf.py(), "handle_repr")?.call1((slf,))?.extract()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse_contents(&visit)
    }
}

impl Handle {
    fn traverse_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(parts) = self.parts.try_borrow() {
            visit.call(&parts.func)?;
            visit.call(&parts.args)?;
            visit.call(&parts.context)?;
            visit.call(&parts.source_traceback)?;
        }
        Ok(())
    }
}

#[pyclass(module = "ferroloop._ferroloop", extends = Handle, frozen)]
pub struct TimerHandle {
    /// The deadline on the loop's clock.
    when: f64,
    /// The deadline as `call_at` was given it, when that was an `int` (or `bool`), which
    /// `when()` returns as asyncio does; `None` for a float. (Exact ints only: they hold no
    /// references, so the handle's traversal need not visit it.)
    when_int: Option<Py<PyAny>>,
    /// True while the handle is in the loop's timer heap.
    scheduled: AtomicBool,
    /// The loop's count of cancelled timers still in its heap.
    loop_cancelled: Arc<AtomicUsize>,
}

impl TimerHandle {
    pub(crate) fn new(when: f64, when_int: Option<Py<PyAny>>, loop_cancelled: Arc<AtomicUsize>) -> Self {
        Self { when, when_int, scheduled: AtomicBool::new(true), loop_cancelled }
    }

    /// The deadline, as asyncio's `when()` gives it.
    fn when_object(&self, py: Python<'_>) -> Py<PyAny> {
        match &self.when_int {
            Some(w) => w.clone_ref(py),
            None => pyo3::types::PyFloat::new(py, self.when).into_any().unbind(),
        }
    }

    /// The loop took the handle out of its heap.
    pub(crate) fn unschedule(&self) {
        self.scheduled.store(false, Relaxed);
    }
}

#[pymethods]
impl TimerHandle {
    fn when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_object(py)
    }

    fn cancel(slf: &Bound<'_, Self>) {
        let released = slf.as_super().get().cancel_inner(slf.py());
        let this = slf.get();
        if released.is_some() && this.scheduled.load(Relaxed) {
            this.loop_cancelled.fetch_add(1, Relaxed);
        }
        drop(released);
    }

    /// `asyncio.TimerHandle` (see `Handle.__class__`).
    #[getter(__class__)]
    fn class_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        pyrefs::asyncio_timer_handle_type(py).cloned()
    }

    #[getter]
    fn _when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_object(py)
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Relaxed)
    }
}

/// Takes a handle off the cycle collector's lists (see the module documentation).
#[inline]
pub(crate) fn untrack<T>(handle: &Py<T>) {
    // SAFETY: the handle is a live GC-enabled object (every pyclass with `__traverse__` is);
    // untracking is idempotent and we are attached (the caller holds a `Py` it just made).
    unsafe { ffi::PyObject_GC_UnTrack(handle.as_ptr().cast()) }
}

/// Puts a handle back under the cycle collector, if it is not.
#[inline]
pub(crate) fn track<T>(handle: &Py<T>) {
    let ptr = handle.as_ptr();
    // SAFETY: `ptr` is a live GC-enabled object; tracking twice is a fatal error, hence the check.
    unsafe {
        if ffi::PyObject_GC_IsTracked(ptr) == 0 {
            ffi::PyObject_GC_Track(ptr.cast());
        }
    }
}

/// The loop's traversal of a handle in its queues: an untracked handle's contents, as if they
/// were the loop's own references, or else the handle itself.
pub(crate) fn traverse_queued(handle: &Py<Handle>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    // SAFETY: asking whether a live object is tracked has no side effect.
    if unsafe { ffi::PyObject_GC_IsTracked(handle.as_ptr()) } != 0 {
        return visit.call(handle);
    }
    handle.get().traverse_contents(visit)
}

/// A timer seen as the handle it extends.
pub(crate) fn timer_as_handle(timer: &Py<TimerHandle>) -> &Py<Handle> {
    // SAFETY: `Py<T>` is a transparent pointer to a Python object whatever `T` is, and a
    // `TimerHandle` object is a `Handle` object (its pyclass base), so the cast is a upcast.
    unsafe { &*std::ptr::from_ref(timer).cast::<Py<Handle>>() }
}

/// Tracks a handle the loop is about to let go of if somebody else still holds it.
#[inline]
pub(crate) fn track_if_shared<T>(handle: &Py<T>) {
    // SAFETY: reading the reference count of a live object we hold a reference to.
    if unsafe { ffi::Py_REFCNT(handle.as_ptr()) } > 1 {
        track(handle);
    }
}

/// The loop lets go of a handle: if somebody else still holds it, the collector must see it.
#[inline]
pub(crate) fn release<T>(handle: Py<T>) {
    track_if_shared(&handle);
    drop(handle);
}

/// Empties a plain `Handle` the loop is done with so that the loop can fill it again for the
/// next `call_soon`, if nobody else can see it: nothing else holds it, no weak reference to it
/// exists, and it is untracked (a queued handle; see the module documentation). Returns what it
/// held, for the caller to drop once no borrow is held (dropping a callback or a context may run
/// Python code); `None` leaves the handle as it was.
pub(crate) fn take_for_reuse(py: Python<'_>, handle: &Py<Handle>) -> Option<Parts> {
    let ptr = handle.as_ptr();
    // SAFETY: `ptr` is a live object we hold a reference to; reading its type, reference count,
    // tracking state and weak-reference list head has no side effect. A type's
    // `tp_weaklistoffset`, when positive, is the offset of that list head in its instances.
    let reusable = unsafe {
        let tp = ffi::Py_TYPE(ptr);
        std::ptr::eq(tp, Handle::type_object_raw(py))
            && ffi::Py_REFCNT(ptr) == 1
            && ffi::PyObject_GC_IsTracked(ptr) == 0
            && (*tp).tp_weaklistoffset > 0
            && (*ptr.cast::<u8>().offset((*tp).tp_weaklistoffset).cast::<*mut ffi::PyObject>()).is_null()
    };
    if !reusable {
        return None;
    }
    let mut parts = handle.get().parts.borrow_mut(py);
    Some(std::mem::take(&mut *parts))
}

/// `context.run(callback, *args)` for a `context=` that is not a `contextvars.Context`, as
/// asyncio's `Handle._run` calls it (an object without `run` fails with `AttributeError`).
#[cold]
fn call_in_foreign_context(
    context: &Bound<'_, PyAny>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    let mut all = vec![func.clone()];
    all.extend(args.iter());
    context.call_method1(pyo3::intern!(context.py(), "run"), PyTuple::new(context.py(), all)?)?;
    Ok(())
}

/// Runs `f` with `ctx` (a `contextvars.Context`) entered, as `ctx.run(f)` would.
#[inline]
pub(crate) fn run_in_context<R>(py: Python<'_>, ctx: &Py<PyAny>, f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    // SAFETY: `ctx` is a live `contextvars.Context` (handles check what they are given; the
    // loop's own come from `copy_current_context`) and we are attached to the interpreter. (A
    // non-context is refused with `TypeError`, not entered.)
    if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: same context, entered just above on this thread.
    if unsafe { ffi::PyContext_Exit(ctx.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// A copy of the calling thread's current context (`contextvars.copy_context()`).
pub(crate) fn copy_current_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: attached to the interpreter; returns a new reference or NULL with an exception set.
    let ptr = unsafe { ffi::PyContext_CopyCurrent() };
    if ptr.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `ptr` is a new, non-null reference that we now own.
    Ok(unsafe { Bound::from_owned_ptr(py, ptr) }.unbind())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Handle>()?;
    m.add_class::<TimerHandle>()
}
