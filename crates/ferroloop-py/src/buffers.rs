//! Python buffers lent to Rust: the one place where a bytes-like object becomes bytes to send,
//! and a writable object becomes memory to receive into.
//!
//! Every transport and socket operation goes through [`Export`], which asks the exporter for
//! what the socket module's `y*` (read) and `w*` (write) arguments ask for: one C-contiguous
//! block, `len` bytes long (`PyBUF_SIMPLE`, `PyBUF_WRITABLE`). An exporter that cannot give that
//! refuses (a strided `memoryview` raises `BufferError`, `bytes` asked to be writable refuses),
//! so memory is never addressed as contiguous when it is not. The length is always the export's
//! byte count, never `len(obj)` (which counts items of the first dimension of a
//! multi-dimensional view).
//!
//! While an export is held, the object cannot be resized (a `bytearray` refuses) or freed; the
//! pointer is only handed to the kernel while the GIL is held.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

/// A buffer exported by a Python object as one contiguous block. Released on drop.
pub(crate) struct Export(Box<ffi::Py_buffer>);

// SAFETY: the view's pointers are only used while the GIL is held (every use takes a `Python`
// token or is inside a call holding the GIL), and `Drop` attaches to the interpreter before
// releasing the export.
unsafe impl Send for Export {}
// SAFETY: as for `Send`; shared access never writes to the view itself.
unsafe impl Sync for Export {}

impl Export {
    /// A read-only contiguous view of `obj`, as `socket.send` takes it. Fails with the
    /// exporter's error (`BufferError` for a non-contiguous view, `TypeError` for a non-buffer).
    pub(crate) fn readable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::get(obj, ffi::PyBUF_SIMPLE)
    }

    /// A writable contiguous view of `obj`, as `socket.recv_into` takes it. Fails with
    /// `TypeError` as the socket module does when `obj` is read-only, not contiguous or not a
    /// buffer.
    pub(crate) fn writable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::get(obj, ffi::PyBUF_WRITABLE).map_err(|_| {
            let name = obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
            PyTypeError::new_err(format!("a read-write contiguous bytes-like object is required, not {name}"))
        })
    }

    /// An item of `writelines`: any contiguous buffer, as `b"".join` takes it (asyncio 3.11
    /// joins; later versions take `memoryview(item)` and send it), else `TypeError`.
    pub(crate) fn joinable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::readable(obj).map_err(|_| {
            let name = obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
            PyTypeError::new_err(format!("expected a bytes-like object, {name} found"))
        })
    }

    fn get(obj: &Bound<'_, PyAny>, flags: std::ffi::c_int) -> PyResult<Self> {
        // SAFETY: an all-zero Py_buffer is a valid "not yet filled" view.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is a live object (GIL held); `view` is valid for writes and boxed, so the
        // address the exporter sees never changes.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &raw mut *view, flags) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Self(view))
    }

    /// The first byte (valid for [`Export::len`] bytes while the export is held).
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.0.buf.cast()
    }

    /// The byte count.
    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.0.len).unwrap_or(0)
    }

    /// The bytes, borrowed from the export.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        if self.len() == 0 || self.ptr().is_null() {
            return &[];
        }
        // SAFETY: a successful PyBUF_SIMPLE or PyBUF_WRITABLE export is one contiguous block of
        // `len` bytes, kept alive and unmoved until `self` is dropped, which this borrow outlives
        // not.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }

    /// The bytes, for receiving into. Only for writable exports.
    ///
    /// # Safety
    /// The export must have been made by [`Export::writable`], and no other slice of it may be
    /// alive while the returned one is.
    pub(crate) unsafe fn as_mut_bytes(&mut self) -> &mut [u8] {
        if self.len() == 0 || self.ptr().is_null() {
            return &mut [];
        }
        // SAFETY: a writable contiguous block of `len` bytes held until `self` is dropped; the
        // caller guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len()) }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        Python::attach(|_| {
            // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released once.
            unsafe { ffi::PyBuffer_Release(&raw mut *self.0) }
        });
    }
}

/// `bytes`, `bytearray` or `memoryview`: what asyncio's transports take as data (each says so
/// in its own words when it refuses).
pub(crate) fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>() || data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>()
}

/// The data of a transport's `write`, `writelines` item or `sendto`: `bytes` borrowed as they
/// are, a `bytearray` or `memoryview` exported.
pub(crate) enum Data<'a, 'py> {
    Bytes(&'a Bound<'py, PyBytes>),
    Exported(Export),
}

impl<'a, 'py> Data<'a, 'py> {
    /// `data` if it is `bytes`, `bytearray` or `memoryview` that can be sent as it is; else
    /// why not (see [`DataError`]).
    pub(crate) fn of(data: &'a Bound<'py, PyAny>) -> Result<Self, DataError> {
        if let Ok(b) = data.cast::<PyBytes>() {
            return Ok(Self::Bytes(b));
        }
        if !is_bytes_like(data) {
            let name = data.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
            return Err(DataError::Type(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not '{name}'"
            ))));
        }
        Export::readable(data).map(Self::Exported).map_err(DataError::Export)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Bytes(b) => b.as_bytes(),
            Self::Exported(e) => e.as_bytes(),
        }
    }
}

/// Why [`Data::of`] refused: asyncio raises the first from `write()` itself, and treats the
/// second as the socket's `send` failing (a fatal write error, reaching `connection_lost`).
pub(crate) enum DataError {
    /// Not `bytes`, `bytearray` or `memoryview`.
    Type(PyErr),
    /// A buffer that cannot be sent as is (a non-contiguous view).
    Export(PyErr),
}

impl From<DataError> for PyErr {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Type(e) | DataError::Export(e) => e,
        }
    }
}
