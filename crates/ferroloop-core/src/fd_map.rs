//! `FdMap`: a hash map keyed by file descriptor, with a hasher made for small integers.
//!
//! The standard SipHash protects against keys chosen by an attacker, which descriptor numbers
//! (allocated by the kernel, lowest free first) are not; on the loop's hot paths (every wait
//! looks up and updates a few of these maps) it costs more than the rest of the lookup. The
//! hash here is one multiplication by an odd constant (as rustc's `FxHasher`), which spreads
//! consecutive numbers over the high bits hashbrown's control bytes use.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;

/// A map from descriptor numbers to `V`.
pub type FdMap<V> = HashMap<RawFd, V, BuildHasherDefault<FdHasher>>;

/// Multiplicative hashing for integer keys (see the module documentation).
#[derive(Default, Clone, Copy)]
pub struct FdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_i32(&mut self, n: i32) {
        #[allow(clippy::cast_sign_loss)]
        let n = n as u32;
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(K);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut m: FdMap<i32> = FdMap::default();
        for fd in 0..10_000 {
            m.insert(fd, fd * 2);
        }
        for fd in (0..10_000).step_by(2) {
            assert_eq!(m.remove(&fd), Some(fd * 2));
        }
        assert_eq!(m.len(), 5_000);
        assert_eq!(m.get(&3), Some(&6));
        assert_eq!(m.get(&4), None);
        assert_eq!(m.get(&-1), None);
    }
}
