//! The loop's statistics: counters, busy and idle time, and a lag histogram.
//!
//! # What is counted, and when
//!
//! The loop's thread keeps them on paths it already runs, with the clock readings it already
//! takes, plus one reading at the end of each callback:
//!
//! - `iterations`: loop iterations run (counted as those that ran no callback, plus the lag
//!   samples: one per iteration that ran some); `callbacks`: handles and native I/O callbacks run
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
//! - `transports`: per kind of transport ([`TransportKind`]), how many were opened and closed
//!   and the bytes they received and sent ([`Traffic`]). A transport holds its kind's
//!   `Arc<Traffic>` and counts as it reads and writes; the writers are whichever threads call a
//!   transport, always holding the GIL, which serialises them as the loop's thread alone is
//!   serialised for the other figures.
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

/// The kinds of transport the statistics count apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Unix,
    Tls,
    Datagram,
    Pipe,
}

impl TransportKind {
    pub const ALL: [TransportKind; 5] = [Self::Tcp, Self::Unix, Self::Tls, Self::Datagram, Self::Pipe];

    /// The name readers see.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Unix => "unix",
            Self::Tls => "tls",
            Self::Datagram => "datagram",
            Self::Pipe => "pipe",
        }
    }
}

/// The transports of one kind: opened, closed, bytes received and sent (for TLS, the
/// application's plaintext; the TCP transport under it counts the ciphertext).
#[derive(Debug, Default)]
pub struct Traffic {
    pub opened: Counter,
    pub closed: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

/// [`Traffic`]'s figures at one moment, or over an interval (`open` is always the count at the
/// later moment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    pub open: u64,
    pub opened: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Traffic {
    #[must_use]
    pub fn snapshot(&self) -> TrafficSnapshot {
        let opened = self.opened.get();
        TrafficSnapshot {
            open: opened.saturating_sub(self.closed.get()),
            opened,
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
        }
    }
}

impl TrafficSnapshot {
    #[must_use]
    pub fn since(&self, earlier: &TrafficSnapshot) -> TrafficSnapshot {
        TrafficSnapshot {
            open: self.open,
            opened: self.opened.saturating_sub(earlier.opened),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
        }
    }
}

/// Buckets per doubling: a bucket's largest value is at most 12.5 % above its smallest.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Lags below 2^10 units (the loop's ticks: about 0.4 µs at 2.5 GHz, 1 µs where a tick is a
/// nanosecond) share the first bucket.
const MIN_EXP: u32 = 10;
/// Lags of 2^42 units (30 minutes at 2.5 GHz) and more share the last bucket.
const MAX_EXP: u32 = 42;
/// The number of histogram buckets.
pub const BUCKETS: usize = 2 + (MAX_EXP - MIN_EXP) as usize * SUB;

/// The bucket of a lag of `units` (a few integer instructions).
#[inline]
#[must_use]
pub fn bucket_of(units: u64) -> usize {
    if units < 1 << MIN_EXP {
        return 0;
    }
    let exp = 63 - units.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    #[allow(clippy::cast_possible_truncation)]
    let sub = ((units >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    1 + (exp - MIN_EXP) as usize * SUB + sub
}

/// The smallest lag, in units, beyond bucket `index`: its exclusive upper bound (`u64::MAX`
/// for the last).
#[must_use]
pub fn bucket_upper_bound(index: usize) -> u64 {
    if index == 0 {
        return 1 << MIN_EXP;
    }
    if index >= BUCKETS - 1 {
        return u64::MAX;
    }
    #[allow(clippy::cast_possible_truncation)]
    let exp = MIN_EXP + ((index - 1) / SUB) as u32;
    let sub = ((index - 1) % SUB) as u64;
    (1u64 << exp) + ((sub + 1) << (exp - SUB_BITS))
}

/// The loop's statistics (see the module documentation). Times and lags are in the loop's
/// units (ticks; a [`Snapshot`] knows how many seconds one is): converting to seconds is left
/// to the reader, off the loop's path.
#[derive(Debug)]
pub struct LoopStats {
    /// Iterations that ran no callback: with the lag samples (one per iteration that ran
    /// some), the iterations, so that a busy iteration counts nothing more than its sample.
    pub empty_iterations: Counter,
    pub callbacks: Counter,
    pub io_events: Counter,
    pub timers: Counter,
    /// Time inside `run_forever`, counted when a run ends (units).
    pub run: Counter,
    /// Time waiting in the poller (units).
    pub idle: Counter,
    /// Callbacks slower than the threshold.
    pub slow: Counter,
    /// The longest lag seen since the loop was made (units).
    pub lag_max: Counter,
    /// The lag samples' sum (units).
    pub lag_sum: Counter,
    lag: Box<[Counter; BUCKETS]>,
    /// Per [`TransportKind`], in [`TransportKind::ALL`]'s order.
    pub transports: [std::sync::Arc<Traffic>; 5],
}

impl Default for LoopStats {
    fn default() -> Self {
        Self {
            empty_iterations: Counter::default(),
            callbacks: Counter::default(),
            io_events: Counter::default(),
            timers: Counter::default(),
            run: Counter::default(),
            idle: Counter::default(),
            slow: Counter::default(),
            lag_max: Counter::default(),
            lag_sum: Counter::default(),
            lag: Box::new(std::array::from_fn(|_| Counter::default())),
            transports: std::array::from_fn(|_| std::sync::Arc::default()),
        }
    }
}

impl LoopStats {
    /// Records one iteration's lag sample (units).
    #[inline]
    pub fn record_lag(&self, units: u64) {
        self.lag[bucket_of(units)].add(1);
        self.lag_sum.add(units);
        self.lag_max.raise_to(units);
    }

    /// The counters of transports of `kind`, for a new transport to keep.
    #[must_use]
    pub fn traffic(&self, kind: TransportKind) -> std::sync::Arc<Traffic> {
        self.transports[kind as usize].clone()
    }

    /// The figures as they are now; a lag unit is `unit` seconds.
    #[must_use]
    pub fn snapshot(&self, unit: f64) -> Snapshot {
        let lag: Vec<u64> = self.lag.iter().map(Counter::get).collect();
        Snapshot {
            iterations: self.empty_iterations.get() + lag.iter().sum::<u64>(),
            callbacks: self.callbacks.get(),
            io_events: self.io_events.get(),
            timers: self.timers.get(),
            run: self.run.get(),
            idle: self.idle.get(),
            slow: self.slow.get(),
            lag_max: self.lag_max.get(),
            lag_sum: self.lag_sum.get(),
            unit,
            lag,
            transports: std::array::from_fn(|i| self.transports[i].snapshot()),
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
    pub run: u64,
    pub idle: u64,
    pub slow: u64,
    /// The longest lag (units): exact since the loop was made; over an interval, the upper
    /// bound of the highest bucket that gained a sample, capped by the exact maximum.
    pub lag_max: u64,
    /// The lag samples' sum (units).
    pub lag_sum: u64,
    /// Seconds per lag unit.
    pub unit: f64,
    /// Lag samples per bucket ([`bucket_of`]).
    pub lag: Vec<u64>,
    /// Per [`TransportKind`], in [`TransportKind::ALL`]'s order.
    pub transports: [TrafficSnapshot; 5],
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
            run: self.run.saturating_sub(earlier.run),
            idle: self.idle.saturating_sub(earlier.idle),
            slow: self.slow.saturating_sub(earlier.slow),
            lag_max: highest.map_or(0, |i| bucket_upper_bound(i).min(self.lag_max)),
            lag_sum: self.lag_sum.saturating_sub(earlier.lag_sum),
            unit: self.unit,
            lag,
            transports: std::array::from_fn(|i| self.transports[i].since(&earlier.transports[i])),
        }
    }

    /// Time the loop ran and did not wait (seconds).
    #[must_use]
    pub fn busy_seconds(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let busy = self.run.saturating_sub(self.idle) as f64;
        busy * self.unit
    }

    /// Time the loop waited in its poller (seconds).
    #[must_use]
    pub fn idle_seconds(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let idle = self.idle as f64;
        idle * self.unit
    }

    /// The number of lag samples.
    #[must_use]
    pub fn lag_samples(&self) -> u64 {
        self.lag.iter().sum()
    }

    /// The longest lag, in seconds.
    #[must_use]
    pub fn lag_max_seconds(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let max = self.lag_max as f64;
        max * self.unit
    }

    /// The lag samples' sum, in seconds.
    #[must_use]
    pub fn lag_sum_seconds(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let sum = self.lag_sum as f64;
        sum * self.unit
    }

    /// `(upper bound in seconds, samples)` of each bucket that has samples, in order; the
    /// bounds are exclusive, the last bucket's is infinite.
    #[must_use]
    pub fn lag_buckets(&self) -> Vec<(f64, u64)> {
        self.lag
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| {
                let bound = bucket_upper_bound(i);
                #[allow(clippy::cast_precision_loss)]
                let seconds = if bound == u64::MAX { f64::INFINITY } else { bound as f64 * self.unit };
                (seconds, n)
            })
            .collect()
    }

    /// The lag at quantile `q` (0 to 1), in seconds: the upper bound of the bucket holding the
    /// sample of that rank, capped by the maximum; 0 without samples.
    #[must_use]
    pub fn lag_quantile(&self, q: f64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let seconds = self.lag_quantile_units(q) as f64 * self.unit;
        seconds
    }

    fn lag_quantile_units(&self, q: f64) -> u64 {
        let total = self.lag_samples();
        if total == 0 {
            return 0;
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
        for units in [0, 1, 1023, 1024, 1100, 2047, 2048, 5_000, 1_000_000, 50_000_000, 1 << 41, 1 << 42, u64::MAX] {
            let b = bucket_of(units);
            assert!(b >= last, "{units}: bucket {b} before {last}");
            assert!(units < bucket_upper_bound(b) || b == BUCKETS - 1, "{units} not below its bucket {b}'s bound");
            if b > 0 {
                assert!(units >= bucket_upper_bound(b - 1), "{units} fits bucket {}", b - 1);
            }
            last = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn buckets_are_at_most_an_eighth_wide() {
        for b in 2..BUCKETS - 1 {
            let (low, high) = (bucket_upper_bound(b - 1), bucket_upper_bound(b));
            #[allow(clippy::cast_precision_loss)]
            let ratio = high as f64 / low as f64;
            assert!(ratio <= 1.125, "bucket {b}: {low}..{high}");
        }
    }

    #[test]
    fn quantiles_and_intervals() {
        let stats = LoopStats::default();
        let unit = 1e-9; // a unit is a nanosecond here
        for _ in 0..90 {
            stats.record_lag(2_000);
        }
        for _ in 0..10 {
            stats.record_lag(50_000_000);
        }
        let first = stats.snapshot(unit);
        assert_eq!(first.lag_samples(), 100);
        for q in [0.5, 0.9] {
            let lag = first.lag_quantile(q);
            assert!((2e-6..2.25e-6).contains(&lag), "{q}: {lag}");
        }
        assert!((first.lag_quantile(0.99) - 0.05).abs() < 1e-12, "capped by the max");
        assert!((first.lag_max_seconds() - 0.05).abs() < 1e-12);

        stats.record_lag(3_000_000);
        stats.empty_iterations.add(7);
        stats.run.add(40);
        stats.idle.add(15);
        let interval = stats.snapshot(unit).since(&first);
        assert_eq!(interval.lag_samples(), 1);
        assert_eq!(interval.iterations, 8, "seven empty, one with a lag sample");
        assert!((interval.busy_seconds() - 25e-9).abs() < 1e-15);
        let max = interval.lag_max_seconds();
        assert!((3e-3..3.4e-3).contains(&max), "the interval's max is its bucket's bound: {max}");
        assert!((interval.lag_quantile(0.5) - max).abs() < 1e-12);
        assert!(stats.snapshot(unit).since(&stats.snapshot(unit)).lag_quantile(0.5) == 0.0);
        assert_eq!(interval.lag_sum, 3_000_000);
        assert_eq!(interval.lag_buckets(), vec![(bucket_upper_bound(bucket_of(3_000_000)) as f64 * unit, 1)]);
        let all: u64 = stats.snapshot(unit).lag_buckets().iter().map(|(_, n)| n).sum();
        assert_eq!(all, 101);
    }

    #[test]
    fn traffic_per_kind() {
        let stats = LoopStats::default();
        let tcp = stats.traffic(TransportKind::Tcp);
        tcp.opened.add(3);
        tcp.closed.add(1);
        tcp.bytes_in.add(100);
        let first = stats.snapshot(1e-9);
        tcp.opened.add(1);
        tcp.bytes_out.add(7);
        let later = stats.snapshot(1e-9);
        let t = later.transports[TransportKind::Tcp as usize];
        assert_eq!((t.open, t.opened, t.bytes_in, t.bytes_out), (3, 4, 100, 7));
        let i = later.since(&first).transports[0];
        assert_eq!((i.open, i.opened, i.bytes_in, i.bytes_out), (3, 1, 0, 7));
        assert_eq!(later.transports[TransportKind::Pipe as usize], TrafficSnapshot::default());
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
    }
}
