//! Restarting while busy or right after a crash: a daemon whose mount was detached lazily
//! never tears down the newer mount on the same path (nor its control socket), a dead mount
//! is seen as dead even while the kernel still answers `stat` from its cache, and what the
//! callers of a detached or killed mount really get.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// The `major:minor` of the topmost mount at `mnt`: the FUSE connection serving it.
fn conn(mnt: &Path) -> String {
    mount_entry(mnt)
        .unwrap_or_else(|| panic!("{} is not mounted", mnt.display()))
        .dev
}

fn other_pid(m: &Mounted, old: i32) -> i32 {
    let pids: Vec<i32> = m.daemon_pids().into_iter().filter(|p| *p != old).collect();
    assert_eq!(
        pids.len(),
        1,
        "expected one new daemon besides {old}: {pids:?}"
    );
    pids[0]
}

/// Restart while a process holds a file open: the old mount is detached lazily (`how`), a new
/// relocfs mounts on the same path with the operator's command, then the holder closes and
/// the old daemon exits. The new mount, its daemon and its control socket must survive.
fn restart_while_busy(how: &str) {
    let m = hello_mount();
    let old = m.daemon_pid();
    let holder = fs::File::open(m.at("hello.txt")).unwrap();
    let old_conn = conn(&m.mnt);

    match how {
        "SIGTERM" => assert_eq!(unsafe { libc::kill(old, libc::SIGTERM) }, 0),
        _ => {
            let st = umount_lazy(&m.mnt);
            assert!(st.success(), "umount -l: {st}");
        }
    }
    assert!(
        wait_until(SETTLE_TIMEOUT, || !mounted(&m.mnt)),
        "{how}: the busy mount was not detached"
    );
    assert!(
        pid_alive(old),
        "{how}: the old daemon exited while a file was open"
    );

    let out = m.remount();
    assert!(out.status.success(), "{how}: restart: {}", stderr_str(&out));
    let new = other_pid(&m, old);
    let new_conn = conn(&m.mnt);
    assert_ne!(new_conn, old_conn);

    if how != "SIGTERM" {
        // Stopping the old daemon now (systemctl stop of the old unit, say) must not remove
        // the mount that is at its path now.
        assert_eq!(unsafe { libc::kill(old, libc::SIGTERM) }, 0);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            mount_entry(&m.mnt).map(|e| e.dev),
            Some(new_conn.clone()),
            "{how}: SIGTERM to the old daemon unmounted the new mount"
        );
    }

    // The holder closes: the old connection ends and its daemon exits.
    drop(holder);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !pid_alive(old)),
        "{how}: the old daemon {old} still runs after its last file was closed"
    );
    assert!(
        mounted(&m.mnt),
        "{how}: the old daemon unmounted the NEW mount on its way out"
    );
    assert_eq!(
        conn(&m.mnt),
        new_conn,
        "{how}: the mount at the path changed"
    );
    assert!(pid_alive(new), "{how}: the new daemon {new} exited");
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    // The old daemon removed only its own socket (if any), not the new one's.
    let out = relocfs([Path::new("status"), m.mnt.as_path(), Path::new("--json")]);
    assert!(
        out.status.success(),
        "{how}: status of the new daemon after the old one exited: {}",
        stderr_str(&out)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pid"].as_i64(), Some(i64::from(new)), "{status}");
}

#[test]
fn old_daemon_leaves_the_new_mount_alone_after_sigterm() {
    skip_without_fuse!();
    restart_while_busy("SIGTERM");
}

#[test]
fn old_daemon_leaves_the_new_mount_alone_after_umount_l() {
    skip_without_fuse!();
    restart_while_busy("umount -l");
}

/// Under systemd (NOTIFY_SOCKET) a stop is SIGTERM; an unmount from outside is a failure, so
/// that Restart=on-failure brings the mount back instead of leaving the unit quietly inactive.
#[test]
fn unmounted_from_outside_under_systemd_exits_with_failure() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let m = b.map("/", &real).into_mounted();
    let (sock, mut child) = m.spawn_under_systemd();
    let mut buf = [0u8; 256];
    let ready = sock.recv(&mut buf).map(|n| buf[..n].to_vec());
    let st = umount(&m.mnt);
    let (exited, status) = wait_exit(&mut child, SETTLE_TIMEOUT);
    assert!(ready.is_ok_and(|r| r.starts_with(b"READY=1")), "no READY=1");
    assert!(st.success(), "umount: {st}");
    assert!(exited, "relocfs -f still runs after umount");
    assert_eq!(
        status.code(),
        Some(1),
        "relocfs -f under systemd, unmounted from outside: {status}"
    );
}

fn long_cache(b: MountBuilder) -> MountBuilder {
    b.extra("[fuse]\nattr_timeout = 30\nentry_timeout = 30")
}

/// Kills the daemon with SIGKILL and waits until it is gone. The mount root is stat'ed first,
/// so the kernel holds its attributes in the cache, as on a machine in use.
fn kill_and_wait(pid: i32, mnt: &Path) {
    fs::metadata(mnt).unwrap();
    kill9_and_wait(pid);
}

/// kill -9, then at once the operator's start command: it must see the dead mount although
/// stat(2) of the mountpoint still succeeds from the kernel's cache (attr_timeout = 30 s).
#[test]
fn restart_right_after_kill_9_despite_cached_attributes() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let m = long_cache(b.map("/", &real)).mount();
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    kill_and_wait(m.daemon_pid(), &m.mnt);
    // What fooled the old check: the dead mount's root still stats fine.
    assert!(
        fs::metadata(&m.mnt).is_ok(),
        "stat of the dead root was not cached"
    );

    assert_remount_replaces_dead_mount(&m, "restart right after kill -9");
}

/// The same through mount(8) and an fstab line (the boot and `sudo mount` path).
#[test]
fn mount8_right_after_kill_9_despite_cached_attributes() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let m = long_cache(b.map("/", &real)).mount();
    let fstab = m.root().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{}#{} {} fuse defaults,nosuid,nodev 0 0\n",
            BIN,
            m.config.display(),
            m.mnt.display()
        ),
    )
    .unwrap();
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    kill_and_wait(m.daemon_pid(), &m.mnt);
    let out = run_with_timeout(
        Command::new("mount").arg("-T").arg(&fstab).arg(&m.mnt),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "mount(8) right after kill -9: {}",
        stderr_str(&out)
    );
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
}

/// A daemon that is alive but does not answer (stopped) is neither replaced nor waited for
/// forever: the start is refused, naming the problem.
#[test]
fn hung_daemon_is_refused_not_replaced() {
    skip_without_fuse!();
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let (b, real) = hello_tree();
    let m = long_cache(b.map("/", &real)).mount();
    let pid = m.daemon_pid();
    let dev = conn(&m.mnt);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let resume = Resume(pid);
    let out = m.remount();
    assert_refusal(&out, &["does not answer"]);
    assert_eq!(conn(&m.mnt), dev, "the hung daemon's mount was replaced");
    drop(resume);
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
}

/// The unit's ExecStopPost runs after the daemon exited: it must remove a dead relocfs mount
/// even while stat(2) is answered from the cache, and leave a live one alone.
#[test]
fn unit_stop_post_cleanup_sees_a_dead_mount_through_the_cache() {
    skip_without_fuse!();
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/systemd/relocfs@.service"
    ))
    .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStopPost=-"))
        .expect("ExecStopPost=- in relocfs@.service");
    // systemd's own word splitting for this line: /bin/sh -c 'SCRIPT' NAME %f
    let rest = line.strip_prefix("/bin/sh -c '").expect("/bin/sh -c '...'");
    let (script, tail) = rest.split_once("' ").expect("closing quote");
    assert!(tail.ends_with(" %f"), "{tail}");
    let cleanup = |mnt: &Path| {
        run_with_timeout(
            Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .arg("relocfs-cleanup")
                .arg(mnt),
            Duration::from_secs(30),
        )
    };

    let (b, real) = hello_tree();
    let m = long_cache(b.map("/", &real)).mount();
    let dev = conn(&m.mnt);
    cleanup(&m.mnt);
    assert_eq!(conn(&m.mnt), dev, "the cleanup removed a live mount");

    kill_and_wait(m.daemon_pid(), &m.mnt);
    assert!(
        fs::metadata(&m.mnt).is_ok(),
        "stat of the dead root was not cached"
    );
    cleanup(&m.mnt);
    assert!(
        !mounted(&m.mnt),
        "the cleanup left the dead mount in place (stat answered from the cache)"
    );
}

/// What README's fault section says, measured: a process whose working directory is inside a
/// lazily detached mount can still open files relative to it, and each open is audited.
#[test]
fn lazily_detached_mount_still_serves_a_cwd_inside() {
    skip_without_fuse!();
    let m = hello_mount();
    let pid = m.daemon_pid();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("read go && exec cat hello.txt")
        .current_dir(&m.mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = umount_lazy(&m.mnt);
    assert!(st.success(), "umount -l: {st}");
    assert!(!mounted(&m.mnt));
    assert!(pid_alive(pid), "the daemon exited although a cwd is inside");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let cpid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.stdout,
        b"hello\n",
        "open relative to a cwd inside the detached mount: {}",
        stderr_str(&out)
    );
    wait_for_audit(
        &m.audit,
        ev("open", &m.at("hello.txt"), Some(cpid)),
        AUDIT_TIMEOUT,
    );
    assert!(
        wait_until(SETTLE_TIMEOUT, || !pid_alive(pid)),
        "the daemon still runs after the last user left"
    );
}

/// What callers of a killed daemon get: a request in flight fails with ECONNABORTED, every new
/// one with ENOTCONN, except what the kernel answers from its caches (stat within
/// attr_timeout) and reads of a file opened through kernel passthrough, which go on working.
#[test]
fn callers_of_a_killed_daemon() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    write_file(&real.join("big"), &pattern(256 * 1024, 7), 0o644);
    let m = long_cache(b.map("/", &real)).opt("allow_other").mount();
    let pid = m.daemon_pid();
    // Opened by an ordinary user: root's opens are never passed through.
    let big_path = m.at("big");
    let big = spawn_as_user(65534, 65534, &[], move || fs::File::open(big_path))
        .join()
        .unwrap()
        .unwrap();
    let small = fs::File::open(m.at("hello.txt")).unwrap();
    fs::metadata(m.at("hello.txt")).unwrap();

    // A request in flight: the daemon is stopped, then killed while an open waits for it.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let path = m.at("not-yet-looked-up");
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let inflight = std::thread::spawn(move || {
        let _ = tid_tx.send(unsafe { libc::gettid() });
        fs::File::open(path).map(drop)
    });
    // In flight once the opener sleeps in the kernel waiting for the (stopped) daemon's answer;
    // a fixed sleep was too short under load, and the open then came after the kill.
    let tid = tid_rx.recv().unwrap();
    let wchan = format!("/proc/self/task/{tid}/wchan");
    assert!(
        wait_until(SETTLE_TIMEOUT, || fs::read_to_string(&wchan).is_ok_and(
            |w| w.contains("request_wait_answer") || w.starts_with("fuse_")
        )),
        "the open never waited for the daemon (wchan {:?})",
        fs::read_to_string(&wchan)
    );
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let inflight = inflight.join().unwrap();
    assert!(wait_until(SETTLE_TIMEOUT, || !pid_alive(pid)));
    assert_errno("open in flight", inflight, libc::ECONNABORTED);

    assert_errno("open", fs::File::open(m.at("hello.txt")), libc::ENOTCONN);
    assert_errno("statfs", statvfs(&m.mnt), libc::ENOTCONN);
    assert_errno("readdir", fs::read_dir(&m.mnt), libc::ENOTCONN);
    assert_errno("stat new", fs::metadata(m.at("zzz")), libc::ENOTCONN);
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 6];
    assert_errno("read small", small.read_at(&mut buf, 0), libc::ENOTCONN);
    assert!(fs::metadata(&m.mnt).is_ok(), "cached stat of the root");
    let mut chunk = vec![0u8; 4096];
    let n = big
        .read_at(&mut chunk, 0)
        .expect("read of a passthrough file after the daemon died");
    assert_eq!(&chunk[..n], &pattern(256 * 1024, 7)[..n]);
    let _ = fs::metadata(&m.mnt).map(|md| md.ino());
}
