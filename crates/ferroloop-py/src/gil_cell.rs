//! `GilCell`: mutable state of a frozen pyclass, guarded by the GIL.
//!
//! Rules every user follows (they are what makes the `Sync` impl sound and the borrows never
//! fail): borrow only while attached to the interpreter (a `Python` token proves it); never call
//! into Python, create a Python object or drop one while a borrow is held (any of those may run
//! arbitrary Python code, which may re-enter the loop); take what must be dropped out of the cell
//! and drop it after the borrow ends. A broken rule shows up as a `PanicException`, never as
//! undefined behaviour, because the cell is a `RefCell` underneath.

use std::cell::{Ref, RefCell, RefMut};

use pyo3::Python;

pub struct GilCell<T>(RefCell<T>);

// SAFETY: the module is built for the GIL-enabled interpreter (`gil_used = true`), and every
// access goes through `borrow`/`borrow_mut`, which need a `Python` token, so the GIL serialises all
// accesses from all threads; the GIL's release and acquire order them in memory.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        Self(RefCell::new(value))
    }

    #[inline]
    pub fn borrow<'a>(&'a self, _py: Python<'_>) -> Ref<'a, T> {
        self.0.borrow()
    }

    #[inline]
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }

    /// Exclusive access without the GIL's help: `&mut self` already proves it (used in `Drop`).
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }

    /// For the garbage collector's traversal, which may run at any allocation: `None` when the
    /// state is borrowed at that moment (the traversal then sees fewer references, which only
    /// makes the collector keep objects alive).
    pub fn try_borrow(&self) -> Option<Ref<'_, T>> {
        self.0.try_borrow().ok()
    }

    /// For the garbage collector's `__clear__`, which may also run at any allocation: `None`
    /// when the state is borrowed at that moment (the cycle is then broken elsewhere, or at
    /// the next collection). Also for the poller, which the loop's thread keeps borrowed
    /// through a wait with the GIL released (`event_loop::io`'s `change_watch`).
    pub fn try_borrow_mut(&self) -> Option<std::cell::RefMut<'_, T>> {
        self.0.try_borrow_mut().ok()
    }
}

impl<T: Default> GilCell<T> {
    /// For the garbage collector's `__clear__`: empties the cell unless it is borrowed.
    pub fn try_take(&self) -> Option<T> {
        self.0.try_borrow_mut().ok().map(|mut v| std::mem::take(&mut *v))
    }
}
