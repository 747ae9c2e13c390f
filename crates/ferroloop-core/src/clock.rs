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

/// A cheap clock for measuring how long a callback ran: the CPU's time-stamp counter where the
/// kernel itself reads it for `CLOCK_MONOTONIC` (x86-64 with the `tsc` clocksource: constant
/// rate, synchronised across cores), otherwise `CLOCK_MONOTONIC` in nanoseconds. A reading of
/// the counter is one instruction; `clock_gettime` is about forty on the loop's hot path.
/// Durations in ticks become seconds with [`Ticks::seconds`]; the rate is measured once per
/// process against `CLOCK_MONOTONIC`.
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    tsc: bool,
    /// Seconds per tick.
    period: f64,
}

/// How long the counter's rate is measured for (seconds): a 1 ns reading error is 1e-5 of it.
const CALIBRATION: f64 = 100e-6;

impl Ticks {
    /// The process's clock for callback durations (calibrated on first use).
    #[must_use]
    pub fn get() -> Ticks {
        static TICKS: std::sync::OnceLock<Ticks> = std::sync::OnceLock::new();
        *TICKS.get_or_init(Ticks::calibrate)
    }

    fn calibrate() -> Ticks {
        let tsc = cfg!(target_arch = "x86_64")
            && std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
                .is_ok_and(|source| source.trim() == "tsc");
        if !tsc {
            return Ticks { tsc: false, period: 1e-9 };
        }
        let probe = Ticks { tsc: true, period: 0.0 };
        let (m0, t0) = probe.paired();
        while monotonic() - m0 < CALIBRATION {}
        let (m1, t1) = probe.paired();
        #[allow(clippy::cast_precision_loss)]
        let period = (m1 - m0) / t1.wrapping_sub(t0).max(1) as f64;
        Ticks { tsc: true, period }
    }

    /// A reading of the monotonic clock and the counter's value at that moment: the clock read
    /// between two counter readings, the closest pair of a few tries (a thread preempted between
    /// its readings would otherwise put microseconds of error into the rate).
    fn paired(self) -> (f64, u64) {
        let mut best = (0.0, 0, u64::MAX);
        for _ in 0..5 {
            let before = self.now();
            let clock = monotonic();
            let after = self.now();
            let gap = after.wrapping_sub(before);
            if gap < best.2 {
                best = (clock, before + gap / 2, gap);
            }
        }
        (best.0, best.1)
    }

    /// The counter now.
    #[inline]
    #[must_use]
    pub fn now(self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            // SAFETY: RDTSC exists on every x86-64 CPU and only reads the counter; the kernel
            // uses it for the monotonic clock here, so user space may read it (no TSD trap).
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ns = (monotonic() * 1e9) as u64;
        ns
    }

    /// Seconds in `ticks` (a difference of two readings).
    #[inline]
    #[must_use]
    pub fn seconds(self, ticks: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ticks = ticks as f64;
        ticks * self.period
    }

    /// Ticks in `seconds` (0 for a negative or NaN duration).
    #[inline]
    #[must_use]
    pub fn ticks_in(self, seconds: f64) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ticks = (seconds / self.period) as i64;
        #[allow(clippy::cast_sign_loss)]
        let ticks = ticks.max(0) as u64;
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_measure_seconds() {
        let ticks = Ticks::get();
        let (m0, t0) = (monotonic(), ticks.now());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (t1, m1) = (ticks.now(), monotonic());
        let (measured, truth) = (ticks.seconds(t1 - t0), m1 - m0);
        assert!(ticks.ticks_in(ticks.seconds(1_000_000)).abs_diff(1_000_000) <= 1);
        assert_eq!(ticks.ticks_in(-1.0), 0);
        assert!((measured - truth).abs() < truth * 0.02, "{measured} s by ticks, {truth} s by the clock");
    }

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
        assert!(resolution() > 0.0 && resolution() <= 1e-6);
    }
}
