//! `ferroloop._ferroloop`: the PyO3 bindings of ferroloop's event loop.
//!
//! Each module registers its own classes; this file only assembles them. Layering (each depends
//! only on those below it): `event_loop` → `handles` → `gil_cell`, `pyrefs` → `ferroloop_core`.
#![deny(unsafe_op_in_unsafe_fn)]

mod buffers;
mod compat;
mod errors;
mod event_loop;
mod fastcall;
mod gil_cell;
mod handles;
mod live;
mod pyrefs;
mod sock_ops;
mod transports;
mod watch;

use pyo3::prelude::*;

#[pymodule]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    handles::register(m)?;
    event_loop::register(m)?;
    sock_ops::register(m)?;
    transports::register(m)?;
    fastcall::register(m)?;
    live::register(m)
}
