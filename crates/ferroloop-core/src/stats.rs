//! The loop's statistics: counters, busy and idle time, and a lag histogram.
//!
//! # What is counted, and when
//!
//! The loop's thread keeps them on paths it already runs, with the clock readings it already
//! takes, plus one reading at the end of each callback:
//!
//! - `iterations`: loop iterations run; `callbacks`: handles and native I/O callbacks run
//!   (cancelled handles are not); `io_events`: readiness reports queued by polls;
//!   `timers`: timers that became due and were queued.
//! - `busy` and `idle`, as Node's event-loop utilization defines them: idle is the time the loop
//!   waited in the poller (from the start of an iteration that blocks to the poll's return);
//!   busy is the rest of the time the loop ran (callbacks and its own work): the time inside
//!   `run_forever` (`run`) less the idle time, so the hot path never adds to it. Time outside
//!   `run_forever` is neither. Utilization is busy / (busy + idle).
//! - `lag`: for each iteration that runs callbacks, the longest any of them waited between
//!   becoming ready (scheduled with `call_soon`, its timer due, its descriptor reported ready) and
//!   starting to run; one sample per such iteration, in a log-spaced histogram.
//! - `slow`: callbacks that ran longer than the loop's threshold; what they were is kept by the
//!   bindings (only for those: describing a callback costs Python work).
//!
//! # Readers and the writer
//!
//! The loop's thread is the only writer. Every figure is an atomic that the writer loads and
//! stores (no read-modify-write, so no locked instruction on the hot path); any thread may take a
//! [`Snapshot`] at any time without stopping the loop. A snapshot taken while the loop runs may
//! be a few events apart from one figure to the next; no figure is torn. Intervals are the
//! difference of two snapshots ([`Snapshot::since`]), so several readers (a `top` view, an
//! exporter) each keep their own interval and never reset anything of the loop's.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A count kept by one writer thread, readable from any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the loop's thread calls this (a plain load and store, not an atomic add).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Raises the count to `n` if it is lower (the writer's running maximum).
    #[inline]
    pub fn raise_to(&self, n: u64) {
        if n > self.0.load(Relaxed) {
            self.0.store(n, Relaxed);
        }
    }

    #[inline]
    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Buckets per doubling: a bucket's largest value is at most 12.5 % above its smallest.
const SUB_BITS: u32 = 3;
/// The bits of an `f64` below its exponent's and its mantissa's first `SUB_BITS`: dropping them
/// leaves a number that grows by one from bucket to bucket (positive `f64`s order as their bits).
const SHIFT: u32 = 52 - SUB_BITS;
/// Lags below 2^-20 s (0.95 µs) share the first bucket.
const MIN_LAG: f64 = 1.0 / (1u64 << 20) as f64;
/// Lags of 2^10 s (17 minutes) and more share the last bucket.
const MAX_LAG: f64 = (1u64 << 10) as f64;
/// The number of histogram buckets.
pub const BUCKETS: usize = 2 + ((MAX_LAG.to_bits() - MIN_LAG.to_bits()) >> SHIFT) as usize;

/// The bucket of a lag of `seconds` (a few instructions: no conversion, no logarithm).
#[inline]
#[must_use]
pub fn bucket_of(seconds: f64) -> usize {
    // NaN, negative, or under a microsecond.
    if seconds.is_nan() || seconds < MIN_LAG {
        return 0;
    }
    let index = 1 + ((seconds.to_bits() - MIN_LAG.to_bits()) >> SHIFT);
    #[allow(clippy::cast_possible_truncation)]
    let index = index.min(BUCKETS as u64 - 1) as usize;
    index
}

/// The smallest lag (seconds) that falls beyond bucket `index`: its exclusive upper bound
/// (infinite for the last).
#[must_use]
pub fn bucket_upper_bound(index: usize) -> f64 {
    if index >= BUCKETS - 1 {
        return f64::INFINITY;
    }
    f64::from_bits(MIN_LAG.to_bits() + ((index as u64) << SHIFT))
}

/// The loop's statistics (see the module documentation). Times are in nanoseconds, lags in
/// seconds.
#[derive(Debug)]
pub struct LoopStats {
    pub iterations: Counter,
    pub callbacks: Counter,
    pub io_events: Counter,
    pub timers: Counter,
    /// Time inside `run_forever`, counted when a run ends.
    pub run_ns: Counter,
    pub idle_ns: Counter,
    /// Callbacks slower than the threshold.
    pub slow: Counter,
    /// The longest lag seen since the loop was made (seconds, `f64` bits: non-negative `f64`s
    /// order as their bits).
    pub lag_max: Counter,
    lag: Box<[Counter; BUCKETS]>,
}

impl Default for LoopStats {
    fn default() -> Self {
        Self {
            iterations: Counter::default(),
            callbacks: Counter::default(),
            io_events: Counter::default(),
            timers: Counter::default(),
            run_ns: Counter::default(),
            idle_ns: Counter::default(),
            slow: Counter::default(),
            lag_max: Counter::default(),
            lag: Box::new(std::array::from_fn(|_| Counter::default())),
        }
    }
}

/// Seconds (a difference of two clock readings) as whole nanoseconds; a negative or NaN
/// difference (a clock patched by a test) counts as zero.
#[inline]
#[must_use]
pub fn nanos(seconds: f64) -> u64 {
    // Through i64: one conversion instruction and a clamp (a direct `as u64` is sixteen
    // instructions on x86-64, on a path every loop iteration takes). 2^63 ns is 292 years.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ns = ((seconds * 1e9) as i64).max(0) as u64;
    ns
}

impl LoopStats {
    /// Records one iteration's lag sample (seconds).
    #[inline]
    pub fn record_lag(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        self.lag[bucket_of(seconds)].add(1);
        self.lag_max.raise_to(seconds.to_bits());
    }

    /// The figures as they are now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            iterations: self.iterations.get(),
            callbacks: self.callbacks.get(),
            io_events: self.io_events.get(),
            timers: self.timers.get(),
            run_ns: self.run_ns.get(),
            idle_ns: self.idle_ns.get(),
            slow: self.slow.get(),
            lag_max: f64::from_bits(self.lag_max.get()),
            lag: self.lag.iter().map(Counter::get).collect(),
        }
    }
}

/// The figures at one moment (or, from [`Snapshot::since`], over an interval).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub iterations: u64,
    pub callbacks: u64,
    pub io_events: u64,
    pub timers: u64,
    pub run_ns: u64,
    pub idle_ns: u64,
    pub slow: u64,
    /// The longest lag (seconds): exact since the loop was made; over an interval, the upper
    /// bound of the highest bucket that gained a sample, capped by the exact maximum.
    pub lag_max: f64,
    /// Lag samples per bucket ([`bucket_of`]).
    pub lag: Vec<u64>,
}

impl Snapshot {
    /// The figures of the interval from `earlier` to `self`.
    #[must_use]
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let lag: Vec<u64> = self.lag.iter().zip(&earlier.lag).map(|(a, b)| a.saturating_sub(*b)).collect();
        let highest = lag.iter().rposition(|&n| n > 0);
        Snapshot {
            iterations: self.iterations.saturating_sub(earlier.iterations),
            callbacks: self.callbacks.saturating_sub(earlier.callbacks),
            io_events: self.io_events.saturating_sub(earlier.io_events),
            timers: self.timers.saturating_sub(earlier.timers),
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            idle_ns: self.idle_ns.saturating_sub(earlier.idle_ns),
            slow: self.slow.saturating_sub(earlier.slow),
            lag_max: highest.map_or(0.0, |i| bucket_upper_bound(i).min(self.lag_max)),
            lag,
        }
    }

    /// Time the loop ran and did not wait (nanoseconds).
    #[must_use]
    pub fn busy_ns(&self) -> u64 {
        self.run_ns.saturating_sub(self.idle_ns)
    }

    /// The number of lag samples.
    #[must_use]
    pub fn lag_samples(&self) -> u64 {
        self.lag.iter().sum()
    }

    /// The lag at quantile `q` (0 to 1), in seconds: the upper bound of the bucket holding the
    /// sample of that rank, capped by the maximum; 0 without samples.
    #[must_use]
    pub fn lag_quantile(&self, q: f64) -> f64 {
        let total = self.lag_samples();
        if total == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.lag.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_upper_bound(i).min(self.lag_max);
            }
        }
        self.lag_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_lag_in_order() {
        let mut last = 0;
        for seconds in [0.0, 1e-9, 9e-7, 9.6e-7, 1e-6, 2e-6, 5e-5, 1e-3, 0.05, 1.0, 1000.0, 1024.0, 1e9, f64::INFINITY]
        {
            let b = bucket_of(seconds);
            assert!(b >= last, "{seconds}: bucket {b} before {last}");
            assert!(seconds < bucket_upper_bound(b) || b == BUCKETS - 1, "{seconds} not below its bucket {b}'s bound");
            if b > 0 {
                assert!(seconds >= bucket_upper_bound(b - 1), "{seconds} fits bucket {}", b - 1);
            }
            last = b;
        }
        assert_eq!(bucket_of(-1.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(f64::INFINITY), BUCKETS - 1);
        assert_eq!(BUCKETS, 242);
    }

    #[test]
    fn buckets_are_at_most_an_eighth_wide() {
        for b in 2..BUCKETS - 1 {
            let ratio = bucket_upper_bound(b) / bucket_upper_bound(b - 1);
            assert!(ratio <= 1.125 + 1e-12, "bucket {b}: ratio {ratio}");
        }
    }

    #[test]
    fn quantiles_and_intervals() {
        let stats = LoopStats::default();
        for _ in 0..90 {
            stats.record_lag(2e-6);
        }
        for _ in 0..10 {
            stats.record_lag(0.05);
        }
        let first = stats.snapshot();
        assert_eq!(first.lag_samples(), 100);
        for q in [0.5, 0.9] {
            let lag = first.lag_quantile(q);
            assert!((2e-6..2.25e-6).contains(&lag), "{q}: {lag}");
        }
        assert_eq!(first.lag_quantile(0.99), 0.05, "capped by the max");
        assert_eq!(first.lag_max, 0.05);

        stats.record_lag(3e-3);
        stats.iterations.add(7);
        stats.run_ns.add(40);
        stats.idle_ns.add(15);
        let interval = stats.snapshot().since(&first);
        assert_eq!(interval.lag_samples(), 1);
        assert_eq!(interval.iterations, 7);
        assert_eq!(interval.busy_ns(), 25);
        let max = interval.lag_max;
        assert!((3e-3..3.4e-3).contains(&max), "the interval's max is its bucket's bound: {max}");
        assert_eq!(interval.lag_quantile(0.5), max);
        assert_eq!(stats.snapshot().since(&stats.snapshot()).lag_quantile(0.5), 0.0);
    }

    #[test]
    fn counters() {
        let c = Counter::default();
        c.add(2);
        c.add(3);
        c.raise_to(4);
        assert_eq!(c.get(), 5);
        c.raise_to(9);
        assert_eq!(c.get(), 9);
        assert_eq!(nanos(1.5e-6), 1_500);
        assert_eq!(nanos(-1.0), 0);
        assert_eq!(nanos(f64::NAN), 0);
    }
}
