//! What a local user cannot do to the audit log: point it through a symlink or into a directory
//! they can write, make one line huge, flood it, hide from it, or make the daemon hang on it;
//! and that a deleted or stalled log never loses events without counting them.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// The documented caps (README, "Audit log: where it is written..."): a path field keeps at
/// most 4096 bytes, and no line is longer than this.
const PATH_CAP: usize = 4096;
const MAX_LINE_BYTES: usize = 6 * (5 * 4096 + 4096 + 1024 + 64) + 1024;

fn q(p: &Path) -> String {
    serde_json::to_string(p.to_str().unwrap()).unwrap()
}

/// `relocfs check CONFIG MNT` and the mount itself both refuse, naming `needles`; nothing is
/// mounted.
#[track_caller]
fn refused_at_check_and_mount(b: MountBuilder, needles: &[&str]) -> Mounted {
    fs::write(b.config_path(), b.config_text()).unwrap();
    let check = run_with_timeout(
        Command::new(BIN)
            .arg("check")
            .arg(b.config_path())
            .arg(b.mnt()),
        SETTLE_TIMEOUT,
    );
    assert_refusal(&check, needles);
    let root = b.root();
    let (m, out) = b.try_mount();
    assert_refusal(&out, needles);
    assert!(
        mounts_below(&root).is_empty(),
        "a refused mount left mounts"
    );
    m
}

#[test]
fn log_that_is_a_symlink_is_not_followed() {
    skip_without_fuse!();
    let (b, log) = fixture_with_log_dir(|d| chmod(d, 0o755));
    let victim = b.root().join("victim");
    write_file(&victim, b"precious\n", 0o644);
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let _m = refused_at_check_and_mount(b, &["audit.jsonl", "symlink", "ELOOP"]);
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious\n",
        "the symlink was followed"
    );
}

/// A fresh tempdir fixture whose log lives in `root/<dir>/audit.jsonl`, `dir` set up by `prep`.
fn fixture_with_log_dir(prep: impl FnOnce(&Path)) -> (MountBuilder, PathBuf) {
    let b = MountBuilder::new();
    write_file(&b.real().join("f"), b"f\n", 0o644);
    let dir = b.root().join("logs");
    mkdir_p(&dir);
    prep(&dir);
    let log = dir.join("audit.jsonl");
    let config = format!(
        "[[map]]\nfrom = \"/\"\nto = {}\n[audit]\nlog = {}\n",
        q(&b.real()),
        q(&log)
    );
    let b = b.no_audit().raw_config(&config);
    (b, log)
}

#[test]
fn log_in_a_directory_others_can_write_is_refused() {
    skip_without_fuse!();
    for mode in [0o777, 0o775, 0o757] {
        let (b, _) = fixture_with_log_dir(|d| chmod(d, mode));
        let _m = refused_at_check_and_mount(b, &["audit.jsonl", "written by other users"]);
    }
    // Owned by another user: they could replace the log.
    let (b, _) = fixture_with_log_dir(|d| {
        chmod(d, 0o755);
        chown(d, NOBODY, NOBODY);
    });
    let _m = refused_at_check_and_mount(b, &["audit.jsonl", "belongs to uid 65534"]);
}

#[test]
fn log_in_a_sticky_shared_directory_must_be_the_daemons() {
    skip_without_fuse!();
    // Someone else's file there: refused.
    let (b, log) = fixture_with_log_dir(|d| chmod(d, 0o1777));
    write_owned(&log, b"", 0o666, NOBODY, NOBODY);
    let _m = refused_at_check_and_mount(b, &["audit.jsonl", "belongs to uid 65534"]);

    // No file yet: the daemon creates its own (0640), and mounts.
    let (b, log) = fixture_with_log_dir(|d| chmod(d, 0o1777));
    let m = b.mount();
    cat_and_wait_for_open(&log, &m.at("f"));
    let meta = fs::symlink_metadata(&log).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.permissions().mode() & 0o7777 & !0o640, 0);
}

#[test]
fn log_that_is_a_fifo_is_refused_without_hanging() {
    skip_without_fuse!();
    let (b, log) = fixture_with_log_dir(|d| chmod(d, 0o755));
    mkfifo(&log, 0o600).unwrap();
    // Before the fix `check` called it valid and the mount blocked forever opening it (the
    // fixture's hang guard would fire).
    let _m = refused_at_check_and_mount(b, &["audit.jsonl", "FIFO", "regular file"]);
}

#[test]
fn planted_directory_symlink_in_a_shared_directory_is_not_followed() {
    skip_without_fuse!();
    // The log's directory does not exist yet, in a sticky world-writable directory; a user
    // plants a symlink there to a directory of root's. The daemon must not create its log
    // (as root) in root's directory.
    let b = MountBuilder::new();
    let shared = b.root().join("shared");
    mkdir_p(&shared);
    chmod(&shared, 0o1777);
    let roots_dir = b.root().join("roots-dir");
    mkdir_p(&roots_dir);
    chmod(&roots_dir, 0o755);
    let planted = shared.join("logs");
    let out = run_as(
        NOBODY,
        NOBODY,
        Command::new("ln").arg("-s").arg(&roots_dir).arg(&planted),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    let log = planted.join("audit.jsonl");
    let config = format!(
        "[[map]]\nfrom = \"/\"\nto = {}\n[audit]\nlog = {}\n",
        q(&b.real()),
        q(&log)
    );
    let b = b.no_audit().raw_config(&config);
    let _m = refused_at_check_and_mount(b, &["audit.jsonl", "symlink of uid 65534"]);
    assert!(
        fs::read_dir(&roots_dir).unwrap().next().is_none(),
        "something was created through the planted symlink"
    );
}

#[test]
fn names_that_are_not_utf8_are_logged_losslessly() {
    skip_without_fuse!();
    use std::os::unix::ffi::OsStrExt;
    let b = MountBuilder::new();
    let real = b.real();
    let names: [&[u8]; 4] = [
        b"bad\xff\xfe",
        b"bad\xfe\xff",
        "bad\u{fffd}\u{fffd}".as_bytes(),
        b"back\\slash\xff",
    ];
    for name in names {
        write_file(&real.join(std::ffi::OsStr::from_bytes(name)), b"x", 0o644);
    }
    let m = b.map("/", &real).mount();
    let mut pids = Vec::new();
    for name in names {
        let p = m.at("").join(std::ffi::OsStr::from_bytes(name));
        let (pid, out) = run_as_pid(0, 0, Command::new("cat").arg(&p));
        assert_eq!(out.stdout, b"x", "{}", stderr_str(&out));
        pids.push(pid);
    }
    let mnt = m.mnt.display().to_string();
    let want = [
        (format!("{mnt}/bad\\xff\\xfe"), true),
        (format!("{mnt}/bad\\xfe\\xff"), true),
        (format!("{mnt}/bad\u{fffd}\u{fffd}"), false),
        (format!("{mnt}/back\\\\slash\\xff"), true),
    ];
    for (pid, (path, escaped)) in pids.into_iter().zip(want) {
        let e = wait_for_audit(
            &m.audit,
            |e| e["op"] == "open" && n(e, "pid") == Some(u64::from(pid)),
            AUDIT_TIMEOUT,
        );
        assert_eq!(s(&e, "path"), Some(path.as_str()), "{e}");
        if escaped {
            assert_eq!(e["escaped"], serde_json::json!(["path", "target"]), "{e}");
        } else {
            assert!(e.get("escaped").is_none(), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One user's events: bounded in size, rate-limited into counted summaries, never hidden.
// ---------------------------------------------------------------------------------------------

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Builds `depth` nested directories named `name` below `top` (as the calling thread's user),
/// one name at a time (the whole path is far beyond PATH_MAX).
fn build_deep_tree(top: &Path, depth: usize, name: &str) {
    let cname = c(name);
    let mut fd = unsafe {
        libc::open(
            cpath(top).as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    assert!(
        fd >= 0,
        "open {}: {}",
        top.display(),
        errno_text(last_errno())
    );
    for _ in 0..depth {
        let rc = unsafe { libc::mkdirat(fd, cname.as_ptr(), 0o755) };
        assert_eq!(rc, 0, "mkdirat: {}", errno_text(last_errno()));
        let next = unsafe {
            libc::openat(
                fd,
                cname.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        assert!(next >= 0, "openat: {}", errno_text(last_errno()));
        unsafe { libc::close(fd) };
        fd = next;
    }
    unsafe { libc::close(fd) };
}

/// Walks down `depth` levels of `name` from `top` (through the mount) and stats `misses`
/// missing names there; returns how many stats failed with ENOENT.
fn stat_misses_deep(top: &Path, depth: usize, name: &str, misses: usize) -> usize {
    let cname = c(name);
    let mut fd = unsafe {
        libc::open(
            cpath(top).as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    assert!(fd >= 0);
    for _ in 0..depth {
        let next = unsafe {
            libc::openat(
                fd,
                cname.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(
            next >= 0,
            "openat through the mount: {}",
            errno_text(last_errno())
        );
        unsafe { libc::close(fd) };
        fd = next;
    }
    let mut enoent = 0;
    for i in 0..misses {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let missing = c(&format!("missing-{i}"));
        let rc = unsafe { libc::fstatat(fd, missing.as_ptr(), &mut st, 0) };
        if rc != 0 && last_errno() == libc::ENOENT {
            enoent += 1;
        }
    }
    unsafe { libc::close(fd) };
    enoent
}

fn raw_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The head-and-tail rule, undone as far as it can be: (head, left out, tail).
fn split_marker(v: &str) -> (&str, usize, &str) {
    let open = v.find("…[").expect("no marker");
    let close = v.find(" bytes]…").expect("no marker end");
    let n = v[open + "…[".len()..close].parse().unwrap();
    (&v[..open], n, &v[close + " bytes]…".len()..])
}

#[test]
fn deep_tree_misses_make_bounded_lines_that_keep_both_ends() {
    skip_without_fuse!();
    // Before the fix each of these lines carried two 102 KB paths (over 200 KB a line; at
    // depth 4,000 and more, megabytes: gigabytes of log and of daemon memory in seconds).
    const DEPTH: usize = 400;
    const MISSES: usize = 50;
    let name = "d".repeat(255);
    let b = MountBuilder::new();
    let top = b.real().join("top");
    mkdir_owned(&top, NOBODY, NOBODY, 0o755);
    let real = b.real();
    let m = b.map("/", real).opt("allow_other").mount();
    let (t, n) = (top.clone(), name.clone());
    spawn_as_user(NOBODY, NOBODY, &[], move || build_deep_tree(&t, DEPTH, &n))
        .join()
        .unwrap();
    let legacy_top = m.at("top");
    let (lt, n) = (legacy_top.clone(), name.clone());
    let enoent = spawn_as_user(NOBODY, NOBODY, &[], move || {
        stat_misses_deep(&lt, DEPTH, &n, MISSES)
    })
    .join()
    .unwrap();
    assert_eq!(enoent, MISSES);
    m.unmount_all();
    // The daemon writes what it holds before it exits.
    assert!(wait_until(SETTLE_TIMEOUT, || m.daemon_pids().is_empty()));

    let deep_suffix: String = format!("/{name}").repeat(DEPTH);
    let misses: Vec<(String, Value)> = raw_lines(&m.audit)
        .into_iter()
        .map(|l| {
            let v: Value = serde_json::from_str(&l).unwrap();
            (l, v)
        })
        .filter(|(_, v)| v["uid"] == NOBODY && v["op"] == "lookup")
        .collect();
    assert_eq!(misses.len(), MISSES, "every miss is logged, none hidden");
    for (i, (line, v)) in misses.iter().enumerate() {
        assert!(line.len() <= MAX_LINE_BYTES, "line of {} bytes", line.len());
        assert!(
            line.len() < 12 * 1024,
            "a plain deep miss: {} bytes",
            line.len()
        );
        assert_eq!(v["truncated"], serde_json::json!(["path", "target"]), "{v}");
        assert!(v.get("escaped").is_none());
        for (field, base) in [("path", &legacy_top), ("target", &top)] {
            let value = s(v, field).unwrap();
            assert!(value.len() <= PATH_CAP);
            let full = format!("{}{deep_suffix}/missing-{i}", base.display());
            let (head, left_out, tail) = split_marker(value);
            assert!(full.starts_with(head) && full.ends_with(tail), "{field}");
            assert!(tail.ends_with(&format!("/missing-{i}")));
            assert_eq!(
                head.len() + left_out + tail.len(),
                full.len(),
                "{field}: exact count"
            );
        }
    }
    // The report reads them all.
    let out = relocfs([
        Path::new("report"),
        &m.audit,
        Path::new("--format"),
        Path::new("json"),
    ]);
    assert!(out.status.success(), "{}", stderr_str(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["totals"]["events"].as_u64().unwrap() >= MISSES as u64,
        "{}",
        report["totals"]
    );
}

#[test]
fn a_flooding_user_is_summarised_exactly_and_others_still_logged() {
    skip_without_fuse!();
    const FLOOD: usize = 3000;
    let b = MountBuilder::new();
    let real = b.real();
    mkdir_p(&real.join("d"));
    write_file(&real.join("f"), b"f\n", 0o644);
    // 64 KiB burst and rate: a few hundred small events, then a trickle.
    let config = format!(
        "[[map]]\nfrom = \"/\"\nto = {}\n[audit]\nlog = {}\nrate_limit = 65536\nrate_burst = 65536\n",
        q(&real),
        q(&b.audit_path())
    );
    let m = b.raw_config(&config).opt("allow_other").mount();
    let d = m.at("d");
    let flood = spawn_as_user(NOBODY, NOBODY, &[], move || {
        let mut enoent = 0;
        for i in 0..FLOOD {
            if fs::symlink_metadata(d.join(format!("x{i}"))).is_err() {
                enoent += 1;
            }
        }
        enoent
    });
    // Meanwhile root reads: each of its opens is logged.
    let f = m.at("f");
    let mut root_pids = Vec::new();
    for _ in 0..20 {
        let (pid, out) = run_as_pid(0, 0, Command::new("cat").arg(&f));
        assert!(out.status.success());
        root_pids.push(pid);
    }
    assert_eq!(flood.join().unwrap(), FLOOD);
    // `relocfs status` counts the events the limit held back.
    let suppressed_now = || {
        let out = relocfs([
            OsStr::new("status"),
            OsStr::new("--json"),
            m.mnt.as_os_str(),
        ]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s["audit_suppressed"].as_u64().unwrap_or(0)
    };
    assert!(wait_until(SETTLE_TIMEOUT, || suppressed_now() > 0));
    let out = relocfs([OsStr::new("status"), m.mnt.as_os_str()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" suppressed\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    m.unmount_all();
    // The daemon writes what it holds before it exits.
    assert!(wait_until(SETTLE_TIMEOUT, || m.daemon_pids().is_empty()));

    let lines = m.audit_lines();
    for pid in root_pids {
        assert!(
            lines.iter().any(ev("open", &f, Some(pid))),
            "root's open by {pid} missing"
        );
    }
    let logged = lines
        .iter()
        .filter(|e| e["uid"] == NOBODY && e["op"] == "lookup")
        .count() as u64;
    let summaries: Vec<&Value> = lines.iter().filter(|e| e["op"] == "suppressed").collect();
    assert!(!summaries.is_empty(), "no suppressed summary");
    let mut suppressed = 0;
    for sline in &summaries {
        let keys: Vec<&str> = sline
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec!["v", "ts", "host", "op", "uid", "count", "since"];
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want, "{sline}");
        assert_eq!(sline["v"], 1);
        assert_eq!(
            sline["uid"], NOBODY,
            "only the flooding user is limited: {sline}"
        );
        assert!(s(sline, "since").unwrap() <= s(sline, "ts").unwrap());
        suppressed += n(sline, "count").unwrap();
    }
    assert!(
        lines.iter().all(|e| e["op"] != "dropped"),
        "nothing should be dropped here"
    );
    assert_eq!(
        logged + suppressed,
        FLOOD as u64,
        "{logged} logged + {suppressed} suppressed"
    );
    assert!(
        logged < FLOOD as u64 / 2,
        "the limit did not apply: {logged} logged"
    );
}

// ---------------------------------------------------------------------------------------------
// The log vanishes; the log stalls.
// ---------------------------------------------------------------------------------------------

/// Stats `count` missing names `tag-i` below `dir` (each one audited lookup miss).
fn misses(dir: &Path, tag: &str, count: usize) {
    for i in 0..count {
        assert!(fs::symlink_metadata(dir.join(format!("{tag}-{i}"))).is_err());
    }
}

/// Events in `lines` for misses of `tag-*` below `dir`, plus the counts of `dropped` lines.
fn accounted(lines: &[Value], dir: &Path, tag: &str) -> (u64, u64) {
    let prefix = format!("{}/{tag}-", dir.display());
    let seen = lines
        .iter()
        .filter(|e| e["op"] == "lookup" && s(e, "path").is_some_and(|p| p.starts_with(&prefix)))
        .count() as u64;
    let dropped = lines
        .iter()
        .filter(|e| e["op"] == "dropped")
        .map(|e| n(e, "count").unwrap())
        .sum();
    (seen, dropped)
}

fn deleted_log_case(remove_dir: bool) {
    const N: usize = 300;
    let b = MountBuilder::new();
    let real = b.real();
    mkdir_p(&real.join("d"));
    let logs = b.root().join("logs");
    let log = logs.join("audit.jsonl");
    let b = b.no_audit().raw_config(&format!(
        "[[map]]\nfrom = \"/\"\nto = {}\n[audit]\nlog = {}\n",
        q(&real),
        q(&log)
    ));
    let m = b.mount();
    let d = m.at("d");
    misses(&d, "before", 1);
    wait_for_audit(
        &log,
        |e| s(e, "path").is_some_and(|p| p.ends_with("/before-0")),
        AUDIT_TIMEOUT,
    );
    if remove_dir {
        fs::remove_dir_all(&logs).unwrap();
    } else {
        fs::remove_file(&log).unwrap();
    }
    misses(&d, "after", N);
    m.unmount_all();
    assert!(wait_until(SETTLE_TIMEOUT, || m.daemon_pids().is_empty()));

    let meta = fs::symlink_metadata(&log).expect("the log was not recreated");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o7777 & !0o640, 0);
    let dmode = fs::metadata(&logs).unwrap().permissions().mode() & 0o7777;
    if remove_dir {
        assert_eq!(dmode & !0o750, 0, "recreated directory mode {dmode:o}");
    }
    let lines = read_audit(&log);
    let (seen, dropped) = accounted(&lines, &d, "after");
    assert_eq!(
        seen + dropped,
        N as u64,
        "{seen} events in the new file + {dropped} counted as dropped"
    );
}

#[test]
fn deleted_log_file_is_recreated_and_every_event_accounted() {
    skip_without_fuse!();
    deleted_log_case(false);
}

#[test]
fn deleted_log_directory_is_recreated_and_every_event_accounted() {
    skip_without_fuse!();
    deleted_log_case(true);
}

/// Whether every thread of `pid` is stopped (state `T` in /proc/PID/task/TID/stat).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "tid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'T' || state == 't')
    })
}

/// Sends SIGCONT to a stopped daemon on drop, whatever happened, so its mount can go.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Kills a child process on drop if it is still running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stalled_log_does_not_hold_the_daemon_at_exit() {
    skip_without_fuse!();
    const K: usize = 40;
    // The log's filesystem: another relocfs mount (no passthrough, so every write reaches its
    // daemon), which the test stops -- a hung network filesystem, for real.
    let sink_b = MountBuilder::new();
    let sink_real = sink_b.real();
    mkdir_p(&sink_real.join("logs"));
    chmod(&sink_real.join("logs"), 0o755);
    let sink = sink_b
        .map_mode("/", &sink_real, "rw")
        .no_audit()
        .extra("[fuse]\npassthrough = \"off\"\n")
        .mount();
    let log = sink.at("logs/audit.jsonl");

    let b = MountBuilder::new();
    let real = b.real();
    mkdir_p(&real.join("d"));
    let b = b.no_audit().raw_config(&format!(
        "[[map]]\nfrom = \"/\"\nto = {}\n[audit]\nlog = {}\nshutdown_timeout = 2\n",
        q(&real),
        q(&log)
    ));
    let m = b.into_mounted();
    let stderr_path = m.root().join("daemon.stderr");
    let child = Command::new(BIN)
        .arg("-f")
        .arg(&m.config)
        .arg(&m.mnt)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    assert!(
        wait_until(SETTLE_TIMEOUT, || mounted(&m.mnt)),
        "foreground mount"
    );
    let d = m.at("d");
    misses(&d, "before", 5);
    wait_for_audit_n(
        &log,
        |e| s(e, "path").is_some_and(|p| p.contains("/before-")),
        5,
        AUDIT_TIMEOUT,
    );

    let sink_pid = sink.daemon_pid();
    let _resume = Resume(sink_pid);
    assert_eq!(unsafe { libc::kill(sink_pid, libc::SIGSTOP) }, 0);
    // Stopping is asynchronous: until every thread has stopped, one could still take a
    // request, and a request that reached its server is waited for uninterruptibly.
    assert!(
        wait_until(SETTLE_TIMEOUT, || all_threads_stopped(sink_pid)),
        "the sink daemon did not stop"
    );
    // These reach the daemon and its queue; the writer then blocks writing them.
    misses(&d, "stalled", K);

    let started = Instant::now();
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let mut status = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(s) = child.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    fs::File::open(&stderr_path)
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.is_some(),
        "the daemon still runs 60 s after SIGTERM with its log stalled\nstderr: {err}"
    );
    assert!(!mounted(&m.mnt));
    let line = err
        .lines()
        .find(|l| l.contains("not written after waiting"))
        .unwrap_or_else(|| panic!("no error line about the stalled log: {err}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!(
            ": {K} events lost ({K} queued, 0 dropped and 0 suppressed"
        )),
        "{line}"
    );
    drop(_resume);
    // The sink serves again: what was written before the stall is there.
    let lines = read_audit(&log);
    let (before, _) = accounted(&lines, &d, "before");
    assert_eq!(before, 5);
}
