//! The writer thread: takes queued events, collapses repeats, serialises lines into a
//! buffer and writes it; reports drops and suppressed counts, reopens after rotation,
//! recreates a deleted log, and accounts for every event at shutdown.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::limit::Limiter;
use super::line::{DroppedLine, EventLine, Line, SuppressedLine};
use super::schema::{self, Op};
use super::{format_rfc3339, Counters, LogPlace, Queued};

/// Upper bound on events written between two "catch-up" points (drop report + flush), so a
/// queue that never runs empty under sustained load still gets its drops reported and flushed.
const BATCH_MAX: usize = 4096;

/// When idle, the writer wakes this often to report drops and suppressed counts.
const IDLE_WAKE: Duration = Duration::from_millis(500);

/// After a batch, the writer waits this long before it takes the next one, so events arrive
/// in a queue nobody waits on: queueing one is then an atomic store, not a wake-up of this
/// thread (on one CPU, a wake-up per event cost more than the event's FUSE round trip). The
/// queue (16,384 events, 16 MiB) holds far more than this long at any rate the daemon serves
/// (about 100,000 events per second measured on one CPU); lines reach the file this much later.
const LINGER: Duration = Duration::from_millis(5);

/// Suppressed-event summaries are written at least this often while a uid is suppressed.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// The writer hands its buffer to `write(2)` once it holds this much.
const WRITE_BUFFER: usize = 64 * 1024;

/// While the log cannot be written, at most this much waits in the buffer; later events are
/// counted as dropped. Larger than the longest line, so one line always fits.
pub(super) const BUFFER_MAX: usize = 1024 * 1024;

/// A missing log whose directory or file cannot be recreated is retried this often.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// What makes two events the same for collapsing.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CollapseKey {
    pid: u32,
    op: &'static str,
    path: PathBuf,
    flags: Option<&'static str>,
    result: Result<(), i32>,
    reason: Option<&'static str>,
}

impl CollapseKey {
    fn of(q: &Queued) -> CollapseKey {
        CollapseKey {
            pid: q.event.pid,
            op: q.event.op,
            path: q.event.path.clone(),
            flags: q.event.flags,
            result: q.event.result,
            reason: q.event.reason,
        }
    }
}

/// RFC 3339 timestamps of events, as [`format_rfc3339`] writes them, with the date and time
/// of day formatted once per second: within one second only the microseconds change.
#[derive(Default)]
struct Stamp {
    /// The second the prefix is for, and "YYYY-MM-DDTHH:MM:SS." of it.
    second: Option<u64>,
    prefix: String,
    out: String,
}

impl Stamp {
    fn format(&mut self, t: SystemTime) -> &str {
        let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
            // Before 1970: not worth a cache.
            self.out = format_rfc3339(t);
            return &self.out;
        };
        let second = since.as_secs();
        if self.second != Some(second) {
            let full = format_rfc3339(t);
            // "…SS.ffffffZ": keep everything up to and with the dot.
            let cut = full.len().saturating_sub(7);
            self.prefix = full.get(..cut).unwrap_or_default().to_owned();
            self.second = Some(second);
        }
        self.out.clear();
        self.out.push_str(&self.prefix);
        let micros = since.subsec_micros();
        let mut digits = [b'0'; 6];
        let mut n = micros;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.out.extend(digits.iter().map(|&b| char::from(b)));
        self.out.push('Z');
        &self.out
    }
}

/// Distinct events held for collapsing before all are written anyway (bounds memory).
const COLLAPSE_MAX: usize = 16 * 1024;

/// State of the writer thread.
pub(super) struct Writer {
    /// `None` while the log is gone and could not be recreated.
    file: Option<File>,
    /// Where to recreate the log; `None` for a sink given as an open file (tests).
    place: Option<LogPlace>,
    path: PathBuf,
    counters: Arc<Counters>,
    limiter: Option<Arc<Limiter>>,
    /// Collapse window (zero: off) and the events held in it: event, count, first seen.
    collapse: Duration,
    pending: HashMap<CollapseKey, (Queued, u64, Instant)>,
    /// Lines not yet handed to write(2), whole lines only (but see `partial`).
    buf: Vec<u8>,
    /// Events in `buf`; counted as written only once `buf` is in a file that still exists.
    buf_events: u64,
    /// Drops that `dropped` lines in `buf` report.
    buf_drop_reports: u64,
    /// Suppressed events that `suppressed` lines in `buf` report.
    buf_suppressed: u64,
    /// Whether the start of `buf` was already written (a short write before an error).
    partial: bool,
    /// Where a new line waits while the buffer before it is flushed.
    line: Vec<u8>,
    /// Whether the last I/O failed, to log an error once per failure streak, not per event.
    failing: bool,
    last_summary: Instant,
    /// Last attempt to recreate a missing log.
    last_reopen: Option<Instant>,
    /// Event timestamps, formatted once per second.
    stamp: Stamp,
}

impl Writer {
    pub(super) fn new(
        file: File,
        place: Option<LogPlace>,
        path: &Path,
        counters: Arc<Counters>,
        limiter: Option<Arc<Limiter>>,
        collapse: Duration,
    ) -> Writer {
        Writer {
            file: Some(file),
            place,
            path: path.to_path_buf(),
            counters,
            limiter,
            collapse,
            pending: HashMap::new(),
            buf: Vec::with_capacity(WRITE_BUFFER),
            buf_events: 0,
            buf_drop_reports: 0,
            buf_suppressed: 0,
            partial: false,
            line: Vec::with_capacity(512),
            failing: false,
            last_summary: Instant::now(),
            last_reopen: None,
            stamp: Stamp::default(),
        }
    }

    pub(super) fn run(&mut self, rx: Receiver<Queued>) {
        loop {
            if self.counters.reopen.swap(false, Ordering::Relaxed) {
                self.reopen();
            }
            let first = match rx.recv_timeout(IDLE_WAKE) {
                Ok(q) => q,
                Err(RecvTimeoutError::Timeout) => {
                    // A drop counted just after our last catch-up would otherwise wait for the
                    // next event; report it now, with collapsed events whose window has passed.
                    self.flush_pending(false);
                    self.catch_up(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.take(first);
            let mut batch = 1;
            let mut disconnected = false;
            while batch < BATCH_MAX {
                match rx.try_recv() {
                    Ok(q) => {
                        self.take(q);
                        batch += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            self.flush_pending(false);
            self.catch_up(false);
            if disconnected {
                break;
            }
            thread::sleep(LINGER);
        }
        // All senders are gone, so every drop has been counted: this report is final.
        self.flush_pending(true);
        self.catch_up(true);
        if !self.buf.is_empty() {
            // One last try after the final reports; then what is left is lost.
            self.flush();
        }
        if !self.buf.is_empty() {
            let lost = self.buf_events;
            self.lose_buffer();
            self.buf.clear();
            log::error!(
                "audit log {}: {lost} events could not be written at exit",
                self.path.display()
            );
        }
        let unreported = self.counters.dropped.load(Ordering::Relaxed)
            - self.counters.dropped_reported.load(Ordering::Relaxed);
        let owed = self.limiter.as_ref().map_or(0, |l| l.owed());
        if unreported + owed > 0 {
            log::error!(
                "audit log {}: {unreported} dropped and {owed} suppressed events could not be \
                 recorded in the log at exit",
                self.path.display()
            );
        }
        if let Some(file) = &self.file {
            if let Err(e) = file.sync_data() {
                // Expected for pipes and some special files; the data is flushed regardless.
                log::debug!("audit log sync failed: {e}");
            }
        }
    }

    /// One event from the queue: its bytes go back to the queue's budget.
    fn take(&mut self, q: Queued) {
        self.counters
            .queued_bytes
            .fetch_sub(q.cost, Ordering::Relaxed);
        self.write_event(q);
    }

    /// Flushes what the old file still owes, then continues in a fresh file at the path. If
    /// the new file cannot be opened the old one is kept: better a rotated log than none.
    fn reopen(&mut self) {
        self.catch_up(false);
        let Some(place) = &self.place else { return };
        match place.open() {
            Ok(file) => {
                self.flush();
                if self.partial {
                    // Never start the new file with the end of a line.
                    self.lose_buffer();
                }
                self.file = Some(file);
                log::info!("audit log reopened: {}", self.path.display());
            }
            Err(e) => log::error!("audit log: cannot reopen {}: {e}", self.path.display()),
        }
    }

    /// Whether the open log file has been deleted (no name left: what is written is lost).
    fn file_gone(&self) -> bool {
        let (Some(file), Some(_)) = (&self.file, &self.place) else {
            return false;
        };
        crate::sys::fstat(file.as_fd()).is_ok_and(|st| st.st_nlink == 0)
    }

    /// The log file or its directory was deleted: recreate both as at start. Lines already
    /// half written to the deleted file are lost (and counted).
    fn replace_deleted(&mut self) {
        log::warn!(
            "audit log {} was deleted; recreating it",
            self.path.display()
        );
        if self.partial {
            self.lose_buffer();
        }
        self.file = None;
        self.last_reopen = None;
        self.try_recreate();
    }

    /// Recreates a missing log (at most once per REOPEN_RETRY).
    fn try_recreate(&mut self) {
        if self.last_reopen.is_some_and(|t| t.elapsed() < REOPEN_RETRY) {
            return;
        }
        self.last_reopen = Some(Instant::now());
        let Some(place) = &self.place else { return };
        match place.open() {
            Ok(file) => {
                self.file = Some(file);
                log::warn!("audit log {} recreated", self.path.display());
            }
            Err(e) => {
                if !self.failing {
                    log::error!(
                        "audit log {}: cannot recreate it: {e}; events are being dropped",
                        self.path.display()
                    );
                    self.failing = true;
                }
            }
        }
    }

    /// Counts everything in the buffer as lost: events and suppressed counts as dropped,
    /// reported drops as owed again.
    fn lose_buffer(&mut self) {
        let c = &self.counters;
        let lost = self.buf_events + self.buf_suppressed;
        c.dropped.fetch_add(lost, Ordering::Relaxed);
        c.writer_lost.fetch_add(self.buf_events, Ordering::Relaxed);
        c.dropped_reported
            .fetch_sub(self.buf_drop_reports, Ordering::Relaxed);
        self.buf.clear();
        self.buf_events = 0;
        self.buf_drop_reports = 0;
        self.buf_suppressed = 0;
        self.partial = false;
    }

    /// Hands the buffer to the file. Before, a deleted file is replaced; after, a file found
    /// deleted means the lines just written are lost: they count as dropped, not written.
    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        if self.file.is_none() {
            self.try_recreate();
        } else if self.file_gone() {
            self.replace_deleted();
        }
        let Some(file) = &mut self.file else {
            return false;
        };
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match file.write(&self.buf[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if done > 0 {
            self.buf.drain(..done);
            self.partial = true;
        }
        if let Err(e) = result {
            self.io_failed(&e);
            return false;
        }
        self.partial = false;
        if self.file_gone() {
            // Deleted before or while we wrote: nobody will ever read these lines.
            let lost = self.buf_events;
            self.lose_buffer();
            log::warn!(
                "audit log {} was deleted; {lost} events written to it are counted as dropped",
                self.path.display()
            );
            self.replace_deleted();
            return false;
        }
        self.counters
            .written
            .fetch_add(self.buf_events, Ordering::Relaxed);
        self.buf_events = 0;
        self.buf_drop_reports = 0;
        self.buf_suppressed = 0;
        if self.failing {
            log::warn!("audit log writable again");
            self.failing = false;
        }
        true
    }

    /// Writes an event, or folds it into an identical one seen within the collapse window.
    fn write_event(&mut self, q: Queued) {
        if self.collapse.is_zero() {
            return self.write_queued(&q, 1);
        }
        let key = CollapseKey::of(&q);
        if let Some(pending) = self.pending.get_mut(&key) {
            pending.1 += 1;
            return;
        }
        if self.pending.len() >= COLLAPSE_MAX {
            self.flush_pending(true);
        }
        self.pending.insert(key, (q, 1, Instant::now()));
    }

    /// Writes collapsed events whose window has passed (all of them with `all`).
    fn flush_pending(&mut self, all: bool) {
        if self.pending.is_empty() {
            return;
        }
        let window = self.collapse;
        let due: Vec<CollapseKey> = self
            .pending
            .iter()
            .filter(|(_, (_, _, first))| all || first.elapsed() >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut due: Vec<(Queued, u64)> = due
            .into_iter()
            .filter_map(|key| self.pending.remove(&key))
            .map(|(q, count, _)| (q, count))
            .collect();
        // In the order they happened, as without collapsing.
        due.sort_by_key(|(q, _)| q.ts);
        for (q, count) in due {
            self.write_queued(&q, count);
        }
    }

    fn write_queued(&mut self, q: &Queued, count: u64) {
        // Borrowed out for the line's timestamp, which `write_line` must not see change.
        let mut stamp = std::mem::take(&mut self.stamp);
        let written = self.write_line(&EventLine::of(q, count, stamp.format(q.ts)));
        self.stamp = stamp;
        if written {
            self.buf_events += count;
        } else {
            // Lost (the log is failing): count them so a later "dropped" line says so.
            self.counters.dropped.fetch_add(count, Ordering::Relaxed);
            self.counters
                .writer_lost
                .fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Encodes the line at the end of the buffer; only whole lines stay there. As if it were
    /// encoded apart first: a buffer that the line would take past WRITE_BUFFER is flushed
    /// before the line joins it, and a line that does not fit under BUFFER_MAX is refused.
    fn write_line(&mut self, line: &impl Line) -> bool {
        let start = self.buf.len();
        line.encode(&mut self.buf);
        self.buf.push(b'\n');
        let len = self.buf.len() - start;
        if self.buf.len() > WRITE_BUFFER {
            // Rare (once per WRITE_BUFFER): the line waits aside while the rest is written.
            self.line.clear();
            self.line.extend_from_slice(&self.buf[start..]);
            self.buf.truncate(start);
            self.flush();
            self.buf.extend_from_slice(&self.line);
        }
        if self.buf.len() > BUFFER_MAX {
            self.buf.truncate(self.buf.len() - len);
            return false;
        }
        true
    }

    /// Reports outstanding drops and suppressed counts, then flushes; called whenever the
    /// queue is momentarily empty. `last`: at exit, every count is reported now.
    fn catch_up(&mut self, last: bool) {
        if last || self.last_summary.elapsed() >= SUMMARY_EVERY {
            self.write_summaries();
        }
        let total = self.counters.dropped.load(Ordering::Relaxed);
        let reported = self.counters.dropped_reported.load(Ordering::Relaxed);
        if total > reported {
            let ts = format_rfc3339(SystemTime::now());
            let line = DroppedLine {
                v: schema::VERSION,
                ts: &ts,
                op: Op::Dropped.as_str(),
                count: total - reported,
            };
            // On failure the count stays owed and is reported on a later catch-up.
            if self.write_line(&line) {
                self.counters
                    .dropped_reported
                    .fetch_add(total - reported, Ordering::Relaxed);
                self.buf_drop_reports += total - reported;
            }
        }
        self.flush();
    }

    /// One `suppressed` line per uid that had events over its rate since the last ones.
    fn write_summaries(&mut self) {
        self.last_summary = Instant::now();
        let Some(limiter) = &self.limiter else { return };
        let owed = limiter.take();
        if owed.is_empty() {
            return;
        }
        let ts = format_rfc3339(SystemTime::now());
        for o in owed {
            let since = format_rfc3339(o.since);
            let line = SuppressedLine {
                v: schema::VERSION,
                ts: &ts,
                op: Op::Suppressed.as_str(),
                uid: o.uid,
                count: o.count,
                since: &since,
            };
            if self.write_line(&line) {
                self.buf_suppressed += o.count;
            } else {
                // Could not even be summarised: the next `dropped` line counts them.
                self.counters.dropped.fetch_add(o.count, Ordering::Relaxed);
            }
        }
    }

    fn io_failed(&mut self, e: &io::Error) {
        if !self.failing {
            log::error!("audit log write failed: {e}; events are being dropped");
            self.failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached stamps are exactly what `format_rfc3339` writes, across seconds, days and
    /// years, going backwards too, and before 1970.
    #[test]
    fn stamps_match_the_formatter() {
        let mut stamp = Stamp::default();
        let at = |s: u64, us: u32| SystemTime::UNIX_EPOCH + Duration::new(s, us * 1000);
        let mut times = vec![
            at(1_795_816_149, 123_456),
            at(1_795_816_149, 0),
            at(1_795_816_149, 999_999),
            at(1_795_816_150, 7),
            at(1_795_816_149, 42),
            at(1_704_067_199, 999_999),
            at(1_704_067_200, 0),
            at(0, 0),
            SystemTime::UNIX_EPOCH - Duration::new(1, 500),
            SystemTime::UNIX_EPOCH + Duration::new(5, 999),
        ];
        for i in 0..2_000u64 {
            times.push(at(1_795_816_000 + i / 7, (i * 7919 % 1_000_000) as u32));
        }
        for t in times {
            assert_eq!(stamp.format(t), format_rfc3339(t), "{t:?}");
        }
    }
}
