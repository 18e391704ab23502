//! `relocfs report --idle-for`: the exit code is the gate a cron job or Ansible task removes
//! the bridge on, so both ways are proven on logs written by a real mount.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Two rules; `cat` reads through one of them once; the daemon is then stopped so that every
/// event is on disk and nothing else is written.
fn mount_and_use_keys() -> (Mounted, u32) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("keys/id_rsa"), b"KEY", 0o644);
    write_file(&real.join("static/app.css"), b"css", 0o644);
    let m = b
        .map("/keys", real.join("keys"))
        .map("/static", real.join("static"))
        .mount();
    let pid = cat_and_wait_for_open(&m.audit, &m.mnt.join("keys/id_rsa"));
    let daemon = m.daemon_pid();
    m.unmount_all();
    assert!(wait_until(SETTLE_TIMEOUT, || !pid_alive(daemon)));
    (m, pid)
}

fn idle(args: &[&str], m: &Mounted) -> (Option<i32>, Value, String) {
    let mut all: Vec<std::ffi::OsString> = vec!["report".into(), "--format".into(), "json".into()];
    all.extend(args.iter().map(Into::into));
    all.push(m.audit.clone().into());
    let out = relocfs(&all);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc, stderr_str(&out))
}

#[test]
fn idle_for_exits_3_after_a_use_and_0_once_the_window_has_passed() {
    skip_without_fuse!();
    let (m, pid) = mount_and_use_keys();

    // Used within the last hour: exit 3, and the report names the rule and the caller.
    let config = m.config.to_str().unwrap().to_string();
    let (code, doc, err) = idle(&["--idle-for", "1h", "--config", &config], &m);
    assert_eq!(code, Some(3), "{err}\n{doc:#}");
    assert_eq!(doc["verdict"], "in_use", "{doc:#}");
    let rules = doc["rules"].as_array().expect("rules");
    let keys = rules.iter().find(|r| r["rule"] == "/keys").expect("/keys");
    assert!(keys["uses_in_window"].as_u64().unwrap() >= 1, "{doc:#}");
    assert_eq!(keys["last_use"]["comm"], "cat", "{doc:#}");
    assert_eq!(keys["last_use"]["uid"], 0, "{doc:#}");
    // Named from the user database at report time, as the report names uids.
    assert_eq!(keys["last_use"]["user"], "root", "{doc:#}");
    assert_eq!(keys["last_use"]["pid"], pid, "{doc:#}");
    // The config's other rule is listed although the log never names it.
    let stat = rules
        .iter()
        .find(|r| r["rule"] == "/static")
        .expect("/static");
    assert_eq!(stat["last_use"], Value::Null, "{doc:#}");
    assert_eq!(stat["in_config"], true, "{doc:#}");

    // The table says the same, and so does the exit code.
    let out = relocfs([
        "report".as_ref(),
        "--idle-for".as_ref(),
        "1h".as_ref(),
        m.audit.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_str(&out));
    let text = stdout_str(&out);
    assert!(text.contains("IN USE: 1 rule used"), "{text}");
    assert!(text.contains("cat"), "{text}");

    // Once the last event is older than the window (and the log reaches back before the
    // window's start), the check passes.
    let last = m
        .audit_lines()
        .iter()
        .filter_map(|e| s(e, "ts").and_then(parse_rfc3339_utc))
        .max()
        .expect("events");
    assert!(wait_until(Duration::from_secs(10), || now_unix() >= last + 2));
    let (code, doc, err) = idle(&["--idle-for", "1s"], &m);
    assert_eq!(code, Some(0), "{err}\n{doc:#}");
    assert_eq!(doc["verdict"], "idle", "{doc:#}");
}

#[test]
fn idle_for_never_proves_idleness_from_missing_or_empty_logs() {
    skip_without_fuse!();
    let (m, _) = mount_and_use_keys();
    let dir = tempfile::tempdir().unwrap();

    // A missing log is an error (exit 1, one line), not an idle system.
    let missing = dir.path().join("gone.jsonl");
    let out = relocfs([
        "report".as_ref(),
        "--idle-for".as_ref(),
        "1s".as_ref(),
        missing.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout_str(&out));
    assert_eq!(stderr_str(&out).lines().count(), 1, "{}", stderr_str(&out));

    // An empty log (a fresh rotation) shows no use, and proves nothing: exit 4.
    let empty = dir.path().join("audit.jsonl");
    std::fs::write(&empty, b"").unwrap();
    let out = relocfs([
        "report".as_ref(),
        "--idle-for".as_ref(),
        "30d".as_ref(),
        empty.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout_str(&out));
    assert!(
        stdout_str(&out).contains("UNPROVEN"),
        "{}",
        stdout_str(&out)
    );

    // Given with the real log (rotated files in any order), the use is found: exit 3.
    let out = relocfs([
        "report".as_ref(),
        "--idle-for".as_ref(),
        "30d".as_ref(),
        empty.as_os_str(),
        m.audit.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout_str(&out));

    // A bad window is a usage-like error: exit 1 with the reason.
    let out = relocfs([
        "report".as_ref(),
        "--idle-for".as_ref(),
        "30 days".as_ref(),
        m.audit.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_str(&out).contains("invalid --idle-for"),
        "{}",
        stderr_str(&out)
    );
}
