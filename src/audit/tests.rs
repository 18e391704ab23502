//! Tests of the audit log: the handle, the writer, the line format, the process cache.

use super::proc::{read_cmdline, read_comm, CommCache, ProcInfo, COMM_CACHE_MAX};
use super::writer::BUFFER_MAX;
use super::*;
use serde_json::Value;
use std::fs::{File, OpenOptions};
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

/// The keys of a line, less the caller's host, process and service (`host`, `tgid`, `unit`,
/// `user_unit`, `container`: they depend on where the test runs; see proc.rs's tests).
fn keys(l: &Line) -> Vec<&str> {
    const WHERE: [&str; 5] = ["host", "tgid", "unit", "user_unit", "container"];
    l.keys
        .iter()
        .map(String::as_str)
        .filter(|k| !WHERE.contains(k))
        .collect()
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
            "v", "ts", "op", "path", "target", "map", "flags", "pid", "uid", "gid", "comm", "exe",
            "result"
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
    let tid = crate::sys::gettid();
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

/// A FIFO in `dir` that nobody reads yet: (its path, the reader, the writer's end). The reader
/// is opened non-blocking, so opening it does not wait for a writer. FIFOs are refused as a
/// log's place; the writer itself takes any open file.
fn stalled_pipe(dir: &Path) -> (PathBuf, File, File) {
    let fifo = dir.join("audit.fifo");
    crate::sys::mkfifo(&fifo, 0o600).unwrap();
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let sink = OpenOptions::new().append(true).open(&fifo).unwrap();
    (fifo, reader, sink)
}

/// Drains the pipe (blocking now) until the writer closes its end at shutdown.
fn drain(reader: File) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut reader = reader;
        crate::sys::set_status_flags(std::os::fd::AsFd::as_fd(&reader), 0).unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        text
    })
}

/// The writer is stalled on a pipe nobody reads, so the queue is certainly full: record()
/// must still return, and once the pipe drains every event must be accounted for.
#[test]
fn overload_with_stalled_writer_never_blocks_and_reports_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, reader, sink) = stalled_pipe(dir.path());
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

    let drain = drain(reader);
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
            ..ProcInfo::default()
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
                serde_json::json!(["path", "target", "dest", "detail", "comm", "exe", "cmdline"])
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
    let (fifo, reader, sink) = stalled_pipe(dir.path());
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
    let drain = drain(reader);
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

/// `reason` is written right after `result` when set, and two events that differ only in it
/// are never collapsed into one line.
#[test]
fn reason_follows_result_and_keeps_events_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let options = AuditOptions {
        collapse: Duration::from_secs(60),
        ..AuditOptions::default()
    };
    let log = AuditLog::open_with(&path, 64, options).unwrap();
    for reason in [Some("rule is read-only"), Some("rule is read-only"), None] {
        let mut e = ev("unlink", "/opt/legacy/x");
        e.result = Err(libc::EROFS);
        e.reason = reason;
        log.record(e);
    }
    log.shutdown();
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2);
    let with = lines
        .iter()
        .find(|l| l.value.get("reason").is_some())
        .unwrap();
    assert_eq!(with["reason"], "rule is read-only");
    assert_eq!(with["count"], 2);
    let k = keys(with);
    let at = k.iter().position(|k| *k == "result").unwrap();
    assert_eq!(k[at + 1], "reason");
    let without = lines
        .iter()
        .find(|l| l.value.get("reason").is_none())
        .unwrap();
    assert!(without.value.get("count").is_none());
}
