//! Readiness of file descriptors, as the event loop sees it.
//!
//! Each direction (reading, writing) of a descriptor is watched in one of two [`Mode`]s:
//!
//! - [`Mode::Level`]: reported at every poll while the descriptor is ready (asyncio's
//!   `add_reader`, native transports). The descriptor is registered level-triggered; when its last
//!   wanted direction goes, it is deregistered (`EPOLL_CTL_DEL`), as asyncio's selector does.
//! - [`Mode::Once`]: a waiter for one readiness report (a pending `loop.sock_recv`). While no
//!   direction of the descriptor is in level mode, it is registered one-shot: the kernel disables
//!   the registration when it reports it, so a waiter that completes costs one system call in
//!   all (the `EPOLL_CTL_MOD` that armed it) where asyncio makes two (`ADD`, then `DEL`). A
//!   waiter not satisfied by the report (a spurious wake-up) is re-armed at the start of the next
//!   [`Poller::poll`]. Removing a waiter makes no system call: an armed registration reports at
//!   most once more, and that report is masked out. A descriptor with a level direction is
//!   registered level-triggered for both directions.
//!
//! Invariants, for every entry of `entries` between calls:
//! - `level` and `once` are disjoint.
//! - `level` not empty ⇒ `kernel == Level(level ∪ once)`, or `Absent` when a removal found the
//!   descriptor closed.
//! - `level` empty, `once` not empty ⇒ `kernel` is `Armed(m)` with `m ⊇ once`; or `Fired`, and
//!   the descriptor is in `fired` (re-armed by the next poll); or `Absent` when the descriptor
//!   turned out to be closed (its waiter then waits forever, as with asyncio's selector).
//! - Both empty ⇒ `kernel` is `Armed(_)` or `Fired`: a one-shot registration kept lazily. Its
//!   descriptor may have been closed since (which removes it from epoll) and the number reused, so
//!   such an entry is never trusted: the next watch of that number always makes a real
//!   `EPOLL_CTL_MOD`, falling back to `EPOLL_CTL_ADD` on `ENOENT`. Entries with nothing wanted and
//!   nothing registered are removed.
//! - Adding a once-waiter always makes a system call (`MOD`, or `ADD`), even when the recorded
//!   state already looks right, so a waiter is never left unregistered because the number's
//!   previous owner was closed behind the poller's back.
//! - A one-shot registration that outlives its descriptor number (the socket stays open through
//!   another descriptor or process) reports at most once and is then disabled by the kernel: it
//!   can never make the loop spin, unlike a level-triggered one.
//! - The waker's descriptor is registered for reading from construction to drop and is never
//!   reported to the caller: a wake-up only ends the wait.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::fd_map::FdMap;
use crate::sys::{Events, Selector, WakeFd};

/// Which readiness a descriptor is watched for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const NONE: Self = Self { read: false, write: false };
    pub const READ: Self = Self { read: true, write: false };
    pub const WRITE: Self = Self { read: false, write: true };

    /// One direction: writing if `write`, else reading.
    #[must_use]
    pub fn direction(write: bool) -> Self {
        if write {
            Self::WRITE
        } else {
            Self::READ
        }
    }

    #[must_use]
    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }

    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self { read: self.read || other.read, write: self.write || other.write }
    }

    #[must_use]
    pub fn without(self, other: Self) -> Self {
        Self { read: self.read && !other.read, write: self.write && !other.write }
    }

    #[must_use]
    pub fn contains(self, other: Self) -> bool {
        other.without(self).is_empty()
    }
}

/// How one direction of a descriptor is watched (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reported at every poll while ready.
    Level,
    /// A waiter for one report; cheap to add and remove.
    Once,
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

/// What the kernel holds for a descriptor, as far as the poller knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// Not registered by this poller.
    Absent,
    /// Registered level-triggered for these directions.
    Level(Interest),
    /// Registered one-shot for these directions, not reported yet.
    Armed(Interest),
    /// A one-shot registration the last poll reported: disabled by the kernel, still registered.
    Fired,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Directions watched in level mode.
    level: Interest,
    /// Directions with a once-waiter.
    once: Interest,
    kernel: Kernel,
}

const ABSENT: Entry = Entry { level: Interest::NONE, once: Interest::NONE, kernel: Kernel::Absent };

/// `EBADF`, `ENOENT` or `EPERM` from `epoll_ctl` on a descriptor the poller watched: it was
/// closed (and its number is free, or reused by something epoll does not take).
fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOENT | libc::EPERM))
}

pub struct Poller {
    /// The OS selector (epoll on Linux).
    selector: Selector,
    /// Reused buffer for the selector's results.
    events: Events,
    /// Every descriptor watched, or registered lazily (see the module invariants).
    entries: FdMap<Entry>,
    /// One-shot registrations the last poll reported, to re-arm if still wanted.
    fired: Vec<RawFd>,
    /// Shared with threads that schedule work (`call_soon_threadsafe`).
    waker: Arc<Waker>,
    /// `epoll_ctl` calls made (tests check the cost of each scheme).
    #[cfg(test)]
    ctl_calls: std::cell::Cell<usize>,
}

impl Poller {
    /// # Errors
    /// When the OS refuses a selector or an eventfd (out of descriptors).
    pub fn new() -> io::Result<Self> {
        let selector = Selector::new()?;
        let wake_fd = WakeFd::new()?;
        selector.add(wake_fd.raw(), Interest::READ, false)?;
        Ok(Self {
            selector,
            events: Events::with_capacity(256),
            entries: FdMap::default(),
            fired: Vec::new(),
            waker: Arc::new(Waker { fd: wake_fd }),
            #[cfg(test)]
            ctl_calls: std::cell::Cell::new(0),
        })
    }

    #[must_use]
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// The directions `fd` is watched for, in either mode.
    #[must_use]
    pub fn interest(&self, fd: RawFd) -> Interest {
        self.entries.get(&fd).map_or(Interest::NONE, |e| e.level.union(e.once))
    }

    /// Watches `fd` in level mode for exactly `interest` from now on (replacing any once-waiter
    /// in those directions); an empty interest stops the level watching.
    ///
    /// # Errors
    /// The OS's error: `EBADF` for a closed descriptor, `EPERM` for a regular file.
    pub fn set_interest(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let e = self.entries.get(&fd).copied().unwrap_or(ABSENT);
        let removing = e.level.contains(interest);
        self.apply(fd, e, interest, e.once.without(interest), false, removing)
    }

    /// Watches one direction of `fd` (writing if `write`) in `mode`, or stops watching it
    /// (`None`). Stopping never fails because the descriptor was closed meanwhile.
    ///
    /// # Errors
    /// The OS's error when starting to watch: `EBADF` for a closed descriptor, `EPERM` for a
    /// regular file; the previous state is kept then.
    pub fn watch(&mut self, fd: RawFd, write: bool, mode: Option<Mode>) -> io::Result<()> {
        let bit = Interest::direction(write);
        let e = self.entries.get(&fd).copied().unwrap_or(ABSENT);
        let (mut level, mut once) = (e.level.without(bit), e.once.without(bit));
        match mode {
            Some(Mode::Level) => level = level.union(bit),
            Some(Mode::Once) => once = once.union(bit),
            None => {}
        }
        self.apply(fd, e, level, once, mode == Some(Mode::Once), mode.is_none())
    }

    /// Brings the kernel in line with the wanted `level` and `once` directions of `fd`, whose
    /// entry was `e`. `verify`: register even if the recorded state looks right. `removing`: a
    /// closed descriptor is not an error.
    fn apply(
        &mut self,
        fd: RawFd,
        e: Entry,
        level: Interest,
        once: Interest,
        verify: bool,
        removing: bool,
    ) -> io::Result<()> {
        let kernel = if !level.is_empty() {
            let m = level.union(once);
            if e.kernel == Kernel::Level(m) {
                e.kernel
            } else {
                self.register(fd, e.kernel, m, false, removing)?
            }
        } else if !once.is_empty() {
            match e.kernel {
                Kernel::Armed(m) if !verify && m.contains(once) => e.kernel,
                Kernel::Fired if !verify => e.kernel,
                k => self.register(fd, k, once, true, removing)?,
            }
        } else {
            match e.kernel {
                Kernel::Level(_) => {
                    #[cfg(test)]
                    self.ctl_calls.set(self.ctl_calls.get() + 1);
                    // A descriptor closed behind the poller's back is already out of epoll.
                    match self.selector.delete(fd) {
                        Err(err) if !is_gone(&err) => return Err(err),
                        _ => Kernel::Absent,
                    }
                }
                k => k,
            }
        };
        if level.is_empty() && once.is_empty() && kernel == Kernel::Absent {
            self.entries.remove(&fd);
        } else {
            self.entries.insert(fd, Entry { level, once, kernel });
        }
        Ok(())
    }

    /// Registers `fd` for `interest` (one-shot or level), whatever the kernel held before;
    /// returns the new kernel state. When `removing`, a closed descriptor yields `Absent`.
    fn register(
        &self,
        fd: RawFd,
        before: Kernel,
        interest: Interest,
        oneshot: bool,
        removing: bool,
    ) -> io::Result<Kernel> {
        #[cfg(test)]
        self.ctl_calls.set(self.ctl_calls.get() + 1);
        let res = if before == Kernel::Absent {
            match self.selector.add(fd, interest, oneshot) {
                // Registered earlier and closed behind the poller's back while another
                // descriptor kept the file open: still in epoll.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => self.selector.modify(fd, interest, oneshot),
                r => r,
            }
        } else {
            match self.selector.modify(fd, interest, oneshot) {
                // Closed since, and the number reused: the new file is not registered yet.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.selector.add(fd, interest, oneshot),
                r => r,
            }
        };
        match res {
            Ok(()) if oneshot => Ok(Kernel::Armed(interest)),
            Ok(()) => Ok(Kernel::Level(interest)),
            Err(e) if removing && is_gone(&e) => Ok(Kernel::Absent),
            Err(e) => Err(e),
        }
    }

    /// Forgets every descriptor, deregistering those still registered.
    pub fn clear(&mut self) {
        for (fd, e) in std::mem::take(&mut self.entries) {
            if e.kernel != Kernel::Absent {
                let _ = self.selector.delete(fd);
            }
        }
        self.fired.clear();
    }

    /// Re-arms the one-shot registrations the last poll reported whose waiters still wait. A
    /// descriptor found closed is marked `Absent`: its waiter waits forever, as it would on
    /// asyncio's selector.
    fn rearm(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        for fd in fired.drain(..) {
            let Some(e) = self.entries.get(&fd).copied() else { continue };
            if e.kernel != Kernel::Fired || e.once.is_empty() {
                continue;
            }
            let kernel = self.register(fd, Kernel::Fired, e.once, true, true).unwrap_or(Kernel::Absent);
            self.entries.insert(fd, Entry { kernel, ..e });
        }
        self.fired = fired;
    }

    /// Waits for readiness at most `timeout` (`None`: until something happens). Returns how many
    /// records [`Poller::ready`] yields at most; a wait cut short by a signal returns 0.
    ///
    /// # Errors
    /// The selector's error other than `EINTR`.
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.rearm();
        self.selector.select(&mut self.events, timeout)?;
        let wake = self.waker.fd.raw();
        let mut n = 0;
        for (fd, _, _) in self.events.iter() {
            if fd == wake {
                self.waker.fd.drain();
                continue;
            }
            n += 1;
            if let Some(e) = self.entries.get_mut(&fd) {
                if let Kernel::Armed(_) = e.kernel {
                    e.kernel = Kernel::Fired;
                    self.fired.push(fd);
                }
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
    fn ready_now(p: &mut Poller) -> Vec<Readiness> {
        p.poll(Some(Duration::ZERO)).unwrap();
        p.ready().collect()
    }

    const R: Readiness = Readiness { fd: 0, readable: true, writable: false };

    #[test]
    fn once_waiter_is_reported_then_rearmed_while_it_waits() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        assert_eq!(ready_now(&mut p), vec![]);
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        // Still waiting (say the watcher's recv found nothing): re-armed and reported again.
        for _ in 0..3 {
            assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
        }
        // Satisfied: removed without a system call, and never reported again.
        let calls = p.ctl_calls.get();
        p.watch(fd, false, None).unwrap();
        assert_eq!(ready_now(&mut p), vec![]);
        assert_eq!(ready_now(&mut p), vec![]);
        assert_eq!(p.ctl_calls.get(), calls);
        assert_eq!(p.interest(fd), Interest::NONE);
    }

    #[test]
    fn once_waiter_costs_one_call_per_wait() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        for i in 0..5 {
            let calls = p.ctl_calls.get();
            p.watch(fd, false, Some(Mode::Once)).unwrap();
            std::io::Write::write_all(&mut &a, b"x").unwrap();
            assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }], "round {i}");
            p.watch(fd, false, None).unwrap();
            std::io::Read::read_exact(&mut &b, &mut [0]).unwrap();
            assert_eq!(ready_now(&mut p), vec![]);
            assert_eq!(p.ctl_calls.get() - calls, 1);
        }
    }

    #[test]
    fn waiter_removed_before_its_report_is_masked() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        p.watch(fd, false, None).unwrap();
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        assert_eq!(ready_now(&mut p), vec![]);
        // A new waiter is armed again, and sees the data.
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
    }

    #[test]
    fn lazily_kept_registration_of_a_closed_and_reused_number() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        assert_eq!(ready_now(&mut p).len(), 1);
        p.watch(fd, false, None).unwrap();
        drop((a, b));
        // The lowest free numbers are reused: one of the new pair takes the old number.
        let (c, d) = UnixStream::pair().unwrap();
        let (writer, reader) = if d.as_raw_fd() == fd { (c, d) } else { (d, c) };
        assert_eq!(reader.as_raw_fd(), fd);
        for mode in [Mode::Once, Mode::Level] {
            p.watch(fd, false, Some(mode)).unwrap();
            std::io::Write::write_all(&mut &writer, b"y").unwrap();
            assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }], "{mode:?}");
            std::io::Read::read_exact(&mut &reader, &mut [0]).unwrap();
            p.watch(fd, false, None).unwrap();
        }
    }

    #[test]
    fn waiter_on_a_reused_number_is_registered_even_if_the_state_looks_right() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        // A waiter whose socket is closed while it waits (its future never completes).
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        drop((a, b));
        let (c, d) = UnixStream::pair().unwrap();
        let (writer, reader) = if d.as_raw_fd() == fd { (c, d) } else { (d, c) };
        assert_eq!(reader.as_raw_fd(), fd);
        // Recorded: armed for reading, as wanted. The new waiter registers anyway.
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        std::io::Write::write_all(&mut &writer, b"y").unwrap();
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
    }

    #[test]
    fn once_registration_outliving_its_number_cannot_spin() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let dup = b.try_clone().unwrap();
        // Armed, then abandoned and closed: the registration survives through `dup`.
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        p.watch(fd, false, None).unwrap();
        drop(b);
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        // Reported once at most (masked: nobody waits), then disabled for good.
        assert_eq!(ready_now(&mut p), vec![]);
        assert_eq!(p.poll(Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(p.poll(Some(Duration::ZERO)).unwrap(), 0);
        drop(dup);
    }

    #[test]
    fn level_and_once_on_one_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        p.watch(fd, true, Some(Mode::Level)).unwrap();
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        for _ in 0..2 {
            assert_eq!(ready_now(&mut p), vec![Readiness { fd, readable: true, writable: true }]);
        }
        // The waiter is done: the level writer alone remains, without the read direction.
        p.watch(fd, false, None).unwrap();
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, readable: false, writable: true }]);
        // The writer goes, the waiter comes back: one-shot again.
        p.watch(fd, false, Some(Mode::Once)).unwrap();
        p.watch(fd, true, None).unwrap();
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
        p.watch(fd, false, None).unwrap();
        assert_eq!(ready_now(&mut p), vec![]);
    }

    #[test]
    fn watching_a_closed_descriptor_fails_and_removing_it_does_not() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        p.watch(fd, false, Some(Mode::Level)).unwrap();
        drop((a, b));
        p.watch(fd, false, None).unwrap();
        assert_eq!(p.interest(fd), Interest::NONE);
        assert!(p.watch(fd, false, Some(Mode::Once)).is_err());
        assert!(p.watch(fd, false, Some(Mode::Level)).is_err());
        assert_eq!(p.interest(fd), Interest::NONE);
    }
}
