//! Log capture: splitting a byte stream into bounded lines, and batching lines
//! for `AppendLogs`.
//!
//! Both are pure (no I/O, no clock reads) so their edge cases are tested
//! directly; the launched supervisor feeds them bytes and instants.

use std::time::{Duration, Instant};

use ork_proto::v1::LogEntry;

/// The longest line kept, in bytes. A task that prints a megabyte without a
/// newline must not blow up the worker's memory or one log message.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

/// Appended to a line cut at [`MAX_LINE_BYTES`].
pub(crate) const TRUNCATION_MARKER: &str = " [... line truncated by ork]";

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`] bytes.
///
/// The rest of a longer line is dropped up to its newline and the kept part is
/// marked. Bytes that are not UTF-8 are replaced (lossy), since logs are text.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    /// The current line passed the cap; skip bytes until its newline.
    truncated: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::with_max(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    pub(crate) fn with_max(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            truncated: false,
        }
    }

    /// Feeds a chunk; returns the lines it completed.
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let (part, rest) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..]),
                None => (chunk, &[][..]),
            };
            let room = self.max.saturating_sub(self.buf.len());
            if part.len() > room {
                self.buf.extend_from_slice(&part[..room]);
                self.truncated = true;
            } else if !self.truncated {
                self.buf.extend_from_slice(part);
            }
            if newline.is_some() {
                lines.push(self.take_line());
            }
            chunk = rest;
        }
        lines
    }

    /// Ends the stream; returns the last line if it had no newline.
    pub(crate) fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() && !self.truncated {
            return None;
        }
        Some(self.take_line())
    }

    fn take_line(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.buf);
        // A CRLF line ending is one line ending, not a trailing character.
        if !self.truncated && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if std::mem::take(&mut self.truncated) {
            line.push_str(TRUNCATION_MARKER);
        }
        line
    }
}

/// When a batch of log lines is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Send once the oldest buffered line is this old.
    pub(crate) max_age: Duration,
    /// Send once this many lines are buffered; also the most lines in one batch.
    pub(crate) max_lines: usize,
    /// Send once this many bytes are buffered; also the most bytes in one batch
    /// (except a single line, which is always sent). Keeps each request far below
    /// gRPC's 4 MiB default message limit.
    pub(crate) max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_millis(200),
            max_lines: 500,
            max_bytes: 1024 * 1024,
        }
    }
}

/// Buffers log entries and hands them out in batches: when the oldest is
/// `max_age` old, or when `max_lines` / `max_bytes` are reached.
#[derive(Debug)]
pub(crate) struct LogBatcher {
    limits: BatchLimits,
    entries: std::collections::VecDeque<(LogEntry, Instant)>,
    bytes: usize,
}

impl LogBatcher {
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            entries: Default::default(),
            bytes: 0,
        }
    }

    /// Buffers one entry, received at `now`.
    pub(crate) fn push(&mut self, entry: LogEntry, now: Instant) {
        self.bytes += entry.line.len();
        self.entries.push_back((entry, now));
    }

    /// How many entries are buffered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// When the buffered entries become due by age, if any are buffered.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.entries.front().map(|(_, t)| *t + self.limits.max_age)
    }

    fn is_due(&self, now: Instant) -> bool {
        self.entries.len() >= self.limits.max_lines
            || self.bytes >= self.limits.max_bytes
            || self.due_at().is_some_and(|due| now >= due)
    }

    /// Takes one batch if one is due at `now`.
    pub(crate) fn take_if_due(&mut self, now: Instant) -> Option<Vec<LogEntry>> {
        if self.is_due(now) {
            Some(self.take_batch())
        } else {
            None
        }
    }

    /// Takes one batch regardless of age (for the final flush); empty when
    /// nothing is buffered. Call until empty to drain.
    pub(crate) fn take_batch(&mut self) -> Vec<LogEntry> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((entry, _)) = self.entries.front() {
            let size = entry.line.len();
            let full = batch.len() >= self.limits.max_lines
                || (!batch.is_empty() && bytes + size > self.limits.max_bytes);
            if full {
                break;
            }
            bytes += size;
            if let Some((entry, _)) = self.entries.pop_front() {
                batch.push(entry);
            }
        }
        self.bytes -= bytes;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"hel"), Vec::<String>::new());
        assert_eq!(s.push(b"lo\nwor"), ["hello"]);
        assert_eq!(s.push(b"ld\r\n\nlast"), ["world", ""]);
        assert_eq!(s.finish().as_deref(), Some("last"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn truncates_long_lines_and_marks_them() {
        let mut s = LineSplitter::with_max(4);
        let lines = s.push(b"abcdefgh\nok\n");
        assert_eq!(lines, [format!("abcd{TRUNCATION_MARKER}"), "ok".to_owned()]);
        // A long line spread over chunks is cut once and resumes after its newline.
        assert_eq!(s.push(b"12"), Vec::<String>::new());
        assert_eq!(s.push(b"345"), Vec::<String>::new());
        assert_eq!(
            s.push(b"67\nnext\n"),
            [format!("1234{TRUNCATION_MARKER}"), "next".into()]
        );
        // A line exactly at the cap is not truncated.
        assert_eq!(s.push(b"wxyz\n"), ["wxyz"]);
    }

    #[test]
    fn truncated_tail_without_newline_is_kept() {
        let mut s = LineSplitter::with_max(3);
        assert!(s.push(b"abcdef").is_empty());
        assert_eq!(s.finish(), Some(format!("abc{TRUNCATION_MARKER}")));
    }

    #[test]
    fn non_utf8_is_replaced_not_dropped() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"caf\xe9 ok\n"), ["caf\u{fffd} ok"]);
    }

    #[test]
    fn default_cap_is_64_kib() {
        let mut s = LineSplitter::default();
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.push(b'\n');
        let lines = s.push(&input);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES + TRUNCATION_MARKER.len());
    }

    fn entry(line: &str) -> LogEntry {
        LogEntry {
            stream: "stdout".into(),
            line: line.into(),
            time: None,
        }
    }

    fn lines(batch: &[LogEntry]) -> Vec<&str> {
        batch.iter().map(|e| e.line.as_str()).collect()
    }

    #[test]
    fn batch_is_due_after_max_age() {
        let t0 = Instant::now();
        let mut b = LogBatcher::new(BatchLimits::default());
        assert!(b.take_if_due(t0).is_none(), "nothing buffered");
        b.push(entry("a"), t0);
        b.push(entry("b"), t0 + Duration::from_millis(150));
        assert!(b.take_if_due(t0 + Duration::from_millis(199)).is_none());
        assert_eq!(b.due_at(), Some(t0 + Duration::from_millis(200)));
        let batch = b.take_if_due(t0 + Duration::from_millis(200));
        assert_eq!(batch.as_deref().map(lines), Some(vec!["a", "b"]));
        assert_eq!(b.len(), 0);
        assert_eq!(b.due_at(), None);
    }

    #[test]
    fn batch_is_due_at_max_lines_and_caps_its_size() {
        let t0 = Instant::now();
        let limits = BatchLimits {
            max_lines: 3,
            ..BatchLimits::default()
        };
        let mut b = LogBatcher::new(limits);
        for l in ["1", "2"] {
            b.push(entry(l), t0);
        }
        assert!(b.take_if_due(t0).is_none());
        for l in ["3", "4"] {
            b.push(entry(l), t0);
        }
        assert_eq!(
            b.take_if_due(t0).as_deref().map(lines),
            Some(vec!["1", "2", "3"])
        );
        // The leftover line is not due yet by count, only by age.
        assert!(b.take_if_due(t0).is_none());
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn batch_is_due_at_max_bytes_and_splits_by_bytes() {
        let t0 = Instant::now();
        let limits = BatchLimits {
            max_bytes: 10,
            ..BatchLimits::default()
        };
        let mut b = LogBatcher::new(limits);
        b.push(entry("aaaaaa"), t0);
        assert!(b.take_if_due(t0).is_none());
        b.push(entry("bbbbbb"), t0);
        // 12 bytes buffered: due, but one batch holds at most 10 bytes.
        assert_eq!(
            b.take_if_due(t0).as_deref().map(lines),
            Some(vec!["aaaaaa"])
        );
        assert_eq!(b.len(), 1);
        // A single line larger than the byte cap still goes out alone.
        b.push(entry("cccccccccccccccc"), t0);
        assert_eq!(lines(&b.take_batch()), ["bbbbbb"]);
        assert_eq!(lines(&b.take_batch()), ["cccccccccccccccc"]);
        assert!(b.take_batch().is_empty());
    }

    #[test]
    fn final_drain_returns_every_line_in_order() {
        let t0 = Instant::now();
        let limits = BatchLimits {
            max_lines: 2,
            ..BatchLimits::default()
        };
        let mut b = LogBatcher::new(limits);
        for l in ["1", "2", "3", "4", "5"] {
            b.push(entry(l), t0);
        }
        let mut all = Vec::new();
        loop {
            let batch = b.take_batch();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 2);
            all.extend(batch);
        }
        assert_eq!(lines(&all), ["1", "2", "3", "4", "5"]);
    }
}
