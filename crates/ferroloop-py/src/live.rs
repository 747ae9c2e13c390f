//! Live-object counts for leak checking (`make test-debug`).
//!
//! Built with the `leak-check` feature, every handle and transport carries a [`Token`] that
//! counts it while it is alive, and `_ferroloop._live_objects()` reports the counts, so the test
//! suite can assert that a closed loop left nothing behind (the write buffers live inside the
//! transports and go with them). Without the feature the token is zero-sized and does nothing.

#[derive(Clone, Copy)]
pub enum Kind {
    Handle,
    StreamTransport,
    DatagramTransport,
    SslProtocol,
    SslTransport,
    ReadPipeTransport,
    WritePipeTransport,
}

#[cfg(feature = "leak-check")]
mod imp {
    use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

    pub const NAMES: [&str; 7] = [
        "Handle",
        "StreamTransport",
        "DatagramTransport",
        "SSLProtocol",
        "SSLTransport",
        "ReadPipeTransport",
        "WritePipeTransport",
    ];
    pub static COUNTS: [AtomicIsize; 7] = [const { AtomicIsize::new(0) }; 7];

    pub struct Token(super::Kind);

    impl Token {
        pub fn new(kind: super::Kind) -> Self {
            COUNTS[kind as usize].fetch_add(1, Relaxed);
            Self(kind)
        }
    }

    impl Drop for Token {
        fn drop(&mut self) {
            COUNTS[self.0 as usize].fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(not(feature = "leak-check"))]
mod imp {
    pub struct Token;

    impl Token {
        #[inline]
        pub fn new(_kind: super::Kind) -> Self {
            Self
        }
    }
}

pub use imp::Token;

/// `{type name: live count}` in leak-check builds; None otherwise.
#[pyo3::pyfunction]
pub fn _live_objects(py: pyo3::Python<'_>) -> pyo3::PyResult<Option<pyo3::Bound<'_, pyo3::types::PyDict>>> {
    #[cfg(feature = "leak-check")]
    {
        use pyo3::types::PyDictMethods;
        let d = pyo3::types::PyDict::new(py);
        for (name, count) in imp::NAMES.iter().zip(&imp::COUNTS) {
            d.set_item(name, count.load(std::sync::atomic::Ordering::Relaxed))?;
        }
        Ok(Some(d))
    }
    #[cfg(not(feature = "leak-check"))]
    {
        let _ = py;
        Ok(None)
    }
}

pub(crate) fn register(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    use pyo3::types::PyModuleMethods;
    m.add_function(pyo3::wrap_pyfunction!(_live_objects, m)?)
}
