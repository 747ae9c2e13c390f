//! The timer queue behind `call_at`: a binary heap keyed by (deadline, scheduling order), so
//! timers with equal deadlines fire in the order they were scheduled.
//!
//! Cancellation is lazy, as in asyncio: a cancelled timer stays in the heap until it reaches the
//! head or until more than half of a heap of over [`COMPACT_MIN`] timers is cancelled, when the
//! heap is rebuilt without them. The queue cannot see whether an item is cancelled; the caller
//! reports cancellations with [`TimerQueue::note_cancelled`] and says which items to keep.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Below this many timers, cancelled ones are only dropped when they reach the head.
pub const COMPACT_MIN: usize = 100;

struct Entry<T> {
    when: f64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed: BinaryHeap is a max-heap and the earliest (deadline, seq) must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.when.total_cmp(&self.when).then_with(|| other.seq.cmp(&self.seq))
    }
}

pub struct TimerQueue<T> {
    /// Pending timers, cancelled ones included.
    heap: BinaryHeap<Entry<T>>,
    /// Scheduling counter: the tie-breaker between equal deadlines.
    next_seq: u64,
    /// How many timers in `heap` are cancelled, as reported by the caller.
    cancelled: usize,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), next_seq: 0, cancelled: 0 }
    }
}

impl<T> TimerQueue<T> {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn push(&mut self, when: f64, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, item });
    }

    /// The earliest deadline and its item.
    #[must_use]
    pub fn peek(&self) -> Option<(f64, &T)> {
        self.heap.peek().map(|e| (e.when, &e.item))
    }

    /// Removes and returns the earliest timer.
    pub fn pop(&mut self) -> Option<(f64, T)> {
        self.heap.pop().map(|e| (e.when, e.item))
    }

    /// `n` more timers in the queue were cancelled.
    pub fn note_cancelled(&mut self, n: usize) {
        self.cancelled += n;
    }

    /// Visits every item, in no particular order.
    pub fn for_each(&self, f: impl FnMut(&T)) {
        self.heap.iter().map(|e| &e.item).for_each(f);
    }

    /// A cancelled timer left the queue (popped at the head).
    pub fn forget_cancelled(&mut self) {
        self.cancelled = self.cancelled.saturating_sub(1);
    }

    /// Whether enough timers are cancelled that [`TimerQueue::compact`] is worth its cost.
    #[must_use]
    pub fn should_compact(&self) -> bool {
        self.heap.len() > COMPACT_MIN && self.cancelled * 2 > self.heap.len()
    }

    /// Rebuilds the heap with only the items `keep` accepts; returns the others, so the caller
    /// decides where they are dropped.
    pub fn compact(&mut self, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
        let (kept, removed): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.heap).into_vec().into_iter().partition(|e| keep(&e.item));
        self.heap = BinaryHeap::from(kept);
        self.cancelled = 0;
        removed.into_iter().map(|e| e.item).collect()
    }

    /// Empties the queue, returning the items.
    pub fn drain(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap).into_vec().into_iter().map(|e| e.item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_scheduling_order() {
        let mut q = TimerQueue::new();
        q.push(2.0, "late");
        q.push(1.0, "a");
        q.push(1.0, "b");
        q.push(-5.0, "past");
        q.push(1.0, "c");
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, x)| x)).collect();
        assert_eq!(order, ["past", "a", "b", "c", "late"]);
    }

    #[test]
    fn compaction_keeps_order_and_resets_count() {
        let mut q = TimerQueue::new();
        for i in 0..300u32 {
            q.push(f64::from(i % 7), i);
        }
        q.note_cancelled(200);
        assert!(q.should_compact());
        let removed = q.compact(|&i| i % 3 == 0);
        assert_eq!(removed.len(), 200);
        assert!(!q.should_compact());
        let mut last = (f64::NEG_INFINITY, 0);
        while let Some((when, i)) = q.pop() {
            assert!((when, i) >= last, "{when} {i} after {last:?}");
            assert_eq!(i % 3, 0);
            last = (when, i);
        }
    }

    #[test]
    fn small_queues_are_not_compacted() {
        let mut q = TimerQueue::new();
        q.push(1.0, ());
        q.note_cancelled(1);
        assert!(!q.should_compact());
        assert_eq!(q.drain().len(), 1);
        assert!(q.is_empty());
    }
}
