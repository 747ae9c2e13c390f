//! Watching file descriptors: `add_reader`/`add_writer`'s callbacks, the native transports'
//! watchers and the socket operations' one-shot waits, on the core's poller; a descriptor has one
//! kind of watcher per direction.

use super::*;

impl EventLoop {
    pub(super) fn set_callback(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        write: bool,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed()?;
        let fileobj = fd;
        let fd = fileobj_to_fd(fileobj)?;
        self.check_not_native(py, fd)?;
        let handle = Py::new(py, Handle::new(self.handle_parts(py, callback, args, context)?))?;
        self.watch(py, fd, Watcher::Handle(handle.clone_ref(py)), write, false)?;
        if !fileobj.is_instance_of::<PyInt>() {
            let mut q = self.queues.borrow_mut(py);
            q.fileobjs.entry(fd).or_insert_with(|| fileobj.clone().unbind());
        }
        Ok(handle)
    }

    /// The descriptor `fileobj` stands for: its `fileno()`, or, once it has none (a closed
    /// socket), the descriptor it was registered for by `add_reader`/`add_writer`.
    pub(super) fn registered_fd(&self, py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        fileobj_to_fd(fileobj).or_else(|err| {
            let q = self.queues.borrow(py);
            q.fileobjs.iter().find(|(_, obj)| obj.is(fileobj)).map(|(fd, _)| *fd).ok_or(err)
        })
    }

    /// `RuntimeError` when a native transport owns `fd`, as asyncio's `_ensure_fd_no_transport`.
    pub(super) fn check_not_native(&self, py: Python<'_>, fd: RawFd) -> PyResult<()> {
        let q = self.queues.borrow(py);
        let native = |m: &FdMap<Watcher>| matches!(m.get(&fd), Some(Watcher::Native(..)));
        if native(&q.readers) || native(&q.writers) {
            return Err(PyRuntimeError::new_err(format!("File descriptor {fd} is used by transport")));
        }
        Ok(())
    }

    /// Changes what the poller watches for `fd` (`Poller::watch`). The loop's thread holds the
    /// poller while it waits in it with the GIL released; a change made then comes from another
    /// thread (asyncio's loops are not thread-safe, but a selector takes such a change, and
    /// programs rely on it: a transport closed from another thread): it is queued, the wait
    /// woken, and the loop's thread makes it when the wait ends (`apply_deferred`). The
    /// watchers' maps change at once either way, so nothing runs for a descriptor unwatched
    /// meanwhile.
    fn change_watch(&self, py: Python<'_>, fd: RawFd, write: bool, mode: Option<Mode>, trusted: bool) -> PyResult<()> {
        if let Some(mut poller) = self.poller.try_borrow_mut() {
            return match poller.as_mut() {
                Some(poller) => poller.watch(fd, write, mode, trusted).map_err(|e| os_error(&e)),
                None if mode.is_none() => Ok(()),
                None => Err(closed_error()),
            };
        }
        self.queues.borrow_mut(py).deferred.push((fd, write, mode, trusted));
        self.deferred_changes.store(true, Relaxed);
        if let Some(waker) = self.waker.borrow(py).as_ref() {
            waker.wake();
        }
        Ok(())
    }

    /// Makes the changes other threads made during a wait (see `change_watch`); an error, which
    /// there is no caller to raise to, is reported as unraisable.
    #[inline]
    pub(super) fn apply_deferred(&self, py: Python<'_>, poller: &mut Poller) {
        // One load on the path of every blocking poll; the rest is cold.
        if !self.deferred_changes.load(Relaxed) {
            return;
        }
        self.deferred_changes.store(false, Relaxed);
        let deferred = std::mem::take(&mut self.queues.borrow_mut(py).deferred);
        Self::apply_changes(py, poller, deferred);
    }

    #[cold]
    fn apply_changes(py: Python<'_>, poller: &mut Poller, deferred: Vec<(RawFd, bool, Option<Mode>, bool)>) {
        for (fd, write, mode, trusted) in deferred {
            if let Err(e) = poller.watch(fd, write, mode, trusted) {
                let err = PyRuntimeError::new_err(format!(
                    "watching file descriptor {fd}, as another thread asked during the loop's wait, failed: {e}"
                ));
                err.write_unraisable(py, None);
            }
        }
    }

    /// Watches `fd` in one direction with `watcher`, replacing (and cancelling) what was there.
    /// `trusted`: see `Poller::watch`.
    pub(super) fn watch(
        &self,
        py: Python<'_>,
        fd: RawFd,
        watcher: Watcher,
        write: bool,
        trusted: bool,
    ) -> PyResult<()> {
        let mode = if matches!(watcher, Watcher::Op(_)) { Mode::Once } else { Mode::Level };
        self.change_watch(py, fd, write, Some(mode), trusted)?;
        let (old, fileobj) = {
            let mut q = self.queues.borrow_mut(py);
            let old = if write { q.writers.insert(fd, watcher) } else { q.readers.insert(fd, watcher) };
            // Only a callback's registration keeps a file object; socket operations replace
            // one another here on every wait and have none to forget.
            let fileobj = if matches!(old, Some(Watcher::Handle(_))) { q.forget_fileobj(fd) } else { None };
            (old, fileobj)
        };
        if let Some(Watcher::Handle(old)) = &old {
            Handle::cancel(old.get(), py);
        }
        drop((old, fileobj));
        Ok(())
    }

    pub(super) fn remove_callback(&self, py: Python<'_>, fd: &Bound<'_, PyAny>, write: bool) -> PyResult<bool> {
        if self.closed.load(Relaxed) {
            return Ok(false);
        }
        let fd = match self.registered_fd(py, fd) {
            Ok(fd) => fd,
            // No descriptor has that number, so none is watched (asyncio: not registered).
            Err(e) if e.is_instance_of::<PyOverflowError>(py) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.check_not_native(py, fd)?;
        self.unwatch(py, fd, write)
    }

    /// Stops watching `fd` in one direction; returns whether it was watched.
    pub(super) fn unwatch(&self, py: Python<'_>, fd: RawFd, write: bool) -> PyResult<bool> {
        let (old, fileobj) = {
            let mut q = self.queues.borrow_mut(py);
            let old = if write { q.writers.remove(&fd) } else { q.readers.remove(&fd) };
            let fileobj = if matches!(old, Some(Watcher::Handle(_))) { q.forget_fileobj(fd) } else { None };
            (old, fileobj)
        };
        drop(fileobj);
        let Some(old) = old else { return Ok(false) };
        // Never fails because the descriptor was closed behind the loop's back.
        self.change_watch(py, fd, write, None, false)?;
        if let Watcher::Handle(h) = &old {
            Handle::cancel(h.get(), py);
        }
        drop(old);
        Ok(true)
    }

    /// For native transports: watch `fd` with `watcher`, whose reports run in `context` (a
    /// `contextvars.Context`) when given, else in a copy of the current context.
    pub(crate) fn add_native(
        &self,
        py: Python<'_>,
        fd: RawFd,
        watcher: Arc<dyn IoWatcher>,
        write: bool,
        context: Option<&Py<PyAny>>,
    ) -> PyResult<()> {
        self.check_closed()?;
        let context = match context {
            Some(c) => c.clone_ref(py),
            None => copy_current_context(py)?,
        };
        self.watch(py, fd, Watcher::Native(watcher, context), write, false)
    }

    /// For native transports: stop watching `fd`; false if it was not watched.
    pub(crate) fn remove_native(&self, py: Python<'_>, fd: RawFd, write: bool) -> PyResult<bool> {
        if self.closed.load(Relaxed) {
            return Ok(false);
        }
        self.unwatch(py, fd, write)
    }

    /// For pending socket operations: watch `fd` until `op` removes itself with
    /// [`EventLoop::remove_op`]. Replaces (and cancels) what watched that direction, as asyncio's
    /// `_add_reader` does, but a transport's descriptor is refused as asyncio's
    /// `_ensure_fd_no_transport` refuses it.
    ///
    /// `sock` is the socket object `fd` belongs to: if it is the one that last registered `fd`,
    /// the kept registration is used without a system call.
    pub(crate) fn add_op(
        &self,
        py: Python<'_>,
        fd: RawFd,
        op: Arc<dyn IoWatcher>,
        write: bool,
        sock: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.check_closed()?;
        self.check_not_native(py, fd)?;
        let owner = self.queues.borrow(py).owners.get(&fd).map(|w| w.clone_ref(py));
        let trusted = owner.is_some_and(|w| w.bind(py).upgrade().is_some_and(|o| o.is(sock)));
        self.watch(py, fd, Watcher::Op(op), write, trusted)?;
        if !trusted {
            let weak = PyWeakrefReference::new(sock)?.unbind();
            let old = self.queues.borrow_mut(py).owners.insert(fd, weak);
            drop(old);
        }
        Ok(())
    }

    /// For pending socket operations: stop watching `fd` if `op` (compared by address) is still
    /// what watches it; another operation may have replaced it. Returns whether it was removed.
    pub(crate) fn remove_op(&self, py: Python<'_>, fd: RawFd, write: bool, op: *const ()) -> PyResult<bool> {
        if self.closed.load(Relaxed) {
            return Ok(false);
        }
        let ours = {
            let q = self.queues.borrow(py);
            let map = if write { &q.writers } else { &q.readers };
            matches!(map.get(&fd), Some(Watcher::Op(w)) if std::ptr::addr_eq(Arc::as_ptr(w), op))
        };
        if !ours {
            return Ok(false);
        }
        self.unwatch(py, fd, write)
    }

    /// For pending socket operations whose coroutine was cancelled (or closed): stop watching
    /// for the operation completing `fut`, if it still waits. `fd` is the socket's descriptor,
    /// or -1 if the socket is closed by now (every watched descriptor is searched then).
    pub(crate) fn abandon_op(&self, py: Python<'_>, fd: RawFd, fut: &Bound<'_, PyAny>) -> PyResult<bool> {
        if self.closed.load(Relaxed) {
            return Ok(false);
        }
        let found = {
            let q = self.queues.borrow(py);
            let waits = |w: Option<&Watcher>| matches!(w, Some(Watcher::Op(op)) if op.completes(fut));
            if waits(q.readers.get(&fd)) {
                Some((fd, false))
            } else if waits(q.writers.get(&fd)) {
                Some((fd, true))
            } else if fd < 0 {
                let find = |m: &FdMap<Watcher>| m.iter().find(|(_, w)| waits(Some(w))).map(|(fd, _)| *fd);
                find(&q.readers).map(|fd| (fd, false)).or_else(|| find(&q.writers).map(|fd| (fd, true)))
            } else {
                None
            }
        };
        match found {
            Some((fd, write)) => self.unwatch(py, fd, write),
            None => Ok(false),
        }
    }
}

/// `add_reader`, `add_writer` and their kin.
#[pymethods]
impl EventLoop {
    #[pyo3(signature = (fd, callback, *args))]
    fn add_reader(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        self.set_callback(py, fd, callback, args, false, None).map(drop)
    }

    /// `add_reader` returning its handle (the selector loop's `_add_reader`).
    /// (`context`: asyncio 3.15's transports give theirs.)
    #[pyo3(signature = (fd, callback, *args, context=None))]
    fn _add_reader(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.set_callback(py, fd, callback, args, false, context)
    }

    /// `RuntimeError` if a native transport watches `fd` (an int or an object with `fileno()`).
    fn _check_fd_free(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_not_native(py, fileobj_to_fd(fd)?)
    }

    fn remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_callback(py, fd, false)
    }

    fn _remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_callback(py, fd, false)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_writer(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        self.set_callback(py, fd, callback, args, true, None).map(drop)
    }

    /// `add_writer` returning its handle (the selector loop's `_add_writer`).
    /// (`context`: asyncio 3.15's transports give theirs.)
    #[pyo3(signature = (fd, callback, *args, context=None))]
    fn _add_writer(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.set_callback(py, fd, callback, args, true, context)
    }

    fn remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_callback(py, fd, true)
    }

    fn _remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_callback(py, fd, true)
    }
}
