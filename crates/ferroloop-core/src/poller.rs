//! Readiness of file descriptors, as the event loop sees it.
//!
//! Invariants:
//! - `interests` holds exactly the descriptors registered with the OS selector, each with a
//!   non-empty interest; setting an empty interest deregisters the descriptor.
//! - The waker's descriptor is registered for reading from construction to drop and is never
//!   reported to the caller: a wake-up only ends the wait.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::{Events, Selector, WakeFd};

/// Which readiness a descriptor is watched for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const NONE: Self = Self { read: false, write: false };

    #[must_use]
    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }
}

/// Wakes a poller blocked in [`Poller::poll`] from any thread.
pub struct Waker {
    fd: WakeFd,
}

impl Waker {
    pub fn wake(&self) {
        self.fd.wake();
    }
}

/// One readiness record from the last poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub fd: RawFd,
    pub readable: bool,
    pub writable: bool,
}

pub struct Poller {
    /// The OS selector (epoll on Linux).
    selector: Selector,
    /// Reused buffer for the selector's results.
    events: Events,
    /// What each registered descriptor is watched for (see the module invariants).
    interests: HashMap<RawFd, Interest>,
    /// Shared with threads that schedule work (`call_soon_threadsafe`).
    waker: Arc<Waker>,
}

impl Poller {
    /// # Errors
    /// When the OS refuses a selector or an eventfd (out of descriptors).
    pub fn new() -> io::Result<Self> {
        let selector = Selector::new()?;
        let wake_fd = WakeFd::new()?;
        selector.add(wake_fd.raw(), Interest { read: true, write: false })?;
        Ok(Self {
            selector,
            events: Events::with_capacity(256),
            interests: HashMap::new(),
            waker: Arc::new(Waker { fd: wake_fd }),
        })
    }

    #[must_use]
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    #[must_use]
    pub fn interest(&self, fd: RawFd) -> Interest {
        self.interests.get(&fd).copied().unwrap_or_default()
    }

    /// Watches `fd` for exactly `interest` from now on; an empty interest stops watching it.
    ///
    /// # Errors
    /// The OS's error: `EBADF` for a closed descriptor, `EPERM` for a regular file.
    pub fn set_interest(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let old = self.interest(fd);
        if old == interest {
            return Ok(());
        }
        if interest.is_empty() {
            self.interests.remove(&fd);
            // The descriptor may already be closed, which removed it from epoll: not an error.
            match self.selector.delete(fd) {
                Err(e) if e.raw_os_error() != Some(libc::EBADF) && e.raw_os_error() != Some(libc::ENOENT) => {
                    return Err(e)
                }
                _ => return Ok(()),
            }
        }
        if old.is_empty() {
            match self.selector.add(fd, interest) {
                // A descriptor closed and reused without being unregistered is still in epoll.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => self.selector.modify(fd, interest)?,
                r => r?,
            }
        } else {
            match self.selector.modify(fd, interest) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.selector.add(fd, interest)?,
                r => r?,
            }
        }
        self.interests.insert(fd, interest);
        Ok(())
    }

    /// Forgets every descriptor, without touching the OS (used when the loop closes).
    pub fn clear(&mut self) {
        for fd in std::mem::take(&mut self.interests).into_keys() {
            let _ = self.selector.delete(fd);
        }
    }

    /// Waits for readiness at most `timeout` (`None`: until something happens). Returns how many
    /// records [`Poller::ready`] yields; a wait cut short by a signal returns 0.
    ///
    /// # Errors
    /// The selector's error other than `EINTR`.
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.selector.select(&mut self.events, timeout)?;
        let wake = self.waker.fd.raw();
        let mut n = 0;
        for (fd, _, _) in self.events.iter() {
            if fd == wake {
                self.waker.fd.drain();
            } else {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The readiness found by the last poll, masked by what each descriptor is watched for now.
    pub fn ready(&self) -> impl Iterator<Item = Readiness> + '_ {
        let wake = self.waker.fd.raw();
        self.events.iter().filter_map(move |(fd, r, w)| {
            if fd == wake {
                return None;
            }
            let interest = self.interest(fd);
            let (readable, writable) = (r && interest.read, w && interest.write);
            (readable || writable).then_some(Readiness { fd, readable, writable })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn level_triggered_until_drained() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut p = Poller::new().unwrap();
        p.set_interest(b.as_raw_fd(), Interest { read: true, write: false }).unwrap();
        assert_eq!(p.poll(Some(Duration::ZERO)).unwrap(), 0);
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        for _ in 0..2 {
            assert_eq!(p.poll(Some(Duration::ZERO)).unwrap(), 1);
            let r: Vec<_> = p.ready().collect();
            assert_eq!(r, vec![Readiness { fd: b.as_raw_fd(), readable: true, writable: false }]);
        }
        p.set_interest(b.as_raw_fd(), Interest::NONE).unwrap();
        assert_eq!(p.poll(Some(Duration::ZERO)).unwrap(), 0);
    }

    #[test]
    fn waker_ends_a_wait_from_another_thread() {
        let mut p = Poller::new().unwrap();
        let w = p.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        assert_eq!(p.poll(Some(Duration::from_secs(10))).unwrap(), 0);
        t.join().unwrap();
        // Drained: the next poll does not return at once because of the old wake-up.
        let start = std::time::Instant::now();
        p.poll(Some(Duration::from_millis(30))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn write_interest_and_modify() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut p = Poller::new().unwrap();
        let fd = a.as_raw_fd();
        p.set_interest(fd, Interest { read: true, write: true }).unwrap();
        p.poll(Some(Duration::ZERO)).unwrap();
        let r: Vec<_> = p.ready().collect();
        assert_eq!(r, vec![Readiness { fd, readable: false, writable: true }]);
        p.set_interest(fd, Interest { read: true, write: false }).unwrap();
        assert_eq!(p.poll(Some(Duration::ZERO)).unwrap(), 0);
        assert!(p.set_interest(-1, Interest { read: true, write: false }).is_err());
    }
}
