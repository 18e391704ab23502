//! The audit line of a refusal says whose decision it was: relocfs's own refusals (a deny
//! rule, a read-only rule, a virtual directory, a name a rule owns) carry a `reason`; what
//! the real filesystem refused carries none, so the two never look alike.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// The audit line of `op` on `path` with `result`, waited for.
#[track_caller]
fn line(m: &Mounted, op: &str, path: &Path, result: &str) -> Value {
    wait_for_audit(
        &m.audit,
        |e| ev(op, path, None)(e) && s(e, "result") == Some(result),
        AUDIT_TIMEOUT,
    )
}

#[test]
fn a_deny_rule_and_the_real_permissions_leave_different_audit_lines() {
    skip_without_fuse!();
    // Attributes cached for a minute: the kernel checks an open against the mode it knows.
    let b = MountBuilder::new().extra("[fuse]\nattr_timeout = 60.0\nentry_timeout = 60.0\n");
    let real = b.real();
    write_file(&real.join("keys/admin/id_rsa"), b"admin key\n", 0o644);
    write_file(&real.join("secret"), b"secret\n", 0o644);
    let m = b
        .map("/", &real)
        .deny("/keys/admin")
        .opt("allow_other")
        .mount();

    // relocfs refuses: a deny rule.
    assert_errno(
        "read below a deny rule",
        fs::read(m.at("keys/admin/id_rsa")),
        libc::EACCES,
    );
    // The real filesystem refuses: the kernel still knows the file as 0644 and lets the open
    // through, and the daemon, opening as the caller, meets the real 0600.
    let secret = m.at("secret");
    fs::metadata(&secret).unwrap();
    chmod(&real.join("secret"), 0o600);
    let out = run_as(NOBODY, NOBODY, Command::new("cat").arg(&secret));
    assert!(
        !out.status.success(),
        "uid {NOBODY} read a 0600 file of root"
    );
    assert!(
        stderr_str(&out).contains("Permission denied"),
        "{}",
        stderr_str(&out)
    );

    let denied = line(&m, "lookup", &m.at("keys/admin"), "EACCES");
    let refused = wait_for_audit(
        &m.audit,
        |e| {
            ev("open", &secret, None)(e)
                && n(e, "uid") == Some(u64::from(NOBODY))
                && s(e, "result") == Some("EACCES")
        },
        AUDIT_TIMEOUT,
    );
    assert_eq!(s(&denied, "reason"), Some("deny rule"), "{denied}");
    assert_eq!(
        refused.get("reason"),
        None,
        "the real filesystem's refusal is not relocfs's: {refused}"
    );
}

#[test]
fn each_refusal_of_relocfs_names_its_reason() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let root = b.root();
    let rw = b.real();
    let owned = root.join("owned");
    let ro = root.join("ro");
    mkdir_p(&owned);
    write_file(&ro.join("file"), b"read only\n", 0o644);
    // "/" and "/app" are virtual; "/app/rw/owned" is a rule's name inside a rw rule.
    let m = b
        .map_mode("/app/rw", &rw, "rw")
        .map_mode("/app/rw/owned", &owned, "rw")
        .map_mode("/app/ro", &ro, "ro")
        .mount();

    assert_errno(
        "write open below a read-only rule",
        fs::OpenOptions::new().write(true).open(m.at("app/ro/file")),
        libc::EROFS,
    );
    assert_errno(
        "mkdir in a virtual directory",
        fs::create_dir(m.at("app/new")),
        libc::EROFS,
    );
    assert_errno(
        "rmdir of a rule's name",
        fs::remove_dir(m.at("app/rw/owned")),
        libc::EBUSY,
    );
    assert_errno(
        "lookup of a name no rule has, in a virtual directory",
        fs::metadata(m.at("app/nosuch")),
        libc::ENOENT,
    );
    assert_errno(
        "lookup of a name the real directory lacks",
        fs::metadata(m.at("app/rw/nosuch")),
        libc::ENOENT,
    );

    let cases = [
        ("open", "app/ro/file", "EROFS", Some("read-only rule")),
        ("mkdir", "app/new", "EROFS", Some("virtual directory")),
        ("rmdir", "app/rw/owned", "EBUSY", Some("rule-owned name")),
        ("lookup", "app/nosuch", "ENOENT", Some("virtual directory")),
        ("lookup", "app/rw/nosuch", "ENOENT", None),
    ];
    let mut wrong = Vec::new();
    for (op, path, result, reason) in cases {
        let l = line(&m, op, &m.at(path), result);
        if s(&l, "reason") != reason {
            wrong.push(format!("{op} {path}: want reason {reason:?}, got {l}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
