//! Non-blocking JSON Lines audit log of who touched the legacy tree, written by a background thread.
//!
//! The filesystem threads only capture a timestamp, look up the caller's process name (cached)
//! and `try_send` a small struct into a bounded queue; all formatting, serialisation and I/O
//! happen on one writer thread. When the queue is full the event is counted instead of
//! blocking the filesystem, and the writer later records an explicit `"op":"dropped"` line so
//! that loss is visible in the log itself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

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

/// When idle, the writer wakes this often to report drops that raced with its last catch-up.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Big enough that a batch usually becomes one `write(2)`; a line (two paths of at most
/// PATH_MAX plus small fields) always fits, so a line is never split by a direct write.
const WRITE_BUFFER: usize = 64 * 1024;

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
    /// What a change changed, e.g. "mode=0644 size=0" for setattr.
    pub detail: Option<String>,
    /// Caller's thread id as given by FUSE.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `Err(errno)` when the operation failed.
    pub result: Result<(), i32>,
}

/// What travels through the queue: raw data only, so serialisation cost stays on the writer.
struct Queued {
    ts: SystemTime,
    event: Event,
    proc: Arc<ProcInfo>,
}

/// Counters shared between the recording side and the writer thread.
#[derive(Default)]
struct Counters {
    /// Events not written: queue full, writer gone, or a write error.
    dropped: AtomicU64,
    /// Events successfully flushed to the file (not counting "dropped" lines).
    written: AtomicU64,
    /// Set by `reopen` (SIGHUP after logrotate moved the file); the writer acts on it.
    reopen: AtomicBool,
}

/// Handle to the audit log. `Send + Sync`: share it by reference (or in an `Arc`) and call
/// [`AuditLog::record`] from any thread.
pub struct AuditLog {
    /// `None` when disabled or after shutdown; dropping it is what tells the writer to finish.
    tx: Option<SyncSender<Queued>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    comms: CommCache,
    /// So a dead writer is reported once, not once per event.
    writer_gone_logged: AtomicBool,
}

// The filesystem relies on this; fail the build here rather than in the caller's code.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<AuditLog>();
};

impl AuditLog {
    /// Opens (appending, creating with mode 0640) the log file and starts the writer thread.
    /// A missing parent directory is created with mode 0750. `capacity` is the queue length;
    /// 0 is treated as 1 because a zero-capacity channel would drop whenever the writer is busy.
    pub fn open(path: &Path, capacity: usize) -> io::Result<AuditLog> {
        AuditLog::open_with(path, capacity, AuditOptions::default())
    }

    /// Like `open`, with command lines and collapsing as `options` say.
    pub fn open_with(path: &Path, capacity: usize, options: AuditOptions) -> io::Result<AuditLog> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(parent)?;
            }
        }
        // O_APPEND so concurrent writers (e.g. a second instance, logrotate copytruncate)
        // never overwrite each other's lines; O_CLOEXEC so children of the daemon don't
        // inherit the audit fd.
        let file = open_log_file(path)?;

        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer_counters = Arc::clone(&counters);
        let writer_path = path.to_path_buf();
        let writer = thread::Builder::new()
            .name("relocfs-audit".into())
            .spawn(move || writer_loop(rx, file, writer_path, writer_counters, options.collapse))?;

        Ok(AuditLog {
            tx: Some(tx),
            writer: Some(writer),
            counters,
            comms: CommCache {
                cmdline: options.cmdline,
                ..CommCache::default()
            },
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
            counters: Arc::new(Counters::default()),
            comms: CommCache::default(),
            writer_gone_logged: AtomicBool::new(false),
        }
    }

    /// Whether events are recorded at all; lets callers skip building an [`Event`] when not.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event; never blocks. The timestamp is taken now and `comm` is filled from
    /// the (cached) `/proc/<pid>/comm`. If the queue is full the event is counted as dropped.
    pub fn record(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        let ts = SystemTime::now();
        let proc = self.comms.lookup(event.pid);
        match tx.try_send(Queued { ts, event, proc }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                // Only possible if the writer thread died; nobody will write a "dropped"
                // line any more, so the error log is the only trace left.
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.writer_gone_logged.swap(true, Ordering::Relaxed) {
                    log::error!("audit log writer thread is gone; audit events are being lost");
                }
            }
        }
    }

    /// Total events dropped so far (queue full or write errors).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Total events written (flushed to the file) so far, not counting "dropped" lines.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Closes the queue and waits for the writer to write, flush and sync everything queued:
    /// when this returns, every event recorded before is in the file.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        // Dropping the only sender disconnects the channel; the writer drains what is left,
        // reports drops, flushes and exits.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                log::error!("audit log writer thread panicked; some events may be lost");
            }
        }
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

/// What the log says about the calling process.
#[derive(Debug)]
struct ProcInfo {
    /// `/proc/PID/comm`, "?" when unreadable.
    comm: Arc<str>,
    /// `/proc/PID/exe`, when readable.
    exe: Option<String>,
    /// `/proc/PID/cmdline` with NULs as spaces, only when enabled (it can hold secrets).
    cmdline: Option<String>,
}

/// Options of the log beyond its path.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditOptions {
    /// Log each caller's full command line.
    pub cmdline: bool,
    /// Events identical in pid, op, path, flags and result within this window become one
    /// line with a `count`; zero writes every event.
    pub collapse: Duration,
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
        let info = Arc::new(ProcInfo {
            comm: read_comm(pid),
            exe: std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            cmdline: self.cmdline.then(|| read_cmdline(pid)).flatten(),
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

/// The command line of `pid`, arguments separated by spaces; `None` if unreadable or empty
/// (kernel threads).
fn read_cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// Process (thread) name from `/proc/<pid>/comm`; works for thread ids too. "?" if unreadable
/// (e.g. the caller already exited, or pid 0 for kernel-initiated requests).
fn read_comm(pid: u32) -> Arc<str> {
    match std::fs::read(format!("/proc/{pid}/comm")) {
        Ok(bytes) => {
            let name = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            if name.is_empty() {
                Arc::from("?")
            } else {
                Arc::from(String::from_utf8_lossy(name))
            }
        }
        Err(_) => Arc::from("?"),
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
    detail: Option<&'a str>,
    pid: u32,
    uid: u32,
    gid: u32,
    comm: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmdline: Option<&'a str>,
    result: &'a str,
    /// How many identical events this line stands for, when collapsed (more than one).
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

/// The explicit record of events that could not be written.
#[derive(Serialize)]
struct DroppedLine<'a> {
    v: u32,
    ts: &'a str,
    op: &'a str,
    count: u64,
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
    out: BufWriter<File>,
    counters: Arc<Counters>,
    /// Collapse window (zero: off) and the events held in it: event, count, first seen.
    collapse: Duration,
    pending: HashMap<CollapseKey, (Queued, u64, Instant)>,
    /// Drops already reported in a "dropped" line; the counter minus this is still owed.
    reported_drops: u64,
    /// Events in the buffer but not yet flushed; counted as written only after a flush.
    unflushed: u64,
    /// Reused serialisation buffer, so a line is written whole or not at all.
    line: Vec<u8>,
    /// Whether the last I/O failed, to log an error once per failure streak, not per event.
    failing: bool,
}

/// Opens (or creates) the log for appending. O_APPEND so concurrent writers (e.g. a second
/// instance, logrotate copytruncate) never overwrite each other's lines; O_CLOEXEC so children
/// of the daemon don't inherit the audit fd.
fn open_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn writer_loop(
    rx: Receiver<Queued>,
    file: File,
    path: PathBuf,
    counters: Arc<Counters>,
    collapse: Duration,
) {
    let mut w = Writer {
        out: BufWriter::with_capacity(WRITE_BUFFER, file),
        counters,
        collapse,
        pending: HashMap::new(),
        reported_drops: 0,
        unflushed: 0,
        line: Vec::with_capacity(512),
        failing: false,
    };
    loop {
        if w.counters.reopen.swap(false, Ordering::Relaxed) {
            w.reopen(&path);
        }
        let first = match rx.recv_timeout(IDLE_WAKE) {
            Ok(q) => q,
            Err(RecvTimeoutError::Timeout) => {
                // A drop counted just after our last catch-up would otherwise wait for the
                // next event; report it now, with collapsed events whose window has passed.
                w.flush_pending(false);
                w.catch_up();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        w.write_event(first);
        let mut batch = 1;
        let mut disconnected = false;
        while batch < BATCH_MAX {
            match rx.try_recv() {
                Ok(q) => {
                    w.write_event(q);
                    batch += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        w.flush_pending(false);
        w.catch_up();
        if disconnected {
            break;
        }
    }
    // All senders are gone, so every drop has been counted: this report is final.
    w.flush_pending(true);
    w.catch_up();
    if let Err(e) = w.out.get_ref().sync_data() {
        // Expected for pipes and some special files; the data is flushed regardless.
        log::debug!("audit log sync failed: {e}");
    }
}

impl Writer {
    /// Flushes what the old file still owes, then continues in a fresh file at `path`. If
    /// the new file cannot be opened the old one is kept: better a rotated log than none.
    fn reopen(&mut self, path: &Path) {
        self.catch_up();
        match open_log_file(path) {
            Ok(file) => {
                if let Err(e) = self.out.flush() {
                    log::error!("audit log: flush before reopen failed: {e}");
                }
                self.out = BufWriter::with_capacity(WRITE_BUFFER, file);
                log::info!("audit log reopened: {}", path.display());
            }
            Err(e) => log::error!("audit log: cannot reopen {}: {e}", path.display()),
        }
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
        let line = EventLine {
            v: SCHEMA_VERSION,
            ts: &ts,
            op: ev.op,
            path: ev.path.to_string_lossy(),
            target: ev.target.as_deref().map(Path::to_string_lossy),
            map: ev.map.as_deref(),
            flags: ev.flags,
            dest: ev.dest.as_deref().map(Path::to_string_lossy),
            detail: ev.detail.as_deref(),
            pid: ev.pid,
            uid: ev.uid,
            gid: ev.gid,
            comm: &q.proc.comm,
            exe: q.proc.exe.as_deref(),
            cmdline: q.proc.cmdline.as_deref(),
            result: match ev.result {
                Ok(()) => "ok",
                Err(errno) => errno_name(errno),
            },
            count: (count > 1).then_some(count),
        };
        if self.write_line(&line) {
            self.unflushed += count;
        } else {
            // Lost to an I/O error: count them so a later "dropped" line accounts for them.
            self.counters.dropped.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Serialises into the scratch buffer first so a failure never leaves half a line behind.
    fn write_line<T: Serialize>(&mut self, value: &T) -> bool {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, value) {
            log::error!("audit log: cannot serialise event: {e}");
            return false;
        }
        self.line.push(b'\n');
        match self.out.write_all(&self.line) {
            Ok(()) => true,
            Err(e) => {
                self.io_failed(&e);
                false
            }
        }
    }

    /// Reports outstanding drops and flushes; called whenever the queue is momentarily empty.
    fn catch_up(&mut self) {
        let total = self.counters.dropped.load(Ordering::Relaxed);
        if total > self.reported_drops {
            let ts = format_rfc3339(SystemTime::now());
            let line = DroppedLine {
                v: SCHEMA_VERSION,
                ts: &ts,
                op: "dropped",
                count: total - self.reported_drops,
            };
            // On failure the count stays owed and is reported on a later catch-up.
            if self.write_line(&line) {
                self.reported_drops = total;
            }
        }
        match self.out.flush() {
            Ok(()) => {
                self.counters
                    .written
                    .fetch_add(self.unflushed, Ordering::Relaxed);
                self.unflushed = 0;
                if self.failing {
                    log::warn!("audit log writable again");
                    self.failing = false;
                }
            }
            // BufWriter keeps the unwritten bytes; the next flush retries them.
            Err(e) => self.io_failed(&e),
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
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
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
        let own = read_cmdline(std::process::id()).unwrap();
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

        // Non-UTF-8 path bytes are converted lossily rather than failing the line.
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
        assert_eq!(l["path"], "/opt/legacy/\u{fffd}name");

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
        assert_eq!(&*read_comm(std::process::id()), expected.as_str());

        // FUSE hands us thread ids; /proc/<tid>/comm is the thread's own name.
        let tid = unsafe { libc::gettid() } as u32;
        let thread_comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        assert_eq!(&*read_comm(tid), thread_comm.trim_end_matches('\n'));

        // Unreadable → "?", and the cache returns the same shared string.
        let cache = CommCache::default();
        assert_eq!(&*cache.lookup(u32::MAX).comm, "?");
        let a = cache.lookup(std::process::id());
        let b = cache.lookup(std::process::id());
        assert_eq!(&*a.comm, expected.as_str());
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
        let log = Arc::new(AuditLog::open(&fifo, 1).unwrap());

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
