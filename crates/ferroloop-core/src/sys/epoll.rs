//! The Linux backend: epoll (level-triggered, or edge-triggered on request), and an eventfd as
//! the waker.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::poller::Interest;

pub struct Selector {
    /// The epoll instance; closed when the selector is dropped.
    epfd: OwnedFd,
}

fn epoll_bits(interest: Interest, edge: bool) -> u32 {
    let mut bits = if edge { libc::EPOLLET as u32 } else { 0 };
    if interest.read {
        bits |= libc::EPOLLIN as u32;
    }
    if interest.write {
        bits |= libc::EPOLLOUT as u32;
    }
    bits
}

impl Selector {
    pub fn new() -> io::Result<Self> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 returned a fresh descriptor that nothing else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { epfd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: Interest, edge: bool, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: epoll_bits(interest, edge), u64: token };
        syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &raw mut ev))?;
        Ok(())
    }

    /// Registers `fd`; its events carry `token`. An edge-triggered registration reports a
    /// direction only when it becomes ready (and at once if it is ready now).
    pub fn add(&self, fd: RawFd, interest: Interest, edge: bool, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, edge, token)
    }

    /// Changes the registration of `fd` (reporting at once what is ready now).
    pub fn modify(&self, fd: RawFd, interest: Interest, edge: bool, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, edge, token)
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, Interest::NONE, false, 0)
    }

    pub fn select(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        // epoll_wait counts in milliseconds: round up, so a timer is never woken for too early.
        let ms = match timeout {
            None => -1,
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        events.len = 0;
        let cap = libc::c_int::try_from(events.buf.len()).unwrap_or(libc::c_int::MAX);
        // epoll_pwait without a signal mask is epoll_wait, and exists on every architecture. The
        // kernel's signal set is 8 bytes (not glibc's `sigset_t`), its size a full `size_t`: a
        // bare `8` would leave the register's upper half undefined through the variadic call.
        let no_mask = std::ptr::null::<libc::sigset_t>();
        let sigsetsize: libc::size_t = 8;
        match raw_syscall!(SYS_epoll_pwait(
            self.epfd.as_raw_fd(),
            events.buf.as_mut_ptr(),
            cap,
            ms,
            no_mask,
            sigsetsize
        )) {
            Ok(n) => {
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                let n = n as usize;
                events.len = n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

pub struct Events {
    /// Storage handed to epoll_wait; its length is the most events one wait returns.
    buf: Vec<libc::epoll_event>,
    /// How many entries of `buf` the last wait filled.
    len: usize,
}

impl Events {
    pub fn with_capacity(cap: usize) -> Self {
        Self { buf: vec![libc::epoll_event { events: 0, u64: 0 }; cap.max(1)], len: 0 }
    }

    /// `(token, readable, writable)` for each event of the last wait. An error or hang-up counts as
    /// both readable and writable, so whichever callback is registered gets to see it.
    pub fn iter(&self) -> impl Iterator<Item = (u64, bool, bool)> + '_ {
        self.buf[..self.len].iter().map(|ev| {
            let bits = ev.events;
            let readable = bits & !(libc::EPOLLOUT as u32) != 0;
            let writable = bits & !(libc::EPOLLIN as u32) != 0;
            (ev.u64, readable, writable)
        })
    }
}

/// An eventfd: `wake` makes it readable from any thread; `drain` resets it.
pub struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    pub fn new() -> io::Result<Self> {
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // A full counter (EAGAIN) already means "wake up", so the result is not needed.
        let _ = syscall!(write(self.fd.as_raw_fd(), (&raw const one).cast(), 8));
    }

    pub fn drain(&self) {
        let mut buf: u64 = 0;
        let _ = syscall!(read(self.fd.as_raw_fd(), (&raw mut buf).cast(), 8));
    }
}
