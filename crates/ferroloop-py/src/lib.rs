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
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<event_loop::EventLoop>()?;
    m.add_function(wrap_pyfunction!(fastcall::_fast_methods, m)?)?;
    m.add_class::<transports::stream::StreamTransport>()?;
    fastcall::install_stream_write(m.py())?;
    m.add_function(wrap_pyfunction!(transports::stream::make_stream_transport, m)?)?;
    m.add_class::<transports::datagram::DatagramTransport>()?;
    m.add_function(wrap_pyfunction!(transports::datagram::make_datagram_transport, m)?)?;
    m.add_class::<transports::tls::TlsProtocol>()?;
    m.add_class::<transports::tls::TlsTransport>()?;
    m.add_function(wrap_pyfunction!(transports::tls::make_tls_protocol, m)?)?;
    m.add_class::<transports::pipe::ReadPipeTransport>()?;
    m.add_class::<transports::pipe::WritePipeTransport>()?;
    m.add_function(wrap_pyfunction!(transports::pipe::make_read_pipe_transport, m)?)?;
    m.add_function(wrap_pyfunction!(transports::pipe::make_write_pipe_transport, m)?)?;
    m.add_function(wrap_pyfunction!(live::_live_objects, m)?)?;
    m.add("FAIRNESS_BUDGET", event_loop::FAIRNESS_BUDGET)?;
    Ok(())
}
