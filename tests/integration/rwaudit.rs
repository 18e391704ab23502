//! Every kind of change through an rw rule is audited once, with who did it,
//! the legacy and real paths, what it changed (flags, destination, detail)
//! and its result -- failures the real filesystem decides included.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde_json::Value;

use crate::common::*;

fn tid() -> u32 {
    (unsafe { libc::gettid() }) as u32
}

struct Expect<'a> {
    op: &'a str,
    path: PathBuf,
    target: Option<PathBuf>,
    result: &'a str,
    flags: Option<&'a str>,
    dest: Option<PathBuf>,
    detail: Option<&'a str>,
}

fn e<'a>(op: &'a str, path: PathBuf, target: Option<PathBuf>, result: &'a str) -> Expect<'a> {
    Expect {
        op,
        path,
        target,
        result,
        flags: None,
        dest: None,
        detail: None,
    }
}

/// Finds the event `want` describes among `log` (same op, path, pid and
/// result, then every other field); returns what is wrong.
fn check(log: &[Value], want: &Expect<'_>, pid: u32) -> Vec<String> {
    let path_str = |x: &Option<PathBuf>| x.as_ref().map(|p| p.to_string_lossy().into_owned());
    let fields = |v: &Value| {
        [
            ("target", path_str(&want.target)),
            ("flags", want.flags.map(str::to_string)),
            ("dest", path_str(&want.dest)),
            ("detail", want.detail.map(str::to_string)),
            ("map", Some("/".to_string())),
        ]
        .into_iter()
        .filter_map(|(k, w)| {
            let got = v.get(k).and_then(Value::as_str).map(str::to_string);
            (got != w).then(|| format!("`{k}`: got {got:?}, want {w:?}"))
        })
        .collect::<Vec<_>>()
    };
    let candidates: Vec<&Value> = log
        .iter()
        .filter(|v| {
            s(v, "op") == Some(want.op)
                && s(v, "path") == want.path.to_str()
                && n(v, "pid") == Some(u64::from(pid))
                && s(v, "result") == Some(want.result)
        })
        .collect();
    let what = format!("{} {} ({})", want.op, want.path.display(), want.result);
    if candidates.is_empty() {
        return vec![format!("{what}: no such event")];
    }
    if let Some(v) = candidates.iter().find(|v| fields(v).is_empty()) {
        let mut p = audit_common_problems(v);
        if n(v, "uid") != Some(0) || n(v, "gid") != Some(0) {
            p.push("uid/gid not 0".into());
        }
        return p
            .into_iter()
            .map(|x| format!("{what}: {x}\n   {v}"))
            .collect();
    }
    candidates
        .iter()
        .map(|v| format!("{what}: {}\n   {v}", fields(v).join(", ")))
        .collect()
}

#[test]
fn every_kind_of_change_is_audited_with_its_result() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("full/x"), b"x", 0o644);
    write_file(&real.join("existing"), b"old", 0o644);
    let m = b.map_mode("/", &real, "rw").mount();
    let at = |p: &str| m.at(p);
    let rp = |p: &str| Some(real.join(p));
    let pid = tid();
    let mut want: Vec<Expect> = Vec::new();

    // create, with access flags and the requested mode
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(at("new-w"))
        .unwrap();
    want.push(Expect {
        flags: Some("w"),
        detail: Some("mode=0640"),
        ..e("create", at("new-w"), rp("new-w"), "ok")
    });
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(at("new-rw"))
        .unwrap();
    want.push(Expect {
        flags: Some("rw"),
        detail: Some("mode=0600"),
        ..e("create", at("new-rw"), rp("new-rw"), "ok")
    });
    // a write open of an existing file
    OpenOptions::new()
        .write(true)
        .open(at("existing"))
        .unwrap()
        .write_all(b"new")
        .unwrap();
    want.push(Expect {
        flags: Some("w"),
        ..e("open", at("existing"), rp("existing"), "ok")
    });
    // mkdir, mknod, symlink, link
    fs::create_dir(at("dir")).unwrap();
    want.push(e("mkdir", at("dir"), rp("dir"), "ok"));
    mkfifo(&at("fifo"), 0o600).unwrap();
    want.push(e("mknod", at("fifo"), rp("fifo"), "ok"));
    std::os::unix::fs::symlink("new-w", at("sym")).unwrap();
    want.push(e("symlink", at("sym"), rp("sym"), "ok"));
    fs::hard_link(at("new-w"), at("hard")).unwrap();
    want.push(Expect {
        dest: Some(at("hard")),
        ..e("link", at("new-w"), rp("new-w"), "ok")
    });
    // setattr: chmod, chown, truncate, utimens
    chmod(&at("new-w"), 0o600);
    want.push(Expect {
        detail: Some("mode=0600"),
        ..e("setattr", at("new-w"), rp("new-w"), "ok")
    });
    std::os::unix::fs::chown(at("new-rw"), Some(KEY_UID), Some(4343)).unwrap();
    want.push(Expect {
        detail: Some("uid=4242 gid=4343"),
        ..e("setattr", at("new-rw"), rp("new-rw"), "ok")
    });
    truncate(&at("existing"), 1).unwrap();
    want.push(Expect {
        detail: Some("size=1"),
        ..e("setattr", at("existing"), rp("existing"), "ok")
    });
    set_times(&at("fifo"), 1_000_000_000, 0);
    want.push(Expect {
        detail: Some("atime mtime"),
        ..e("setattr", at("fifo"), rp("fifo"), "ok")
    });
    // xattrs
    setxattr(&at("existing"), "user.k", b"v").unwrap();
    want.push(Expect {
        detail: Some("user.k"),
        ..e("setxattr", at("existing"), rp("existing"), "ok")
    });
    removexattr(&at("existing"), "user.k").unwrap();
    want.push(Expect {
        detail: Some("user.k"),
        ..e("removexattr", at("existing"), rp("existing"), "ok")
    });
    // rename (with its destination), unlink, rmdir
    fs::rename(at("hard"), at("dir/moved")).unwrap();
    want.push(Expect {
        dest: Some(at("dir/moved")),
        ..e("rename", at("hard"), rp("hard"), "ok")
    });
    fs::remove_file(at("dir/moved")).unwrap();
    want.push(e("unlink", at("dir/moved"), rp("dir/moved"), "ok"));
    fs::remove_dir(at("dir")).unwrap();
    want.push(e("rmdir", at("dir"), rp("dir"), "ok"));

    // Failures that only the real filesystem can decide reach the log with their errno.
    assert_errno(
        "rmdir non-empty",
        fs::remove_dir(at("full")),
        libc::ENOTEMPTY,
    );
    want.push(e("rmdir", at("full"), rp("full"), "ENOTEMPTY"));
    fs::create_dir(at("empty")).unwrap();
    want.push(e("mkdir", at("empty"), rp("empty"), "ok"));
    assert_errno(
        "rename a dir over a non-empty dir",
        fs::rename(at("empty"), at("full")),
        libc::ENOTEMPTY,
    );
    want.push(Expect {
        dest: Some(at("full")),
        ..e("rename", at("empty"), rp("empty"), "ENOTEMPTY")
    });
    setxattr(&at("existing"), "user.once", b"1").unwrap();
    want.push(Expect {
        detail: Some("user.once"),
        ..e("setxattr", at("existing"), rp("existing"), "ok")
    });
    assert_errno(
        "XATTR_CREATE on an existing attribute",
        setxattr_flags(&at("existing"), "user.once", b"2", libc::XATTR_CREATE),
        libc::EEXIST,
    );
    want.push(Expect {
        detail: Some("user.once"),
        ..e("setxattr", at("existing"), rp("existing"), "EEXIST")
    });
    assert_errno(
        "removexattr missing",
        removexattr(&at("existing"), "user.none"),
        libc::ENODATA,
    );
    want.push(Expect {
        detail: Some("user.none"),
        ..e("removexattr", at("existing"), rp("existing"), "ENODATA")
    });

    // The log is written asynchronously: wait for the last event, then check all.
    let last = want.last().unwrap();
    wait_for_audit(
        &m.audit,
        |v: &Value| s(v, "op") == Some(last.op) && s(v, "result") == Some(last.result),
        AUDIT_TIMEOUT,
    );
    let log = m.audit_lines();
    let mut problems = Vec::new();
    for w in &want {
        problems.extend(check(&log, w, pid));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Each change exactly once (no duplicate events for one syscall).
    let changes = [
        "create",
        "mkdir",
        "mknod",
        "symlink",
        "link",
        "unlink",
        "rmdir",
        "rename",
        "setxattr",
        "removexattr",
    ];
    for op in changes {
        let got = log
            .iter()
            .filter(|v| s(v, "op") == Some(op) && n(v, "pid") == Some(u64::from(pid)))
            .count();
        let expected = want.iter().filter(|w| w.op == op).count();
        assert_eq!(got, expected, "number of {op} events");
    }
}
