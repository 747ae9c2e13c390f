//! A transport's write buffer: the bytes accepted by `write()` that the socket has not taken yet.
//!
//! Chunks are kept as written (one copy, when the data is buffered) and handed to `writev` as
//! one gather list, so many small writes leave in one system call. `len()` is what asyncio calls
//! the write buffer size, compared with the high and low watermarks for flow control.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

/// At most this many chunks go to one `writev` (Linux's `IOV_MAX` is 1024).
pub const MAX_IOV: usize = 64;

/// Where a write's data went ([`WriteBuffer::write_or_push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// All of it was written at once.
    Written,
    /// Appended behind what was already waiting (the descriptor is being watched already).
    Appended,
    /// Nothing was waiting and not all of it could be written: the rest is buffered, and the
    /// caller starts watching the descriptor for writing.
    Started,
}

#[derive(Default)]
pub struct WriteBuffer {
    /// Pending chunks, oldest first.
    chunks: VecDeque<Vec<u8>>,
    /// How much of the first chunk has already been sent.
    head_sent: usize,
    /// Total unsent bytes.
    len: usize,
}

impl WriteBuffer {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `data`; small writes join the last chunk, so a burst of tiny writes does
    /// not become a long gather list.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        // Never append to a head chunk that is partly sent: simpler accounting, same syscalls.
        let head_in_flight = self.chunks.len() == 1 && self.head_sent > 0;
        if let Some(last) = self.chunks.back_mut() {
            if !head_in_flight && data.len() <= 4096 && last.len() + data.len() <= 64 * 1024 {
                last.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(data.to_vec());
    }

    /// The unsent bytes as a gather list of at most [`MAX_IOV`] slices.
    #[must_use]
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        self.chunks
            .iter()
            .take(MAX_IOV)
            .enumerate()
            .map(|(i, c)| IoSlice::new(if i == 0 { &c[self.head_sent..] } else { c }))
            .collect()
    }

    /// A transport's `write(data)`: when nothing is waiting, `write` is tried at once (a call that
    /// would block or was interrupted wrote nothing); what it did not take is buffered. Another
    /// error is returned as it is, and nothing is buffered.
    pub fn write_or_push(&mut self, data: &[u8], write: impl FnOnce(&[u8]) -> io::Result<usize>) -> io::Result<Pushed> {
        if !self.is_empty() {
            self.push(data);
            return Ok(Pushed::Appended);
        }
        let written = match write(data) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
            Err(e) => return Err(e),
        };
        if written >= data.len() {
            return Ok(Pushed::Written);
        }
        self.push(&data[written..]);
        Ok(Pushed::Started)
    }

    /// Hands the unsent bytes to `write` as one gather list and forgets what it wrote; its
    /// error as it is.
    pub fn flush_with(&mut self, write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>) -> io::Result<usize> {
        let n = write(&self.io_slices())?;
        self.consume(n);
        Ok(n)
    }

    /// Forgets the first `n` bytes, which were sent.
    pub fn consume(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(head) = self.chunks.front() else {
                break;
            };
            let left = head.len() - self.head_sent;
            if n < left {
                self.head_sent += n;
                return;
            }
            n -= left;
            self.chunks.pop_front();
            self.head_sent = 0;
        }
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.head_sent = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(b: &WriteBuffer) -> Vec<u8> {
        b.io_slices().iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn write_or_push_writes_at_once_then_buffers_behind_what_waits() {
        let mut b = WriteBuffer::new();
        assert_eq!(b.write_or_push(b"all", |d| Ok(d.len())).unwrap(), Pushed::Written);
        assert!(b.is_empty());
        assert_eq!(b.write_or_push(b"partial", |_| Ok(3)).unwrap(), Pushed::Started);
        assert_eq!(contents(&b), b"tial");
        let appended = b.write_or_push(b"!", |_| panic!("no write while data waits")).unwrap();
        assert_eq!(appended, Pushed::Appended);
        assert_eq!(contents(&b), b"tial!");
    }

    #[test]
    fn write_or_push_buffers_all_when_the_write_would_block_and_nothing_on_error() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::Interrupted] {
            let mut b = WriteBuffer::new();
            assert_eq!(b.write_or_push(b"abc", |_| Err(kind.into())).unwrap(), Pushed::Started);
            assert_eq!(contents(&b), b"abc");
        }
        let mut b = WriteBuffer::new();
        let err = b.write_or_push(b"abc", |_| Err(io::ErrorKind::BrokenPipe.into())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(b.is_empty());
    }

    #[test]
    fn flush_with_forgets_what_was_written_and_keeps_it_on_error() {
        let mut b = WriteBuffer::new();
        b.push(b"abc");
        b.push(b"def");
        let n = b.flush_with(|slices| {
            assert_eq!(slices.iter().map(|s| s.len()).sum::<usize>(), 6, "all of it, in order");
            Ok(4)
        });
        assert_eq!(n.unwrap(), 4);
        assert_eq!(contents(&b), b"ef");
        let err = b.flush_with(|_| Err(io::Error::from(io::ErrorKind::WouldBlock)));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(b.len(), 2, "nothing forgotten on error");
    }

    #[test]
    fn push_consume_keeps_order() {
        let mut b = WriteBuffer::new();
        b.push(b"hello ");
        b.push(&vec![b'x'; 10_000]);
        b.push(b"world");
        assert_eq!(b.len(), 6 + 10_000 + 5);
        b.consume(3);
        let c = contents(&b);
        assert_eq!(&c[..3], b"lo ");
        assert_eq!(&c[c.len() - 5..], b"world");
        b.consume(3 + 10_000);
        assert_eq!(contents(&b), b"world");
        b.push(b"!");
        assert_eq!(contents(&b), b"world!");
        b.consume(6);
        assert!(b.is_empty());
        assert!(b.io_slices().is_empty());
    }

    #[test]
    fn partially_sent_head_is_not_appended_to() {
        let mut b = WriteBuffer::new();
        b.push(b"abcdef");
        b.consume(2);
        b.push(b"gh");
        assert_eq!(contents(&b), b"cdefgh");
        assert_eq!(b.len(), 6);
    }
}
