//! The loop's clock: `CLOCK_MONOTONIC` in seconds as `f64`, exactly what `time.monotonic()` reads
//! on Linux and macOS, so deadlines computed by Python code and by the loop agree.

/// Seconds on the monotonic clock, with nanosecond resolution.
#[inline]
#[must_use]
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on our targets.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    #[allow(clippy::cast_precision_loss)]
    let secs = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    secs
}

/// The clock's resolution in seconds (`time.get_clock_info('monotonic').resolution`).
#[must_use]
pub fn resolution() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as in `monotonic`.
    unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &raw mut ts) };
    #[allow(clippy::cast_precision_loss)]
    let res = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
        assert!(resolution() > 0.0 && resolution() <= 1e-6);
    }
}
