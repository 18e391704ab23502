//! No escape through a swapped symlink. The real directory of an rw rule is
//! owned by an unprivileged user, who keeps swapping `d` between a real
//! directory and symlinks to a directory outside every rule (holding a root-only
//! secret) and to /etc, while root and that user work on `d/...` through the
//! mount. The daemon must never follow the symlink: every change it makes lands
//! in the real directory, and the outside directory and /etc are untouched.
//!
//! The kernel itself follows a symlink it meets on a caller's path, with the
//! caller's credentials: that is the caller's own right, not an escape. So the
//! root side resolves every path with openat2(RESOLVE_NO_SYMLINKS), where the
//! kernel follows nothing and anything landing outside would be the daemon's
//! doing; the unprivileged side uses plain paths (a kernel-followed symlink
//! leads it only where it could go anyway).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// The race runs at least this long, and on until each side has got through
/// to the real directory (and the root side has met the symlink) often
/// enough to make the run meaningful -- at most [`MAX_RUN`].
const MIN_RUN: Duration = Duration::from_secs(2);
const MAX_RUN: Duration = Duration::from_secs(10);
const WANT_ROOT_FILES: usize = 20;
const WANT_ROOT_REFUSED: usize = 20;
const WANT_USER_FILES: usize = 5;

/// Live counters the main thread watches to decide when to stop.
#[derive(Default)]
struct Progress {
    root_files: AtomicUsize,
    root_refused: AtomicUsize,
    user_files: AtomicUsize,
}

impl Progress {
    fn enough(&self) -> bool {
        self.root_files.load(Ordering::Relaxed) >= WANT_ROOT_FILES
            && self.root_refused.load(Ordering::Relaxed) >= WANT_ROOT_REFUSED
            && self.user_files.load(Ordering::Relaxed) >= WANT_USER_FILES
    }
}

/// What one side did: names it made (so the real directory can be accounted
/// for exactly) and anything that must never happen.
#[derive(Default, Debug)]
struct Tally {
    iters: usize,
    /// Names this side created in the real `d` (final name after a rename).
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
    reads_ok: usize,
    refused: usize,
    chmods_ok: usize,
    violations: Vec<String>,
}

fn at_nofollow(dir: &OwnedFd, name: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    openat2(
        dir.as_raw_fd(),
        Path::new(name),
        flags,
        mode,
        libc::RESOLVE_NO_SYMLINKS,
    )
}

fn cname(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

/// Root through the mount, never letting the kernel follow a symlink.
fn root_side(
    mnt: PathBuf,
    prefix: String,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> Tally {
    let mut t = Tally::default();
    let root = openat2(libc::AT_FDCWD, &mnt, libc::O_PATH | libc::O_DIRECTORY, 0, 0)
        .expect("open mount root");
    while !stop.load(Ordering::Relaxed) {
        let i = t.iters;
        t.iters += 1;
        // A full two-component path: the kernel looks `d` up afresh (timeouts 0).
        match openat2(
            root.as_raw_fd(),
            Path::new("d/f"),
            libc::O_RDONLY,
            0,
            libc::RESOLVE_NO_SYMLINKS,
        ) {
            Ok(fd) => {
                let mut buf = [0u8; 64];
                let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 64, 0) };
                let got = &buf[..n.max(0) as usize];
                if got != b"inside" {
                    t.violations.push(format!(
                        "root read d/f through the mount (no symlink followed by the kernel): {:?}",
                        String::from_utf8_lossy(got)
                    ));
                } else {
                    t.reads_ok += 1;
                }
            }
            Err(_) => {
                t.refused += 1;
                progress.root_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        let d = match at_nofollow(&root, "d", libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(d) => d,
            Err(e) => {
                // `d` is a symlink (ELOOP) or briefly missing (ENOENT) right now.
                let e = e.raw_os_error().unwrap_or(0);
                if e != libc::ELOOP && e != libc::ENOTDIR && e != libc::ENOENT {
                    t.violations
                        .push(format!("open d: unexpected {}", errno_text(e)));
                }
                t.refused += 1;
                progress.root_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        // Rewrite the inside content in place (same bytes): landing on the
        // outside `f` would change its content and ctime.
        if let Ok(fd) = at_nofollow(&d, "f", libc::O_WRONLY, 0) {
            let n = unsafe { libc::pwrite(fd.as_raw_fd(), b"inside".as_ptr().cast(), 6, 0) };
            if n != 6 {
                t.violations
                    .push(format!("pwrite d/f: {}", errno_text(last_errno())));
            }
        }
        let new = format!("{prefix}new-r-{i}");
        let ren = format!("{prefix}ren-r-{i}");
        let dir = format!("{prefix}dir-r-{i}");
        let created = at_nofollow(
            &d,
            &new,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o644,
        )
        .is_ok();
        if created {
            let renamed = unsafe {
                libc::renameat(
                    d.as_raw_fd(),
                    cname(&new).as_ptr(),
                    d.as_raw_fd(),
                    cname(&ren).as_ptr(),
                )
            } == 0;
            if !renamed {
                t.violations.push(format!(
                    "rename {new} -> {ren} in a pinned directory failed: {}",
                    errno_text(last_errno())
                ));
            }
            t.files.insert(if renamed { ren } else { new });
            progress.root_files.fetch_add(1, Ordering::Relaxed);
        } else {
            t.violations.push(format!(
                "create {new} in a pinned directory failed: {}",
                errno_text(last_errno())
            ));
        }
        if unsafe { libc::mkdirat(d.as_raw_fd(), cname(&dir).as_ptr(), 0o755) } == 0 {
            t.dirs.insert(dir);
        } else {
            t.violations.push(format!(
                "mkdir {dir} in a pinned directory failed: {}",
                errno_text(last_errno())
            ));
        }
        let mode = if i % 2 == 0 { 0o640 } else { 0o644 };
        for (name, mode) in [("f", mode), ("passwd", 0o644)] {
            if unsafe { libc::fchmodat(d.as_raw_fd(), cname(name).as_ptr(), mode, 0) } == 0 {
                t.chmods_ok += 1;
            } else {
                t.violations.push(format!(
                    "chmod {name} in a pinned directory failed: {}",
                    errno_text(last_errno())
                ));
            }
        }
    }
    t
}

/// The unprivileged owner through the mount, with plain paths.
fn user_side(
    mnt: PathBuf,
    prefix: String,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> Tally {
    let mut t = Tally::default();
    let d = mnt.join("d");
    while !stop.load(Ordering::Relaxed) {
        let i = t.iters;
        t.iters += 1;
        match fs::read(d.join("f")) {
            Ok(got) if got == b"inside" => t.reads_ok += 1,
            Ok(got) => t.violations.push(format!(
                "uid {KEY_UID} read d/f through the mount: {:?}",
                String::from_utf8_lossy(&got)
            )),
            Err(_) => t.refused += 1,
        }
        let new = d.join(format!("{prefix}new-u-{i}"));
        let ren = d.join(format!("{prefix}ren-u-{i}"));
        let dir = format!("{prefix}dir-u-{i}");
        let created = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&new)
            .is_ok();
        if created {
            let name = if fs::rename(&new, &ren).is_ok() {
                ren
            } else {
                new
            };
            t.files
                .insert(name.file_name().unwrap().to_string_lossy().into_owned());
            progress.user_files.fetch_add(1, Ordering::Relaxed);
        } else {
            t.refused += 1;
        }
        if fs::create_dir(d.join(&dir)).is_ok() {
            t.dirs.insert(dir);
        }
        let mode = if i % 2 == 0 { 0o644 } else { 0o640 };
        if chmod_res(&d.join("f"), mode).is_ok() {
            t.chmods_ok += 1;
        }
    }
    t
}

fn chmod_res(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// The attacker, at the real path: swaps `d` with the symlinks (atomically
/// with RENAME_EXCHANGE, and by remove-and-replace), always ending with the
/// real directory back at `d`. Returns the number of swaps.
fn attacker(real: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>) -> usize {
    let d = real.join("d");
    let out = real.join("d.out");
    let etc = real.join("d.etc");
    let hold_path = real.join("d.hold");
    let mut swaps = 0;
    let exchange = |a: &Path, b: &Path| {
        rename2(a, b, libc::RENAME_EXCHANGE)
            .unwrap_or_else(|e| panic!("exchange {} {}: {e}", a.display(), b.display()))
    };
    // Each state is held for about one scheduler yield; the directory state
    // twice as long, so the mount side gets through often enough too.
    let hold = || std::thread::yield_now();
    let hold_dir = || {
        std::thread::yield_now();
        std::thread::yield_now();
    };
    while !stop.load(Ordering::Relaxed) {
        exchange(&d, &out);
        hold();
        exchange(&d, &out);
        hold_dir();
        exchange(&d, &etc);
        hold();
        exchange(&d, &etc);
        hold_dir();
        fs::rename(&d, &hold_path).expect("rename d away");
        std::os::unix::fs::symlink(&outside, &d).expect("symlink d -> outside");
        hold();
        fs::remove_file(&d).expect("remove symlink d");
        std::os::unix::fs::symlink("/etc", &d).expect("symlink d -> /etc");
        hold();
        fs::remove_file(&d).expect("remove symlink d");
        fs::rename(&hold_path, &d).expect("rename d back");
        hold_dir();
        swaps += 8;
    }
    swaps
}

/// What must not change in /etc: names with our prefix, /etc's own mode and
/// owner, and everything about /etc/passwd (mode, owner, size, ctime, content).
#[derive(Debug, PartialEq, Eq)]
struct EtcState {
    ours: Vec<String>,
    etc: (u32, u32, u32),
    passwd: (u32, u32, u32, u64, i64, i64, u64),
}

fn etc_state(prefix: &str) -> EtcState {
    let ours: Vec<String> = dir_names(Path::new("/etc"))
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    let pw = fs::symlink_metadata("/etc/passwd").unwrap();
    EtcState {
        ours,
        etc: mode_owner(Path::new("/etc")),
        passwd: (
            pw.mode(),
            pw.uid(),
            pw.gid(),
            pw.size(),
            pw.ctime(),
            pw.ctime_nsec(),
            fnv1a(&fs::read("/etc/passwd").unwrap()),
        ),
    }
}

#[test]
fn swapped_symlink_never_lets_the_daemon_escape() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let outside = b.root().join("outside");
    write_file(&outside.join("f"), b"SECRET", 0o600);
    write_file(&outside.join("passwd"), b"SECRET", 0o600);
    chmod(&outside, 0o755);
    write_file(&real.join("d/f"), b"inside", 0o644);
    write_file(&real.join("d/passwd"), b"inside", 0o644);
    for p in [real.join("d/f"), real.join("d/passwd"), real.join("d")] {
        chown(&p, KEY_UID, KEY_GID);
    }
    std::os::unix::fs::symlink(&outside, real.join("d.out")).unwrap();
    std::os::unix::fs::symlink("/etc", real.join("d.etc")).unwrap();
    chown(&real.join("d.out"), KEY_UID, KEY_GID);
    chown(&real.join("d.etc"), KEY_UID, KEY_GID);
    chown(&real, KEY_UID, KEY_GID);
    let m = b
        .map_mode("/", &real, "rw")
        .opt("allow_other")
        .no_audit()
        .extra("[fuse]\nthreads = 4\nattr_timeout = 0.0\nentry_timeout = 0.0\n")
        .mount();

    let prefix = format!("relocfs-race-{}-", std::process::id());
    let outside_before = snapshot(&outside);
    let etc_before = etc_state(&prefix);
    assert!(
        etc_before.ours.is_empty(),
        "leftovers in /etc: {:?}",
        etc_before.ours
    );

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let att = {
        let (real, outside, stop) = (real.clone(), outside.clone(), Arc::clone(&stop));
        spawn_as_user(KEY_UID, KEY_GID, &[KEY_GID], move || {
            attacker(real, outside, stop)
        })
    };
    let user = {
        let (mnt, prefix, stop, progress) = (
            m.mnt.clone(),
            prefix.clone(),
            Arc::clone(&stop),
            Arc::clone(&progress),
        );
        spawn_as_user(KEY_UID, KEY_GID, &[KEY_GID], move || {
            user_side(mnt, prefix, stop, progress)
        })
    };
    let root = {
        let (mnt, prefix, stop, progress) = (
            m.mnt.clone(),
            prefix.clone(),
            Arc::clone(&stop),
            Arc::clone(&progress),
        );
        std::thread::spawn(move || root_side(mnt, prefix, stop, progress))
    };
    let started = Instant::now();
    while started.elapsed() < MAX_RUN && (started.elapsed() < MIN_RUN || !progress.enough()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let ran_for = started.elapsed();
    let root = root.join().expect("root side panicked");
    let user = user.join().expect("uid side panicked");
    let swaps = att.join().expect("attacker panicked");
    let _ = io::Write::write_all(
        &mut io::stderr(),
        format!(
            "race: {:.1} s, {swaps} swaps; root {} iters ({} reads ok, {} refused, {} files, {} dirs, {} chmods); \
             uid {KEY_UID} {} iters ({} reads ok, {} refused, {} files, {} dirs, {} chmods)\n",
            ran_for.as_secs_f64(),
            root.iters, root.reads_ok, root.refused, root.files.len(), root.dirs.len(), root.chmods_ok,
            user.iters, user.reads_ok, user.refused, user.files.len(), user.dirs.len(), user.chmods_ok,
        )
        .as_bytes(),
    );

    let mut violations: Vec<String> = root
        .violations
        .iter()
        .chain(user.violations.iter())
        .cloned()
        .collect();
    violations.truncate(20);
    assert!(violations.is_empty(), "{}", violations.join("\n"));

    // Outside: not one byte, mode, owner, time or name changed.
    assert_same_snapshot(&outside_before, &snapshot(&outside));
    assert_eq!(etc_state(&prefix), etc_before, "/etc changed");

    // Inside: exactly what both sides report having made, nothing else.
    let mut want: BTreeSet<String> = ["f", "passwd"].iter().map(|s| s.to_string()).collect();
    want.extend(root.files.iter().cloned());
    want.extend(root.dirs.iter().cloned());
    want.extend(user.files.iter().cloned());
    want.extend(user.dirs.iter().cloned());
    let have: BTreeSet<String> = dir_names(&real.join("d")).into_iter().collect();
    assert_eq!(
        have.difference(&want).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "entries in the real d that nobody reported making"
    );
    assert_eq!(
        want.difference(&have).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "entries reported made that are not in the real d"
    );
    assert_eq!(
        dir_names(&real),
        ["d", "d.etc", "d.out"],
        "the real rule directory"
    );
    for name in &root.files {
        assert_eq!(
            mode_owner(&real.join("d").join(name)),
            (0o644, 0, 0),
            "{name}"
        );
    }
    for name in &user.files {
        let (_, uid, gid) = mode_owner(&real.join("d").join(name));
        assert_eq!((uid, gid), (KEY_UID, KEY_GID), "{name}");
    }
    assert_eq!(fs::read(real.join("d/f")).unwrap(), b"inside");
    assert_eq!(fs::read(real.join("d/passwd")).unwrap(), b"inside");
    let fmode = mode_owner(&real.join("d/f"));
    assert!(
        fmode == (0o644, KEY_UID, KEY_GID) || fmode == (0o640, KEY_UID, KEY_GID),
        "d/f: mode {:o} owner {}:{}",
        fmode.0,
        fmode.1,
        fmode.2
    );

    // The race was real: the swapper ran, both sides got through to the real
    // directory many times, and the root side met the symlink.
    assert!(swaps >= 100, "only {swaps} swaps");
    assert!(
        root.files.len() >= WANT_ROOT_FILES,
        "root made only {} files in {ran_for:?}",
        root.files.len()
    );
    assert!(
        user.files.len() >= WANT_USER_FILES,
        "uid made only {} files in {ran_for:?}",
        user.files.len()
    );
    assert!(
        root.refused >= WANT_ROOT_REFUSED,
        "root met the symlink only {} times in {ran_for:?}",
        root.refused
    );
}
