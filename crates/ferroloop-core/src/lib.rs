//! The engine of ferroloop, without Python.
//!
//! This crate holds everything the event loop needs that does not touch a Python object, so it is
//! tested with `cargo test` alone:
//!
//! - [`clock`]: the loop's time, the same clock as Python's `time.monotonic()`.
//! - [`fd_map`]: hash maps keyed by file descriptor, with a cheap hash.
//! - [`flow`]: what every transport shares: write flow control and its lifecycle.
//! - [`poller`]: level-triggered readiness of file descriptors, plus a [`poller::Waker`] that
//!   another thread uses to interrupt a blocked poll.
//! - [`stats`]: the loop's statistics (counters, busy and idle time, the lag histogram), written
//!   by the loop's thread and read by snapshots from any thread.
//! - [`timers`]: the timer queue behind `call_at`, ordered by (deadline, scheduling order).
//! - [`write_buffer`]: a transport's unsent bytes, flushed with one gather write.
//! - [`net`]: the system calls transports make (`recv`, `send`, `sendmsg`, `read`, `writev`, ...)
//!   and descriptor queries (`file_type`, `set_nonblocking`).
//!
//! Everything is generic over the callback type `T`, which the bindings instantiate with Python
//! handles. OS-specific code lives under `sys/`, one file per backend exporting the same names.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod clock;
pub mod fd_map;
pub mod flow;
pub mod poller;
pub mod stats;
mod sys;
pub mod timers;
pub mod write_buffer;

pub use sys::unix as net;
