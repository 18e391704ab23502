//! What one caller can make the daemon spend: handles (fds) per user, directory listing
//! memory, fds of old rule generations; and open-but-unlinked files staying reachable when the
//! daemon closes node fds under fd pressure.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const OTHER_UID: u32 = 4343;

/// A process of `uid` holding open, for reading, as many of `dir/f0..f{max}` as it can. It
/// prints how many it got and keeps them until `release`.
struct Holder {
    child: Child,
    pub count: usize,
}

impl Holder {
    fn start(uid: u32, dir: &Path, max: usize) -> Holder {
        let script = format!(
            "ulimit -n 8192 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; i=0; \
             while [ $i -lt {max} ] && exec {{fd}}<\"$1/f$i\"; do i=$((i+1)); done; \
             echo $i; read x"
        );
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("bash")
            .arg(dir)
            .uid(uid)
            .gid(uid)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bash");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let count = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("holder said {line:?}"));
        Holder { child, count }
    }

    /// Closes the files; returns the holder's stderr (why it stopped opening).
    fn release(mut self) -> String {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        stderr_str(&out)
    }
}

use std::os::unix::process::CommandExt;

fn files(dir: &Path, n: usize) {
    for i in 0..n {
        write_file(&dir.join(format!("f{i}")), b"x", 0o644);
    }
}

/// `/` → `f0..f{n}` (read-only, allow_other), the daemon under an open-file limit of `limit`.
fn files_behind_fd_limit(n: usize, limit: u32) -> Mounted {
    let b = MountBuilder::new().opt("allow_other");
    let real = b.real();
    files(&real, n);
    mount_with_hard_fd_limit(b.map("/", &real), limit)
}

/// The config `/` → `real`, `/x` → `x` (no audit).
fn root_and_x(real: &Path, x: &Path) -> String {
    format!(
        "[[map]]\nfrom = \"/\"\nto = {:?}\n\n[[map]]\nfrom = \"/x\"\nto = {:?}\n",
        real.to_str().unwrap(),
        x.to_str().unwrap()
    )
}

/// `cat FILE && ls DIR | wc -l` as `uid`.
fn cat_and_ls(uid: u32, file: &Path, dir: &Path) -> std::process::Output {
    run_as(
        uid,
        uid,
        &mut sh("cat \"$1\" >/dev/null && ls \"$2\" | wc -l", &[file, dir]),
    )
}

#[test]
fn one_user_holding_files_open_leaves_others_and_root_working() {
    skip_without_fuse!();
    let m = files_behind_fd_limit(400, 256);
    let holder = Holder::start(KEY_UID, &m.mnt, 400);
    let held = holder.count;
    // Another user and root still open files and list directories.
    let other = cat_and_ls(OTHER_UID, &m.at("f399"), &m.mnt);
    let root_read = fs::read(m.at("f398"));
    let root_ls = fs::read_dir(&m.mnt).map(|d| d.count());
    let why = holder.release();
    assert!(
        other.status.success(),
        "with uid {KEY_UID} holding {held} files open, uid {OTHER_UID} failed: {}",
        stderr_str(&other)
    );
    assert_eq!(stdout_str(&other).trim(), "400");
    assert!(root_read.is_ok(), "root's open: {root_read:?}");
    assert_eq!(root_ls.ok(), Some(400), "root's ls");
    // The holder was stopped at its share, by EMFILE, well before the files ran out.
    assert!(held < 400, "uid {KEY_UID} held all {held}");
    assert!(
        why.contains("Too many open files"),
        "holder stopped by: {why}"
    );
    assert!(held >= 256 / 2, "uid {KEY_UID} got only {held} handles");
    // Its handles are given back when it closes them.
    let again = Holder::start(KEY_UID, &m.mnt, 400);
    assert_eq!(again.count, held, "share after closing");
    again.release();
}

#[test]
fn at_a_limit_of_128_a_caller_holds_most_of_it() {
    skip_without_fuse!();
    let m = files_behind_fd_limit(200, 128);
    // Walk more files than the limit first, so node fds would fill it.
    for i in 0..200 {
        fs::metadata(m.at(&format!("f{i}"))).unwrap();
    }
    let pid = m.daemon_pid();
    let holder = Holder::start(KEY_UID, &m.mnt, 200);
    let held = holder.count;
    let root_read = fs::read(m.at("f199"));
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let why = holder.release();
    eprintln!("limit 128: one caller held {held} files open (daemon fds then: {fds})");
    assert!(root_read.is_ok(), "root's open: {root_read:?}");
    assert!(
        why.contains("Too many open files"),
        "holder stopped by: {why}"
    );
    // The daemon's reserve, root's and the other users' shares are what is left.
    assert!(held >= 80, "one caller got only {held} of 128");
}

/// fstat, fchmod and ftruncate of open files whose names are gone, after the daemon closed
/// their nodes' fds under fd pressure: a file the daemon serves (root's opens are always
/// served) and a user's file written through kernel passthrough.
#[test]
fn open_unlinked_files_stay_reachable_under_fd_pressure() {
    skip_without_fuse!();
    let b = MountBuilder::new()
        .opt("allow_other")
        .extra("[fuse]\nattr_timeout = 0\nentry_timeout = 0\n");
    let real = b.real();
    mkdir_p(&real.join("many"));
    files(&real.join("many"), 600);
    write_file(&real.join("served"), b"0123456789", 0o644);
    let home = real.join("home");
    mkdir_owned(&home, KEY_UID, KEY_GID, 0o755);
    write_owned(
        &home.join("written"),
        &vec![b'x'; 100_000],
        0o644,
        KEY_UID,
        KEY_GID,
    );
    let m = mount_with_hard_fd_limit(b.map_mode("/", &real, "rw"), 128);
    let evict = |m: &Mounted| {
        for _ in 0..2 {
            for i in 0..600 {
                fs::metadata(m.at(&format!("many/f{i}"))).unwrap();
            }
        }
    };
    // Root's open: served by the daemon.
    let served = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.at("served"))
        .unwrap();
    fs::remove_file(m.at("served")).unwrap();
    evict(&m);
    let meta = served.metadata().expect("fstat");
    assert_eq!(meta.len(), 10);
    served
        .set_permissions(fs::Permissions::from_mode(0o600))
        .expect("fchmod");
    assert_eq!(
        served.metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    served.set_len(3).expect("ftruncate");
    assert_eq!(served.metadata().unwrap().len(), 3);
    let mut w = &served;
    w.write_all(b"abc").unwrap();
    served.sync_all().unwrap();
    // A user's open for writing: passthrough. The fd-pressure walk runs in between.
    let script = "exec 3<>\"$1/home/written\" && rm \"$1/home/written\" && \
                  for i in $(seq 0 599) $(seq 0 599); do stat \"$1/many/f$i\" >/dev/null || exit 1; done && \
                  stat -L -c %s /proc/self/fd/3 && chmod 600 /proc/self/fd/3 && \
                  truncate -s 3 /proc/self/fd/3 && stat -L -c '%s %a' /proc/self/fd/3";
    let out = run_as(KEY_UID, KEY_GID, &mut sh(script, &[&m.mnt]));
    assert!(
        out.status.success(),
        "user's unlinked file: {}",
        stderr_str(&out)
    );
    assert_eq!(stdout_str(&out), "100000\n3 600\n");
}

fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// An open `DIR*` of libc (telldir/seekdir are what programs use).
struct Dir(*mut libc::DIR);

impl Dir {
    fn open(path: &Path) -> Dir {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(!d.is_null(), "opendir {path:?}");
        Dir(d)
    }

    fn next(&mut self) -> Option<String> {
        let e = unsafe { libc::readdir(self.0) };
        if e.is_null() {
            return None;
        }
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        Some(name.to_string_lossy().into_owned())
    }

    fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next()).collect()
    }

    fn tell(&mut self) -> libc::c_long {
        unsafe { libc::telldir(self.0) }
    }

    fn seek(&mut self, pos: libc::c_long) {
        unsafe { libc::seekdir(self.0, pos) }
    }

    fn rewind(&mut self) {
        unsafe { libc::rewinddir(self.0) }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        unsafe { libc::closedir(self.0) };
    }
}

/// Many handles on a large directory, each read from its start while the directory changes
/// (so the kernel's cached listing never serves them): the daemon's memory must not grow
/// with handles times entries, and must come back once they are closed.
#[test]
fn directory_handles_do_not_pin_listing_memory() {
    skip_without_fuse!();
    const ENTRIES: usize = 50_000;
    const HANDLES: usize = 40;
    let b = MountBuilder::new()
        .no_audit()
        .extra("[fuse]\nattr_timeout = 0\nentry_timeout = 0\n");
    let real = b.real();
    let big = real.join("big");
    mkdir_p(&big);
    for i in 0..ENTRIES {
        File::create(big.join(format!(
            "{i:0>8}-a-rather-long-name-to-make-listings-bigger"
        )))
        .unwrap();
    }
    let m = b.map("/", &real).mount();
    let pid = m.daemon_pid();
    let mut first = Dir::open(&m.at("big"));
    first.rest();
    drop(first);
    let base = rss_kib(pid);
    let mut dirs = Vec::new();
    for i in 0..HANDLES {
        File::create(big.join(format!("extra{i}"))).unwrap();
        let mut d = Dir::open(&m.at("big"));
        assert!(d.next().is_some());
        dirs.push(d);
    }
    let held = rss_kib(pid);
    drop(dirs);
    let after = rss_kib(pid);
    eprintln!(
        "{HANDLES} handles on {ENTRIES} entries: daemon RSS {base} KiB -> {held} KiB held -> \
         {after} KiB closed"
    );
    assert!(
        held < base + 32 * 1024,
        "RSS grew from {base} KiB to {held} KiB with {HANDLES} handles"
    );
    assert!(after < base + 16 * 1024, "RSS {after} KiB after close");
}

/// A walk of many entries costs memory while the kernel holds them; once the kernel forgets
/// them (`drop_caches`: FORGETs to the daemon) the daemon gives that memory back. The bound is
/// generous (a third of what the walk took may stay; about a tenth does, held by malloc's
/// per-thread caches): what it catches is memory kept for good, as when freed nodes stayed in
/// per-thread malloc arenas (then nearly all of the walk stayed). Fails with the single arena
/// and `malloc_trim` taken out.
#[test]
fn forgotten_walk_gives_its_memory_back() {
    skip_without_fuse!();
    const DIRS: usize = 50;
    const FILES: usize = 1_000;
    let b = MountBuilder::new().no_audit();
    let real = b.real();
    for d in 0..DIRS {
        let dir = real.join(format!("mem/d{d:03}"));
        mkdir_p(&dir);
        for f in 0..FILES {
            File::create(dir.join(format!("f{f:04}"))).unwrap();
        }
    }
    let m = b.map("/", &real).mount();
    let pid = m.daemon_pid();
    let nodes = || {
        let out = relocfs([
            std::ffi::OsStr::new("status"),
            std::ffi::OsStr::new("--json"),
            m.mnt.as_os_str(),
        ]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s["nodes"].as_u64()
    };
    assert!(
        nodes().is_some(),
        "relocfs status --json gives the node count"
    );
    let base = rss_kib(pid);
    let walk = Command::new("find")
        .arg(m.at("mem"))
        .arg("-printf")
        .arg("%s\n")
        .output()
        .unwrap();
    assert!(walk.status.success(), "{}", stderr_str(&walk));
    assert_eq!(
        walk.stdout.iter().filter(|&&c| c == b'\n').count(),
        DIRS * FILES + DIRS + 1
    );
    let walked = rss_kib(pid);
    // 2: dentries and inodes (not the page cache); an action, nothing to restore.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    // Hang guard only: FORGETs arrive asynchronously.
    let drained = wait_until(Duration::from_secs(60), || {
        nodes().is_some_and(|n| n < 1_000)
    });
    assert!(
        drained,
        "the kernel forgot the walk: {:?} nodes left",
        nodes()
    );
    let after = rss_kib(pid);
    eprintln!(
        "daemon RSS: {base} KiB at start, {walked} KiB after the walk, {after} KiB after forget"
    );
    assert!(
        walked > base + 4 * 1024,
        "precondition: the walk of {} entries cost memory ({base} -> {walked} KiB)",
        DIRS * FILES
    );
    assert!(
        after <= base + (walked - base) / 3,
        "memory kept after the kernel forgot the walk: {base} KiB at start, {walked} KiB after \
         the walk, {after} KiB after forget"
    );
}

/// Offsets stay valid across calls (telldir/seekdir), rewinddir sees a new entry, names the
/// prefix table owns appear once (shadowing the real entry of that name).
#[test]
fn listings_follow_the_real_directory() {
    skip_without_fuse!();
    let b = MountBuilder::new().extra("[fuse]\nattr_timeout = 0\nentry_timeout = 0\n");
    let real = b.real();
    let other = b.root().join("other");
    mkdir_p(&other);
    mkdir_p(&real.join("inner"));
    files(&real, 3000);
    let m = b.map_mode("/", &real, "rw").map("/inner", &other).mount();
    let mut want: Vec<String> = (0..3000).map(|i| format!("f{i}")).collect();
    want.extend([".", "..", "inner"].map(String::from));
    want.sort();
    let mut d = Dir::open(&m.mnt);
    let mut head: Vec<String> = (0..1000).map(|_| d.next().unwrap()).collect();
    let pos = d.tell();
    let tail = d.rest();
    d.seek(pos);
    assert_eq!(d.rest(), tail, "after seekdir to an earlier position");
    head.extend(tail);
    head.sort();
    assert_eq!(head, want, "one full listing");
    fs::write(m.at("new"), b"").unwrap();
    d.rewind();
    let mut again = d.rest();
    again.sort();
    want.push("new".into());
    want.sort();
    assert_eq!(again, want, "after rewinddir");
}

/// Reloads under load: old generations of rules give their fds back at once.
#[test]
fn reloads_under_load_do_not_accumulate_fds() {
    skip_without_fuse!();
    const RELOADS: usize = 250;
    let b = MountBuilder::new().no_audit();
    let real = b.real();
    let (a, z) = (b.root().join("a"), b.root().join("z"));
    for dir in [&a, &z] {
        mkdir_p(&dir.join("sub"));
        files(&dir.join("sub"), 20);
    }
    fs::write(a.join("which"), "a").unwrap();
    fs::write(z.join("which"), "z").unwrap();
    files(&real, 20);
    let config = |target: &Path| root_and_x(&real, target);
    let m = b.raw_config(&config(&a)).mount();
    let pid = m.daemon_pid();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, rounds, mnt) = (Arc::clone(&stop), Arc::clone(&rounds), m.mnt.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for i in 0..20 {
                    let _ = fs::read(mnt.join(format!("x/sub/f{i}")));
                    let _ = fs::metadata(mnt.join(format!("f{i}")));
                }
                let _ = fs::read_dir(mnt.join("x/sub")).map(|d| d.count());
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let fd_count = || fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(wait_until(Duration::from_secs(10), || rounds
        .load(Ordering::Relaxed)
        > 3));
    let warm = fd_count();
    for i in 1..=RELOADS {
        let (target, tag) = if i % 2 == 0 { (&a, "a") } else { (&z, "z") };
        fs::write(&m.config, config(target)).unwrap();
        unsafe { libc::kill(pid, libc::SIGHUP) };
        assert!(
            wait_until(Duration::from_secs(10), || {
                fs::read_to_string(m.at("x/which")).ok().as_deref() == Some(tag)
            }),
            "reload {i} did not take effect"
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let fds = fd_count();
    eprintln!("after {RELOADS} reloads under load the daemon holds {fds} fds ({warm} before)");
    assert!(
        fds <= warm + 16,
        "the daemon holds {fds} fds after {RELOADS} reloads, {warm} before"
    );
}

/// After reloads have retired the rules they were opened under (and closed those rules'
/// fds), open files, open directories and working directories of the old rules still work,
/// and see the old targets; new paths see the new ones.
#[test]
fn old_rules_keep_serving_what_is_open_in_them() {
    skip_without_fuse!();
    let b = MountBuilder::new().no_audit();
    let real = b.real();
    let (a, z) = (b.root().join("a"), b.root().join("z"));
    for (dir, tag) in [(&a, "a"), (&z, "z")] {
        mkdir_p(&dir.join("sub"));
        files(&dir.join("sub"), 50);
        fs::write(dir.join("sub/which"), tag).unwrap();
    }
    let config = |target: &Path| root_and_x(&real, target);
    let m = b.raw_config(&config(&a)).mount();
    let pid = m.daemon_pid();
    let file = File::open(m.at("x/sub/which")).unwrap();
    let mut dir = Dir::open(&m.at("x/sub"));
    let first: Vec<String> = (0..10).map(|_| dir.next().unwrap()).collect();
    // A shell working in the old directory, answering after the reloads.
    let mut shell = Command::new("bash")
        .arg("-c")
        .arg("cd \"$1/x/sub\" && read x && cat which && ls | wc -l")
        .arg("bash")
        .arg(&m.mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        fs::read_link(format!("/proc/{}/cwd", shell.id())).is_ok_and(|p| p.ends_with("x/sub"))
    }));
    for (i, (target, tag)) in [(&z, "z"), (&a, "a"), (&z, "z")].into_iter().enumerate() {
        fs::write(&m.config, config(target)).unwrap();
        unsafe { libc::kill(pid, libc::SIGHUP) };
        assert!(
            wait_until(Duration::from_secs(10), || {
                fs::read_to_string(m.at("x/sub/which")).ok().as_deref() == Some(tag)
            }),
            "reload {i} did not take effect"
        );
    }
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 1];
    file.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"a", "the open file is the old rule's");
    assert_eq!(file.metadata().unwrap().len(), 1);
    let mut rest = dir.rest();
    rest.extend(first);
    assert_eq!(
        rest.len(),
        53,
        "the open directory lists the old target: {rest:?}"
    );
    shell.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = shell.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "shell in the old directory: {}",
        stderr_str(&out)
    );
    assert_eq!(stdout_str(&out), "a51\n");
}
