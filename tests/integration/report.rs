//! Audit logs made by real mounts, read back by `relocfs report` and `relocfs status`: the
//! figures must be exactly what the processes did.

use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Three processes as three users: uid 4242 reads a key twice, uid 65534 lists a directory
/// and misses a file, root is denied twice and refused a write once.
fn make_traffic(m: &Mounted) {
    let key = m.mnt.join("keys/id_rsa");
    for _ in 0..2 {
        let out = run_as(4242, 4242, Command::new("cat").arg(&key));
        assert!(out.status.success(), "{}", stderr_str(&out));
    }
    let out = run_as(65534, 65534, Command::new("ls").arg(m.mnt.join("keys")));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let out = run_as(
        65534,
        65534,
        Command::new("cat").arg(m.mnt.join("keys/old_key")),
    );
    assert!(!out.status.success());
    for _ in 0..2 {
        assert_errno(
            "stat admin",
            fs::metadata(m.mnt.join("keys/admin/x")),
            libc::EACCES,
        );
    }
    assert_errno(
        "write",
        fs::OpenOptions::new()
            .append(true)
            .open(m.mnt.join("config.yml")),
        libc::EROFS,
    );
}

/// Unmounts and waits for the daemon to exit: then every event is on disk.
fn unmount_and_wait(m: &Mounted) {
    let pid = m.daemon_pid();
    m.unmount_all();
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(pid)));
}

fn mount_story() -> Mounted {
    let b = MountBuilder::new();
    let real = b.real();
    mkdir_p(&real.join("keys"));
    write_file(&real.join("keys/id_rsa"), b"KEY", 0o600);
    chown(&real.join("keys/id_rsa"), 4242, 4242);
    write_file(&real.join("config.yml"), b"a: 1\n", 0o644);
    b.map("/", &real)
        .deny("/keys/admin")
        .opt("allow_other")
        .mount()
}

fn report_json(log: &std::path::Path, extra: &[&str]) -> Value {
    let out = relocfs(
        ["report", "--format", "json", "--limit", "0"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain(extra.iter().map(std::ffi::OsStr::new))
            .chain([log.as_os_str()]),
    );
    assert!(out.status.success(), "report failed: {}", stderr_str(&out));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

#[test]
fn report_counts_what_processes_did_through_a_mount() {
    if !require_fuse() {
        return;
    }
    let m = mount_story();
    make_traffic(&m);
    let log = m.audit.clone();
    let mnt = m.mnt.clone();
    unmount_and_wait(&m);
    let r = report_json(&log, &[]);

    // 2 opens + 1 opendir + 1 miss + 2 denials + 1 refused open; plus whatever lookups the
    // tools made that missed (counted in misses below, exactly).
    let misses = r["misses"]["rows"].as_array().unwrap();
    let miss_hits: u64 = misses.iter().map(|m| m["hits"].as_u64().unwrap()).sum();
    assert_eq!(r["totals"]["events"], 6 + miss_hits);
    assert_eq!(r["totals"]["lost_events"], 0);
    assert_eq!(r["totals"]["malformed_lines"], 0);

    let old_key = mnt.join("keys/old_key");
    let miss = misses
        .iter()
        .find(|m| m["path"] == old_key.to_str().unwrap())
        .expect("the missed key is reported");
    assert_eq!(miss["hits"], 1);
    assert_eq!(miss["processes"][0]["comm"], "cat");

    let denials = r["denials"]["rows"].as_array().unwrap();
    let admin = mnt.join("keys/admin");
    let denied = denials
        .iter()
        .find(|d| d["path"] == admin.to_str().unwrap() && d["result"] == "EACCES")
        .expect("the denial is reported");
    assert_eq!(denied["hits"], 2);
    let refused = denials
        .iter()
        .find(|d| d["result"] == "EROFS")
        .expect("the refused write is reported");
    assert_eq!(refused["op"], "open");
    assert_eq!(refused["hits"], 1);

    let procs = r["processes"]["rows"].as_array().unwrap();
    let reader = procs
        .iter()
        .find(|p| p["uid"] == 4242)
        .expect("uid 4242 is reported");
    assert_eq!(reader["comm"], "cat");
    assert_eq!(reader["hits"], 2);
    assert_eq!(reader["exe"], "/usr/bin/cat");
    let lister = procs
        .iter()
        .find(|p| p["uid"] == 65534 && p["comm"] == "ls")
        .expect("ls as nobody is reported");
    assert_eq!(lister["hits"], 1);

    let verdict = r["verdict"]["text"].as_str().unwrap();
    assert!(verdict.starts_with("last access"), "{verdict}");

    // The table for a terminal says the same.
    let out = relocfs([std::ffi::OsStr::new("report"), log.as_os_str()]);
    assert!(out.status.success());
    let text = stdout_str(&out);
    assert!(text.contains(old_key.to_str().unwrap()), "{text}");
    assert!(text.contains("Verdict: last access"), "{text}");
}

#[test]
fn collapsed_events_are_counted_by_the_report() {
    if !require_fuse() {
        return;
    }
    let b = MountBuilder::new().extra("collapse_window = 30\n");
    // `extra` lands after the [audit] section, so the key belongs to it.
    let real = b.real();
    write_file(&real.join("polled"), b"x", 0o644);
    let m = b.map("/", &real).mount();
    // One process opening the same file 50 times: one line with count 50.
    let script = format!(
        "import os\nfor _ in range(50):\n    os.close(os.open({:?}, os.O_RDONLY))\n",
        m.mnt.join("polled").to_str().unwrap()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    let log = m.audit.clone();
    unmount_and_wait(&m);
    let lines = read_audit(&log);
    let opens: Vec<&Value> = lines.iter().filter(|l| l["op"] == "open").collect();
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert_eq!(opens[0]["count"], 50);
    let r = report_json(&log, &[]);
    let procs = r["processes"]["rows"].as_array().unwrap();
    let python = procs.iter().find(|p| p["comm"] == "python3").unwrap();
    assert_eq!(python["hits"], 50);
}

#[test]
fn status_shows_the_live_state_to_root_only() {
    if !require_fuse() {
        return;
    }
    let m = mount_story();
    make_traffic(&m);
    let out = relocfs([
        std::ffi::OsStr::new("status"),
        std::ffi::OsStr::new("--json"),
        m.mnt.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr_str(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["mountpoint"], m.mnt.to_str().unwrap());
    assert_eq!(s["rules"][1], "/keys/admin denied");
    let count = |op: &str, result: &str| {
        s["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row[0] == op && row[1] == result)
            .map_or(0, |row| row[2].as_u64().unwrap())
    };
    assert_eq!(count("open", "ok"), 2);
    assert_eq!(count("open", "EROFS"), 1);
    assert_eq!(count("lookup", "EACCES"), 2);
    assert!(s["nodes"].as_u64().unwrap() >= 3);
    assert!(wait_until(Duration::from_secs(5), || {
        let out = relocfs([
            std::ffi::OsStr::new("status"),
            std::ffi::OsStr::new("--json"),
            m.mnt.as_os_str(),
        ]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s["audit_written"].as_u64().unwrap_or(0) >= 6
    }));

    let out = run_as(65534, 65534, Command::new(BIN).arg("status").arg(&m.mnt));
    assert!(!out.status.success());
    assert!(
        stderr_str(&out).contains("permission denied"),
        "{}",
        stderr_str(&out)
    );
}
