//! The two transports: which one a mount takes (`[fuse] transport`, `-o transport=`, the
//! kernel's `enable_uring` parameter), what `relocfs status` says, the refusal of `io_uring`
//! without it, the fallback when the kernel refuses ring registration, teardown, and no
//! head-of-line blocking on a CPU's queue. `parameter::whole_suite_over_io_uring` runs this
//! whole binary again with every mount on io_uring.
//!
//! Tests that change the kernel parameter are in `parameter` (the io_uring child run skips
//! them): they hold one lock, so they never overlap, and restore the parameter on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// A small ext4 image, loop-mounted, that the test can freeze (`fsfreeze`): writes to it then
/// block until it is thawed. Thawed and lazily unmounted on drop whatever happens.
struct Freezable {
    dir: tempfile::TempDir,
    frozen: bool,
}

impl Freezable {
    fn new() -> Option<Freezable> {
        let dir = tempdir_0755("relocfs-freeze-");
        let img = dir.path().join("img");
        fs::File::create(&img).ok()?.set_len(32 << 20).ok()?;
        let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)) {
            return None;
        }
        mkdir_p(&dir.path().join("fs"));
        if !ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir.path().join("fs")))
        {
            return None;
        }
        let f = Freezable { dir, frozen: false };
        chmod(&f.path(), 0o755);
        Some(f)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("fs")
    }

    fn freeze(&mut self) {
        let st = Command::new("fsfreeze")
            .arg("-f")
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "fsfreeze -f failed");
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if self.frozen {
            let _ = Command::new("fsfreeze").arg("-u").arg(self.path()).status();
            self.frozen = false;
        }
    }
}

impl Drop for Freezable {
    fn drop(&mut self) {
        self.thaw();
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Whether one of `pid`'s threads sleeps uninterruptibly (state D): how the test knows the
/// daemon is inside the blocked call, without timing anything.
fn has_thread_in_d(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('D'))
            })
            .unwrap_or(false)
    })
}

fn on_cpu0(args: &[&str], path: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", "0"]).args(args).arg(path);
    c
}

/// Runs `cmd` to its end and returns (exit code, stdout). If it has not ended after a
/// generous guard it is stuck behind the blocked request: thaw (which frees it) and fail.
fn finish_or_thaw(frozen: &mut Freezable, mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ended = wait_until(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        frozen.thaw();
        let _ = child.wait();
        panic!("a request on CPU 0 did not complete while the truncate was blocked");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One caller's request that blocks (a truncate of a file on a frozen filesystem, which the
/// daemon serves off its queue thread) does not hold up another caller on the same CPU: the
/// second caller's lookups and reads complete while the first is still blocked. Runs on the
/// run's transport (both, with the io_uring child run). On io_uring, without the worker pool
/// the CPU 0 queue's only thread would sit in the truncate and the second caller would hang
/// until the guard kills it.
#[test]
fn a_blocked_request_does_not_hold_up_its_cpu() {
    skip_without_fuse!();
    let Some(mut frozen) = Freezable::new() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot make a loop-mounted ext4 (mkfs.ext4, mount -o loop)"
        );
        eprintln!("SKIP: no loop-mounted ext4 here");
        return;
    };
    write_file(&frozen.path().join("slow"), b"slow data\n", 0o644);
    write_file(&frozen.path().join("fast"), b"fast data\n", 0o644);
    let m = MountBuilder::new()
        .map_mode("/", frozen.path(), "rw")
        // Nothing cached: every stat below is a request.
        .extra("[fuse]\nattr_timeout = 0\nentry_timeout = 0\n")
        .mount();
    let pid = m.daemon_pid();
    frozen.freeze();

    let mut slow: Child = on_cpu0(&["truncate", "-s", "0"], &m.at("slow"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(SETTLE_TIMEOUT, || has_thread_in_d(pid)),
        "the truncate never reached the frozen filesystem"
    );

    for n in 0..20 {
        let miss = m.at(&format!("missing-{n}"));
        let (code, out) = finish_or_thaw(&mut frozen, on_cpu0(&["stat", "-c", "%s"], &miss));
        assert_eq!(code, Some(1), "stat of a missing name: {out}");
        let (code, out) = finish_or_thaw(&mut frozen, on_cpu0(&["cat"], &m.at("fast")));
        assert_eq!((code, out.as_str()), (Some(0), "fast data\n"));
    }
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the truncate finished on a frozen filesystem: the test proved nothing"
    );

    frozen.thaw();
    let mut done = None;
    assert!(
        wait_until(SETTLE_TIMEOUT, || {
            done = slow.try_wait().unwrap();
            done.is_some()
        }),
        "the truncate did not finish after the thaw"
    );
    assert!(done.unwrap().success());
    assert_eq!(fs::metadata(m.at("slow")).unwrap().len(), 0);
}

/// Tests that set the kernel's `enable_uring`: one at a time, restored whatever happens.
mod parameter {
    use std::sync::{Mutex, MutexGuard};

    use super::*;

    static LOCK: Mutex<()> = Mutex::new(());

    /// Sets `enable_uring` while held; puts the old value back on drop.
    struct Param {
        old: Option<String>,
        _lock: MutexGuard<'static, ()>,
    }

    impl Param {
        /// `None` (after a skip message, or a failure on CI) where the kernel has no FUSE over
        /// io_uring at all.
        fn set(on: bool) -> Option<Param> {
            let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(old) = fs::read_to_string(PARAM) else {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{PARAM} is missing: this kernel has no FUSE over io_uring"
                );
                eprintln!("SKIP: {PARAM} is missing");
                return None;
            };
            let p = Param {
                old: Some(old.trim().to_string()),
                _lock: lock,
            };
            fs::write(PARAM, if on { "1" } else { "0" }).unwrap();
            Some(p)
        }
    }

    impl Drop for Param {
        fn drop(&mut self) {
            if let Some(old) = self.old.take() {
                let _ = fs::write(PARAM, if old == "Y" { "1" } else { "0" });
            }
        }
    }

    /// `hello.txt` under `/ -> real/`, with these `-o` options.
    fn hello(opts: &[&str]) -> MountBuilder {
        let (b, real) = hello_tree();
        let mut b = b.map("/", &real);
        for o in opts {
            b = b.opt(o);
        }
        b
    }

    fn assert_serves(m: &Mounted) {
        assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    }

    #[test]
    fn auto_without_the_parameter_is_dev_fuse() {
        skip_without_fuse!();
        let Some(_p) = Param::set(false) else { return };
        let m = hello(&["transport=auto"]).mount();
        assert_serves(&m);
        assert_eq!(m.transport().as_deref(), Some("/dev/fuse"));
        // The config file's default is auto too.
        let b = hello(&[]);
        let m = b.transport_from_config().mount();
        assert_eq!(m.transport().as_deref(), Some("/dev/fuse"));
    }

    #[test]
    fn io_uring_without_the_parameter_is_refused_naming_it() {
        skip_without_fuse!();
        let Some(_p) = Param::set(false) else { return };
        let (m, out) = hello(&["transport=io_uring"]).try_mount();
        assert_refusal(&out, &["io_uring", PARAM]);
        assert!(!mounted(&m.mnt), "a refused mount was left behind");
        // The same from the config file.
        let b = hello(&[]);
        let (m, out) = b
            .extra("[fuse]\ntransport = \"io_uring\"\n")
            .transport_from_config()
            .try_mount();
        assert_refusal(&out, &[PARAM]);
        assert!(!mounted(&m.mnt));
    }

    #[test]
    fn auto_with_the_parameter_is_io_uring_and_dev_stays_dev() {
        skip_without_fuse!();
        let Some(_p) = Param::set(true) else { return };
        let m = hello(&["transport=auto"]).mount();
        assert_serves(&m);
        assert_eq!(m.transport().as_deref(), Some("io_uring"));
        let m = hello(&["transport=dev"]).mount();
        assert_serves(&m);
        assert_eq!(m.transport().as_deref(), Some("/dev/fuse"));
        // The config key, and -o over it.
        let b = hello(&[]);
        let m = b.transport_from_config().mount();
        assert_eq!(
            m.transport().as_deref(),
            Some("io_uring"),
            "the default is auto"
        );
        let b = hello(&[]);
        let m = b
            .extra("[fuse]\ntransport = \"dev\"\n")
            .transport_from_config()
            .mount();
        assert_eq!(m.transport().as_deref(), Some("/dev/fuse"));
        let b = hello(&[]);
        let m = b
            .extra("[fuse]\ntransport = \"dev\"\n")
            .opt("transport=io_uring")
            .mount();
        assert_eq!(m.transport().as_deref(), Some("io_uring"));
    }

    /// Spawns a background mount with `RELOCFS_TEST_URING_SHORT_PAYLOAD=queue`: the debug
    /// build then registers that queue's entries with a payload buffer smaller than the
    /// kernel requires, and the kernel refuses them (EINVAL). A real refusal by the kernel.
    fn mount_with_refused_queue(b: MountBuilder, queue: u32) -> (Mounted, std::process::Output) {
        fs::write(b.config_path(), b.config_text()).unwrap();
        let args = b.args();
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env("RELOCFS_TEST_URING_SHORT_PAYLOAD", queue.to_string());
        let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
        (b.into_mounted(), out)
    }

    /// The kernel refuses registration on the last queue, or on the first: `auto` serves over
    /// /dev/fuse at once (no caller waits for a ring that never becomes ready), `io_uring`
    /// refuses the mount and leaves nothing mounted.
    #[test]
    fn refused_registration_falls_back_or_refuses() {
        skip_without_fuse!();
        let Some(_p) = Param::set(true) else { return };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        for queue in [0, cpus.saturating_sub(1)] {
            let (m, out) = mount_with_refused_queue(hello(&["transport=auto"]), queue);
            assert!(out.status.success(), "{}", stderr_str(&out));
            assert_serves(&m);
            for n in 0..50 {
                assert!(!m.at(&format!("miss{n}")).exists());
            }
            assert_eq!(m.transport().as_deref(), Some("/dev/fuse"));
            drop(m);

            let (m, out) = mount_with_refused_queue(hello(&["transport=io_uring"]), queue);
            assert_refusal(&out, &["io_uring", "register", "invalid argument"]);
            assert!(!mounted(&m.mnt), "a refused mount was left behind");
        }
    }

    /// SIGTERM and umount end an io_uring mount: the kernel hands every ring entry back, the
    /// queue threads end, and the daemon exits (with its audit log flushed).
    #[test]
    fn sigterm_and_umount_end_an_io_uring_mount() {
        skip_without_fuse!();
        let Some(_p) = Param::set(true) else { return };
        for signal in [true, false] {
            let m = hello(&["transport=io_uring"]).mount();
            assert_serves(&m);
            let pid = m.daemon_pid();
            if signal {
                assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
            } else {
                let st = Command::new("umount").arg(&m.mnt).status().unwrap();
                assert!(st.success());
            }
            assert!(
                wait_until(SETTLE_TIMEOUT, || !pid_alive(pid) && !mounted(&m.mnt)),
                "the daemon did not exit after {}",
                if signal { "SIGTERM" } else { "umount" }
            );
            let opens = m
                .audit_lines()
                .iter()
                .filter(|e| e["op"] == "open" && e["path"] == m.at("hello.txt").to_str().unwrap())
                .count();
            assert!(opens >= 1, "the audit log lost the open");
        }
    }

    /// Tests that check /dev/fuse behaviour the kernel does not have on io_uring, with why.
    /// Each is a finding, not a flake: see the README's "Transports" for the operator's side.
    const DEV_ONLY: &[(&str, &str)] = &[
        // A request the kernel has handed to a ring entry counts as "in userspace": a caller
        // of a stopped (SIGSTOP) io_uring daemon waits uninterruptibly, where on /dev/fuse a
        // fatal signal still removes the unread request (fuse_uring_remove_pending_req). The
        // stalled sink here and the hung daemon there are stopped io_uring daemons.
        (
            "auditsafety::stalled_log_does_not_hold_the_daemon_at_exit",
            "stopped daemon",
        ),
        (
            "restart::hung_daemon_is_refused_not_replaced",
            "stopped daemon",
        ),
        // The kernel ends a ring request whose daemon died with ECANCELED, not ECONNABORTED.
        (
            "restart::callers_of_a_killed_daemon",
            "errno of an aborted ring request",
        ),
        // The probe counts the daemon's read/write bytes (/proc/PID/io); ring payloads are
        // copied by the kernel and never show there.
        (
            "passthrough::large_file_data_never_passes_through_the_daemon",
            "/proc/PID/io does not see ring copies",
        ),
    ];

    /// The whole integration binary again, every mount on io_uring (`RELOCFS_TEST_TRANSPORT`),
    /// pjdfstest included, with the parameter on for the run and restored after. The child
    /// fails, not skips, when a mount that asked for io_uring did not get it (`-o
    /// transport=io_uring` refuses, and `MountBuilder::mount` checks `relocfs status`).
    #[test]
    fn whole_suite_over_io_uring() {
        skip_without_fuse!();
        if std::env::var(TRANSPORT_ENV).is_ok() {
            // Already a child run (it skips this module; this guards against recursion).
            return;
        }
        let Some(_p) = Param::set(true) else { return };
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.env(TRANSPORT_ENV, "io_uring")
            .args(["--skip", "transport::parameter::"]);
        for (test, why) in DEV_ONLY {
            eprintln!("io_uring run: not running {test} ({why})");
            cmd.args(["--skip", test]);
        }
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if a == "--test-threads" {
                if let Some(n) = args.next() {
                    cmd.args(["--test-threads", &n]);
                }
            } else if a.starts_with("--test-threads=") {
                cmd.arg(a);
            }
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout
            .lines()
            .filter(|l| l.starts_with("test result:"))
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("io_uring run: {summary}");
        if !out.status.success() {
            let failures: Vec<&str> = stdout
                .lines()
                .filter(|l| l.contains("FAILED") || l.starts_with("---- "))
                .collect();
            panic!(
                "the integration suite failed over io_uring ({:?}): {}\n{}\n--- stderr tail ---\n{}",
                out.status,
                summary,
                failures.join("\n"),
                tail(&String::from_utf8_lossy(&out.stderr), 60)
            );
        }
        assert!(
            summary.contains(" passed;") && !summary.contains(" 0 passed;"),
            "the io_uring run ran no test: {summary}"
        );
    }

    fn tail(text: &str, lines: usize) -> String {
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
