//! What every transport shares about its life and its writing, without Python.
//!
//! - [`WriteFlow`]: write flow control. The protocol is paused once the buffered bytes exceed
//!   the high watermark and resumed once they are down to the low one; each crossing is reported
//!   once (asyncio's `_maybe_pause_protocol`/`_maybe_resume_protocol`).
//! - [`Lifecycle`]: open, closing (`close()` called: no more reads, the buffer drains), lost
//!   (`connection_lost` scheduled), with the count of writes made after the loss.
//!
//! The transports of the bindings (stream, pipe, datagram, TLS) keep one of each and ask them; the
//! Python calls (`pause_writing()`, the warning about writes to a lost connection) stay theirs.

/// asyncio's default high watermark for writes (stream, pipe and datagram transports); the low
/// one defaults to a quarter of it.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// From this dropped write to a lost connection on, each logs a warning (asyncio's
/// `LOG_THRESHOLD_FOR_CONNLOST_WRITES`, compared with its `_conn_lost`, which is one more than
/// the writes dropped so far).
pub const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// Write flow control: the watermarks and whether the protocol is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFlow {
    high: usize,
    low: usize,
    paused: bool,
}

impl Default for WriteFlow {
    fn default() -> Self {
        Self::new(DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER / 4)
    }
}

impl WriteFlow {
    /// Limits as given (the bindings check `high >= low` with asyncio's message).
    #[must_use]
    pub const fn new(high: usize, low: usize) -> Self {
        Self { high, low, paused: false }
    }

    /// `get_write_buffer_limits()`: `(low, high)`.
    #[must_use]
    pub const fn limits(&self) -> (usize, usize) {
        (self.low, self.high)
    }

    pub fn set_limits(&mut self, high: usize, low: usize) {
        self.high = high;
        self.low = low;
    }

    #[must_use]
    pub const fn is_paused(&self) -> bool {
        self.paused
    }

    /// [`WriteFlow::pause`] after a write (`grew`), [`WriteFlow::resume`] after a flush.
    pub fn update(&mut self, size: usize, grew: bool) -> bool {
        if grew {
            self.pause(size)
        } else {
            self.resume(size)
        }
    }

    /// asyncio's TLS rule, for both directions at once: pause at the high watermark or above
    /// (`Some(true)`), resume at the low one or below (`Some(false)`), each once.
    pub fn control_inclusive(&mut self, size: usize) -> Option<bool> {
        if size >= self.high && !self.paused {
            self.paused = true;
            Some(true)
        } else if size <= self.low && self.paused {
            self.paused = false;
            Some(false)
        } else {
            None
        }
    }

    /// The buffer holds `size` bytes after a write: true when the protocol must be paused now
    /// (above the high watermark and not paused yet).
    pub fn pause(&mut self, size: usize) -> bool {
        if size <= self.high || self.paused {
            return false;
        }
        self.paused = true;
        true
    }

    /// The buffer holds `size` bytes after a flush: true when the protocol must be resumed now
    /// (paused, and down to the low watermark).
    pub fn resume(&mut self, size: usize) -> bool {
        if !self.paused || size > self.low {
            return false;
        }
        self.paused = false;
        true
    }
}

/// Where a transport is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// Reading and writing.
    #[default]
    Open,
    /// `close()` was called: reading stopped, what is buffered is still written.
    Closing,
    /// `connection_lost` is scheduled (or has run); `writes` counts the writes made since.
    Lost { writes: u32 },
}

impl Lifecycle {
    /// asyncio's `is_closing()`: closing or lost.
    #[must_use]
    pub const fn is_closing(&self) -> bool {
        !matches!(self, Self::Open)
    }

    /// asyncio's `_conn_lost != 0`.
    #[must_use]
    pub const fn is_lost(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }

    /// `close()`: true if this call closes an open transport (a second `close()` does nothing).
    pub fn close(&mut self) -> bool {
        if *self != Self::Open {
            return false;
        }
        *self = Self::Closing;
        true
    }

    /// `connection_lost` is scheduled: true the first time (it is scheduled once).
    pub fn lose(&mut self) -> bool {
        if self.is_lost() {
            return false;
        }
        *self = Self::Lost { writes: 0 };
        true
    }

    /// A write to the transport. `None` while the connection is not lost (the write goes
    /// ahead); once lost, the write is dropped and the answer is whether to log a warning for it
    /// (from the [`LOG_THRESHOLD_FOR_CONNLOST_WRITES`]th dropped write on).
    pub fn write_after_loss(&mut self) -> Option<bool> {
        match self {
            Self::Lost { writes } => {
                *writes = writes.saturating_add(1);
                Some(*writes >= LOG_THRESHOLD_FOR_CONNLOST_WRITES)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_once_above_high_and_resumes_once_at_low() {
        let mut flow = WriteFlow::new(100, 25);
        assert!(!flow.pause(100), "at the high watermark: not yet");
        assert!(flow.pause(101));
        assert!(!flow.pause(500), "already paused: reported once");
        assert!(flow.is_paused());
        assert!(!flow.resume(26), "above the low watermark");
        assert!(flow.resume(25));
        assert!(!flow.resume(0), "already resumed");
        assert!(!flow.is_paused());
    }

    #[test]
    fn update_pauses_after_growth_and_resumes_after_flush() {
        let mut flow = WriteFlow::new(10, 5);
        assert!(!flow.update(11, false), "a flush never pauses");
        assert!(flow.update(11, true));
        assert!(!flow.update(4, true), "a write never resumes");
        assert!(flow.update(4, false));
    }

    #[test]
    fn the_tls_rule_pauses_at_the_high_watermark() {
        let mut flow = WriteFlow::new(100, 25);
        assert_eq!(flow.control_inclusive(99), None);
        assert_eq!(flow.control_inclusive(100), Some(true));
        assert_eq!(flow.control_inclusive(100), None);
        assert_eq!(flow.control_inclusive(26), None);
        assert_eq!(flow.control_inclusive(25), Some(false));
        assert_eq!(flow.control_inclusive(0), None);
    }

    #[test]
    fn resume_without_pause_does_nothing() {
        let mut flow = WriteFlow::default();
        assert!(!flow.resume(0));
        assert_eq!(flow.limits(), (DEFAULT_HIGH_WATER / 4, DEFAULT_HIGH_WATER));
    }

    #[test]
    fn zero_limits_pause_on_any_byte() {
        // asyncio: set_write_buffer_limits(0) pauses as soon as anything is buffered.
        let mut flow = WriteFlow::new(0, 0);
        assert!(!flow.pause(0));
        assert!(flow.pause(1));
        assert!(flow.resume(0));
    }

    #[test]
    fn new_limits_apply_to_the_next_check() {
        let mut flow = WriteFlow::new(10, 2);
        assert!(flow.pause(11));
        flow.set_limits(1000, 500);
        assert!(flow.resume(400), "now below the new low watermark");
        assert_eq!(flow.limits(), (500, 1000));
    }

    #[test]
    fn lifecycle_close_then_lose() {
        let mut life = Lifecycle::default();
        assert!(!life.is_closing());
        assert_eq!(life.write_after_loss(), None);
        assert!(life.close());
        assert!(!life.close(), "a second close does nothing");
        assert!(life.is_closing() && !life.is_lost());
        assert!(life.lose());
        assert!(!life.lose(), "connection_lost is scheduled once");
        assert!(life.is_closing() && life.is_lost());
        assert!(!life.close());
    }

    #[test]
    fn writes_after_loss_warn_from_the_threshold_on() {
        let mut life = Lifecycle::Open;
        life.lose();
        let warned: Vec<bool> = (0..7).map(|_| life.write_after_loss().unwrap()).collect();
        assert_eq!(warned, [false, false, false, false, true, true, true]);
    }

    #[test]
    fn lost_write_count_saturates() {
        let mut life = Lifecycle::Lost { writes: u32::MAX };
        assert_eq!(life.write_after_loss(), Some(true));
        assert_eq!(life, Lifecycle::Lost { writes: u32::MAX });
    }
}
