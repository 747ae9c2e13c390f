//! The timer queue behind `call_at`: a 4-ary min-heap keyed by (deadline, scheduling order), so
//! timers with equal deadlines fire in the order they were scheduled.
//!
//! Cancellation is lazy, as in asyncio: a cancelled timer stays in the heap until it reaches the
//! head or until more than half of a heap of over [`COMPACT_MIN`] timers is cancelled, when the
//! heap is rebuilt without them. The queue cannot see whether an item is cancelled; the caller
//! reports cancellations with [`TimerQueue::note_cancelled`] and says which items to keep.

/// Below this many timers, cancelled ones are only dropped when they reach the head.
pub const COMPACT_MIN: usize = 100;

/// Children per node. A 4-ary heap is half as deep as a binary one and a node's children share
/// one or two cache lines: with 50,000 pending timers, popping from `std`'s binary heap was an
/// eighth of the time of a timer's whole life (perf), most of it waiting on memory.
const ARITY: usize = 4;

struct Entry<T> {
    /// The deadline as an integer with the order of `f64::total_cmp` (see [`order_key`]).
    key: u64,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    #[inline]
    fn before(&self, other: &Self) -> bool {
        (self.key, self.seq) < (other.key, other.seq)
    }
}

/// Maps a deadline to an unsigned integer whose order is `f64::total_cmp`'s (negative deadlines
/// and infinities included), so that comparing two timers is comparing two integer pairs.
#[inline]
fn order_key(when: f64) -> u64 {
    let bits = when.to_bits();
    // Negative numbers: flip every bit (their magnitude order is reversed); others: the sign bit.
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The deadline a key was made from.
#[inline]
fn deadline(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 { key & !(1 << 63) } else { !key })
}

pub struct TimerQueue<T> {
    /// Pending timers, cancelled ones included: a min-heap on (deadline, seq).
    heap: Vec<Entry<T>>,
    /// Scheduling counter: the tie-breaker between equal deadlines.
    next_seq: u64,
    /// How many timers in `heap` are cancelled, as reported by the caller.
    cancelled: usize,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self { heap: Vec::new(), next_seq: 0, cancelled: 0 }
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
        self.heap.push(Entry { key: order_key(when), seq, item });
        self.sift_up(self.heap.len() - 1);
    }

    /// The earliest deadline and its item.
    #[must_use]
    pub fn peek(&self) -> Option<(f64, &T)> {
        self.heap.first().map(|e| (deadline(e.key), &e.item))
    }

    /// Removes and returns the earliest timer.
    pub fn pop(&mut self) -> Option<(f64, T)> {
        let last = self.heap.pop()?;
        let top = if self.heap.is_empty() {
            last
        } else {
            let top = std::mem::replace(&mut self.heap[0], last);
            self.sift_down(0);
            top
        };
        Some((deadline(top.key), top.item))
    }

    /// Moves the entry at `i` towards the root until its parent comes before it.
    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if !self.heap[i].before(&self.heap[parent]) {
                break;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    /// Moves the entry at `i` towards the leaves until it comes before all its children.
    fn sift_down(&mut self, mut i: usize) {
        let len = self.heap.len();
        loop {
            let first = i * ARITY + 1;
            if first >= len {
                break;
            }
            let (upper, lower) = self.heap.split_at_mut(first);
            let children = &mut lower[..ARITY.min(len - first)];
            let mut min = 0;
            for c in 1..children.len() {
                if children[c].before(&children[min]) {
                    min = c;
                }
            }
            if !children[min].before(&upper[i]) {
                break;
            }
            std::mem::swap(&mut upper[i], &mut children[min]);
            i = first + min;
        }
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
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap).into_iter().partition(|e| keep(&e.item));
        self.heap = kept;
        for i in (0..self.heap.len().div_ceil(ARITY)).rev() {
            self.sift_down(i);
        }
        self.cancelled = 0;
        removed.into_iter().map(|e| e.item).collect()
    }

    /// Empties the queue, returning the items.
    pub fn drain(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap).into_iter().map(|e| e.item).collect()
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
    fn deadlines_survive_the_key_and_keep_total_order() {
        let values = [f64::NEG_INFINITY, -1e300, -2.5, -0.0, 0.0, 1e-300, 3.25, 1e300, f64::INFINITY, f64::NAN];
        for w in values.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} before {}", w[0], w[1]);
        }
        for v in values {
            assert_eq!(deadline(order_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn interleaved_pushes_and_pops_match_a_sorted_model() {
        // A small deterministic generator: pushes and pops in random order, deadlines with many
        // ties, against a model that sorts by (deadline, scheduling order).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut q = TimerQueue::new();
        let mut model: Vec<(f64, u32)> = Vec::new();
        for id in 0..20_000u32 {
            if next() % 3 == 0 {
                let got = q.pop();
                let want = (!model.is_empty()).then(|| model.remove(0));
                assert_eq!(got, want);
            } else {
                #[allow(clippy::cast_precision_loss)]
                let when = (next() % 50) as f64 - 10.0;
                q.push(when, id);
                let at = model.partition_point(|&(w, _)| w.total_cmp(&when).is_le());
                model.insert(at, (when, id));
            }
            assert_eq!(q.len(), model.len());
        }
        let rest: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, model);
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
