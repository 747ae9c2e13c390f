//! Readiness of file descriptors, as the event loop sees it.
//!
//! Each direction (reading, writing) of a descriptor is watched in one of two [`Mode`]s:
//!
//! - [`Mode::Level`]: reported at every poll while the descriptor is ready (asyncio's
//!   `add_reader`, native transports). The descriptor is registered level-triggered; when its last
//!   wanted direction goes, it is deregistered (`EPOLL_CTL_DEL`), as asyncio's selector does.
//! - [`Mode::Once`]: a waiter that registered only after the operation it waits to retry would
//!   block (a pending `loop.sock_recv`). While no direction of the descriptor is in level mode,
//!   it is registered edge-triggered, and the registration is kept when the waiter goes: a
//!   socket waited on again costs no system call at all, where asyncio's selector loop makes an
//!   `ADD` and a `DEL` per wait. Edge-triggered is exact for such waiters: whatever arrives after
//!   the call that would block is reported, and what arrived earlier was found by that call.
//!   A descriptor with a level direction is registered level-triggered for both directions.
//!
//! A registration kept without a waiter is unsafe to trust once its descriptor may have been
//! closed: closing removes it from epoll (or, if the file stays open through another descriptor
//! or process, leaves it behind under the old number), and the number may be reused. So:
//!
//! - A once-waiter is registered without a system call only when the caller vouches (`trusted`)
//!   that the descriptor is the same open file as when it last registered it (the loop checks
//!   that the same, still open, Python socket object asks). Otherwise the registration is
//!   verified with a real `EPOLL_CTL_MOD`, falling back to `EPOLL_CTL_ADD` on `ENOENT`: a reused
//!   number is never left unregistered.
//! - Every registration carries a token: the descriptor and a generation, new at each
//!   `EPOLL_CTL_ADD`. A report under an old generation comes from a registration left behind
//!   by a closed descriptor: it is never taken for the number's new owner.
//! - Reports nobody wants (a kept registration whose socket got data while nobody waited, an
//!   old generation) are counted; when they outnumber the registrations (plus a margin), the
//!   epoll instance is rebuilt from the wanted registrations alone, which drops every kept and
//!   left-behind registration. Being edge-triggered, these report once per change of state of
//!   their file, never in a loop, and the rebuild bounds their number.
//! - The waker's descriptor is registered for reading from construction to drop and is never
//!   reported to the caller: a wake-up only ends the wait.
//!
//! Invariants, for every entry of `entries` between calls:
//! - `level` and `once` are disjoint.
//! - `level` not empty ⇒ `kernel == Level(level ∪ once)`, or `Absent` when a removal found the
//!   descriptor closed.
//! - `level` empty, `once` not empty ⇒ `kernel == Edge(m)` with `m ⊇ once`, or `Absent` when the
//!   descriptor turned out to be closed (its waiter then waits forever, as with asyncio).
//! - Both empty ⇒ `kernel` is `Edge(_)` (kept) or the entry is gone.
//! - `gen` is the generation of the registration's token (meaningless while `Absent`).
//!
//! The file is longer than about 500 lines because its unit tests (the invariants above, checked
//! against a real epoll) sit beside the code; the code itself is about 400 lines.

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
    /// A waiter registered after the call it retries would block; cheap to add and remove.
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
    /// Registered edge-triggered for these directions.
    Edge(Interest),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Directions watched in level mode.
    level: Interest,
    /// Directions with a once-waiter.
    once: Interest,
    kernel: Kernel,
    /// The generation in the registration's token.
    gen: u32,
}

const ABSENT: Entry = Entry { level: Interest::NONE, once: Interest::NONE, kernel: Kernel::Absent, gen: 0 };

/// Unwanted reports tolerated beyond one per registration before the epoll instance is rebuilt.
const UNWANTED_MARGIN: usize = 64;

/// `EBADF`, `ENOENT` or `EPERM` from `epoll_ctl` on a descriptor the poller watched: it was
/// closed (and its number is free, or reused by something epoll does not take).
fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOENT | libc::EPERM))
}

#[allow(clippy::cast_sign_loss)]
fn token(fd: RawFd, gen: u32) -> u64 {
    (u64::from(gen) << 32) | u64::from(fd as u32)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
fn untoken(token: u64) -> (RawFd, u32) {
    (token as u32 as RawFd, (token >> 32) as u32)
}

pub struct Poller {
    /// The OS selector (epoll on Linux).
    selector: Selector,
    /// Reused buffer for the selector's results.
    events: Events,
    /// Every descriptor watched, or kept registered (see the module invariants).
    entries: FdMap<Entry>,
    /// The wanted readiness found by the last poll.
    ready: Vec<Readiness>,
    /// The generation of the next `EPOLL_CTL_ADD` (never 0, the waker's).
    next_gen: u32,
    /// Reports nobody wanted since the epoll instance was (re)built.
    unwanted: usize,
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
        selector.add(wake_fd.raw(), Interest::READ, false, token(wake_fd.raw(), 0))?;
        Ok(Self {
            selector,
            events: Events::with_capacity(256),
            entries: FdMap::default(),
            ready: Vec::new(),
            next_gen: 1,
            unwanted: 0,
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
    /// (`None`). `trusted` (once-waiters only): the caller vouches that `fd` is the same open
    /// file as when it last watched it, so a kept registration is used as is. Stopping never
    /// fails because the descriptor was closed meanwhile.
    ///
    /// # Errors
    /// The OS's error when starting to watch: `EBADF` for a closed descriptor, `EPERM` for a
    /// regular file; the previous state is kept then.
    pub fn watch(&mut self, fd: RawFd, write: bool, mode: Option<Mode>, trusted: bool) -> io::Result<()> {
        let bit = Interest::direction(write);
        let e = self.entries.get(&fd).copied().unwrap_or(ABSENT);
        let (mut level, mut once) = (e.level.without(bit), e.once.without(bit));
        match mode {
            Some(Mode::Level) => level = level.union(bit),
            Some(Mode::Once) => once = once.union(bit),
            None => {}
        }
        let trusted = trusted && mode == Some(Mode::Once);
        self.apply(fd, e, level, once, trusted, mode.is_none())
    }

    /// Brings the kernel in line with the wanted `level` and `once` directions of `fd`, whose
    /// entry was `e`. `trusted`: a kept edge-triggered registration needs no verification.
    /// `removing`: a closed descriptor is not an error.
    fn apply(
        &mut self,
        fd: RawFd,
        e: Entry,
        level: Interest,
        once: Interest,
        trusted: bool,
        removing: bool,
    ) -> io::Result<()> {
        let (kernel, gen) = if !level.is_empty() {
            let m = level.union(once);
            if e.kernel == Kernel::Level(m) {
                (e.kernel, e.gen)
            } else {
                self.register(fd, e, Kernel::Level(m), removing)?
            }
        } else if !once.is_empty() {
            match e.kernel {
                // Edge-triggered keeps reporting whatever the waiters before wanted.
                Kernel::Edge(m) if trusted && m.contains(once) => (e.kernel, e.gen),
                Kernel::Edge(m) if trusted => self.register(fd, e, Kernel::Edge(m.union(once)), removing)?,
                Kernel::Edge(_) if removing => (e.kernel, e.gen),
                _ => self.register(fd, e, Kernel::Edge(once), removing)?,
            }
        } else {
            match e.kernel {
                Kernel::Level(_) => {
                    #[cfg(test)]
                    self.ctl_calls.set(self.ctl_calls.get() + 1);
                    // A descriptor closed behind the poller's back is already out of epoll.
                    match self.selector.delete(fd) {
                        Err(err) if !is_gone(&err) => return Err(err),
                        _ => (Kernel::Absent, 0),
                    }
                }
                k => (k, e.gen),
            }
        };
        if level.is_empty() && once.is_empty() && kernel == Kernel::Absent {
            self.entries.remove(&fd);
        } else {
            self.entries.insert(fd, Entry { level, once, kernel, gen });
        }
        Ok(())
    }

    /// Registers `fd` as `want` (`Level` or `Edge`), whatever the kernel held before (`e`);
    /// returns the new kernel state and generation. When `removing`, a closed descriptor yields
    /// `Absent`.
    fn register(&mut self, fd: RawFd, e: Entry, want: Kernel, removing: bool) -> io::Result<(Kernel, u32)> {
        #[cfg(test)]
        self.ctl_calls.set(self.ctl_calls.get() + 1);
        let (interest, edge) = match want {
            Kernel::Level(m) => (m, false),
            Kernel::Edge(m) => (m, true),
            Kernel::Absent => return Ok((Kernel::Absent, 0)),
        };
        let res = if e.kernel == Kernel::Absent {
            self.add(fd, interest, edge)
        } else {
            match self.selector.modify(fd, interest, edge, token(fd, e.gen)) {
                Ok(()) => Ok(e.gen),
                // Closed since, and the number reused: the new file is not registered yet.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => self.add(fd, interest, edge),
                Err(err) => Err(err),
            }
        };
        match res {
            Ok(gen) => Ok((want, gen)),
            Err(err) if removing && is_gone(&err) => Ok((Kernel::Absent, 0)),
            Err(err) => Err(err),
        }
    }

    /// `EPOLL_CTL_ADD` under a new generation; returns it.
    fn add(&mut self, fd: RawFd, interest: Interest, edge: bool) -> io::Result<u32> {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
        match self.selector.add(fd, interest, edge, token(fd, gen)) {
            // Left behind by a closed descriptor whose file came back under the same number
            // (a `dup`): take it over.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.selector.modify(fd, interest, edge, token(fd, gen))?;
            }
            r => r?,
        }
        Ok(gen)
    }

    /// Forgets every descriptor, deregistering those still registered.
    pub fn clear(&mut self) {
        for (fd, e) in std::mem::take(&mut self.entries) {
            if e.kernel != Kernel::Absent {
                let _ = self.selector.delete(fd);
            }
        }
        self.ready.clear();
    }

    /// Replaces the epoll instance by one holding only the wanted registrations: drops kept
    /// registrations and those left behind by closed descriptors (see the module docs). A
    /// descriptor found closed is marked `Absent` (its waiter waits forever, as on asyncio).
    fn rebuild(&mut self) {
        self.unwanted = 0;
        let Ok(selector) = Selector::new() else { return };
        let wake = self.waker.fd.raw();
        if selector.add(wake, Interest::READ, false, token(wake, 0)).is_err() {
            return;
        }
        let old = std::mem::replace(&mut self.selector, selector);
        let entries = std::mem::take(&mut self.entries);
        for (fd, e) in entries {
            if e.level.is_empty() && e.once.is_empty() {
                continue;
            }
            let want = if e.level.is_empty() { Kernel::Edge(e.once) } else { Kernel::Level(e.level.union(e.once)) };
            let (kernel, gen) = self.register(fd, ABSENT, want, true).unwrap_or((Kernel::Absent, 0));
            self.entries.insert(fd, Entry { kernel, gen, ..e });
        }
        drop(old);
    }

    /// Waits for readiness at most `timeout` (`None`: until something happens). Returns how many
    /// records [`Poller::ready`] yields; a wait cut short by a signal returns 0.
    ///
    /// # Errors
    /// The selector's error other than `EINTR`.
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.ready.clear();
        self.selector.select(&mut self.events, timeout)?;
        let wake = token(self.waker.fd.raw(), 0);
        for (tok, r, w) in self.events.iter() {
            if tok == wake {
                self.waker.fd.drain();
                continue;
            }
            let (fd, gen) = untoken(tok);
            let want = match self.entries.get(&fd) {
                Some(e) if e.gen == gen && e.kernel != Kernel::Absent => e.level.union(e.once),
                _ => Interest::NONE,
            };
            let (readable, writable) = (r && want.read, w && want.write);
            if readable || writable {
                self.ready.push(Readiness { fd, readable, writable });
            } else {
                self.unwanted += 1;
            }
        }
        if self.unwanted > UNWANTED_MARGIN + self.entries.len() {
            self.rebuild();
        }
        Ok(self.ready.len())
    }

    /// The wanted readiness found by the last poll. A watcher removed since is still listed:
    /// the caller checks its own state.
    pub fn ready(&self) -> impl Iterator<Item = Readiness> + '_ {
        self.ready.iter().copied()
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

    fn send(s: &UnixStream, data: &[u8]) {
        std::io::Write::write_all(&mut &*s, data).unwrap();
    }

    fn drain(s: &UnixStream) {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0; 4096];
        while std::io::Read::read(&mut &*s, &mut buf).is_ok_and(|n| n > 0) {}
    }

    const R: Readiness = Readiness { fd: 0, readable: true, writable: false };

    /// A pair whose second end is numbered `fd` (the lowest free numbers are reused).
    fn pair_on(fd: RawFd) -> (UnixStream, UnixStream) {
        let (c, d) = UnixStream::pair().unwrap();
        let (writer, reader) = if d.as_raw_fd() == fd { (c, d) } else { (d, c) };
        assert_eq!(reader.as_raw_fd(), fd, "the number was not reused");
        (writer, reader)
    }

    #[test]
    fn once_waiter_sees_what_arrives_after_it_registered() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        assert_eq!(ready_now(&mut p), vec![]);
        send(&a, b"x");
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
        // Edge-triggered: not again until more arrives.
        assert_eq!(ready_now(&mut p), vec![]);
        send(&a, b"y");
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
        p.watch(fd, false, None, false).unwrap();
        assert_eq!(p.interest(fd), Interest::NONE);
    }

    #[test]
    fn trusted_waits_cost_no_system_call() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        for i in 0..5 {
            let calls = p.ctl_calls.get();
            p.watch(fd, false, Some(Mode::Once), i > 0).unwrap();
            send(&a, b"x");
            assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }], "round {i}");
            p.watch(fd, false, None, false).unwrap();
            drain(&b);
            assert_eq!(ready_now(&mut p), vec![]);
            assert_eq!(p.ctl_calls.get() - calls, usize::from(i == 0), "round {i}");
        }
        // Untrusted: verified with one call.
        let calls = p.ctl_calls.get();
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        assert_eq!(p.ctl_calls.get() - calls, 1);
    }

    #[test]
    fn reports_nobody_wants_are_masked() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        p.watch(fd, false, None, false).unwrap();
        send(&a, b"x");
        assert_eq!(ready_now(&mut p), vec![]);
        assert_eq!(p.unwanted, 1);
        // A new waiter, whose caller found the data already there (its call did not block),
        // then waits for more.
        drain(&b);
        p.watch(fd, false, Some(Mode::Once), true).unwrap();
        assert_eq!(ready_now(&mut p), vec![]);
        send(&a, b"y");
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
    }

    #[test]
    fn kept_registration_of_a_closed_and_reused_number() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        send(&a, b"x");
        assert_eq!(ready_now(&mut p).len(), 1);
        p.watch(fd, false, None, false).unwrap();
        drop((a, b));
        let (writer, reader) = pair_on(fd);
        for mode in [Mode::Once, Mode::Level] {
            p.watch(fd, false, Some(mode), false).unwrap();
            send(&writer, b"y");
            assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }], "{mode:?}");
            drain(&reader);
            p.watch(fd, false, None, false).unwrap();
        }
    }

    #[test]
    fn waiter_on_a_reused_number_is_registered_even_if_the_state_looks_right() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        // A waiter whose socket is closed while it waits (its future never completes).
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        drop((a, b));
        let (writer, _reader) = pair_on(fd);
        // Recorded: registered for reading, as wanted. The new waiter (not vouched for)
        // registers anyway.
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        send(&writer, b"y");
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
    }

    #[test]
    fn registration_left_behind_is_never_taken_for_the_new_owner_and_is_dropped() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let dup = b.try_clone().unwrap();
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        p.watch(fd, false, None, false).unwrap();
        // Closed while the file stays open through `dup`: epoll keeps the registration.
        drop(b);
        let (writer, reader) = pair_on(fd);
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        // The old file's reports carry the old generation: not for the new owner.
        send(&a, b"old");
        assert_eq!(ready_now(&mut p), vec![]);
        send(&writer, b"new");
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
        drain(&reader);
        // Enough unwanted reports rebuild the epoll instance without the left-behind one...
        for _ in 0..=UNWANTED_MARGIN + 1 {
            send(&a, b"old");
            ready_now(&mut p);
        }
        assert!(p.unwanted <= 1);
        send(&a, b"old");
        assert_eq!(p.poll(Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(p.unwanted, 0);
        // ... and with the wanted one.
        send(&writer, b"new");
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
        drop(dup);
    }

    #[test]
    fn rebuild_keeps_level_watchers_and_waiters() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let (c, d) = UnixStream::pair().unwrap();
        p.set_interest(b.as_raw_fd(), Interest::READ).unwrap();
        p.watch(d.as_raw_fd(), false, Some(Mode::Once), false).unwrap();
        p.rebuild();
        send(&a, b"x");
        send(&c, b"x");
        let mut got = ready_now(&mut p);
        got.sort_by_key(|r| r.fd);
        assert_eq!(got, vec![Readiness { fd: b.as_raw_fd(), ..R }, Readiness { fd: d.as_raw_fd(), ..R }]);
        // Level-triggered still.
        assert_eq!(ready_now(&mut p), vec![Readiness { fd: b.as_raw_fd(), ..R }]);
    }

    #[test]
    fn level_and_once_on_one_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new().unwrap();
        p.watch(fd, true, Some(Mode::Level), false).unwrap();
        p.watch(fd, false, Some(Mode::Once), false).unwrap();
        send(&a, b"x");
        for _ in 0..2 {
            assert_eq!(ready_now(&mut p), vec![Readiness { fd, readable: true, writable: true }]);
        }
        // The waiter is done: the level writer alone remains, without the read direction.
        p.watch(fd, false, None, false).unwrap();
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, readable: false, writable: true }]);
        // The writer goes, a waiter comes back: edge-triggered again, reporting what is ready.
        p.watch(fd, false, Some(Mode::Once), true).unwrap();
        p.watch(fd, true, None, false).unwrap();
        assert_eq!(ready_now(&mut p), vec![Readiness { fd, ..R }]);
        assert_eq!(ready_now(&mut p), vec![]);
        p.watch(fd, false, None, false).unwrap();
    }

    #[test]
    fn watching_a_closed_descriptor_fails_and_removing_it_does_not() {
        let mut p = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        p.watch(fd, false, Some(Mode::Level), false).unwrap();
        drop((a, b));
        p.watch(fd, false, None, false).unwrap();
        assert_eq!(p.interest(fd), Interest::NONE);
        assert!(p.watch(fd, false, Some(Mode::Once), false).is_err());
        assert!(p.watch(fd, false, Some(Mode::Level), false).is_err());
        assert_eq!(p.interest(fd), Interest::NONE);
    }
}
