//! Errors crossing into Python.

use pyo3::prelude::*;

/// An OS error as Python raises it: `OSError(errno, strerror)`, which Python turns into the
/// matching subclass (`BrokenPipeError`, `ConnectionResetError`, ...) with `errno` set.
/// (PyO3's own conversion keeps the message but leaves `errno` unset.)
///
/// The exception is made at once: PyO3 makes a lazy one under a lock it takes with the GIL
/// released, which cost about 2,600 instructions per connection a peer resets; and the message
/// is the C library's `strerror_r` text, as Python's, without the formatting of
/// `io::Error`'s `Display` (another 1,500).
pub(crate) fn os_error(e: &std::io::Error) -> PyErr {
    let Some(code) = e.raw_os_error() else {
        return pyo3::exceptions::PyOSError::new_err(e.to_string());
    };
    let text = strerror(code);
    Python::attach(|py| match py.get_type::<pyo3::exceptions::PyOSError>().call1((code, text)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    })
}

/// The C library's message for `code`.
fn strerror(code: i32) -> String {
    let mut buf = [0 as std::ffi::c_char; 256];
    // SAFETY: `strerror_r` (the XSI one the libc crate binds) writes a NUL-terminated message of
    // at most `buf.len()` bytes into `buf`, or fails and leaves it as it was (all NULs).
    unsafe { libc::strerror_r(code, buf.as_mut_ptr(), buf.len()) };
    // SAFETY: `buf` holds a NUL (its last byte is never written past).
    let message = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    if message.is_empty() {
        format!("Unknown error {code}")
    } else {
        message.into_owned()
    }
}

/// `KeyboardInterrupt` and `SystemExit` are never reported: they leave the loop.
pub(crate) fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
}

/// A socket operation's call would block: wait for readiness. (The socket operations retry
/// `EINTR` at once instead: the poller reports only changes after a call that would block.)
pub(crate) fn would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

/// A transport's read or write would block or was interrupted: it tries again at the
/// descriptor's next readiness (transports are watched level-triggered, so the next report
/// comes at once when the descriptor is still ready).
pub(crate) fn try_later(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted)
}
