//! Errors crossing into Python.

use pyo3::{PyErr, Python};

/// An OS error as Python raises it: `OSError(errno, strerror)`, which Python turns into the
/// matching subclass (`BrokenPipeError`, `ConnectionResetError`, ...) with `errno` set.
/// (PyO3's own conversion keeps the message but leaves `errno` unset.)
pub(crate) fn os_error(e: &std::io::Error) -> PyErr {
    let Some(code) = e.raw_os_error() else {
        return pyo3::exceptions::PyOSError::new_err(e.to_string());
    };
    let text = e.to_string();
    let suffix = format!(" (os error {code})");
    let strerror = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
    pyo3::exceptions::PyOSError::new_err((code, strerror))
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
