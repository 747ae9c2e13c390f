//! POSIX byte-stream and datagram calls on raw descriptors, as `io::Result`s.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// `recv(2)` into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let n = syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

/// `send(2)` without SIGPIPE: a closed peer is an `EPIPE` error, not a signal.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` readable bytes.
    unsafe { send_raw(fd, buf.as_ptr(), buf.len()) }
}

/// `recv(2)` into memory Rust does not own (a Python object's buffer); `Ok(0)` is end of stream.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes for the duration of the call.
pub unsafe fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    let n = syscall!(recv(fd, ptr.cast(), len, 0))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

/// `send(2)` without SIGPIPE, from memory Rust does not own (a Python object's buffer).
///
/// # Safety
/// `ptr` must be valid for reads of `len` bytes for the duration of the call.
pub unsafe fn send_raw(fd: RawFd, ptr: *const u8, len: usize) -> io::Result<usize> {
    let n = syscall!(send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

/// The pending error of a socket (`getsockopt(SO_ERROR)`), which reading also clears: how a
/// non-blocking `connect` ended. `Ok(0)`: no error.
pub fn take_socket_error(fd: RawFd) -> io::Result<i32> {
    let mut err: libc::c_int = 0;
    #[allow(clippy::cast_possible_truncation)]
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut err).cast(), &raw mut len))?;
    Ok(err)
}

/// `sendmsg(2)` of a gather list without SIGPIPE (a `writev` that also works on sockets only).
pub fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len() as _;
    let n = syscall!(sendmsg(fd, &raw const msg, libc::MSG_NOSIGNAL))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

/// `read(2)`, for pipes and other non-sockets.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let n = syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len()))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

/// `writev(2)`, for pipes and other non-sockets.
pub fn write_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let cnt = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
    let n = syscall!(writev(fd, bufs.as_ptr().cast(), cnt))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

/// `shutdown(fd, SHUT_WR)`: sends EOF to the peer.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    syscall!(shutdown(fd, libc::SHUT_WR))?;
    Ok(())
}
