//! Mount lifecycle: background mode returns only when live, umount and
//! SIGTERM stop the daemon cleanly (audit flushed), foreground mode, options.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;

#[test]
fn returns_only_when_live() {
    skip_without_fuse!();
    let m = hello_mount();
    let real = m.real();
    // No retry: the very first access right after exit 0 must work.
    let md = fs::metadata(m.at("hello.txt")).expect("stat right after relocfs returned");
    assert_eq!(md.size(), 6);
    assert_eq!(
        md.ino(),
        fs::metadata(real.join("hello.txt")).unwrap().ino()
    );
    let e = mount_entry(&m.mnt).expect("mount listed in mountinfo");
    assert_eq!(e.fstype, "fuse.relocfs", "fstype in mountinfo");
    assert!(
        e.super_options.iter().any(|o| o == "default_permissions"),
        "default_permissions missing: {:?}",
        e.super_options
    );
    // The daemon is running detached: not our child, in its own session.
    let pid = m.daemon_pid();
    assert!(pid_alive(pid));
    let stat = |p: &str| -> Vec<String> {
        let t = fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
        let rest = t.rsplit_once(')').unwrap().1.to_string();
        rest.split_whitespace().map(str::to_string).collect()
    };
    // fields after "(comm)": state ppid pgrp session ...
    let daemon = stat(&pid.to_string());
    let me = stat("self");
    assert_ne!(
        daemon[1],
        std::process::id().to_string(),
        "daemon is a child of the caller"
    );
    assert_ne!(
        daemon[3], me[3],
        "daemon shares the caller's session (not detached)"
    );
}

#[test]
fn umount_stops_daemon_and_flushes_audit() {
    skip_without_fuse!();
    let m = hello_mount();
    let pid = m.daemon_pid();
    let f = m.at("hello.txt");
    assert_eq!(fs::read(&f).unwrap(), b"hello\n");

    let st = umount(&m.mnt);
    assert!(st.success(), "umount failed: {st}");
    assert!(!mounted(&m.mnt), "still mounted after umount");
    assert!(
        wait_until(SETTLE_TIMEOUT, || !pid_alive(pid)),
        "daemon {pid} still running {SETTLE_TIMEOUT:?} after umount"
    );
    // Flushed before exit: no polling needed any more.
    let lines = read_audit(&m.audit);
    assert!(
        lines.iter().any(ev("open", &f, None)),
        "open of {} missing from the audit log after the daemon exited:\n{lines:#?}",
        f.display()
    );
}

#[test]
fn sigterm_unmounts_and_flushes_audit() {
    skip_without_fuse!();
    let m = hello_mount();
    let pid = m.daemon_pid();
    let f = m.at("hello.txt");
    assert_eq!(fs::read(&f).unwrap(), b"hello\n");

    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        wait_until(SETTLE_TIMEOUT, || !mounted(&m.mnt)),
        "still mounted {SETTLE_TIMEOUT:?} after SIGTERM"
    );
    assert!(
        wait_until(SETTLE_TIMEOUT, || !pid_alive(pid)),
        "daemon {pid} still running {SETTLE_TIMEOUT:?} after SIGTERM"
    );
    let lines = read_audit(&m.audit);
    assert!(
        lines.iter().any(ev("open", &f, None)),
        "open missing from the audit log after SIGTERM:\n{lines:#?}"
    );
    // The mountpoint is an ordinary empty directory again.
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);
}

#[test]
fn foreground_mode_serves_until_unmounted() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let b = b.map("/", &real);
    let m = b.into_mounted();
    let logs = tempfile::tempfile().unwrap();
    let mut child = Command::new(BIN)
        .arg("-f")
        .arg(&m.config)
        .arg(&m.mnt)
        .stdin(Stdio::null())
        .stdout(logs.try_clone().unwrap())
        .stderr(logs.try_clone().unwrap())
        .spawn()
        .unwrap();
    let live = wait_until(SETTLE_TIMEOUT, || mounted(&m.mnt));
    if !live {
        let _ = child.kill();
        let _ = child.wait();
        panic!("relocfs -f did not mount within {SETTLE_TIMEOUT:?}");
    }
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "relocfs -f exited while mounted"
    );
    let st = umount(&m.mnt);
    assert!(st.success(), "umount: {st}");
    let mut status = None;
    wait_until(SETTLE_TIMEOUT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("relocfs -f still running {SETTLE_TIMEOUT:?} after umount");
    };
    assert!(
        status.success(),
        "relocfs -f exited with {status} after umount"
    );
}

#[test]
fn background_mode_releases_stdio() {
    skip_without_fuse!();
    // A caller capturing output with pipes (`$(relocfs ...)`, systemd,
    // Command::output) must not hang because the daemon kept them open.
    let (b, real) = hello_tree();
    let b = b.map("/", &real);
    let m = b.into_mounted();
    let mut child = Command::new(BIN)
        .arg(&m.config)
        .arg(&m.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        let _ = err.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "relocfs exited with {status}");
    assert!(mounted(&m.mnt));
    let got = rx.recv_timeout(Duration::from_secs(10));
    assert!(
        got.is_ok(),
        "relocfs returned, but its stdout/stderr pipes stay open (held by the daemon)"
    );
}

#[test]
fn options_after_positionals_and_fsname() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let m = b
        .map("/", &real)
        .opt("fsname=legacy-jumpserver")
        .opt("allow_other")
        .opts_after_positionals()
        .mount();
    let e = mount_entry(&m.mnt).unwrap();
    assert_eq!(e.source, "legacy-jumpserver", "fsname → mount source");
    assert_eq!(e.fstype, "fuse.relocfs");
    assert!(
        e.super_options.iter().any(|o| o == "allow_other"),
        "{:?}",
        e.super_options
    );
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
}

#[test]
fn fstab_style_options_are_accepted() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let m = b
        .map("/", &real)
        .opt("defaults")
        .opt("auto")
        .opt("noauto")
        .opt("nofail")
        .opt("_netdev")
        .opt("x-systemd.requires=network.target")
        .opt("rw")
        .opt("nosuid")
        .opt("nodev")
        .opt("exec")
        .mount();
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
}

#[test]
fn mountpoint_with_space_in_name() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let mp = b.root().join("legacy dir\twith tab");
    mkdir_p(&mp);
    let m = b.map("/", &real).mountpoint(&mp).mount();
    assert!(mounted(&mp), "mountinfo octal escapes");
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    let st = umount(&mp);
    assert!(st.success());
    assert!(!mounted(&mp));
}

#[test]
fn two_mounts_of_one_target_are_independent() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let second = b.root().join("mnt2");
    mkdir_p(&second);
    let m = b.map("/", &real).mount();
    let out = relocfs([m.config.as_path(), second.as_path()]);
    assert!(out.status.success(), "second mount: {}", stderr_str(&out));
    assert!(mounted(&second));
    assert_eq!(fs::read(second.join("hello.txt")).unwrap(), b"hello\n");
    assert!(umount(&second).success());
    assert!(!mounted(&second));
    // The first one is unaffected.
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    assert!(mounted(&m.mnt));
}

#[test]
fn demo_runs_and_prints_audit_lines() {
    skip_without_fuse!();
    let relocfs_mounts = || -> Vec<std::path::PathBuf> {
        mount_entries()
            .into_iter()
            .filter(|e| e.fstype == "fuse.relocfs")
            .map(|e| e.mount_point)
            .filter(|p| !p.to_string_lossy().contains("relocfs-test-"))
            .collect()
    };
    let before = relocfs_mounts();
    let out = run_with_timeout(Command::new(BIN).arg("demo"), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "relocfs demo failed: {}",
        stderr_str(&out)
    );
    let opens: Vec<serde_json::Value> = stdout_str(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| s(v, "op") == Some("open"))
        .collect();
    assert!(
        !opens.is_empty(),
        "demo printed no JSON audit line with op open:\n{}",
        stdout_str(&out)
    );
    let after = relocfs_mounts();
    let leaked: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(leaked.is_empty(), "demo left mounts behind: {leaked:?}");
}

fn rules_toml(rules: &[(&str, &std::path::Path)], audit: &std::path::Path) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut t = String::new();
    for (from, to) in rules {
        t.push_str(&format!(
            "[[map]]\nfrom = {}\nto = {}\n\n",
            q(from),
            q(to.to_str().unwrap())
        ));
    }
    t.push_str(&format!("[audit]\nlog = {}\n", q(audit.to_str().unwrap())));
    t
}

#[test]
fn sighup_reloads_rules_and_survives_a_bad_config() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let extra = b.root().join("extra");
    let third = b.root().join("third");
    write_file(&extra.join("g"), b"from extra\n", 0o644);
    write_file(&third.join("h"), b"from third\n", 0o644);
    let m = b.map("/", &real).mount();
    let pid = m.daemon_pid();
    assert_errno("before reload", fs::metadata(m.at("extra/g")), libc::ENOENT);

    fs::write(
        &m.config,
        rules_toml(&[("/", &real), ("/extra", &extra)], &m.audit),
    )
    .unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        wait_until(SETTLE_TIMEOUT, || fs::read(m.at("extra/g")).ok().as_deref()
            == Some(b"from extra\n")),
        "a rule added to the config did not appear after SIGHUP"
    );

    // A broken config is refused; the daemon keeps serving the old rules ...
    fs::write(&m.config, "[[map]]\nfrom = \"/\"\nto = = \n").unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    // ... and still reloads the next good one (signals are handled in order).
    fs::write(
        &m.config,
        rules_toml(
            &[("/", &real), ("/extra", &extra), ("/third", &third)],
            &m.audit,
        ),
    )
    .unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        wait_until(SETTLE_TIMEOUT, || fs::read(m.at("third/h")).ok().as_deref()
            == Some(b"from third\n")),
        "no reload after a refused one"
    );
    assert!(pid_alive(pid), "the daemon died on a bad config");
    assert_eq!(m.daemon_pids(), vec![pid]);
    assert_eq!(fs::read(m.at("extra/g")).unwrap(), b"from extra\n");
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");

    // Removing a rule removes its path.
    fs::write(&m.config, rules_toml(&[("/", &real)], &m.audit)).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        wait_until(SETTLE_TIMEOUT, || fs::metadata(m.at("third/h")).is_err()),
        "a rule removed from the config is still served after SIGHUP"
    );
}

/// Kills and reaps a `relocfs -f` child if the test ends early (its mount goes with it).
struct Foreground(std::process::Child);

impl Drop for Foreground {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A reload that changes settings only the next mount can apply says so in one line naming
/// each key, and the new rules still apply. Before the mount plan, passthrough and
/// collapse_window changes were ignored without a word.
#[test]
fn sighup_names_the_settings_that_wait_for_the_next_mount() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let extra = b.root().join("extra");
    write_file(&extra.join("g"), b"from extra\n", 0o644);
    let log_path = b.root().join("daemon.log");
    let m = b.map("/", &real).into_mounted();
    let logs = fs::File::create(&log_path).unwrap();
    let child = Command::new(BIN)
        .arg("-f")
        .arg(&m.config)
        .arg(&m.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logs)
        .spawn()
        .unwrap();
    let mut child = Foreground(child);
    assert!(
        wait_until(SETTLE_TIMEOUT, || mounted(&m.mnt)),
        "relocfs -f did not mount"
    );

    let mut text = rules_toml(&[("/", &real), ("/extra", &extra)], &m.audit);
    text.push_str("collapse_window = 3.0\n[fuse]\npassthrough = \"off\"\n");
    fs::write(&m.config, text).unwrap();
    relocfs::sys::kill(child.0.id() as i32, libc::SIGHUP).unwrap();
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(SETTLE_TIMEOUT, || log().contains("reloaded ")),
        "no reload in the daemon's log:\n{}",
        log()
    );
    let log = log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("take effect at the next mount"))
        .collect();
    assert_eq!(lines.len(), 1, "one line names the settings:\n{log}");
    for key in ["[fuse] passthrough", "[audit] collapse_window"] {
        assert!(lines[0].contains(key), "{key} not named:\n{log}");
    }
    for key in ["threads", "readdirplus", "cmdline", "[audit] log"] {
        assert!(!lines[0].contains(key), "{key} did not change:\n{log}");
    }
    assert_eq!(fs::read(m.at("extra/g")).unwrap(), b"from extra\n");

    let st = Command::new("umount").arg(&m.mnt).status().unwrap();
    assert!(st.success(), "umount: {st}");
    let mut status = None;
    wait_until(SETTLE_TIMEOUT, || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "relocfs -f after umount: {status:?}"
    );
}

#[test]
fn sighup_reopens_the_audit_log() {
    skip_without_fuse!();
    let m = hello_mount();
    let pid = m.daemon_pid();
    let f = m.at("hello.txt");
    let p1 = cat_and_wait_for_open(&m.audit, &f);

    // logrotate: move the log away, then SIGHUP.
    let rotated = m.audit.with_extension("jsonl.1");
    fs::rename(&m.audit, &rotated).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let reopened = new_opens_reach(&m.audit, &f);
    assert!(
        reopened,
        "after SIGHUP, new events do not go to a new {}",
        m.audit.display()
    );
    assert!(
        read_audit(&rotated).iter().any(ev("open", &f, Some(p1))),
        "the rotated log lost its events"
    );
}

#[test]
fn mountpoint_already_mounted_refused() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let root = b.root();
    let m = b.map("/", &real).mount();
    let out = m.remount();
    assert_refusal(&out, &["already"]);
    assert_eq!(
        mounts_at(&m.mnt),
        1,
        "a second relocfs was stacked on the first"
    );
    assert_eq!(
        fs::read(m.at("hello.txt")).unwrap(),
        b"hello\n",
        "first mount disturbed"
    );

    let tmpfs = root.join("tmpfs");
    mkdir_p(&tmpfs);
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "relocfs-test-tmpfs"])
        .arg(&tmpfs)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let out = relocfs([m.config.as_path(), tmpfs.as_path()]);
    assert_refusal(&out, &["already"]);
    assert_eq!(mounts_at(&tmpfs), 1, "relocfs was stacked on a tmpfs");
    assert_eq!(mount_entry(&tmpfs).unwrap().fstype, "tmpfs");
}

#[test]
fn dead_mount_is_replaced() {
    skip_without_fuse!();
    let m = hello_mount();
    let pid = m.daemon_pid();
    kill9_and_wait(pid);
    // Requests in flight while the connection is torn down fail with
    // ECONNABORTED; once it is gone, every access fails with ENOTCONN.
    let dead = wait_until(SETTLE_TIMEOUT, || {
        fs::metadata(m.at("hello.txt"))
            .err()
            .and_then(|e| e.raw_os_error())
            == Some(libc::ENOTCONN)
    });
    assert!(
        dead,
        "the mount did not become a dead mount (ENOTCONN) after SIGKILL"
    );

    assert_remount_replaces_dead_mount(&m, "remount over a dead mount");
}

#[test]
fn systemd_notify_protocol() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let m = b.map("/", &real).into_mounted();
    let (sock, mut child) = m.spawn_under_systemd();
    let recv = || -> String {
        let mut buf = [0u8; 4096];
        match sock.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => format!("<no message: {e}>"),
        }
    };
    let ready = recv();
    let live = mounted(&m.mnt) && fs::metadata(m.at("hello.txt")).is_ok();
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reloading = recv();
    let ready_again = recv();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stopping = recv();
    let (exited, status) = wait_exit(&mut child, SETTLE_TIMEOUT);
    assert!(ready.contains("READY=1"), "first notification: {ready:?}");
    assert!(live, "READY=1 was sent before the mount was live");
    assert!(
        reloading.contains("RELOADING=1"),
        "on SIGHUP: {reloading:?}"
    );
    assert!(
        ready_again.contains("READY=1"),
        "after reload: {ready_again:?}"
    );
    assert!(stopping.contains("STOPPING=1"), "on SIGTERM: {stopping:?}");
    assert!(
        exited && status.success(),
        "relocfs -f after SIGTERM: {status}"
    );
}
