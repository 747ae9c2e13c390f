//! POSIX byte-stream and datagram calls on raw descriptors, as `io::Result`s, and the few
//! descriptor queries transports make (`file_type`, `set_nonblocking`).

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// `recv(2)` into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes.
    unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len()) }
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
    let null = std::ptr::null_mut::<libc::c_void>();
    let n = raw_syscall!(SYS_recvfrom(fd, ptr, len, 0, null, null))?;
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    Ok(n as usize)
}

/// `send(2)` without SIGPIPE, from memory Rust does not own (a Python object's buffer).
///
/// # Safety
/// `ptr` must be valid for reads of `len` bytes for the duration of the call.
pub unsafe fn send_raw(fd: RawFd, ptr: *const u8, len: usize) -> io::Result<usize> {
    let null = std::ptr::null::<libc::c_void>();
    let n = raw_syscall!(SYS_sendto(fd, ptr, len, libc::MSG_NOSIGNAL, null, 0))?;
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
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

/// Turns Nagle's algorithm off (`TCP_NODELAY`), as asyncio does for its TCP transports.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    #[allow(clippy::cast_possible_truncation)]
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&raw const on).cast(), len))?;
    Ok(())
}

/// A socket's address family (`getsockopt(SO_DOMAIN)`): `AF_UNIX`, `AF_INET`, ...
pub fn socket_domain(fd: RawFd) -> io::Result<i32> {
    let mut domain: libc::c_int = 0;
    #[allow(clippy::cast_possible_truncation)]
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, (&raw mut domain).cast(), &raw mut len))?;
    Ok(domain)
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

/// `write(2)` of one buffer, for pipes and other non-sockets.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let n = syscall!(write(fd, buf.as_ptr().cast(), buf.len()))?;
    #[allow(clippy::cast_sign_loss)]
    Ok(n as usize)
}

/// What kind of file a descriptor refers to, as far as pipe transports care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// A pipe or a FIFO (`S_ISFIFO`).
    Fifo,
    /// A socket (`S_ISSOCK`).
    Socket,
    /// A character device, such as a terminal or a pseudo-terminal (`S_ISCHR`).
    CharDevice,
    /// Anything else: regular files, directories, block devices.
    Other,
}

/// `fstat(2)`'s file type of `fd`.
pub fn file_type(fd: RawFd) -> io::Result<FileType> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    syscall!(fstat(fd, st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded, so it filled in the whole structure.
    let mode = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    Ok(match mode {
        libc::S_IFIFO => FileType::Fifo,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        _ => FileType::Other,
    })
}

/// Puts `fd` in non-blocking mode (`O_NONBLOCK`), as `os.set_blocking(fd, False)` does.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    if flags & libc::O_NONBLOCK == 0 {
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        syscall!(pipe(fds.as_mut_ptr())).unwrap();
        // SAFETY: pipe() returned two fresh descriptors that nothing else owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn file_types() {
        let (r, w) = pipe();
        assert_eq!(file_type(r.as_raw_fd()).unwrap(), FileType::Fifo);
        assert_eq!(file_type(w.as_raw_fd()).unwrap(), FileType::Fifo);
        let mut sv = [0; 2];
        syscall!(socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr())).unwrap();
        // SAFETY: socketpair() returned two fresh descriptors that nothing else owns.
        let (a, _b) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        assert_eq!(file_type(a.as_raw_fd()).unwrap(), FileType::Socket);
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(file_type(null.as_raw_fd()).unwrap(), FileType::CharDevice);
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(file_type(exe.as_raw_fd()).unwrap(), FileType::Other);
        assert_eq!(file_type(-1).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn nonblocking_pipe_reports_would_block() {
        let (r, w) = pipe();
        set_nonblocking(r.as_raw_fd()).unwrap();
        set_nonblocking(r.as_raw_fd()).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(write(w.as_raw_fd(), b"abc").unwrap(), 3);
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        drop(w);
        assert_eq!(read(r.as_raw_fd(), &mut buf).unwrap(), 0);
    }
}
