//! ferroloop's `StreamReader` (`python/ferroloop/_streams.py`): a stock `asyncio.StreamReader`
//! whose class a transport changed to ferroloop's subclass ([`adopt`]), so that its `read`,
//! `readexactly`, `readuntil` and `readline` run here.
//!
//! The reader keeps asyncio's state in its own attributes (`_buffer`, `_eof`, `_waiter`, ...),
//! so asyncio's methods that ferroloop does not replace, and any code that looks at them, work as
//! before. Here they are read from the reader's instance dictionary, which costs a tenth of an
//! attribute lookup from C. The dictionary's size also tells that no method was patched on the
//! instance: it holds as many entries as a stock `__init__` leaves ([`FIELDS`], and
//! `_source_traceback` in debug mode), and a patch adds one. (A program that deletes one of
//! asyncio's attributes and patches a method would defeat the count; asyncio's own code would
//! then fail on the missing attribute anyway.) Each step also
//! checks that the stock class still has its own methods (by its version tag); otherwise the
//! step answers `NotImplemented` and the Python side runs asyncio's method.
//!
//! Each operation is asyncio's, in asyncio's order: its checks, its exceptions (and their
//! messages, `consumed`, `partial` and `expected`), one wait per `read`, a wait per shortfall for
//! `readexactly` and `readuntil` (whose search resumes where the last one stopped), and
//! `_maybe_resume_transport` after the bytes are taken. For `read` and `readexactly` the wait is
//! held by [`super::op`]'s awaitable, which awaits the future [`Fields::wait`] made within the
//! step; for `readuntil` and `readline`, whose step answers an offset, by the Python side, which
//! awaits the future [`stream_wait`] makes. Either clears `_waiter` when the wait ends, however
//! it ends, as `_wait_for_data`'s `finally` does, so cancellation behaves as asyncio's.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyInt, PyString};
use pyo3::{intern, PyTypeInfo};

use super::Stock;
use crate::event_loop::EventLoop;

/// The stock methods a transport's delivery (the first two) and this module's reads stand in for.
pub(super) const STANDS_IN_FOR: [&str; 9] = [
    "feed_data",
    "_wakeup_waiter",
    "exception",
    "read",
    "readexactly",
    "readuntil",
    "readline",
    "_wait_for_data",
    "_maybe_resume_transport",
];

/// The attributes `StreamReader.__init__` sets.
const FIELDS: usize = 8;

/// Gives `reader`, a stock `StreamReader`, ferroloop's reads, if nothing about it or its class is
/// customised.
pub(super) fn adopt(stock: &Stock, reader: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = reader.py();
    let class = stock.reader.bind(py);
    if reader.get_type().is(class) && stock.intact(class, super::Class::Reader) && Fields::of(stock, reader)?.is_some()
    {
        reader.setattr(intern!(py, "__class__"), stock.fast_reader.bind(py))?;
    }
    Ok(())
}

/// A reader's instance dictionary, as its attributes.
pub(super) struct Fields<'py> {
    reader: Bound<'py, PyAny>,
    dict: Bound<'py, PyDict>,
}

impl<'py> Fields<'py> {
    /// The fields of a reader that is still what a stock `__init__` made, with the stock class
    /// intact; `None` otherwise.
    pub(super) fn of(stock: &Stock, reader: &Bound<'py, PyAny>) -> PyResult<Option<Self>> {
        let py = reader.py();
        if !stock.intact(stock.reader.bind(py), super::Class::Reader) {
            return Ok(None);
        }
        let Some(dict) = super::instance_dict(reader) else { return Ok(None) };
        // The stock fields, and `_source_traceback` in debug mode.
        let len = dict.len();
        if len != FIELDS && (len != FIELDS + 1 || !dict.contains(intern!(py, "_source_traceback"))?) {
            return Ok(None);
        }
        Ok(Some(Fields { reader: reader.clone(), dict }))
    }

    /// The fields of any reader (its dictionary, made if need be), to finish what was begun.
    fn any(reader: &Bound<'py, PyAny>) -> PyResult<Self> {
        match super::instance_dict(reader) {
            Some(dict) => Ok(Fields { reader: reader.clone(), dict }),
            None => Err(PyRuntimeError::new_err("StreamReader without an instance dictionary")),
        }
    }

    /// `self.<name>`: the dictionary's entry, else what `getattr` says (an `AttributeError`).
    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        match self.dict.get_item(name)? {
            Some(v) => Ok(v),
            None => self.reader.getattr(name),
        }
    }

    /// `_wait_for_data(func_name)` up to its `await`: the future to await, stored as `_waiter`.
    /// The Python side awaits it and clears `_waiter` in a `finally`, as asyncio does.
    fn wait(&self, func_name: &str) -> PyResult<Bound<'py, PyAny>> {
        let py = self.reader.py();
        if !self.get(intern!(py, "_waiter"))?.is_none() {
            return Err(PyRuntimeError::new_err(format!(
                "{func_name}() called while another coroutine is already waiting for incoming data"
            )));
        }
        if self.get(intern!(py, "_paused"))?.is_truthy()? {
            self.resume()?;
        }
        let waiter = create_future(&self.get(intern!(py, "_loop"))?)?;
        self.set(intern!(py, "_waiter"), &waiter)?;
        Ok(waiter)
    }

    /// `self.<name> = value` (the stock class defines no descriptor for these names).
    fn set(&self, name: &Bound<'py, PyString>, value: impl IntoPyObject<'py>) -> PyResult<()> {
        self.dict.set_item(name, value)
    }

    /// A ferroloop reader's fields, for one of its reads: `None` when asyncio's method must run
    /// (see [`Fields::of`]).
    fn fast(reader: &Bound<'py, PyAny>) -> PyResult<Option<Self>> {
        match Stock::get(reader.py()) {
            Some(stock) => Self::of(stock, reader),
            None => Ok(None),
        }
    }

    /// `self._buffer`, if it is exactly a `bytearray`.
    fn buffer(&self) -> PyResult<Option<Bound<'py, pyo3::types::PyByteArray>>> {
        Ok(self.get(intern!(self.reader.py(), "_buffer"))?.cast_into_exact().ok())
    }

    /// `raise self._exception` when one is set.
    fn raise_exception(&self) -> PyResult<()> {
        let exc = self.get(intern!(self.reader.py(), "_exception"))?;
        if exc.is_none() {
            return Ok(());
        }
        Err(PyErr::from_value(exc))
    }

    /// `self._exception is None`.
    pub(super) fn exception_is_none(&self) -> PyResult<bool> {
        Ok(self.get(intern!(self.reader.py(), "_exception"))?.is_none())
    }

    fn eof(&self) -> PyResult<bool> {
        self.get(intern!(self.reader.py(), "_eof"))?.is_truthy()
    }

    /// `_maybe_resume_transport()`: reading resumes once the buffer is down to the limit.
    fn maybe_resume_transport(&self, len: usize) -> PyResult<()> {
        let py = self.reader.py();
        if !self.get(intern!(py, "_paused"))?.is_truthy()? {
            return Ok(());
        }
        if super::compare_len(len, &self.get(intern!(py, "_limit"))?, 1, CompareOp::Le)? {
            self.resume()?;
        }
        Ok(())
    }

    /// `self._paused = False; self._transport.resume_reading()`.
    fn resume(&self) -> PyResult<()> {
        let py = self.reader.py();
        self.set(intern!(py, "_paused"), false)?;
        self.get(intern!(py, "_transport"))?.call_method0(intern!(py, "resume_reading"))?;
        Ok(())
    }

    /// Takes the buffer's first `n` bytes (`n` at most its length), then resumes reading if the
    /// buffer is down to the limit.
    fn take(&self, buffer: &Bound<'py, pyo3::types::PyByteArray>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = self.reader.py();
        // SAFETY: `n` is within the live bytearray, copied before anything can change it.
        let data = PyBytes::new(py, unsafe { &buffer.as_bytes()[..n] });
        let len = buffer.len();
        if n == len {
            buffer.resize(0)?;
        } else {
            // `del self._buffer[:n]`: bytearray drops a prefix without moving the rest.
            // SAFETY: a live bytearray and a slice within it.
            if unsafe { ffi::PySequence_DelSlice(buffer.as_ptr(), 0, n as ffi::Py_ssize_t) } != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        self.maybe_resume_transport(len - n)?;
        Ok(data.into_any())
    }
}

impl<'py> super::Attrs<'py> for Fields<'py> {
    fn py(&self) -> Python<'py> {
        self.reader.py()
    }

    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        Fields::get(self, name)
    }

    fn set(&self, name: &Bound<'py, PyString>, value: Bound<'py, PyAny>) -> PyResult<()> {
        Fields::set(self, name, value)
    }
}

/// An `int` that fits in an `i64` (negative ones too: each read says what they mean), or `None`
/// for anything else.
fn size(n: &Bound<'_, PyAny>) -> Option<i64> {
    if !n.get_type().is(PyInt::type_object(n.py())) {
        return None;
    }
    n.extract::<i64>().ok()
}

fn not_implemented(py: Python<'_>) -> Bound<'_, PyAny> {
    py.NotImplemented().into_bound(py)
}

/// `read(n)`'s step: the data; the future to await, already set up as the reader's `_waiter`
/// (see [`Fields::wait`]), after which the step is asked again, told that it waited (and then
/// gives the data); or `NotImplemented` for asyncio's own method (`read(-1)`, a size that is not
/// an `int`, a customised reader).
pub(super) fn read_step<'py>(
    reader: &Bound<'py, PyAny>,
    n: &Bound<'py, PyAny>,
    waited: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = reader.py();
    let (Some(n), Some(fields)) = (size(n), Fields::fast(reader)?) else { return Ok(not_implemented(py)) };
    let Some(buffer) = fields.buffer()? else { return Ok(not_implemented(py)) };
    if !waited {
        fields.raise_exception()?;
        if n == 0 {
            return Ok(PyBytes::new(py, b"").into_any());
        }
        if n < 0 {
            return Ok(not_implemented(py));
        }
        if buffer.len() == 0 && !fields.eof()? {
            return fields.wait("read");
        }
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(buffer.len());
    fields.take(&buffer, n)
}

/// `readexactly(n)`'s step: the data, the future to await (as for `read`, once per shortfall),
/// or `NotImplemented` for asyncio's own.
pub(super) fn readexactly_step<'py>(
    reader: &Bound<'py, PyAny>,
    n: &Bound<'py, PyAny>,
    waited: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = reader.py();
    let (Some(n), Some(fields)) = (size(n), Fields::fast(reader)?) else { return Ok(not_implemented(py)) };
    let Some(buffer) = fields.buffer()? else { return Ok(not_implemented(py)) };
    if !waited {
        if n < 0 {
            return Err(PyValueError::new_err("readexactly size can not be less than zero"));
        }
        fields.raise_exception()?;
        if n == 0 {
            return Ok(PyBytes::new(py, b"").into_any());
        }
    }
    let want = usize::try_from(n).unwrap_or(usize::MAX);
    if buffer.len() < want {
        if !fields.eof()? {
            return fields.wait("readexactly");
        }
        // SAFETY: the live bytearray's bytes, copied at once.
        let partial = PyBytes::new(py, unsafe { buffer.as_bytes() });
        buffer.resize(0)?;
        return Err(incomplete_read(py, &partial, n.into_pyobject(py)?.into_any())?);
    }
    fields.take(&buffer, want)
}

/// `readuntil(separator)`'s step for one `bytes` separator: the data; an `int`, the offset to
/// search from after waiting; or `NotImplemented` for asyncio's own method. `offset` is -1 at
/// first.
pub(super) fn readuntil_step_of<'py>(
    reader: &Bound<'py, PyAny>,
    separator: &Bound<'py, PyAny>,
    offset: isize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = reader.py();
    let (Ok(separator), Some(fields)) = (separator.cast_exact::<PyBytes>(), Fields::fast(reader)?) else {
        return Ok(not_implemented(py));
    };
    readuntil_step(&fields, separator.as_bytes(), offset)
}

/// `readline()`'s step: `readuntil(b"\n")`'s, with what asyncio's `readline` makes of its two
/// errors: at end of file the partial line is the answer; past the limit the line (or, without
/// its end, the whole buffer) is dropped and `ValueError` raised with the error's message.
pub(super) fn readline_step<'py>(reader: &Bound<'py, PyAny>, offset: isize) -> PyResult<Bound<'py, PyAny>> {
    let py = reader.py();
    let Some(fields) = Fields::fast(reader)? else { return Ok(not_implemented(py)) };
    let err = match readuntil_step(&fields, b"\n", offset) {
        Ok(answer) => return Ok(answer),
        Err(err) => err,
    };
    let exc = err.value(py);
    if exc.is_instance(incomplete_read_class(py)?)? {
        return exc.getattr(intern!(py, "partial"));
    }
    if !exc.is_instance(limit_overrun_class(py)?)? {
        return Err(err);
    }
    let buffer = fields.get(intern!(py, "_buffer"))?;
    let consumed = exc.getattr(intern!(py, "consumed"))?;
    if buffer.call_method1(intern!(py, "startswith"), (PyBytes::new(py, b"\n"), &consumed))?.is_truthy()? {
        buffer.del_item(pyo3::types::PySlice::new(py, 0, consumed.extract::<isize>()? + 1, 1))?;
    } else {
        buffer.call_method0(intern!(py, "clear"))?;
    }
    let len = buffer.len()?;
    fields.maybe_resume_transport(len)?;
    let message = exc.getattr(intern!(py, "args"))?.get_item(0)?;
    Err(PyValueError::new_err((message.unbind(),)))
}

/// One pass of `readuntil`'s search (see [`stream_readuntil`]).
fn readuntil_step<'py>(fields: &Fields<'py>, sep: &[u8], offset: isize) -> PyResult<Bound<'py, PyAny>> {
    let py = fields.reader.py();
    let Some(buffer) = fields.buffer()? else { return Ok(not_implemented(py)) };
    let first = offset < 0;
    let mut offset = usize::try_from(offset).unwrap_or(0);
    if first {
        if sep.is_empty() {
            return Err(PyValueError::new_err("Separator should be at least one-byte string"));
        }
        fields.raise_exception()?;
    }
    let limit = fields.get(intern!(py, "_limit"))?;
    let buflen = buffer.len();
    let mut found = None;
    if buflen >= offset + sep.len() {
        // SAFETY: the live bytearray's bytes, searched before anything can change them.
        found = find(unsafe { &buffer.as_bytes()[offset..] }, sep).map(|i| i + offset);
        if found.is_none() {
            offset = buflen + 1 - sep.len();
            if super::compare_len(offset, &limit, 1, CompareOp::Gt)? {
                return Err(limit_overrun(py, "Separator is not found, and chunk exceed the limit", offset)?);
            }
        }
    }
    let Some(at) = found else {
        if fields.eof()? {
            // SAFETY: the live bytearray's bytes, copied at once.
            let partial = PyBytes::new(py, unsafe { buffer.as_bytes() });
            buffer.resize(0)?;
            return Err(incomplete_read(py, &partial, py.None().into_bound(py))?);
        }
        return Ok(offset.into_pyobject(py)?.into_any());
    };
    if super::compare_len(at, &limit, 1, CompareOp::Gt)? {
        return Err(limit_overrun(py, "Separator is found, but chunk is longer than limit", at)?);
    }
    fields.take(&buffer, at + sep.len())
}

/// `_wait_for_data(func_name)` up to its `await`: the future to await, stored as `_waiter`.
pub(super) fn stream_wait<'py>(reader: &Bound<'py, PyAny>, func_name: &str) -> PyResult<Bound<'py, PyAny>> {
    Fields::any(reader)?.wait(func_name)
}

/// `event_loop.create_future()`: ferroloop's, without the method call, when the loop's class
/// has not replaced it (checked once per class version, see [`super::version_tag`]).
fn create_future<'py>(event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    static CLASS: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());
    static TAG: AtomicU32 = AtomicU32::new(0);
    let py = event_loop.py();
    let name = intern!(py, "create_future");
    if let Ok(ours) = event_loop.cast::<EventLoop>() {
        let class = ours.get_type();
        let (ptr, tag) = (class.as_type_ptr(), super::version_tag(&class));
        let known = tag != 0 && CLASS.load(Ordering::Relaxed) == ptr && TAG.load(Ordering::Relaxed) == tag;
        if known || class.getattr(name)?.is(EventLoop::type_object(py).getattr(name)?) {
            if !known {
                CLASS.store(ptr, Ordering::Relaxed);
                TAG.store(tag, Ordering::Relaxed);
            }
            return Ok(EventLoop::create_future(ours)?.into_bound(py));
        }
    }
    event_loop.call_method0(name)
}

fn incomplete_read_class(py: Python<'_>) -> PyResult<&Bound<'_, pyo3::types::PyType>> {
    static CLASS: PyOnceLock<Py<pyo3::types::PyType>> = PyOnceLock::new();
    CLASS.import(py, "asyncio.exceptions", "IncompleteReadError")
}

fn limit_overrun_class(py: Python<'_>) -> PyResult<&Bound<'_, pyo3::types::PyType>> {
    static CLASS: PyOnceLock<Py<pyo3::types::PyType>> = PyOnceLock::new();
    CLASS.import(py, "asyncio.exceptions", "LimitOverrunError")
}

/// `asyncio.IncompleteReadError(partial, expected)`.
fn incomplete_read(py: Python<'_>, partial: &Bound<'_, PyBytes>, expected: Bound<'_, PyAny>) -> PyResult<PyErr> {
    Ok(PyErr::from_value(incomplete_read_class(py)?.call1((partial, expected))?))
}

/// `asyncio.LimitOverrunError(message, consumed)`.
fn limit_overrun(py: Python<'_>, message: &str, consumed: usize) -> PyResult<PyErr> {
    Ok(PyErr::from_value(limit_overrun_class(py)?.call1((message, consumed))?))
}

/// The first occurrence of `needle` (not empty) in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if haystack.len() < needle.len() {
        return None;
    }
    // SAFETY: both slices are valid for their lengths; glibc's memmem reads only within them and
    // returns NULL or a pointer into `haystack`.
    let at = unsafe { libc::memmem(haystack.as_ptr().cast(), haystack.len(), needle.as_ptr().cast(), needle.len()) };
    (!at.is_null()).then(|| at as usize - haystack.as_ptr() as usize)
}
