//! Operating-system backends. Each backend file exports the same names:
//!
//! - `Selector`: a readiness selector. `add` and `modify` take a file descriptor, an
//!   [`Interest`](crate::poller::Interest), an edge-triggered flag (otherwise level-triggered)
//!   and a `u64` token its events carry; `delete` takes the descriptor; `select` fills an
//!   `Events` buffer, waiting at most the given timeout (`None` waits forever) and returning
//!   `Ok(0)` when a signal interrupted the wait (the caller then runs Python's signal handlers).
//!   The selector is keyed by (descriptor number, open file) as epoll is: closing a descriptor
//!   whose file stays open elsewhere leaves its registration behind, reporting under its token.
//! - `Events`: a reusable buffer of readiness records, iterated as `(token, readable, writable)`.
//! - `WakeFd`: a file descriptor another thread can make readable (`wake`) and the loop drains.
//!
//! Level-triggered is a requirement, not a taste, for `add_reader` and transports: asyncio calls
//! the callback on every iteration while the descriptor stays readable, whether or not the callback
//! drained it. Edge-triggered serves waiters that only wait after the call they retry would block
//! (the socket coroutines): see `poller`.

/// Turns a libc call returning -1 on error into an `io::Result`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller passes arguments valid for this libc function (see each call site).
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// The same through `syscall(2)`, for the calls made per request: libc's own wrappers of
/// `recv`, `send` and `epoll_wait` are thread-cancellation points and bracket the system call
/// with two calls switching cancellation on and off (about a hundred instructions per request
/// by callgrind), which a loop that never cancels threads does not need.
macro_rules! raw_syscall {
    ($nr:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller passes arguments valid for this system call (see each call site).
        #[allow(unused_unsafe, clippy::cast_lossless)]
        let res = unsafe { libc::syscall(libc::$nr, $($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod unix;

#[cfg(target_os = "linux")]
mod epoll;
#[cfg(target_os = "linux")]
pub use epoll::{Events, Selector, WakeFd};

#[cfg(not(target_os = "linux"))]
compile_error!("ferroloop has only its epoll backend so far: Linux is required");
