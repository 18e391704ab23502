//! Non-blocking JSON Lines audit log of who touched the legacy tree, written by a background thread.
//!
//! The filesystem threads only capture a timestamp, bound the event's size, look up the
//! caller's process (cached), charge the caller's uid for the bytes (rate limit) and
//! `try_send` the event into a queue bounded both in events and in bytes; all formatting,
//! serialisation and I/O happen on one writer thread. Nothing is lost silently: an event the
//! queue cannot take is counted and reported in a `"op":"dropped"` line, an event over its
//! uid's rate in a `"op":"suppressed"` line, and whatever the log could not take at exit in one
//! error line of the daemon's diagnostics.

mod encode;
mod limit;
mod place;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use encode::{CMDLINE_CAP, COMM_CAP, DETAIL_CAP, PATH_CAP};
pub use limit::RateLimit;
pub use place::LogPlace;

use limit::{Limiter, Verdict};

/// Schema version written as `v` in every line; bump when fields change meaning.
const SCHEMA_VERSION: u32 = 1;

/// How long a pid's `comm` is trusted. Short, because pids (tids) get reused, but long enough
/// that a burst of operations from one thread costs a single `/proc` read.
const COMM_TTL: Duration = Duration::from_secs(1);

/// Past this many cached pids the cache is pruned, so a busy machine can't grow it unbounded.
const COMM_CACHE_MAX: usize = 4096;

/// Upper bound on events written between two "catch-up" points (drop report + flush), so a
/// queue that never runs empty under sustained load still gets its drops reported and flushed.
const BATCH_MAX: usize = 4096;

/// When idle, the writer wakes this often to report drops and suppressed counts.
const IDLE_WAKE: Duration = Duration::from_millis(500);

/// Suppressed-event summaries are written at least this often while a uid is suppressed.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// The writer hands its buffer to `write(2)` once it holds this much.
const WRITE_BUFFER: usize = 64 * 1024;

/// While the log cannot be written, at most this much waits in the buffer; later events are
/// counted as dropped. Larger than the longest line, so one line always fits.
const BUFFER_MAX: usize = 1024 * 1024;

/// A missing log whose directory or file cannot be recreated is retried this often.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

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
pub const MAX_LINE_BYTES: usize = 6 * (5 * PATH_CAP + CMDLINE_CAP + DETAIL_CAP + COMM_CAP) + 1024;

/// One audited filesystem operation, as reported by the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Operation name, e.g. "open", "lookup", "rename".
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
    /// Why relocfs itself refused (e.g. "deny rule"); `None` for success and for what the
    /// real filesystem said.
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
    (F_PATH, "path"),
    (F_TARGET, "target"),
    (F_MAP, "map"),
    (F_DEST, "dest"),
    (F_DETAIL, "detail"),
    (F_COMM, "comm"),
    (F_EXE, "exe"),
    (F_CMDLINE, "cmdline"),
];

fn field_list(bits: u8) -> Option<Vec<&'static str>> {
    (bits != 0).then(|| {
        FIELD_NAMES
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    })
}

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

/// `bytes` escaped for the log; sets `bit` in `escaped` when it had to be.
fn esc<'a>(bytes: &'a [u8], bit: u8, escaped: &mut u8) -> Cow<'a, str> {
    let (s, e) = encode::escape(bytes);
    if e {
        *escaped |= bit;
    }
    s
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
    /// Events identical in pid, op, path, flags and result within this window become one
    /// line with a `count`; zero writes every event.
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
        let mut w = Writer {
            file: Some(file),
            place,
            path: path.to_path_buf(),
            counters: Arc::clone(&counters),
            limiter: limiter.clone(),
            collapse: options.collapse,
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
        };
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

struct CommEntry {
    at: Instant,
    info: Arc<ProcInfo>,
}

/// What the log says about the calling process: raw bytes, capped, escaped when written.
#[derive(Debug)]
struct ProcInfo {
    /// `/proc/PID/comm`, "?" when unreadable.
    comm: Vec<u8>,
    /// `/proc/PID/exe`, when readable.
    exe: Option<Vec<u8>>,
    /// `/proc/PID/cmdline` with NULs as spaces, only when enabled (it can hold secrets).
    cmdline: Option<Vec<u8>>,
    /// Fields shortened to their caps (F_COMM, F_EXE, F_CMDLINE).
    truncated: u8,
}

impl ProcInfo {
    fn size(&self) -> u64 {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        (self.comm.len() + len(&self.exe) + len(&self.cmdline)) as u64
    }
}

/// pid → process name, so a burst of operations from one thread costs one `/proc` read.
#[derive(Default)]
struct CommCache {
    map: Mutex<HashMap<u32, CommEntry>>,
    /// Whether command lines are read too.
    cmdline: bool,
}

impl CommCache {
    fn lookup(&self, pid: u32) -> Arc<ProcInfo> {
        let now = Instant::now();
        {
            let map = lock(&self.map);
            if let Some(entry) = map.get(&pid) {
                // duration_since saturates, so an entry stamped later by another thread is fresh.
                if now.duration_since(entry.at) < COMM_TTL {
                    return Arc::clone(&entry.info);
                }
            }
        }
        // Read outside the lock: other threads shouldn't wait on our /proc access.
        let mut truncated = 0;
        let mut comm = read_comm(pid);
        if let Some(short) = encode::shorten(&comm, COMM_CAP) {
            comm = short;
            truncated |= F_COMM;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.into_os_string().into_vec())
            .map(|p| match encode::shorten(&p, PATH_CAP) {
                Some(short) => {
                    truncated |= F_EXE;
                    short
                }
                None => p,
            });
        let cmdline = self
            .cmdline
            .then(|| read_cmdline(pid))
            .flatten()
            .map(|(c, t)| {
                if t {
                    truncated |= F_CMDLINE;
                }
                c
            });
        let info = Arc::new(ProcInfo {
            comm,
            exe,
            cmdline,
            truncated,
        });
        let mut map = lock(&self.map);
        if map.len() >= COMM_CACHE_MAX {
            map.retain(|_, e| now.duration_since(e.at) < COMM_TTL);
            if map.len() >= COMM_CACHE_MAX {
                // All fresh: more distinct callers than we want to track; start over.
                map.clear();
            }
        }
        map.insert(
            pid,
            CommEntry {
                at: now,
                info: Arc::clone(&info),
            },
        );
        info
    }
}

/// The command line of `pid`, arguments separated by spaces, shortened to [`CMDLINE_CAP`]
/// (and whether it was); `None` if unreadable or empty (kernel threads). Read in pieces so a
/// huge command line costs no more memory than the cap.
fn read_cmdline(pid: u32) -> Option<(Vec<u8>, bool)> {
    let mut file = File::open(format!("/proc/{pid}/cmdline")).ok()?;
    let mut head = Vec::new();
    let mut tail = VecDeque::new();
    let mut total = 0usize;
    let mut sep = false;
    let mut chunk = [0u8; 16 * 1024];
    let mut push = |b: u8, head: &mut Vec<u8>, tail: &mut VecDeque<u8>| {
        total += 1;
        if head.len() < CMDLINE_CAP {
            head.push(b);
        } else {
            tail.push_back(b);
            if tail.len() > CMDLINE_CAP {
                tail.pop_front();
            }
        }
    };
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &chunk[..n] {
            if b == 0 {
                sep = !head.is_empty();
                continue;
            }
            if sep {
                push(b' ', &mut head, &mut tail);
                sep = false;
            }
            push(b, &mut head, &mut tail);
        }
    }
    if head.is_empty() {
        return None;
    }
    let kept = head.len() + tail.len();
    let hidden = total - kept;
    head.extend(tail);
    match encode::shorten_with_gap(&head, CMDLINE_CAP, hidden) {
        Some(short) => Some((short, true)),
        None => Some((head, false)),
    }
}

/// Process (thread) name from `/proc/<pid>/comm`; works for thread ids too. "?" if unreadable
/// (e.g. the caller already exited, or pid 0 for kernel-initiated requests).
fn read_comm(pid: u32) -> Vec<u8> {
    match std::fs::read(format!("/proc/{pid}/comm")) {
        Ok(mut bytes) => {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            if bytes.is_empty() {
                b"?".to_vec()
            } else {
                bytes
            }
        }
        Err(_) => b"?".to_vec(),
    }
}

/// One event line, fields in schema order.
#[derive(Serialize)]
struct EventLine<'a> {
    v: u32,
    ts: &'a str,
    op: &'a str,
    path: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
    pid: u32,
    uid: u32,
    gid: u32,
    comm: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmdline: Option<Cow<'a, str>>,
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// How many identical events this line stands for, when collapsed (more than one).
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    /// Fields whose bytes were not UTF-8, written escaped (see `encode`).
    #[serde(skip_serializing_if = "Option::is_none")]
    escaped: Option<Vec<&'static str>>,
    /// Fields shortened to their cap (see `encode`).
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<Vec<&'static str>>,
}

/// The explicit record of events that could not be written.
#[derive(Serialize)]
struct DroppedLine<'a> {
    v: u32,
    ts: &'a str,
    op: &'a str,
    count: u64,
}

/// The record of one uid's events over its rate since `since`.
#[derive(Serialize)]
struct SuppressedLine<'a> {
    v: u32,
    ts: &'a str,
    op: &'a str,
    uid: u32,
    count: u64,
    since: &'a str,
}

/// What makes two events the same for collapsing.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CollapseKey {
    pid: u32,
    op: &'static str,
    path: PathBuf,
    flags: Option<&'static str>,
    result: Result<(), i32>,
}

impl CollapseKey {
    fn of(q: &Queued) -> CollapseKey {
        CollapseKey {
            pid: q.event.pid,
            op: q.event.op,
            path: q.event.path.clone(),
            flags: q.event.flags,
            result: q.event.result,
        }
    }
}

/// Distinct events held for collapsing before all are written anyway (bounds memory).
const COLLAPSE_MAX: usize = 16 * 1024;

/// State of the writer thread.
struct Writer {
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
    /// Reused serialisation buffer, so a line is written whole or not at all.
    line: Vec<u8>,
    /// Whether the last I/O failed, to log an error once per failure streak, not per event.
    failing: bool,
    last_summary: Instant,
    /// Last attempt to recreate a missing log.
    last_reopen: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Queued>) {
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
        let ts = format_rfc3339(q.ts);
        let ev = &q.event;
        let mut escaped = 0u8;
        let path = esc(ev.path.as_os_str().as_bytes(), F_PATH, &mut escaped);
        let target = ev
            .target
            .as_deref()
            .map(|t| esc(t.as_os_str().as_bytes(), F_TARGET, &mut escaped));
        let dest = ev
            .dest
            .as_deref()
            .map(|d| esc(d.as_os_str().as_bytes(), F_DEST, &mut escaped));
        let detail = ev
            .detail
            .as_deref()
            .map(|d| esc(d.as_bytes(), F_DETAIL, &mut escaped));
        let comm = esc(&q.proc.comm, F_COMM, &mut escaped);
        let exe = q.proc.exe.as_deref().map(|e| esc(e, F_EXE, &mut escaped));
        let cmdline = q
            .proc
            .cmdline
            .as_deref()
            .map(|c| esc(c, F_CMDLINE, &mut escaped));
        let line = EventLine {
            v: SCHEMA_VERSION,
            ts: &ts,
            op: ev.op,
            path,
            target,
            map: ev.map.as_deref(),
            flags: ev.flags,
            dest,
            detail,
            pid: ev.pid,
            uid: ev.uid,
            gid: ev.gid,
            comm,
            exe,
            cmdline,
            result: match ev.result {
                Ok(()) => "ok",
                Err(errno) => errno_name(errno),
            },
            reason: ev.reason,
            count: (count > 1).then_some(count),
            escaped: field_list(escaped),
            truncated: field_list(q.truncated | q.proc.truncated),
        };
        if self.write_line(&line) {
            self.buf_events += count;
        } else {
            // Lost (the log is failing): count them so a later "dropped" line says so.
            self.counters.dropped.fetch_add(count, Ordering::Relaxed);
            self.counters
                .writer_lost
                .fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Serialises into the scratch buffer first so that only whole lines enter the buffer.
    fn write_line<T: Serialize>(&mut self, value: &T) -> bool {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, value) {
            log::error!("audit log: cannot serialise event: {e}");
            return false;
        }
        self.line.push(b'\n');
        if self.buf.len() + self.line.len() > WRITE_BUFFER {
            self.flush();
        }
        if self.buf.len() + self.line.len() > BUFFER_MAX {
            return false;
        }
        self.buf.extend_from_slice(&self.line);
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
                v: SCHEMA_VERSION,
                ts: &ts,
                op: "dropped",
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
                v: SCHEMA_VERSION,
                ts: &ts,
                op: "suppressed",
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

/// Formats as RFC 3339 UTC with microseconds, e.g. "2026-11-27T21:49:09.123456Z".
/// Sub-microsecond digits are truncated; instants before 1970 are handled too.
pub fn format_rfc3339(t: SystemTime) -> String {
    let micros: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        // Round toward the past so e.g. 1 ns before the epoch is 23:59:59.999999.
        Err(e) => {
            let d = e.duration();
            -(d.as_micros() as i128) - i128::from(d.subsec_nanos() % 1000 != 0)
        }
    };
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's civil_from_days: eras of 400 years, years starting in March so the
/// leap day is last).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1 [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    // day is in [1, 31] and month in [1, 12], so these casts are lossless.
    (year, month as u32, day as u32)
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

/// Symbolic name of a Linux errno, "EUNKNOWN" if not recognised. Aliases that share a value
/// (EWOULDBLOCK=EAGAIN, ENOTSUP=EOPNOTSUPP, EDEADLOCK=EDEADLK) get the glibc canonical name.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::ENOTBLK => "ENOTBLK",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::EDOM => "EDOM",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOLCK => "ENOLCK",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOMSG => "ENOMSG",
        libc::EIDRM => "EIDRM",
        libc::ECHRNG => "ECHRNG",
        libc::EL2NSYNC => "EL2NSYNC",
        libc::EL3HLT => "EL3HLT",
        libc::EL3RST => "EL3RST",
        libc::ELNRNG => "ELNRNG",
        libc::EUNATCH => "EUNATCH",
        libc::ENOCSI => "ENOCSI",
        libc::EL2HLT => "EL2HLT",
        libc::EBADE => "EBADE",
        libc::EBADR => "EBADR",
        libc::EXFULL => "EXFULL",
        libc::ENOANO => "ENOANO",
        libc::EBADRQC => "EBADRQC",
        libc::EBADSLT => "EBADSLT",
        libc::EBFONT => "EBFONT",
        libc::ENOSTR => "ENOSTR",
        libc::ENODATA => "ENODATA",
        libc::ETIME => "ETIME",
        libc::ENOSR => "ENOSR",
        libc::ENONET => "ENONET",
        libc::ENOPKG => "ENOPKG",
        libc::EREMOTE => "EREMOTE",
        libc::ENOLINK => "ENOLINK",
        libc::EADV => "EADV",
        libc::ESRMNT => "ESRMNT",
        libc::ECOMM => "ECOMM",
        libc::EPROTO => "EPROTO",
        libc::EMULTIHOP => "EMULTIHOP",
        libc::EDOTDOT => "EDOTDOT",
        libc::EBADMSG => "EBADMSG",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTUNIQ => "ENOTUNIQ",
        libc::EBADFD => "EBADFD",
        libc::EREMCHG => "EREMCHG",
        libc::ELIBACC => "ELIBACC",
        libc::ELIBBAD => "ELIBBAD",
        libc::ELIBSCN => "ELIBSCN",
        libc::ELIBMAX => "ELIBMAX",
        libc::ELIBEXEC => "ELIBEXEC",
        libc::EILSEQ => "EILSEQ",
        libc::ERESTART => "ERESTART",
        libc::ESTRPIPE => "ESTRPIPE",
        libc::EUSERS => "EUSERS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPFNOSUPPORT => "EPFNOSUPPORT",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ETOOMANYREFS => "ETOOMANYREFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ESTALE => "ESTALE",
        libc::EUCLEAN => "EUCLEAN",
        libc::ENOTNAM => "ENOTNAM",
        libc::ENAVAIL => "ENAVAIL",
        libc::EISNAM => "EISNAM",
        libc::EREMOTEIO => "EREMOTEIO",
        libc::EDQUOT => "EDQUOT",
        libc::ENOMEDIUM => "ENOMEDIUM",
        libc::EMEDIUMTYPE => "EMEDIUMTYPE",
        libc::ECANCELED => "ECANCELED",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYEXPIRED => "EKEYEXPIRED",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::EOWNERDEAD => "EOWNERDEAD",
        libc::ENOTRECOVERABLE => "ENOTRECOVERABLE",
        libc::ERFKILL => "ERFKILL",
        libc::EHWPOISON => "EHWPOISON",
        _ => "EUNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::fs::OpenOptions;
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc::channel;

    fn ev(op: &'static str, path: &str) -> Event {
        Event {
            op,
            path: PathBuf::from(path),
            target: None,
            map: None,
            flags: None,
            dest: None,
            detail: None,
            pid: std::process::id(),
            uid: 1000,
            gid: 100,
            result: Ok(()),
            reason: None,
        }
    }

    /// Key names of a JSON object in the order they appear in the text (serde_json's `Value`
    /// sorts them, and the schema promises an order).
    struct OrderedKeys(Vec<String>);

    impl<'de> serde::Deserialize<'de> for OrderedKeys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = OrderedKeys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<OrderedKeys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(OrderedKeys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }

    /// A parsed line: its values plus its keys in written order.
    struct Line {
        keys: Vec<String>,
        value: Value,
    }

    impl std::ops::Index<&str> for Line {
        type Output = Value;
        fn index(&self, key: &str) -> &Value {
            &self.value[key]
        }
    }

    fn read_lines(path: &Path) -> Vec<Line> {
        let text = std::fs::read_to_string(path).unwrap();
        parse_lines(&text)
    }

    fn parse_lines(text: &str) -> Vec<Line> {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "last line unterminated"
        );
        text.lines()
            .map(|l| {
                let value: Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
                let OrderedKeys(keys) = serde_json::from_str(l).unwrap();
                Line { keys, value }
            })
            .collect()
    }

    fn keys(l: &Line) -> Vec<&str> {
        l.keys.iter().map(String::as_str).collect()
    }

    fn self_comm() -> String {
        std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim_end_matches('\n')
            .to_string()
    }

    /// Checks the timestamp's shape and that it lies in [before, after]; the format is fixed
    /// width, so string order is time order.
    fn assert_ts_between(ts: &str, before: &str, after: &str) {
        let b = ts.as_bytes();
        assert_eq!(b.len(), 27, "{ts}");
        for (i, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ] {
            assert_eq!(b[i], c, "{ts}");
        }
        assert_eq!(b[26], b'Z', "{ts}");
        assert!(before <= ts && ts <= after, "{before} <= {ts} <= {after}");
    }

    /// Accounts every recorded event: real lines plus the counts of "dropped" lines.
    fn account(lines: &[Line]) -> (u64, u64, usize) {
        let mut written = 0;
        let mut dropped = 0;
        let mut dropped_lines = 0;
        for l in lines {
            if l["op"] == "dropped" {
                assert_eq!(keys(l), ["v", "ts", "op", "count"]);
                assert_eq!(l["v"], 1);
                let n = l["count"].as_u64().unwrap();
                assert!(n > 0, "dropped line with zero count");
                dropped += n;
                dropped_lines += 1;
            } else {
                written += 1;
            }
        }
        (written, dropped, dropped_lines)
    }

    fn wait_written(log: &AuditLog, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.written() < n {
            assert!(Instant::now() < deadline, "writer did not catch up");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Identical events within the window become one line with their count; different ones
    /// (another op, path, pid or result) stay apart; nothing is lost.
    #[test]
    fn repeated_events_collapse_into_counted_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let options = AuditOptions {
            cmdline: true,
            collapse: Duration::from_secs(60),
            ..AuditOptions::default()
        };
        let log = AuditLog::open_with(&path, 1024, options).unwrap();
        for _ in 0..5 {
            log.record(ev("open", "/legacy/a"));
        }
        let mut miss = ev("open", "/legacy/a");
        miss.result = Err(libc::ENOENT);
        log.record(miss);
        log.record(ev("open", "/legacy/b"));
        log.record(ev("opendir", "/legacy/a"));
        log.shutdown();
        let lines = read_lines(&path);
        assert_eq!(
            lines.len(),
            4,
            "{:?}",
            lines.iter().map(|l| &l.value).collect::<Vec<_>>()
        );
        let find = |op: &str, p: &str, result: &str| {
            lines
                .iter()
                .find(|l| l["op"] == op && l["path"] == p && l["result"] == result)
                .unwrap_or_else(|| panic!("no {op} {p} {result}"))
        };
        assert_eq!(find("open", "/legacy/a", "ok")["count"], 5);
        assert!(find("open", "/legacy/a", "ENOENT")
            .value
            .get("count")
            .is_none());
        assert!(find("open", "/legacy/b", "ok").value.get("count").is_none());
        assert!(find("opendir", "/legacy/a", "ok")
            .value
            .get("count")
            .is_none());
        // Command lines when enabled: this test binary's own.
        let (own, _) = read_cmdline(std::process::id()).unwrap();
        let own = String::from_utf8(own).unwrap();
        assert_eq!(find("open", "/legacy/b", "ok")["cmdline"], own.as_str());
    }

    /// logrotate moves the file away and sends SIGHUP: later events land in a new file at the
    /// configured path, earlier ones stay in the moved file, none is lost.
    #[test]
    fn reopen_continues_in_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let log = AuditLog::open(&path, 64).unwrap();
        log.record(ev("open", "/legacy/before"));
        wait_until(|| {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count()
                == 1
        });
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        // The writer acts on the request at its next wake-up (at most IDLE_WAKE).
        wait_until(|| path.exists());
        log.record(ev("open", "/legacy/after"));
        log.shutdown();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 1);
        assert!(old.contains("/legacy/before"));
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("/legacy/after"));
    }

    fn wait_until(cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "condition not reached in time");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn audit_log_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<AuditLog>();
    }

    #[test]
    fn events_are_json_lines_with_exact_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 64).unwrap();
        let before = format_rfc3339(SystemTime::now());

        let mut full = ev("open", "/opt/legacy/bin/tool");
        full.target = Some(PathBuf::from("/srv/new/bin/tool"));
        full.map = Some("/opt/legacy".to_string());
        full.flags = Some(access_flags(libc::O_RDWR | libc::O_CREAT));
        log.record(full);

        let mut failed = ev("lookup", "/opt/legacy/missing");
        failed.result = Err(libc::ENOENT);
        failed.uid = 0;
        failed.gid = 0;
        log.record(failed);

        let mut denied = ev("unlink", "/opt/legacy/x");
        denied.target = Some(PathBuf::from("/srv/new/x"));
        denied.result = Err(libc::EROFS);
        log.record(denied);

        // Non-UTF-8 path bytes are escaped losslessly and the field is marked.
        let mut odd = ev("readlink", "");
        odd.path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/opt/legacy/\xffname"));
        log.record(odd);

        let after = format_rfc3339(SystemTime::now());
        wait_written(&log, 4);
        assert_eq!(log.written(), 4);
        assert_eq!(log.dropped(), 0);
        log.shutdown();

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 4);
        let comm = self_comm();
        let pid = u64::from(std::process::id());

        let l = &lines[0];
        assert_eq!(
            keys(l),
            [
                "v", "ts", "op", "path", "target", "map", "flags", "pid", "uid", "gid", "comm",
                "exe", "result"
            ]
        );
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(l["exe"], exe.to_string_lossy().as_ref());
        assert_eq!(l["v"], 1);
        assert_ts_between(l["ts"].as_str().unwrap(), &before, &after);
        assert_eq!(l["op"], "open");
        assert_eq!(l["path"], "/opt/legacy/bin/tool");
        assert_eq!(l["target"], "/srv/new/bin/tool");
        assert_eq!(l["map"], "/opt/legacy");
        assert_eq!(l["flags"], "rw");
        assert_eq!(l["pid"], pid);
        assert_eq!(l["uid"], 1000);
        assert_eq!(l["gid"], 100);
        assert_eq!(l["comm"], comm.as_str());
        assert_eq!(l["result"], "ok");

        let l = &lines[1];
        assert_eq!(
            keys(l),
            ["v", "ts", "op", "path", "pid", "uid", "gid", "comm", "exe", "result"]
        );
        assert_eq!(l["op"], "lookup");
        assert_eq!(l["path"], "/opt/legacy/missing");
        assert_eq!(l["uid"], 0);
        assert_eq!(l["gid"], 0);
        assert_eq!(l["result"], "ENOENT");

        let l = &lines[2];
        assert_eq!(
            keys(l),
            ["v", "ts", "op", "path", "target", "pid", "uid", "gid", "comm", "exe", "result"]
        );
        assert_eq!(l["op"], "unlink");
        assert_eq!(l["target"], "/srv/new/x");
        assert_eq!(l["result"], "EROFS");

        let l = &lines[3];
        assert_eq!(l["op"], "readlink");
        assert_eq!(l["path"], "/opt/legacy/\\xffname");
        assert_eq!(l["escaped"], serde_json::json!(["path"]));
        assert!(l.value.get("truncated").is_none());

        // Timestamps are taken at record time, in order.
        let ts: Vec<&str> = lines.iter().map(|l| l["ts"].as_str().unwrap()).collect();
        for t in &ts {
            assert_ts_between(t, &before, &after);
        }
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    }

    #[test]
    fn comm_of_current_process_and_thread() {
        let expected = self_comm();
        assert!(!expected.is_empty());
        assert_eq!(read_comm(std::process::id()), expected.as_bytes());

        // FUSE hands us thread ids; /proc/<tid>/comm is the thread's own name.
        let tid = unsafe { libc::gettid() } as u32;
        let thread_comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        assert_eq!(
            read_comm(tid),
            thread_comm.trim_end_matches('\n').as_bytes()
        );

        // Unreadable → "?", and the cache returns the same shared string.
        let cache = CommCache::default();
        assert_eq!(cache.lookup(u32::MAX).comm, b"?");
        let a = cache.lookup(std::process::id());
        let b = cache.lookup(std::process::id());
        assert_eq!(a.comm, expected.as_bytes());
        assert!(Arc::ptr_eq(&a, &b), "second lookup should hit the cache");
    }

    #[test]
    fn comm_cache_stays_bounded() {
        let cache = CommCache::default();
        // Nonexistent pids: cheap reads, all "?".
        for pid in 0..(COMM_CACHE_MAX as u32 * 2 + 10) {
            cache.lookup(u32::MAX - pid);
        }
        assert!(lock(&cache.map).len() <= COMM_CACHE_MAX);
    }

    #[test]
    fn rfc3339_known_instants() {
        let at = |secs: u64, micros: u32| UNIX_EPOCH + Duration::new(secs, micros * 1000);
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_rfc3339(at(1_795_816_149, 123_456)),
            "2026-11-27T21:49:09.123456Z"
        );
        // Leap days: an ordinary leap year, a 400-year one; 2100 is not a leap year.
        assert_eq!(
            format_rfc3339(at(1_709_210_096, 1)),
            "2024-02-29T12:34:56.000001Z"
        );
        assert_eq!(
            format_rfc3339(at(951_782_400, 0)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            format_rfc3339(at(4_107_542_400 - 1, 999_999)),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(
            format_rfc3339(at(4_107_542_400, 0)),
            "2100-03-01T00:00:00.000000Z"
        );
        assert_eq!(
            format_rfc3339(at(1_704_067_199, 0)),
            "2023-12-31T23:59:59.000000Z"
        );
        // Sub-microsecond digits are truncated, not rounded.
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::new(0, 999)),
            "1970-01-01T00:00:00.000000Z"
        );
        // Before the epoch rounds toward the past.
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_nanos(1)),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(2_208_988_800)),
            "1900-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn overload_regular_file_accounts_for_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 1).unwrap();
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 5_000;
        thread::scope(|s| {
            for t in 0..THREADS {
                let log = &log;
                s.spawn(move || {
                    for i in 0..PER_THREAD {
                        let mut e = ev("open", "/opt/legacy/f");
                        e.uid = t as u32;
                        e.gid = i as u32;
                        log.record(e);
                    }
                });
            }
        });
        let dropped = log.dropped();
        log.shutdown();

        let lines = read_lines(&path);
        let (written, reported, dropped_lines) = account(&lines);
        assert_eq!(written + reported, THREADS * PER_THREAD);
        assert_eq!(reported, dropped);
        if dropped > 0 {
            assert!(dropped_lines >= 1);
        }
        eprintln!("regular file overload: {written} written, {dropped} dropped");
    }

    /// The writer is stalled on a pipe nobody reads, so the queue is certainly full: record()
    /// must still return, and once the pipe drains every event must be accounted for.
    #[test]
    fn overload_with_stalled_writer_never_blocks_and_reports_drops() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Non-blocking so opening the reader doesn't wait for a writer.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        // FIFOs are refused as a log's place; the writer itself takes any open file.
        let sink = OpenOptions::new().append(true).open(&fifo).unwrap();
        let log = Arc::new(AuditLog::start(sink, None, &fifo, 1, AuditOptions::default()).unwrap());

        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 10_000;
        let (done_tx, done_rx) = channel();
        for _ in 0..THREADS {
            let log = Arc::clone(&log);
            let done_tx = done_tx.clone();
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    log.record(ev(
                        "lookup",
                        "/opt/legacy/some/longer/path/to/fill/the/pipe",
                    ));
                }
                // Release our handle first so the test can take the log back for shutdown.
                drop(log);
                done_tx.send(()).unwrap();
            });
        }
        for _ in 0..THREADS {
            done_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("record() blocked while the writer was stalled");
        }
        // At most pipe buffer + write buffer + queue worth of events can have been accepted.
        assert!(log.dropped() > 0);
        let dropped = log.dropped();

        // Drain the pipe (blocking now) until the writer closes its end at shutdown.
        let drain = thread::spawn(move || {
            let mut reader = reader;
            let fd = std::os::unix::io::AsRawFd::as_raw_fd(&reader);
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFL, 0) }, 0);
            let mut text = String::new();
            reader.read_to_string(&mut text).unwrap();
            text
        });
        let log = Arc::try_unwrap(log).unwrap();
        log.shutdown();
        let text = drain.join().unwrap();

        let lines = parse_lines(&text);
        let (written, reported, dropped_lines) = account(&lines);
        assert_eq!(written + reported, THREADS * PER_THREAD);
        assert_eq!(reported, dropped);
        assert!(dropped_lines >= 1);
    }

    /// Every field at many times its cap, every byte a control character (the longest JSON
    /// escape) or an invalid byte (escaped, then JSON-escaped): the line stays within
    /// MAX_LINE_BYTES, far below the report's 8 MiB line limit, and says what it shortened.
    #[test]
    fn worst_case_line_stays_within_the_documented_bound() {
        const REPORT_MAX_LINE: usize = 8 * 1024 * 1024;
        for byte in [0x01u8, 0xff, b'\\'] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.jsonl");
            let log = AuditLog::open(&path, 8).unwrap();
            let raw = |n: usize| PathBuf::from(std::ffi::OsString::from_vec(vec![byte; n]));
            let text = |n: usize| "\u{1}".repeat(n);
            let mut e = ev("rename", "");
            e.path = raw(100_000);
            e.target = Some(raw(100_000));
            e.dest = Some(raw(100_000));
            e.map = Some(text(100_000));
            e.detail = Some(raw(100_000).into_os_string());
            let truncated = bound_event(&mut e);
            let cut = |n: usize, cap: usize| encode::shorten(&vec![byte; n], cap).unwrap();
            let proc = Arc::new(ProcInfo {
                comm: cut(1000, COMM_CAP),
                exe: Some(cut(100_000, PATH_CAP)),
                cmdline: Some(cut(1_000_000, CMDLINE_CAP)),
                truncated: F_COMM | F_EXE | F_CMDLINE,
            });
            let q = Queued {
                ts: SystemTime::now(),
                cost: event_cost(&e, &proc),
                event: e,
                proc,
                truncated,
            };
            log.counters
                .queued_bytes
                .fetch_add(q.cost, Ordering::Relaxed);
            log.tx.as_ref().unwrap().send(q).unwrap();
            log.shutdown();
            let text = std::fs::read_to_string(&path).unwrap();
            let line = text.lines().next().unwrap();
            assert!(
                line.len() <= MAX_LINE_BYTES,
                "{} > {MAX_LINE_BYTES}",
                line.len()
            );
            const { assert!(MAX_LINE_BYTES < REPORT_MAX_LINE) };
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                v["truncated"],
                serde_json::json!([
                    "path", "target", "map", "dest", "detail", "comm", "exe", "cmdline"
                ])
            );
            if byte == 0xff {
                assert_eq!(
                    v["escaped"],
                    serde_json::json!([
                        "path", "target", "dest", "detail", "comm", "exe", "cmdline"
                    ])
                );
            } else {
                assert!(v.get("escaped").is_none(), "valid UTF-8 is not escaped");
            }
            eprintln!("worst case with byte {byte:#04x}: {} bytes", line.len());
        }
    }

    /// The writer is stalled and events are large: the queue holds a bounded number of bytes,
    /// not 16K events of any size; everything beyond is counted, and accounted in the end.
    #[test]
    fn queue_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let sink = OpenOptions::new().append(true).open(&fifo).unwrap();
        const QUEUE_BYTES: u64 = 1024 * 1024;
        let options = AuditOptions {
            queue_bytes: QUEUE_BYTES,
            rate: RateLimit {
                bytes_per_sec: 0,
                burst: 0,
            },
            ..AuditOptions::default()
        };
        let log = AuditLog::start(sink, None, &fifo, 16 * 1024, options).unwrap();
        const N: u64 = 3000;
        let long = format!("/opt/legacy/{}", "x".repeat(4000));
        for _ in 0..N {
            log.record(ev("lookup", &long));
        }
        let accepted = log.counters.accepted.load(Ordering::Relaxed);
        let cost = 4012 + EVENT_OVERHEAD;
        // The queue's bytes, plus what the stalled writer holds in its buffer and the pipe.
        let bound = (QUEUE_BYTES + BUFFER_MAX as u64 + 65536) / cost + 2;
        assert!(accepted <= bound, "{accepted} accepted, bound {bound}");
        assert!(log.dropped() > 0);
        let drain = thread::spawn(move || {
            let mut reader = reader;
            let fd = std::os::unix::io::AsRawFd::as_raw_fd(&reader);
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFL, 0) }, 0);
            let mut text = String::new();
            reader.read_to_string(&mut text).unwrap();
            text
        });
        log.shutdown();
        let lines = parse_lines(&drain.join().unwrap());
        let (written, reported, _) = account(&lines);
        assert_eq!(written + reported, N);
    }

    #[test]
    fn open_appends_and_creates_with_restricted_modes() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("var/log/relocfs");
        let path = parent.join("audit.jsonl");

        let log = AuditLog::open(&path, 8).unwrap();
        log.record(ev("mkdir", "/opt/legacy/a"));
        log.shutdown();

        // Modes requested are 0750/0640; the umask may only remove bits.
        let dmode = std::fs::metadata(&parent).unwrap().permissions().mode() & 0o7777;
        let fmode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(dmode & !0o750, 0, "dir mode {dmode:o}");
        assert_eq!(fmode & !0o640, 0, "file mode {fmode:o}");

        let log = AuditLog::open(&path, 8).unwrap();
        log.record(ev("rename", "/opt/legacy/b"));
        log.shutdown();

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["op"], "mkdir");
        assert_eq!(lines[1]["op"], "rename");
    }

    #[test]
    fn open_keeps_foreign_existing_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let log = AuditLog::open(&path, 8).unwrap();
        log.record(ev("create", "/opt/legacy/c"));
        log.shutdown();
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["earlier"], true);
        assert_eq!(lines[1]["op"], "create");
    }

    #[test]
    fn drop_flushes_like_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 8).unwrap();
        log.record(ev("setattr", "/opt/legacy/d"));
        drop(log);
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["op"], "setattr");
    }

    #[test]
    fn open_fails_cleanly_on_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        // Parent is a regular file: must be an error, not a panic.
        assert!(AuditLog::open(&file.join("audit.jsonl"), 8).is_err());
    }

    #[test]
    fn disabled_records_nothing() {
        let log = AuditLog::disabled();
        assert!(!log.is_enabled());
        for _ in 0..100 {
            log.record(ev("open", "/opt/legacy/e"));
        }
        assert_eq!(log.written(), 0);
        assert_eq!(log.dropped(), 0);
        log.shutdown();
        drop(AuditLog::disabled());
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(libc::EACCES), "EACCES");
        assert_eq!(errno_name(libc::EROFS), "EROFS");
        assert_eq!(errno_name(libc::EXDEV), "EXDEV");
        assert_eq!(errno_name(libc::ENOTEMPTY), "ENOTEMPTY");
        assert_eq!(errno_name(libc::ENOSYS), "ENOSYS");
        assert_eq!(errno_name(libc::ENOTSUP), "EOPNOTSUPP");
        assert_eq!(errno_name(libc::EWOULDBLOCK), "EAGAIN");
        assert_eq!(errno_name(0), "EUNKNOWN");
        assert_eq!(errno_name(-2), "EUNKNOWN");
        assert_eq!(errno_name(100_000), "EUNKNOWN");
        // Every known value maps to a distinct name.
        let names: std::collections::HashSet<_> = (1..200)
            .map(errno_name)
            .filter(|n| *n != "EUNKNOWN")
            .collect();
        assert!(names.len() > 120, "{}", names.len());
    }

    #[test]
    fn access_flag_modes() {
        assert_eq!(access_flags(libc::O_RDONLY), "r");
        assert_eq!(access_flags(libc::O_WRONLY | libc::O_APPEND), "w");
        assert_eq!(access_flags(libc::O_RDWR | libc::O_TRUNC), "rw");
        assert_eq!(access_flags(libc::O_RDONLY | libc::O_DIRECTORY), "r");
    }
}
