//! `call_soon`, `call_later` and `call_at` as vectorcall entry points; also the socket
//! transport's `write`.
//!
//! These are the loop methods stdlib's C `Task` and `Future` call for every step and wake-up
//! (`call_soon(callback, arg, context=ctx)`). PyO3's generic argument parsing for a
//! `(callback, *args, context=None)` signature matches keyword names by string comparison and
//! costs about as much as the rest of `call_soon` together (measured with callgrind: ~300 of
//! the ~6,100 instructions of a `sleep(0)` round between two tasks). Here the arguments are read
//! straight from the vectorcall array; the keyword name is compared by identity first (callers
//! pass interned strings). The PyO3 methods stay on `EventLoop` for everything else (their
//! signatures are what `inspect` and the stubs show); `ferroloop.Loop` puts these descriptors
//! in front of them.

use std::ffi::{c_char, CStr};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{ffi, Borrowed, PyTypeInfo};

use crate::event_loop::EventLoop;
use crate::transports::stream::StreamTransport;

/// Which method, and how many positional parameters come before `*args`.
#[derive(Clone, Copy)]
enum Method {
    Soon,
    SoonThreadsafe,
    Later,
    At,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::Soon => "call_soon",
            Self::SoonThreadsafe => "call_soon_threadsafe",
            Self::Later => "call_later",
            Self::At => "call_at",
        }
    }

    /// The positional parameters before `*args`.
    fn leading(self) -> &'static [&'static str] {
        match self {
            Self::Soon | Self::SoonThreadsafe => &["callback"],
            Self::Later => &["delay", "callback"],
            Self::At => &["when", "callback"],
        }
    }
}

/// Parses `(leading..., *args, context=None)` from a vectorcall and calls the method.
///
/// # Safety
/// `args` holds `nargs` positional arguments followed by one value per name in `kwnames`
/// (NULL when there are none), as the vectorcall protocol guarantees; attached.
unsafe fn dispatch(
    py: Python<'_>,
    method: Method,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: `slf` is the object the method descriptor was called on, a live reference, and a
    // method descriptor of `EventLoop` checks that it is an instance before calling.
    let slf = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<EventLoop>() };
    let nargs = usize::try_from(nargs).unwrap_or(0);
    let positional: &[*mut ffi::PyObject] = if nargs == 0 {
        &[]
    } else {
        // SAFETY: the vectorcall array holds `nargs` positional arguments, then the keyword values.
        unsafe { std::slice::from_raw_parts(args, nargs) }
    };
    let leading = method.leading();
    if positional.len() < leading.len() {
        let missing = &leading[positional.len()..];
        let names: Vec<String> = missing.iter().map(|n| format!("'{n}'")).collect();
        return Err(PyTypeError::new_err(format!(
            "{}() missing {} required positional argument{}: {}",
            method.name(),
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            names.join(" and ")
        )));
    }
    let mut context: Option<Borrowed<'_, '_, PyAny>> = None;
    if !kwnames.is_null() {
        // SAFETY: `kwnames` is a tuple of strings (vectorcall protocol).
        let names = unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() };
        for (i, name) in names.iter().enumerate() {
            if is_context(py, &name) {
                // SAFETY: keyword values follow the positional arguments, one per name.
                context = Some(unsafe { Borrowed::from_ptr(py, *args.add(nargs + i)) });
            } else {
                return Err(PyTypeError::new_err(format!(
                    "{}() got an unexpected keyword argument '{}'",
                    method.name(),
                    name.cast::<PyString>().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
                )));
            }
        }
    }
    // SAFETY: the positional arguments are live references for the duration of the call.
    let arg = |i: usize| unsafe { Borrowed::from_ptr(py, positional[i]) };
    let rest = match &positional[leading.len()..] {
        [] => PyTuple::empty(py),
        more => new_tuple(py, more)?,
    };
    let context = context.as_deref();
    let this = slf.get();
    let handle = match method {
        Method::Soon => this.call_soon(py, &arg(0), &rest, context)?.into_any(),
        Method::SoonThreadsafe => this.call_soon_threadsafe(py, &arg(0), &rest, context)?.into_any(),
        Method::Later => this.call_later(py, &arg(0), &arg(1), &rest, context)?.into_any(),
        Method::At => this.call_at(py, &arg(0), &arg(1), &rest, context)?.into_any(),
    };
    Ok(handle.into_ptr())
}

/// A tuple of the live references `items`: made directly (`PyTuple::new` from an iterator costs
/// about 100 instructions for one item where it is not inlined; callgrind).
fn new_tuple<'py>(py: Python<'py>, items: &[*mut ffi::PyObject]) -> PyResult<Bound<'py, PyTuple>> {
    #[allow(clippy::cast_possible_wrap)]
    // SAFETY: attached; a new tuple of `items.len()` slots, each filled once with a new
    // reference to a live object (the caller's arguments), before anything else can see it.
    unsafe {
        let tuple = ffi::PyTuple_New(items.len() as ffi::Py_ssize_t);
        if tuple.is_null() {
            return Err(PyErr::fetch(py));
        }
        for (i, &item) in items.iter().enumerate() {
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(tuple, i as ffi::Py_ssize_t, item);
        }
        Ok(Bound::from_owned_ptr(py, tuple).cast_into_unchecked())
    }
}

/// The first `"context"` string object seen that is not the interned one, kept alive so that
/// comparing by identity is sound: stdlib's C `Task` passes its own on every call.
static OTHER_CONTEXT_NAME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether a keyword name is `context`.
#[inline]
fn is_context(py: Python<'_>, name: &Bound<'_, PyAny>) -> bool {
    if name.is(pyo3::intern!(py, "context")) || OTHER_CONTEXT_NAME.get(py).is_some_and(|k| name.is(k)) {
        return true;
    }
    // SAFETY: `name` is a str (vectorcall protocol); the other operand a C string.
    if unsafe { ffi::PyUnicode_CompareWithASCIIString(name.as_ptr(), c"context".as_ptr()) } != 0 {
        return false;
    }
    OTHER_CONTEXT_NAME.get_or_init(py, || name.clone().unbind());
    true
}

macro_rules! entry {
    ($name:ident, $method:expr) => {
        /// # Safety
        /// Called by the interpreter through a `METH_FASTCALL | METH_KEYWORDS` method descriptor.
        unsafe fn $name(
            py: Python<'_>,
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> PyResult<*mut ffi::PyObject> {
            // SAFETY: the interpreter passes a valid vectorcall (see `dispatch`).
            unsafe { dispatch(py, $method, slf, args, nargs, kwnames) }
        }
    };
}

entry!(call_soon, Method::Soon);
entry!(call_soon_threadsafe, Method::SoonThreadsafe);
entry!(call_later, Method::Later);
entry!(call_at, Method::At);

/// A method descriptor of `EventLoop` for `f` (a `'static` method definition, made once).
pub(crate) fn descriptor(
    py: Python<'_>,
    owner: *mut ffi::PyTypeObject,
    name: &'static CStr,
    doc: &'static CStr,
    f: ffi::PyCFunctionFastWithKeywords,
) -> PyResult<Py<PyAny>> {
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: f },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr().cast::<c_char>(),
    }));
    // SAFETY: `def` lives for the rest of the process; `owner` is a live type object.
    let ptr = unsafe { ffi::PyDescr_NewMethod(owner, def) };
    if ptr.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new, non-null reference.
    Ok(unsafe { Bound::from_owned_ptr(py, ptr) }.unbind())
}

/// `StreamTransport.write(data)`: one positional argument (or `data=`), read straight from the
/// call; PyO3's generic parsing and type check were a tenth of the loop's own instructions per
/// request in an HTTP keep-alive exchange (callgrind).
///
/// # Safety
/// Called by the interpreter through a `METH_FASTCALL | METH_KEYWORDS` method descriptor.
unsafe fn stream_write(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: a method descriptor of `StreamTransport` checked the instance before calling.
    let slf = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<StreamTransport>() };
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: `kwnames` is a tuple (vectorcall protocol).
        unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() }.len()
    };
    let named_data = nkw == 1 && {
        // SAFETY: as above; it has one item.
        let name = unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() }.get_item(0)?;
        // SAFETY: `name` is a str; the other operand a C string.
        unsafe { ffi::PyUnicode_CompareWithASCIIString(name.as_ptr(), c"data".as_ptr()) == 0 }
    };
    if !((nargs == 1 && nkw == 0) || (nargs == 0 && named_data)) {
        return Err(PyTypeError::new_err("write() takes exactly one argument (data)"));
    }
    // SAFETY: the vectorcall array holds one argument, positional or named.
    let data = unsafe { Borrowed::from_ptr(py, *args) };
    StreamTransport::write(&slf, &data)?;
    Ok(py.None().into_ptr())
}

/// Puts the vectorcall `write` on `StreamTransport` (its PyO3 method stays for the stubs).
pub fn install_stream_write(py: Python<'_>) -> PyResult<()> {
    let descr = descriptor(
        py,
        StreamTransport::type_object_raw(py),
        c"write",
        c"write($self, data)\n--\n\nWrite bytes to the transport without blocking; what cannot be sent at once is buffered.",
        pyo3::get_trampoline_function!(fastcall_cfunction_with_keywords, stream_write),
    )?;
    py.get_type::<StreamTransport>().setattr("write", descr)
}

/// `{"call_soon": descriptor, ...}`, for `ferroloop.Loop` to install.
#[pyfunction]
pub fn _fast_methods(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    use pyo3::get_trampoline_function as entry_point;
    let table: [(&'static CStr, &'static CStr, ffi::PyCFunctionFastWithKeywords); 4] = [
        (
            c"call_soon",
            c"call_soon($self, callback, /, *args, context=None)\n--\n\nArrange for a callback to be called as soon as possible.",
            entry_point!(fastcall_cfunction_with_keywords, call_soon),
        ),
        (
            c"call_soon_threadsafe",
            c"call_soon_threadsafe($self, callback, /, *args, context=None)\n--\n\nLike call_soon(), but thread-safe.",
            entry_point!(fastcall_cfunction_with_keywords, call_soon_threadsafe),
        ),
        (
            c"call_later",
            c"call_later($self, delay, callback, /, *args, context=None)\n--\n\nArrange for a callback to be called after a given delay (seconds).",
            entry_point!(fastcall_cfunction_with_keywords, call_later),
        ),
        (
            c"call_at",
            c"call_at($self, when, callback, /, *args, context=None)\n--\n\nArrange for a callback to be called at a given time on the loop's clock.",
            entry_point!(fastcall_cfunction_with_keywords, call_at),
        ),
    ];
    let methods = PyDict::new(py);
    for (name, doc, f) in table {
        let key = name.to_str().map_err(|e| PyTypeError::new_err(e.to_string()))?;
        methods.set_item(key, descriptor(py, EventLoop::type_object_raw(py), name, doc, f)?)?;
    }
    Ok(methods)
}

/// `_fast_methods`, and the vectorcall entry of `StreamTransport.write` (after the transports are
/// registered).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_fast_methods, m)?)?;
    install_stream_write(m.py())
}
