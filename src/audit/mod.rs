//! Non-blocking JSON Lines audit log of who touched the legacy tree, written by a background thread.
//!
//! The filesystem threads only capture a timestamp, bound the event's size, look up the
//! caller's process (cached), charge the caller's uid for the bytes (rate limit) and
//! `try_send` the event into a queue bounded both in events and in bytes; all formatting,
//! serialisation and I/O happen on one writer thread. Nothing is lost silently: an event the
//! queue cannot take is counted and reported in a `"op":"dropped"` line, an event over its
//! uid's rate in a `"op":"suppressed"` line, and whatever the log could not take at exit in one
//! error line of the daemon's diagnostics.
//!
//! Here: the handle ([`AuditLog`], [`AuditLog::record`], options, counters, bounding an
//! event). Beside it: `writer` (the writer thread), `line` (the lines as serialised),
//! [`schema`] (version, field and op names, shared with `relocfs report`), `proc` (the
//! caller's comm/exe/cmdline cache), `limit` (per-uid rate limit), `encode` (escaping and
//! caps), `place` (where the log may live), `errno` (result names).

mod encode;
mod errno;
mod limit;
mod line;
mod place;
mod proc;
pub mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Kept here for callers from before [`crate::time`].
pub use crate::time::format_rfc3339;
pub use encode::{CMDLINE_CAP, COMM_CAP, DETAIL_CAP, PATH_CAP};
pub use errno::errno_name;
pub use limit::RateLimit;
pub use place::LogPlace;
pub use proc::{parse_cgroup, unit_of};

use limit::{Limiter, Verdict};
use proc::{CommCache, ProcInfo};
use writer::Writer;

/// What an event costs in the queue and the rate limit on top of its variable fields: the
/// fixed fields as written, and the queue slot.
const EVENT_OVERHEAD: u64 = 200;

/// Default of `[audit] queue_bytes`: memory that queued events may hold.
pub const DEFAULT_QUEUE_BYTES: u64 = 16 * 1024 * 1024;
/// Default of `[audit] rate_limit`: bytes per second per uid.
pub const DEFAULT_RATE_LIMIT: u64 = 1024 * 1024;
/// Default of `[audit] rate_burst`: bytes a uid may write at once.
pub const DEFAULT_RATE_BURST: u64 = 32 * 1024 * 1024;
/// Default of `[audit] shutdown_timeout`: how long exit waits for a log that takes no writes.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line the log can hold: every capped field at its cap with every byte written
/// as a 6-byte JSON escape (`\u0001`), plus the fixed fields and the field lists.
pub const MAX_LINE_BYTES: usize =
    6 * (5 * PATH_CAP + CMDLINE_CAP + DETAIL_CAP + COMM_CAP) + 1024 + proc::LINE_BYTES;

/// One audited filesystem operation, as reported by the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Operation name, e.g. "open", "lookup", "rename": one of [`schema::Op`]'s names
    /// (`Op::Open.as_str()`).
    pub op: &'static str,
    /// Full legacy path the caller used (mountpoint + inner path).
    pub path: PathBuf,
    /// Real path the access was redirected to, if any.
    pub target: Option<PathBuf>,
    /// The mapping rule's `from`, if a rule matched.
    pub map: Option<String>,
    /// "r", "w" or "rw" for opens (see [`access_flags`]).
    pub flags: Option<&'static str>,
    /// The second legacy path of a two-path change: a rename's or link's new name.
    pub dest: Option<PathBuf>,
    /// What a change changed, e.g. "mode=0644 size=0" for setattr, or an xattr's name (bytes,
    /// escaped when written if not UTF-8).
    pub detail: Option<std::ffi::OsString>,
    /// Caller's thread id as given by FUSE.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `Err(errno)` when the operation failed.
    pub result: Result<(), i32>,
    /// Why the operation was refused, when the errno alone does not say (written after
    /// `result`).
    pub reason: Option<&'static str>,
}

/// Bits naming the fields of a line, for `escaped` and `truncated`, in schema order.
const F_PATH: u8 = 1;
const F_TARGET: u8 = 2;
const F_MAP: u8 = 4;
const F_DEST: u8 = 8;
const F_DETAIL: u8 = 16;
const F_COMM: u8 = 32;
const F_EXE: u8 = 64;
const F_CMDLINE: u8 = 128;
const FIELD_NAMES: [(u8, &str); 8] = [
    (F_PATH, schema::field::PATH),
    (F_TARGET, schema::field::TARGET),
    (F_MAP, schema::field::MAP),
    (F_DEST, schema::field::DEST),
    (F_DETAIL, schema::field::DETAIL),
    (F_COMM, schema::field::COMM),
    (F_EXE, schema::field::EXE),
    (F_CMDLINE, schema::field::CMDLINE),
];

/// What travels through the queue: raw data only, so serialisation cost stays on the writer.
struct Queued {
    ts: SystemTime,
    event: Event,
    proc: Arc<ProcInfo>,
    /// Bytes charged to the queue (and the uid's rate), returned when the writer takes it.
    cost: u64,
    /// Event fields shortened by [`bound_event`].
    truncated: u8,
}

/// Shortens the event's fields to their caps; returns the bits of those shortened.
fn bound_event(e: &mut Event) -> u8 {
    fn path(p: &mut PathBuf, bit: u8) -> u8 {
        match encode::shorten(p.as_os_str().as_bytes(), PATH_CAP) {
            Some(short) => {
                *p = PathBuf::from(std::ffi::OsString::from_vec(short));
                bit
            }
            None => 0,
        }
    }
    fn text(s: &mut String, cap: usize, bit: u8) -> u8 {
        match encode::shorten_str(s, cap) {
            Some(short) => {
                *s = short;
                bit
            }
            None => 0,
        }
    }
    let mut bits = path(&mut e.path, F_PATH);
    if let Some(t) = &mut e.target {
        bits |= path(t, F_TARGET);
    }
    if let Some(d) = &mut e.dest {
        bits |= path(d, F_DEST);
    }
    if let Some(m) = &mut e.map {
        bits |= text(m, PATH_CAP, F_MAP);
    }
    if let Some(d) = &mut e.detail {
        if let Some(short) = encode::shorten(d.as_bytes(), DETAIL_CAP) {
            *d = std::ffi::OsString::from_vec(short);
            bits |= F_DETAIL;
        }
    }
    bits
}

fn event_cost(e: &Event, proc: &ProcInfo) -> u64 {
    let len = |p: &Option<PathBuf>| p.as_ref().map_or(0, |p| p.as_os_str().len());
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let detail = e.detail.as_ref().map_or(0, |d| d.len());
    (e.path.as_os_str().len() + len(&e.target) + len(&e.dest) + text(&e.map) + detail) as u64
        + proc.size()
        + EVENT_OVERHEAD
}

/// Counters shared between the recording side and the writer thread.
#[derive(Default)]
struct Counters {
    /// Events not written: queue full, no rate-limit state, writer gone, write errors, or
    /// written into a log file that had been deleted.
    dropped: AtomicU64,
    /// Of `dropped`, those already reported in a `dropped` line.
    dropped_reported: AtomicU64,
    /// Events the queue took.
    accepted: AtomicU64,
    /// Of `accepted`, those the writer lost (counted in `dropped` too).
    writer_lost: AtomicU64,
    /// Events successfully flushed to the file (not counting "dropped" lines).
    written: AtomicU64,
    /// Events over their uid's rate, counted into `suppressed` lines.
    suppressed: AtomicU64,
    /// Bytes held by queued events.
    queued_bytes: AtomicU64,
    /// Set by `reopen` (SIGHUP after logrotate moved the file); the writer acts on it.
    reopen: AtomicBool,
}

/// Handle to the audit log. `Send + Sync`: share it by reference (or in an `Arc`) and call
/// [`AuditLog::record`] from any thread.
pub struct AuditLog {
    /// `None` when disabled or after shutdown; dropping it is what tells the writer to finish.
    tx: Option<SyncSender<Queued>>,
    writer: Option<JoinHandle<()>>,
    /// Disconnected when the writer thread has finished (its sender is dropped).
    done: Mutex<Option<Receiver<()>>>,
    counters: Arc<Counters>,
    comms: CommCache,
    limiter: Option<Arc<Limiter>>,
    queue_bytes: u64,
    shutdown_timeout: Duration,
    /// For messages.
    path: PathBuf,
    /// So a dead writer is reported once, not once per event.
    writer_gone_logged: AtomicBool,
}

// The filesystem relies on this; fail the build here rather than in the caller's code.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<AuditLog>();
};

/// Options of the log beyond its path.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// Log each caller's full command line.
    pub cmdline: bool,
    /// Events identical in pid, op, path, flags, result and reason within this window
    /// become one line with a `count`; zero writes every event.
    pub collapse: Duration,
    /// Memory queued events may hold; past it events are counted as dropped.
    pub queue_bytes: u64,
    /// Per-uid rate limit (`bytes_per_sec` 0: off).
    pub rate: RateLimit,
    /// How long shutdown waits for a log that takes no writes.
    pub shutdown_timeout: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            cmdline: false,
            collapse: Duration::ZERO,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            rate: RateLimit {
                bytes_per_sec: DEFAULT_RATE_LIMIT,
                burst: DEFAULT_RATE_BURST,
            },
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

impl AuditLog {
    /// Opens (appending, creating with mode 0640) the log file and starts the writer thread.
    /// Missing directories are created with mode 0750. `capacity` is the queue length in
    /// events; 0 is treated as 1 because a zero-capacity channel would drop whenever the writer
    /// is busy. The place must pass [`LogPlace`]'s checks.
    pub fn open(path: &Path, capacity: usize) -> io::Result<AuditLog> {
        AuditLog::open_with(path, capacity, AuditOptions::default())
    }

    /// Like `open`, with command lines, collapsing and limits as `options` say.
    pub fn open_with(path: &Path, capacity: usize, options: AuditOptions) -> io::Result<AuditLog> {
        let place = LogPlace::resolve(path)?;
        let file = place.open()?;
        AuditLog::start(file, Some(place), path, capacity, options)
    }

    /// Starts the writer on an open `file`; `place` (when known) is where a deleted or rotated
    /// log is recreated.
    fn start(
        file: File,
        place: Option<LogPlace>,
        path: &Path,
        capacity: usize,
        options: AuditOptions,
    ) -> io::Result<AuditLog> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let counters = Arc::new(Counters::default());
        let limiter = Limiter::new(options.rate).map(Arc::new);
        let mut w = Writer::new(
            file,
            place,
            path,
            Arc::clone(&counters),
            limiter.clone(),
            options.collapse,
        );
        let writer = thread::Builder::new()
            .name("relocfs-audit".into())
            .spawn(move || {
                w.run(rx);
                drop(done_tx);
            })?;

        Ok(AuditLog {
            tx: Some(tx),
            writer: Some(writer),
            done: Mutex::new(Some(done_rx)),
            counters,
            comms: CommCache {
                cmdline: options.cmdline,
                ..CommCache::default()
            },
            limiter,
            queue_bytes: options.queue_bytes.max(1),
            shutdown_timeout: options.shutdown_timeout,
            path: path.to_path_buf(),
            writer_gone_logged: AtomicBool::new(false),
        })
    }

    /// Asks the writer to reopen the log file by its path (after logrotate moved it away).
    /// Events already queued go to the old file; the writer acts within a second.
    pub fn reopen(&self) {
        self.counters.reopen.store(true, Ordering::Relaxed);
    }

    /// A log that records nothing, for when no audit log is configured.
    pub fn disabled() -> AuditLog {
        AuditLog {
            tx: None,
            writer: None,
            done: Mutex::new(None),
            counters: Arc::new(Counters::default()),
            comms: CommCache::default(),
            limiter: None,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            path: PathBuf::new(),
            writer_gone_logged: AtomicBool::new(false),
        }
    }

    /// Whether events are recorded at all; lets callers skip building an [`Event`] when not.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event; never blocks. The timestamp is taken now, the fields are bounded (see
    /// [`PATH_CAP`]), `comm`/`exe` are filled from the (cached) `/proc/<pid>`, and the caller's
    /// uid is charged for the bytes: over its rate the event is only counted (`suppressed`);
    /// with the queue full (events or bytes) it is counted as dropped.
    pub fn record(&self, mut event: Event) {
        let Some(tx) = &self.tx else { return };
        let ts = SystemTime::now();
        let truncated = bound_event(&mut event);
        let proc = self.comms.lookup(event.pid);
        let cost = event_cost(&event, &proc);
        let c = &self.counters;
        if let Some(limiter) = &self.limiter {
            match limiter.check(event.uid, cost, Instant::now(), ts) {
                Verdict::Admit => {}
                Verdict::Suppress => {
                    c.suppressed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Verdict::NoRoom => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        if c.queued_bytes.fetch_add(cost, Ordering::Relaxed) + cost > self.queue_bytes {
            c.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let queued = Queued {
            ts,
            event,
            proc,
            cost,
            truncated,
        };
        match tx.try_send(queued) {
            Ok(()) => {
                c.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                c.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                // Only possible if the writer thread died; nobody will write a "dropped"
                // line any more, so the error log is the only trace left.
                c.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
                c.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.writer_gone_logged.swap(true, Ordering::Relaxed) {
                    log::error!("audit log writer thread is gone; audit events are being lost");
                }
            }
        }
    }

    /// Total events dropped so far (queue full, write errors, a deleted log).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Total events written (flushed to the file) so far, not counting "dropped" lines.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Total events over their uid's rate, counted in `suppressed` lines.
    pub fn suppressed(&self) -> u64 {
        self.counters.suppressed.load(Ordering::Relaxed)
    }

    /// Closes the queue and waits for the writer to write, flush and sync everything queued:
    /// when this returns, every event recorded before is in the file -- unless the log took
    /// no writes for the shutdown timeout: then one error line says how many were not written.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        // Dropping the only sender disconnects the channel; the writer drains what is left,
        // reports drops, flushes and exits.
        drop(self.tx.take());
        let Some(writer) = self.writer.take() else {
            return;
        };
        let done = lock(&self.done).take();
        let finished = match done {
            Some(done) => !matches!(
                done.recv_timeout(self.shutdown_timeout),
                Err(RecvTimeoutError::Timeout)
            ),
            None => true,
        };
        if finished {
            if writer.join().is_err() {
                log::error!("audit log writer thread panicked; some events may be lost");
            }
            return;
        }
        // The writer is stuck in a write (a FIFO nobody reads, a hung filesystem): leave it;
        // the process exits without it. Count what the log will never show.
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let in_flight = get(&c.accepted)
            .saturating_sub(get(&c.written))
            .saturating_sub(get(&c.writer_lost));
        let unreported = get(&c.dropped).saturating_sub(get(&c.dropped_reported));
        let owed = self.limiter.as_ref().map_or(0, |l| l.owed());
        log::error!(
            "audit log {}: not written after waiting {:?} at shutdown (the log takes no \
             writes): {} events lost ({in_flight} queued, {unreported} dropped and {owed} \
             suppressed not yet recorded)",
            self.path.display(),
            self.shutdown_timeout,
            in_flight + unreported + owed
        );
    }
}

impl Drop for AuditLog {
    /// Same as [`AuditLog::shutdown`], so an unmount that just drops the filesystem still
    /// gets every event onto disk.
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.is_enabled())
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .field("suppressed", &self.suppressed())
            .finish()
    }
}

/// Lock that survives poisoning: the protected data (a cache) stays valid even if a holder
/// panicked, and the audit path must never panic itself.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Access mode of `open(2)` flags: "r", "w" or "rw". The invalid mode 3 is reported as "rw"
/// (Linux treats it as needing both permissions).
pub fn access_flags(open_flags: i32) -> &'static str {
    match open_flags & libc::O_ACCMODE {
        libc::O_RDONLY => "r",
        libc::O_WRONLY => "w",
        _ => "rw",
    }
}
