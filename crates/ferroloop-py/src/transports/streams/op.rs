//! The awaitables of ferroloop's `read(n)`, `readexactly(n)`, `readuntil(separator)`,
//! `readline()` and `drain()`, and a writer's `write(data)`: no Python frame per call.
//!
//! Before, ferroloop's reader ran its reads as `async def` methods calling Rust; the coroutine
//! alone (its creation, its frame, one more level of `send` on every resumption) cost about
//! 2,000 instructions per read, and asyncio's `drain` (two coroutines, `exception()`,
//! `is_closing()`, `_drain_helper`'s checks) 3,650 per request of `bench/cost.py`'s streams
//! server (callgrind, Python 3.11): a third of what the streams classes add over a coroutine
//! woken through a `Future` (issue 19's floor).
//!
//! Here the four reads (on ferroloop's reader) and `drain` (on ferroloop's writer) are method
//! descriptors that return a [`StreamOperation`]: a small awaitable, registered as a
//! `collections.abc.Coroutine` (so `asyncio.iscoroutine`, `create_task`, `ensure_future`,
//! `wait_for` and `gather` take it), which does the operation when first resumed, as a
//! coroutine's body runs when first resumed, not when called:
//!
//! - its step ([`super::reader`]'s for reads, [`drain_ready`] for `drain`) answers at once in
//!   the common case (bytes in the buffer; nothing to wait for): the `await` completes without
//!   a frame (on 3.11 through the type's `am_send`, with no `StopIteration`);
//! - a read that must wait awaits the reader's `_waiter` through the future's own `__await__`
//!   iterator, to which it hands every `send`, `throw` and `close` (what a coroutine suspended
//!   in `await self._waiter` does), then clears `_waiter` as `_wait_for_data`'s `finally` does,
//!   and takes its step again (`readuntil`'s search going on where it stopped);
//! - wherever asyncio's own code must run (a patched class, a replaced buffer, `read(-1)`, a
//!   tuple of separators, an exception set on the reader, a paused or closing writer, ...), it
//!   makes asyncio's own coroutine for the call (`asyncio.StreamReader.read(reader, n)`,
//!   `asyncio.StreamWriter.drain(writer)`) and hands it everything from then on.
//!
//! The writer's `write` is a method descriptor too ([`write_entry`]), calling the transport's
//! `write` directly.
//!
//! What a program can tell: `inspect.iscoroutine()` is false for the awaitable (it is not a
//! Python coroutine, as Cython's are not); it has no frame (`cr_frame`), so a traceback through
//! it lacks asyncio's `streams.py` lines; its `repr` names the operation. Dropped before it was
//! ever resumed, it warns as a never-awaited coroutine does (`RuntimeWarning: coroutine
//! 'StreamReader.read' was never awaited`); abandoned while it waits, in a cycle with its task,
//! the garbage collector frees it. In debug mode (the loop's), where asyncio tracks each
//! coroutine's origin, the methods return asyncio's coroutines instead.

use std::ffi::CStr;

use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning, PyStopIteration, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString, PyTuple};
use pyo3::{intern, Borrowed};
use pyo3::{PyTraverseError, PyVisit};

use super::{reader, Stock};
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;
use crate::transports::stream::StreamTransport;

/// Which operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    ReadExactly,
    ReadUntil,
    ReadLine,
    Drain,
}

impl Kind {
    /// asyncio's name for it (a coroutine's `__qualname__`).
    fn qualname(self) -> &'static str {
        match self {
            Self::Read => "StreamReader.read",
            Self::ReadExactly => "StreamReader.readexactly",
            Self::ReadUntil => "StreamReader.readuntil",
            Self::ReadLine => "StreamReader.readline",
            Self::Drain => "StreamWriter.drain",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::ReadExactly => "readexactly",
            Self::ReadUntil => "readuntil",
            Self::ReadLine => "readline",
            Self::Drain => "drain",
        }
    }
}

/// Where an operation is.
#[derive(Default)]
enum State {
    /// Not resumed yet: the first `send(None)` runs it.
    #[default]
    Start,
    /// Awaiting the reader's waiter: its `__await__()` iterator, and where `readuntil`'s
    /// search resumes after it (0 for the other reads).
    Waiting(Py<PyAny>, isize),
    /// asyncio's own coroutine for the call, which gets every resumption.
    Stock(Py<PyAny>),
    /// Being resumed (a nested resumption raises, as a running coroutine's does).
    Running,
    /// Finished (returned, raised or closed).
    Done,
}

/// The awaitable `read(n)`, `readexactly(n)` and `drain()` return (see the module doc).
#[pyclass(module = "ferroloop._ferroloop", name = "StreamOperation", frozen)]
pub(crate) struct StreamOperation {
    kind: Kind,
    /// The reader or the writer.
    target: Py<PyAny>,
    /// The argument: the size asked for (`read`, `readexactly`), the separator (`readuntil`), or
    /// None.
    n: Py<PyAny>,
    state: GilCell<State>,
}

/// What a resumption is given.
enum Input<'py> {
    Send(Bound<'py, PyAny>),
    /// `throw(*args)`.
    Throw(Bound<'py, PyTuple>),
    Close,
}

/// What a resumption ends with.
enum Next<'py> {
    /// A value yielded to whoever drives the await (the waiter future, for a Task), and the state
    /// to resume in.
    Yield(Bound<'py, PyAny>, State),
    Return(Bound<'py, PyAny>),
}

/// What an iterator given a resumption answered.
enum Sent<'py> {
    Yield(Bound<'py, PyAny>),
    Return(Bound<'py, PyAny>),
}

/// Hands `input` to the iterator `iter`, as `await` (a suspended coroutine) does: `send` through
/// `PyIter_Send`; `throw(*args)` and `close()` by their methods (`close` on an iterator without
/// one does nothing).
fn forward<'py>(iter: &Bound<'py, PyAny>, input: &Input<'py>) -> PyResult<Sent<'py>> {
    let py = iter.py();
    let answer = match input {
        Input::Send(value) => {
            let mut out: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: attached; `iter` and `value` are live; `out` receives a new reference
            // unless an error is returned.
            let status = unsafe { ffi::PyIter_Send(iter.as_ptr(), value.as_ptr(), &raw mut out) };
            if matches!(status, ffi::PySendResult::PYGEN_ERROR) {
                return Err(PyErr::fetch(py));
            }
            // SAFETY: yielded or returned, `out` is a new reference.
            let out = unsafe { Bound::from_owned_ptr(py, out) };
            return Ok(match status {
                ffi::PySendResult::PYGEN_NEXT => Sent::Yield(out),
                _ => Sent::Return(out),
            });
        }
        Input::Throw(args) => iter.call_method1(intern!(py, "throw"), args.clone()),
        Input::Close => {
            if let Some(close) = iter.getattr_opt(intern!(py, "close"))? {
                close.call0()?;
            }
            return Ok(Sent::Return(py.None().into_bound(py)));
        }
    };
    match answer {
        Ok(value) => Ok(Sent::Yield(value)),
        Err(err) if err.is_instance_of::<PyStopIteration>(py) => {
            Ok(Sent::Return(err.value(py).getattr(intern!(py, "value"))?))
        }
        Err(err) => Err(err),
    }
}

impl StreamOperation {
    /// The stock class's method for this operation, as the class has it now (a patch included).
    fn stock_coroutine<'py>(&self, py: Python<'py>, stock: &Stock) -> PyResult<Bound<'py, PyAny>> {
        let target = self.target.bind(py);
        let name = PyString::intern(py, self.kind.name());
        match self.kind {
            Kind::Drain => stock.writer.bind(py).getattr(name)?.call1((target,)),
            Kind::ReadLine => stock.reader.bind(py).getattr(name)?.call1((target,)),
            _ => stock.reader.bind(py).getattr(name)?.call1((target, self.n.bind(py))),
        }
    }

    /// From here on asyncio's own coroutine does the work, starting with `input`.
    fn to_stock<'py>(&self, py: Python<'py>, input: &Input<'py>) -> PyResult<Next<'py>> {
        let stock = Stock::get(py).ok_or_else(|| PyRuntimeError::new_err("asyncio.streams is not as expected"))?;
        // Made while the operation is resumed (its class was patched since the call, or a step
        // answered that asyncio's code must run): awaited as `await` takes it.
        let made = self.stock_coroutine(py, stock)?;
        // SAFETY: reads the type of a live object.
        let coroutine =
            if unsafe { ffi::PyCoro_CheckExact(made.as_ptr()) } != 0 { made } else { awaitable_iter(&made)? };
        if matches!(input, Input::Close) {
            coroutine.call_method0(intern!(py, "close"))?;
            return Ok(Next::Return(py.None().into_bound(py)));
        }
        Ok(match forward(&coroutine, input)? {
            Sent::Yield(value) => Next::Yield(value, State::Stock(coroutine.unbind())),
            Sent::Return(value) => Next::Return(value),
        })
    }

    /// The operation's step (`after`: after a wait, with where `readuntil`'s search resumes),
    /// and what follows from its answer.
    fn advance<'py>(&self, py: Python<'py>, after: Option<isize>) -> PyResult<Next<'py>> {
        let target = self.target.bind(py);
        let (waited, offset) = (after.is_some(), after.unwrap_or(-1));
        let answer = match self.kind {
            Kind::Read => reader::read_step(target, self.n.bind(py), waited)?,
            Kind::ReadExactly => reader::readexactly_step(target, self.n.bind(py), waited)?,
            Kind::ReadUntil => reader::readuntil_step_of(target, self.n.bind(py), offset)?,
            Kind::ReadLine => reader::readline_step(target, offset)?,
            Kind::Drain => {
                return match drain_ready(target)? {
                    true => Ok(Next::Return(py.None().into_bound(py))),
                    false => self.to_stock(py, &Input::Send(py.None().into_bound(py))),
                };
            }
        };
        if answer.is_exact_instance_of::<PyBytes>() {
            return Ok(Next::Return(answer));
        }
        if answer.is(py.NotImplemented().bind(py)) {
            return self.to_stock(py, &Input::Send(py.None().into_bound(py)));
        }
        // `readuntil`'s and `readline`'s step answers where the search resumes, and the wait
        // is made here; `read`'s and `readexactly`'s made it (the reader's new `_waiter`).
        let (waiter, offset) = match answer.cast_exact::<PyInt>() {
            Ok(offset) => (reader::stream_wait(target, "readuntil")?, offset.extract::<isize>()?),
            Err(_) => (answer, 0),
        };
        // `await self._waiter`.
        let iter = awaitable_iter(&waiter)?;
        self.wait_on(py, iter, offset, &Input::Send(py.None().into_bound(py)))
    }

    /// Hands `input` to the waiter's iterator; once the wait is over (or failed), `_waiter` is
    /// cleared, as `_wait_for_data`'s `finally` does, and the step runs again (or the error
    /// goes on).
    fn wait_on<'py>(
        &self,
        py: Python<'py>,
        iter: Bound<'py, PyAny>,
        offset: isize,
        input: &Input<'py>,
    ) -> PyResult<Next<'py>> {
        let sent = forward(&iter, input);
        if let Ok(Sent::Yield(value)) = sent {
            return Ok(Next::Yield(value, State::Waiting(iter.unbind(), offset)));
        }
        let cleared = self.target.bind(py).setattr(intern!(py, "_waiter"), py.None());
        match (sent, cleared) {
            (Err(err), _) | (Ok(_), Err(err)) => Err(err),
            (Ok(_), Ok(())) if matches!(input, Input::Close) => Ok(Next::Return(py.None().into_bound(py))),
            (Ok(_), Ok(())) => self.advance(py, Some(offset)),
        }
    }

    /// One resumption: runs the state machine (see the module doc).
    fn resume<'py>(slf: &Bound<'py, Self>, input: Input<'py>) -> PyResult<Next<'py>> {
        let py = slf.py();
        let this = slf.get();
        let state = std::mem::replace(&mut *this.state.borrow_mut(py), State::Running);
        let outcome = match state {
            State::Running => {
                *this.state.borrow_mut(py) = State::Running;
                return Err(PyValueError::new_err("coroutine already executing"));
            }
            State::Done => match input {
                Input::Close => Ok(Next::Return(py.None().into_bound(py))),
                _ => Err(PyRuntimeError::new_err("cannot reuse already awaited coroutine")),
            },
            State::Start => match input {
                Input::Send(value) if !value.is_none() => {
                    // Refused, it is still not started (and warns if never awaited).
                    *this.state.borrow_mut(py) = State::Start;
                    return Err(PyTypeError::new_err("can't send non-None value to a just-started coroutine"));
                }
                Input::Send(_) => this.advance(py, None),
                Input::Close => Ok(Next::Return(py.None().into_bound(py))),
                // Thrown into before it ran: asyncio's coroutine, unstarted, says what that does.
                Input::Throw(_) => this.to_stock(py, &input),
            },
            State::Waiting(iter, offset) => this.wait_on(py, iter.into_bound(py), offset, &input),
            State::Stock(coroutine) => {
                let coroutine = coroutine.into_bound(py);
                match forward(&coroutine, &input) {
                    Ok(Sent::Yield(value)) => Ok(Next::Yield(value, State::Stock(coroutine.unbind()))),
                    Ok(Sent::Return(value)) => Ok(Next::Return(value)),
                    Err(err) => Err(err),
                }
            }
        };
        let mut state = this.state.borrow_mut(py);
        match outcome {
            Ok(Next::Yield(value, next)) => {
                *state = next;
                Ok(Next::Yield(value, State::Running))
            }
            other => {
                *state = State::Done;
                other
            }
        }
    }

    /// A resumption's answer as `send`/`__next__` give it: the yielded value, or
    /// `StopIteration(value)`.
    fn yielded<'py>(slf: &Bound<'py, Self>, input: Input<'py>) -> PyResult<Bound<'py, PyAny>> {
        match Self::resume(slf, input)? {
            Next::Yield(value, _) => Ok(value),
            Next::Return(value) => Err(stop_iteration(value)),
        }
    }
}

/// `StopIteration(value)` (the value kept whole, a tuple too).
fn stop_iteration(value: Bound<'_, PyAny>) -> PyErr {
    PyStopIteration::new_err((value.unbind(),))
}

/// The type's `am_send` slot: a resumption without an exception for its end (what `await` on
/// 3.11 and `PyIter_Send` use), where `send` and `__next__` must raise `StopIteration`.
///
/// # Safety
/// Called by the interpreter with a live `StreamOperation`, a live `value`, and a place for
/// the result.
unsafe extern "C" fn am_send(
    slf: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: the interpreter calls this attached.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `slf` is an instance of the type whose slot this is; `value` a live reference.
    let (slf, value) = unsafe {
        (Borrowed::from_ptr(py, slf).cast_unchecked::<StreamOperation>(), Borrowed::from_ptr(py, value).to_owned())
    };
    let (status, out) = match StreamOperation::resume(&slf, Input::Send(value)) {
        Ok(Next::Yield(v, _)) => (ffi::PySendResult::PYGEN_NEXT, v.into_ptr()),
        Ok(Next::Return(v)) => (ffi::PySendResult::PYGEN_RETURN, v.into_ptr()),
        Err(err) => {
            err.restore(py);
            (ffi::PySendResult::PYGEN_ERROR, std::ptr::null_mut())
        }
    };
    // SAFETY: the interpreter's place for the result.
    unsafe { *result = out };
    status
}

/// The type's `tp_iternext` slot (`await` on 3.12+ resumes through it): the end is NULL with no
/// exception for a None result, and a `StopIteration` made directly for any other.
///
/// # Safety
/// Called by the interpreter with a live `StreamOperation`.
unsafe extern "C" fn iternext(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: the interpreter calls this attached.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `slf` is an instance of the type whose slot this is.
    let slf = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<StreamOperation>() };
    match StreamOperation::resume(&slf, Input::Send(py.None().into_bound(py))) {
        Ok(Next::Yield(v, _)) => v.into_ptr(),
        Ok(Next::Return(v)) if v.is_none() => std::ptr::null_mut(),
        Ok(Next::Return(v)) => {
            // SAFETY: attached; `StopIteration(v)` made by calling the class with the one value
            // (so a tuple stays whole), then raised as that instance.
            unsafe {
                let exc = ffi::PyObject_CallOneArg(ffi::PyExc_StopIteration, v.as_ptr());
                if !exc.is_null() {
                    ffi::PyErr_SetObject(ffi::PyExc_StopIteration, exc);
                    ffi::Py_DECREF(exc);
                }
            }
            std::ptr::null_mut()
        }
        Err(err) => {
            err.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// Gives the class its `am_send` and `tp_iternext` (PyO3 makes neither as these need).
fn install_slots(py: Python<'_>) {
    let tp = <StreamOperation as pyo3::PyTypeInfo>::type_object_raw(py);
    // SAFETY: the class is a heap type PyO3 made with `__await__`, so `tp_as_async` points at
    // its own (writable) async slots; no instance exists yet, and the type's caches are told.
    unsafe {
        if let Some(slots) = (*tp).tp_as_async.as_mut() {
            slots.am_send = Some(am_send);
        }
        (*tp).tp_iternext = Some(iternext);
        ffi::PyType_Modified(tp);
    }
}

/// `obj.__await__()` through the type's slot, as `await` gets it.
fn awaitable_iter<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    // SAFETY: reads the slots of a live object's type; `am_await` returns a new reference or
    // NULL with an exception set.
    unsafe {
        let slots = (*ffi::Py_TYPE(obj.as_ptr())).tp_as_async;
        if let Some(am_await) = slots.as_ref().and_then(|s| s.am_await) {
            let iter = am_await(obj.as_ptr());
            if iter.is_null() {
                return Err(PyErr::fetch(py));
            }
            return Ok(Bound::from_owned_ptr(py, iter));
        }
    }
    Err(PyTypeError::new_err(format!("object {} can't be used in 'await' expression", obj.get_type().name()?)))
}

#[pymethods]
impl StreamOperation {
    /// What it holds, for the garbage collector: a task abandoned while it waits makes a cycle
    /// through the waiter's iterator (the future's callbacks hold the task).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.target)?;
        visit.call(&self.n)?;
        if let Some(state) = self.state.try_borrow() {
            if let State::Waiting(held, _) | State::Stock(held) = &*state {
                visit.call(held)?;
            }
        }
        Ok(())
    }

    /// Breaks such a cycle: what it awaits is let go.
    fn __clear__(&self) {
        if let Some(mut state) = self.state.try_borrow_mut() {
            if matches!(*state, State::Waiting(..) | State::Stock(_)) {
                *state = State::Done;
            }
        }
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::yielded(slf, Input::Send(slf.py().None().into_bound(slf.py())))
    }

    /// Resumes the operation with `value`: what it yields next, or `StopIteration` with its result.
    fn send<'py>(slf: &Bound<'py, Self>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        Self::yielded(slf, Input::Send(value))
    }

    /// Raises an exception where the operation waits, as a coroutine's `throw` does.
    #[pyo3(signature = (*args))]
    fn throw<'py>(slf: &Bound<'py, Self>, args: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        if args.is_empty() || args.len() > 3 {
            return Err(PyTypeError::new_err(format!("throw expected at least 1 argument, got {}", args.len())));
        }
        Self::yielded(slf, Input::Throw(args))
    }

    /// Ends the operation where it waits (its wait closed, `_waiter` cleared).
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::resume(slf, Input::Close).map(drop)
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        self.kind.name()
    }

    #[getter]
    fn __qualname__(&self) -> &'static str {
        self.kind.qualname()
    }

    /// Being resumed now (what asyncio's coroutine formatting asks). There is no `cr_await` or
    /// `cr_frame`: 3.14's `asyncio.capture_call_graph` follows `cr_await` and takes each
    /// object's `cr_frame`, so a call graph ends at the coroutine awaiting this.
    #[getter]
    fn cr_running(&self) -> bool {
        self.state.try_borrow().is_none_or(|s| matches!(*s, State::Running))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let state = match self.state.try_borrow().as_deref() {
            Some(State::Start) => "not started",
            Some(State::Waiting(..)) => "waiting for data",
            Some(State::Stock(_)) => "running asyncio's coroutine",
            Some(State::Done) => "done",
            Some(State::Running) | None => "running",
        };
        Ok(format!("<{}() {state} on {}>", self.kind.qualname(), self.target.bind(py).repr()?))
    }
}

impl Drop for StreamOperation {
    /// Never resumed: the warning a coroutine never awaited gives.
    fn drop(&mut self) {
        if !matches!(self.state.get_mut(), State::Start) {
            return;
        }
        let message = format!("coroutine '{}' was never awaited", self.kind.qualname());
        Python::attach(|py| {
            let Ok(message) = std::ffi::CString::new(message) else { return };
            let category = py.get_type::<PyRuntimeWarning>();
            if let Err(err) = PyErr::warn(py, &category, &message, 1) {
                err.write_unraisable(py, None);
            }
        });
    }
}

/// `drain()` would return at once, with nothing to raise and nothing to wait for: the writer
/// is ferroloop's (its class not patched), its reader ferroloop's without an exception (or
/// none), its transport ferroloop's and not closing, its protocol exactly asyncio's
/// `StreamReaderProtocol` with asyncio's `_drain_helper`, neither lost nor paused. Anything
/// else: `false`, and asyncio's `drain` runs.
fn drain_ready<'py>(writer: &Bound<'py, PyAny>) -> PyResult<bool> {
    let py = writer.py();
    let Some(stock) = Stock::get(py) else { return Ok(false) };
    let writer_class = stock.writer.bind(py);
    if !writer.get_type().is(stock.fast_writer.bind(py)) || !stock.intact(writer_class, super::Class::Writer) {
        return Ok(false);
    }
    let Some(dict) = super::instance_dict(writer) else { return Ok(false) };
    let field = |name: &Bound<'py, PyString>| -> PyResult<Option<Bound<'py, PyAny>>> { dict.get_item(name) };
    // if self._reader is not None: exc = self._reader.exception() ...
    match field(intern!(py, "_reader"))? {
        Some(r) if r.is_none() => {}
        Some(r) => match reader::Fields::of(stock, &r)? {
            Some(fields) if fields.exception_is_none()? => {}
            _ => return Ok(false),
        },
        None => return Ok(false),
    }
    // if self._transport.is_closing(): await sleep(0)
    match field(intern!(py, "_transport"))? {
        Some(t) => match t.cast_exact::<StreamTransport>() {
            Ok(t) if !crate::transports::base::Core::closing(t.get(), py) => {}
            _ => return Ok(false),
        },
        None => return Ok(false),
    }
    // await self._protocol._drain_helper()
    let Some(protocol) = field(intern!(py, "_protocol"))? else { return Ok(false) };
    if !protocol.get_type().is(stock.protocol.bind(py)) {
        return Ok(false);
    }
    // Read from its dictionary (made here once: no Python code of the protocol's runs per
    // request on this path, so nothing pays for it, and a lookup costs a fifth of `getattr`).
    let Some(attrs) = super::instance_dict(&protocol) else { return Ok(false) };
    let Some((_, (helper_name, _))) = &stock.writer_parts else { return Ok(false) };
    if !stock.drain_helper_intact(&protocol.get_type()) || attrs.contains(helper_name.bind(py))? {
        return Ok(false);
    }
    let falsy = |name: &Bound<'py, PyString>| -> PyResult<bool> {
        Ok(match attrs.get_item(name)? {
            Some(value) => !value.is_truthy()?,
            None => false,
        })
    };
    Ok(falsy(intern!(py, "_connection_lost"))? && falsy(intern!(py, "_paused"))?)
}

/// The loop of a reader or writer (its `_loop`) is not in debug mode: no loop of the process
/// ever was, or it is ferroloop's and is not now.
fn quiet_loop(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if !crate::event_loop::DEBUG_EVER.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(true);
    }
    let py = obj.py();
    let Some(dict) = super::instance_dict(obj) else { return Ok(false) };
    Ok(match dict.get_item(intern!(py, "_loop"))? {
        Some(event_loop) => event_loop.cast::<EventLoop>().is_ok_and(|l| !l.get().debug()),
        None => false,
    })
}

/// Parses `(param)` or `(param=...)`, or nothing when `default` is given, from a vectorcall,
/// with the errors a Python method `qualname(self, param)` gives.
///
/// # Safety
/// A valid vectorcall: `args` holds `nargs` positional arguments, then one value per name in
/// `kwnames` (NULL when there are none).
unsafe fn one_arg<'py>(
    py: Python<'py>,
    qualname: &str,
    param: &str,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    default: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let names = if kwnames.is_null() {
        None
    } else {
        // SAFETY: `kwnames` is a tuple of strings (vectorcall protocol).
        Some(unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() })
    };
    let nkw = names.map_or(0, |n| n.len());
    let total = usize::try_from(nargs).unwrap_or(0) + nkw;
    if let Some(names) = names {
        for name in names.iter() {
            let known = name.cast::<PyString>().is_ok_and(|s| s.to_cow().is_ok_and(|s| s == param));
            if !known {
                return Err(PyTypeError::new_err(format!("{qualname}() got an unexpected keyword argument '{name}'")));
            }
        }
    }
    match (total, default) {
        // SAFETY: one argument, positional or named, at the start of the array.
        (1, _) => Ok(unsafe { Borrowed::from_ptr(py, *args) }.to_owned()),
        (0, Some(default)) => Ok(default),
        (0, None) => {
            Err(PyTypeError::new_err(format!("{qualname}() missing 1 required positional argument: '{param}'")))
        }
        (given, default) => Err(PyTypeError::new_err(format!(
            "{qualname}() takes {} positional arguments but {} were given",
            if default.is_some() { "from 1 to 2" } else { "2" },
            given + 1
        ))),
    }
}

/// `kind`'s call on `target` (a reader, or for `drain` a writer): a [`StreamOperation`]; or what
/// asyncio's method, as its class has it now, returns, called now as Python calls a method:
/// when that class's methods are patched (the patch runs when called, as it would without
/// ferroloop), or in debug mode (where asyncio tracks where each coroutine is made).
fn new_operation<'py>(
    py: Python<'py>,
    kind: Kind,
    target: &Bound<'py, PyAny>,
    arg: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let stock = Stock::get(py).ok_or_else(|| PyRuntimeError::new_err("asyncio.streams is not as expected"))?;
    let (class, which) = match kind {
        Kind::Drain => (&stock.writer, super::Class::Writer),
        _ => (&stock.reader, super::Class::Reader),
    };
    let op =
        StreamOperation { kind, target: target.clone().unbind(), n: arg.unbind(), state: GilCell::new(State::Start) };
    if !stock.intact(class.bind(py), which) || !quiet_loop(target)? {
        let answer = op.stock_coroutine(py, stock);
        *op.state.borrow_mut(py) = State::Done;
        return answer;
    }
    Ok(Bound::new(py, op)?.into_any())
}

macro_rules! read_entry {
    ($name:ident, $kind:expr, $param:expr, $default:expr) => {
        /// # Safety
        /// Called by the interpreter through a `METH_FASTCALL | METH_KEYWORDS` method descriptor
        /// of ferroloop's reader, which checked the instance.
        unsafe fn $name(
            py: Python<'_>,
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> PyResult<*mut ffi::PyObject> {
            // SAFETY: a valid vectorcall (the interpreter's).
            let arg = unsafe { one_arg(py, $kind.qualname(), $param, args, nargs, kwnames, $default(py))? };
            // SAFETY: the instance, a live reference for the call.
            let reader = unsafe { Borrowed::from_ptr(py, slf) }.to_owned();
            Ok(new_operation(py, $kind, &reader, arg)?.into_ptr())
        }
    };
}

read_entry!(read_entry, Kind::Read, "n", |py| Some((-1i64).into_pyobject(py).ok()?.into_any()));
read_entry!(readexactly_entry, Kind::ReadExactly, "n", |_| None);
read_entry!(readuntil_entry, Kind::ReadUntil, "separator", |py| Some(PyBytes::new(py, b"\n").into_any()));

/// `reader.readline()`: a [`StreamOperation`], or in debug mode asyncio's coroutine.
///
/// # Safety
/// Called by the interpreter through a `METH_FASTCALL | METH_KEYWORDS` method descriptor of
/// ferroloop's reader, which checked the instance.
unsafe fn readline_entry(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    _args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    no_args(py, "StreamReader.readline", nargs, kwnames)?;
    // SAFETY: the instance, a live reference for the call.
    let reader = unsafe { Borrowed::from_ptr(py, slf) }.to_owned();
    Ok(new_operation(py, Kind::ReadLine, &reader, py.None().into_bound(py))?.into_ptr())
}

/// A method without arguments was called with none.
fn no_args(py: Python<'_>, method: &str, nargs: ffi::Py_ssize_t, kwnames: *mut ffi::PyObject) -> PyResult<()> {
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: `kwnames` is a tuple (vectorcall protocol).
        unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() }.len()
    };
    if nargs != 0 || nkw != 0 {
        return Err(PyTypeError::new_err(format!(
            "{method}() takes 1 positional argument but {} were given",
            usize::try_from(nargs).unwrap_or(0) + nkw + 1
        )));
    }
    Ok(())
}

/// `writer.write(data)`: `self._transport.write(data)`, as asyncio's `write` (from 3.11 to 3.13)
/// is, without its frame: ferroloop's transport's `write` called directly. (The class change that
/// gives the writer ferroloop's `drain` makes its dictionary, which 3.11's specialised attribute
/// reads in asyncio's `write` then miss: measured 430 -> 900 instructions per call.) A patched
/// `asyncio.StreamWriter.write` is called instead.
///
/// # Safety
/// Called by the interpreter through a `METH_FASTCALL | METH_KEYWORDS` method descriptor of
/// ferroloop's writer, which checked the instance.
unsafe fn write_entry(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: a valid vectorcall (the interpreter's).
    let data = unsafe { one_arg(py, "StreamWriter.write", "data", args, nargs, kwnames, None)? };
    // SAFETY: the instance, a live reference for the call.
    let writer = unsafe { Borrowed::from_ptr(py, slf) }.to_owned();
    let stock = Stock::get(py).ok_or_else(|| PyRuntimeError::new_err("asyncio.streams is not as expected"))?;
    let class = stock.writer.bind(py);
    if stock.intact(class, super::Class::Writer) {
        let transport =
            super::instance_dict(&writer).map(|d| d.get_item(intern!(py, "_transport"))).transpose()?.flatten();
        if let Some(transport) = transport {
            match transport.cast_exact::<StreamTransport>() {
                Ok(ours) => StreamTransport::write(ours, &data)?,
                Err(_) => drop(transport.call_method1(intern!(py, "write"), (data,))?),
            }
            return Ok(py.None().into_ptr());
        }
    }
    Ok(class.getattr(intern!(py, "write"))?.call1((writer, data))?.into_ptr())
}

/// `writer.drain()`: a [`StreamOperation`], or in debug mode asyncio's coroutine.
///
/// # Safety
/// Called by the interpreter through a `METH_FASTCALL | METH_KEYWORDS` method descriptor of
/// ferroloop's writer, which checked the instance.
unsafe fn drain_entry(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    _args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    no_args(py, "StreamWriter.drain", nargs, kwnames)?;
    // SAFETY: the instance, a live reference for the call.
    let writer = unsafe { Borrowed::from_ptr(py, slf) }.to_owned();
    Ok(new_operation(py, Kind::Drain, &writer, py.None().into_bound(py))?.into_ptr())
}

/// Puts the native `read`, `readexactly` (on `reader`, ferroloop's reader class) and `drain`
/// (on `writer`, ferroloop's writer class).
#[pyfunction]
#[pyo3(name = "_install_stream_operations")]
fn install(
    py: Python<'_>,
    reader: &Bound<'_, pyo3::types::PyType>,
    writer: &Bound<'_, pyo3::types::PyType>,
) -> PyResult<()> {
    use pyo3::get_trampoline_function as entry_point;
    let methods: [(&Bound<'_, pyo3::types::PyType>, &'static CStr, &'static CStr, ffi::PyCFunctionFastWithKeywords);
        6] = [
        (
            reader,
            c"read",
            c"read($self, n=-1)\n--\n\nRead up to n bytes (asyncio.StreamReader.read); n=-1 reads until EOF.",
            entry_point!(fastcall_cfunction_with_keywords, read_entry),
        ),
        (
            reader,
            c"readexactly",
            c"readexactly($self, n)\n--\n\nRead exactly n bytes (asyncio.StreamReader.readexactly).",
            entry_point!(fastcall_cfunction_with_keywords, readexactly_entry),
        ),
        (
            reader,
            c"readuntil",
            c"readuntil($self, separator=b'\\n')\n--\n\nRead data until separator is found (asyncio.StreamReader.readuntil).",
            entry_point!(fastcall_cfunction_with_keywords, readuntil_entry),
        ),
        (
            reader,
            c"readline",
            c"readline($self)\n--\n\nRead one line, ending in b'\\n' (asyncio.StreamReader.readline).",
            entry_point!(fastcall_cfunction_with_keywords, readline_entry),
        ),
        (
            writer,
            c"write",
            c"write($self, data)\n--\n\nWrite data to the transport (asyncio.StreamWriter.write).",
            entry_point!(fastcall_cfunction_with_keywords, write_entry),
        ),
        (
            writer,
            c"drain",
            c"drain($self)\n--\n\nWait until it is appropriate to resume writing (asyncio.StreamWriter.drain).",
            entry_point!(fastcall_cfunction_with_keywords, drain_entry),
        ),
    ];
    for (class, name, doc, f) in methods {
        let descriptor = crate::fastcall::descriptor(py, class.as_type_ptr(), name, doc, f)?;
        class.setattr(name.to_str().unwrap_or_default(), descriptor)?;
    }
    Ok(())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StreamOperation>()?;
    install_slots(m.py());
    m.add_function(wrap_pyfunction!(install, m)?)
}
