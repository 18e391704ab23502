//! The JSON-lines audit log: one event per access, with who, what, where
//! and the outcome -- refusals included, caches not hiding anything.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn fixture() -> (Mounted, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("etc/app.conf"), b"conf\n", 0o644);
    write_owned(&real.join("keys/id_rsa"), b"key\n", 0o600, KEY_UID, KEY_GID);
    std::os::unix::fs::symlink("../etc/app.conf", real.join("keys/conf-link")).unwrap();
    write_file(&real.join("keys/admin/root_key"), b"root\n", 0o644);
    let m = b
        .map("/", &real)
        .deny("/keys/admin")
        .opt("allow_other")
        .mount();
    (m, real)
}

#[track_caller]
fn assert_fields(e: &Value, want: &[(&str, Value)]) {
    let mut problems = audit_common_problems(e);
    for (k, v) in want {
        if e.get(*k) != Some(v) {
            problems.push(format!("`{k}`: want {v}, got {:?}", e.get(*k)));
        }
    }
    assert!(
        problems.is_empty(),
        "audit event {e}:\n{}",
        problems.join("\n")
    );
}

#[test]
fn open_is_logged_with_reader_identity() {
    skip_without_fuse!();
    let (m, real) = fixture();
    let p = m.at("keys/id_rsa");
    let (pid, out) = run_as_pid(KEY_UID, KEY_GID, Command::new("cat").arg(&p));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let e = wait_for_audit(&m.audit, ev("open", &p, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(
        &e,
        &[
            ("path", p.to_str().unwrap().into()),
            ("target", real.join("keys/id_rsa").to_str().unwrap().into()),
            ("map", "/".into()),
            ("flags", "r".into()),
            ("uid", KEY_UID.into()),
            ("gid", KEY_GID.into()),
            ("comm", "cat".into()),
            ("result", "ok".into()),
        ],
    );
}

#[test]
fn refused_open_by_other_user_is_not_logged_as_ok() {
    skip_without_fuse!();
    // The kernel refuses (default_permissions) before asking the daemon, so
    // there must be no successful open event for that process.
    let (m, _) = fixture();
    let p = m.at("keys/id_rsa");
    let (pid, out) = run_as_pid(NOBODY, NOBODY, Command::new("cat").arg(&p));
    assert!(!out.status.success());
    // Make sure the writer has caught up with a later event of ours.
    let marker = m.at("etc/app.conf");
    cat_and_wait_for_open(&m.audit, &marker);
    let bad: Vec<Value> = m
        .audit_lines()
        .into_iter()
        .filter(|e| ev("open", &p, Some(pid))(e) && s(e, "result") == Some("ok"))
        .collect();
    assert!(bad.is_empty(), "refused read logged as ok: {bad:?}");
}

#[test]
fn opendir_is_logged_for_ls() {
    skip_without_fuse!();
    let (m, real) = fixture();
    let d = m.at("etc");
    let (pid, out) = run_as_pid(0, 0, Command::new("ls").arg(&d));
    assert_eq!(stdout_str(&out), "app.conf\n");
    let e = wait_for_audit(&m.audit, ev("opendir", &d, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(
        &e,
        &[
            ("target", real.join("etc").to_str().unwrap().into()),
            ("map", "/".into()),
            ("comm", "ls".into()),
            ("uid", 0.into()),
            ("result", "ok".into()),
        ],
    );
}

#[test]
fn readlink_is_logged() {
    skip_without_fuse!();
    let (m, _) = fixture();
    let l = m.at("keys/conf-link");
    let (pid, out) = run_as_pid(0, 0, Command::new("readlink").arg(&l));
    assert_eq!(stdout_str(&out), "../etc/app.conf\n");
    let e = wait_for_audit(&m.audit, ev("readlink", &l, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(&e, &[("comm", "readlink".into()), ("result", "ok".into())]);
}

#[test]
fn miss_is_logged_as_lookup_enoent_every_time() {
    skip_without_fuse!();
    let (m, _) = fixture();
    let p = m.at("etc/missing.conf");
    // Same process, twice: a negative-entry cache must not hide the second.
    let (pid, out) = run_as_pid(
        0,
        0,
        &mut sh("test -e \"$1\" || test -e \"$1\" || echo gone", &[&p]),
    );
    assert_eq!(stdout_str(&out), "gone\n");
    let evs = wait_for_audit_n(
        &m.audit,
        |e| ev("lookup", &p, Some(pid))(e) && s(e, "result") == Some("ENOENT"),
        2,
        AUDIT_TIMEOUT,
    );
    assert_fields(&evs[0], &[("comm", "sh".into()), ("map", "/".into())]);
}

#[test]
fn denial_is_logged_as_lookup_eacces() {
    skip_without_fuse!();
    let (m, _) = fixture();
    let p = m.at("keys/admin");
    let (pid, out) = run_as_pid(0, 0, Command::new("stat").arg(m.at("keys/admin/root_key")));
    assert!(!out.status.success(), "stat of a denied path succeeded");
    let e = wait_for_audit(&m.audit, ev("lookup", &p, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(
        &e,
        &[
            ("result", "EACCES".into()),
            ("map", "/keys/admin".into()),
            ("comm", "stat".into()),
            ("uid", 0.into()),
        ],
    );
    assert!(
        e.get("target").is_none(),
        "a denied path has no target: {e}"
    );
}

#[test]
fn refused_write_open_is_logged_as_erofs() {
    skip_without_fuse!();
    let (m, _) = fixture();
    let p = m.at("etc/app.conf");
    let (pid, out) = run_as_pid(0, 0, &mut sh("echo x > \"$1\"", &[&p]));
    assert!(!out.status.success(), "write succeeded");
    let e = wait_for_audit(&m.audit, ev("open", &p, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(
        &e,
        &[
            ("flags", "w".into()),
            ("result", "EROFS".into()),
            ("comm", "sh".into()),
        ],
    );

    let (pid, out) = run_as_pid(0, 0, &mut sh("exec 3<>\"$1\"", &[&p]));
    assert!(!out.status.success(), "read-write open succeeded");
    let e = wait_for_audit(&m.audit, ev("open", &p, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(&e, &[("flags", "rw".into()), ("result", "EROFS".into())]);
}

#[test]
fn refused_mkdir_is_logged_as_erofs() {
    skip_without_fuse!();
    let (m, _) = fixture();
    let p = m.at("etc/newdir");
    let (pid, out) = run_as_pid(0, 0, Command::new("mkdir").arg(&p));
    assert!(!out.status.success(), "mkdir succeeded");
    assert!(
        stderr_str(&out).contains("Read-only file system"),
        "{}",
        stderr_str(&out)
    );
    let e = wait_for_audit(&m.audit, ev("mkdir", &p, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(&e, &[("result", "EROFS".into()), ("comm", "mkdir".into())]);
}

#[test]
fn repeated_opens_are_each_logged() {
    skip_without_fuse!();
    let (m, _) = fixture();
    let p = m.at("etc/app.conf");
    // One process opens the same file twice in a row (page cache warm).
    let (pid, out) = run_as_pid(
        0,
        0,
        &mut sh("read a < \"$1\"; read b < \"$1\"; echo \"$a$b\"", &[&p]),
    );
    assert_eq!(stdout_str(&out), "confconf\n", "{}", stderr_str(&out));
    let evs = wait_for_audit_n(&m.audit, ev("open", &p, Some(pid)), 2, AUDIT_TIMEOUT);
    for e in &evs {
        assert_fields(e, &[("flags", "r".into()), ("result", "ok".into())]);
    }
    // And a third open by another process.
    cat_and_wait_for_open(&m.audit, &p);
}

#[test]
fn nested_rule_sets_map_and_target() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let store = b.root().join("keystore");
    write_file(&real.join("README"), b"r\n", 0o644);
    write_file(&store.join("role_key/k"), b"k\n", 0o644);
    let m = b.map("/", &real).map("/keys", &store).mount();
    let p = m.at("keys/role_key/k");
    let (pid, out) = run_as_pid(0, 0, Command::new("cat").arg(&p));
    assert_eq!(out.stdout, b"k\n");
    let e = wait_for_audit(&m.audit, ev("open", &p, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(
        &e,
        &[
            ("map", "/keys".into()),
            ("target", store.join("role_key/k").to_str().unwrap().into()),
            ("result", "ok".into()),
        ],
    );
}

#[test]
fn mount_root_path_is_the_mountpoint_itself() {
    skip_without_fuse!();
    let (m, real) = fixture();
    let (pid, out) = run_as_pid(0, 0, Command::new("ls").arg(&m.mnt));
    assert!(out.status.success());
    let e = wait_for_audit(
        &m.audit,
        |e| s(e, "op") == Some("opendir") && n(e, "pid") == Some(u64::from(pid)),
        AUDIT_TIMEOUT,
    );
    assert_fields(
        &e,
        &[
            ("path", m.mnt.to_str().unwrap().into()),
            ("target", real.to_str().unwrap().into()),
            ("map", "/".into()),
        ],
    );
}

#[test]
fn odd_names_are_escaped_in_json() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let name = "we\"ird\\na\nme\t\u{1}é";
    write_file(&real.join(name), b"odd\n", 0o644);
    let m = b.map("/", &real).mount();
    let p = m.at(name);
    let (pid, out) = run_as_pid(0, 0, Command::new("cat").arg(&p));
    assert_eq!(out.stdout, b"odd\n", "{}", stderr_str(&out));
    // read_audit parses every line: a raw newline or quote would break it.
    let e = wait_for_audit(&m.audit, ev("open", &p, Some(pid)), AUDIT_TIMEOUT);
    assert_fields(&e, &[("target", real.join(name).to_str().unwrap().into())]);
}

#[test]
fn relative_mountpoint_argument_is_logged_absolute() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"f\n", 0o644);
    let b = b.map("/", &real);
    let root = b.root();
    let m = b.into_mounted();
    let out = run_with_timeout(
        Command::new(BIN)
            .current_dir(&root)
            .arg("relocfs.toml")
            .arg("./mnt/"),
        SETTLE_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert!(mounted(&m.mnt));
    let p = m.at("f");
    let (pid, _) = run_as_pid(0, 0, Command::new("cat").arg(&p));
    let e = wait_for_audit(
        &m.audit,
        |e| s(e, "op") == Some("open") && n(e, "pid") == Some(u64::from(pid)),
        AUDIT_TIMEOUT,
    );
    assert_fields(&e, &[("path", p.to_str().unwrap().into())]);
}

#[test]
fn every_open_is_logged_under_load() {
    skip_without_fuse!();
    const N: usize = 2000;
    let (m, _) = fixture();
    let p = m.at("etc/app.conf");
    let (pid, out) = run_as_pid(
        0,
        0,
        &mut sh(
            "i=0; while [ $i -lt 2000 ]; do read x < \"$1\" || exit 1; i=$((i+1)); done",
            &[&p],
        ),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    let evs = wait_for_audit_n(
        &m.audit,
        ev("open", &p, Some(pid)),
        N,
        Duration::from_secs(20),
    );
    assert_eq!(evs.len(), N, "exactly one open event per open");
}

#[test]
fn audit_log_is_appended_across_remounts() {
    skip_without_fuse!();
    let (m, _) = fixture();
    let p = m.at("etc/app.conf");
    let pid1 = cat_and_wait_for_open(&m.audit, &p);
    m.unmount_all();
    assert!(!mounted(&m.mnt));

    let out = relocfs(
        ["-o", "allow_other"]
            .iter()
            .map(std::path::Path::new)
            .chain([m.config.as_path(), m.mnt.as_path()]),
    );
    assert!(out.status.success(), "remount: {}", stderr_str(&out));
    cat_and_wait_for_open(&m.audit, &p);
    assert!(
        m.audit_lines().iter().any(ev("open", &p, Some(pid1))),
        "the first mount's events were lost when remounting"
    );
}

#[test]
fn two_rules_with_one_target_are_told_apart() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let shared = b.root().join("shared");
    write_file(&shared.join("f"), b"shared\n", 0o644);
    let m = b.map("/a", &shared).map("/b", &shared).mount();
    for (dir, rule) in [("a", "/a"), ("b", "/b"), ("a", "/a")] {
        let p = m.at(&format!("{dir}/f"));
        let (pid, out) = run_as_pid(0, 0, Command::new("cat").arg(&p));
        assert_eq!(out.stdout, b"shared\n");
        let e = wait_for_audit(&m.audit, ev("open", &p, Some(pid)), AUDIT_TIMEOUT);
        assert_fields(
            &e,
            &[
                ("map", rule.into()),
                ("target", shared.join("f").to_str().unwrap().into()),
            ],
        );
    }
}
