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
    let n = syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
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
