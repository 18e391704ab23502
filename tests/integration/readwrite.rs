//! `mode = "rw"` rules: changes reach the real tree, made with the caller's
//! own credentials and umask (the real filesystem decides), audited; names a
//! rule owns cannot be renamed or removed; ro and deny rules inside an rw
//! rule keep their meaning.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

struct Rw {
    m: Mounted,
    real: PathBuf,
    keystore: PathBuf,
}

/// `/` → real (rw), `/keys` → keystore (ro), `/keys/admin` denied.
fn rw_fixture() -> Rw {
    let b = MountBuilder::new();
    let real = b.real();
    let keystore = b.root().join("keystore");
    user_home(&real);
    write_file(&real.join("rootonly/conf"), b"root conf\n", 0o644);
    mkdir_owned(&real.join("sgid"), 0, 4343, 0o2777);
    write_file(&real.join("data/file"), b"0123456789\n", 0o644);
    write_file(&keystore.join("k"), b"key\n", 0o644);
    write_file(&keystore.join("admin/secret"), b"secret\n", 0o644);
    let m = b
        .map_mode("/", &real, "rw")
        .map("/keys", &keystore)
        .deny("/keys/admin")
        .opt("allow_other")
        .mount();
    Rw { m, real, keystore }
}

#[test]
fn changes_are_made_as_the_caller_with_its_umask() {
    skip_without_fuse!();
    let Rw { m, real, .. } = rw_fixture();
    let f = m.at("home4242/new.txt");
    let (pid, out) = run_as_pid(
        KEY_UID,
        KEY_GID,
        &mut sh(
            "umask 027 && printf data > \"$1\" && mkdir \"$2\"",
            &[&f, &m.at("home4242/sub")],
        ),
    );
    assert!(
        out.status.success(),
        "uid {KEY_UID} writing its own dir: {}",
        stderr_str(&out)
    );

    let md = fs::metadata(real.join("home4242/new.txt")).expect("file created in the real tree");
    assert_eq!(
        (md.uid(), md.gid()),
        (KEY_UID, KEY_GID),
        "owner of the new file"
    );
    assert_eq!(
        md.mode() & 0o7777,
        0o640,
        "mode of the new file (umask 027)"
    );
    assert_eq!(fs::read(real.join("home4242/new.txt")).unwrap(), b"data");
    let d = fs::metadata(real.join("home4242/sub")).expect("dir created in the real tree");
    assert_eq!(
        (d.uid(), d.gid()),
        (KEY_UID, KEY_GID),
        "owner of the new dir"
    );
    assert_eq!(d.mode() & 0o7777, 0o750, "mode of the new dir (umask 027)");

    // setgid directories work as at the real path.
    let g = m.at("sgid/inherits");
    let out = run_as(KEY_UID, KEY_GID, &mut sh("echo x > \"$1\"", &[&g]));
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert_eq!(
        fs::metadata(real.join("sgid/inherits")).unwrap().gid(),
        4343,
        "setgid dir group"
    );

    // The creation is on record, as the caller.
    let e = wait_for_audit(
        &m.audit,
        |e| {
            s(e, "path") == f.to_str()
                && n(e, "pid") == Some(u64::from(pid))
                && matches!(s(e, "op"), Some("create") | Some("open"))
        },
        AUDIT_TIMEOUT,
    );
    assert_eq!(n(&e, "uid"), Some(u64::from(KEY_UID)), "{e}");
    assert_eq!(s(&e, "result"), Some("ok"), "{e}");
    assert_eq!(
        s(&e, "target"),
        real.join("home4242/new.txt").to_str(),
        "{e}"
    );
}

#[test]
fn real_permissions_decide_for_other_users() {
    skip_without_fuse!();
    let Rw { m, real, .. } = rw_fixture();
    let before = snapshot(&real.join("rootonly"));
    let attempts: &[(&str, &str)] = &[
        ("create in root's dir", "echo x > \"$1/new\""),
        ("append to root's file", "echo x >> \"$1/conf\""),
        ("remove root's file", "rm -f \"$1/conf\""),
        ("mkdir in root's dir", "mkdir \"$1/d\""),
        ("chmod root's file", "chmod 777 \"$1/conf\""),
        ("rename root's file", "mv \"$1/conf\" \"$1/conf2\""),
    ];
    let dir = m.at("rootonly");
    let mut problems = Vec::new();
    for (what, script) in attempts {
        let out = run_as(NOBODY, NOBODY, &mut sh(script, &[&dir]));
        let err = stderr_str(&out);
        if out.status.success() {
            problems.push(format!("{what}: succeeded as uid {NOBODY}"));
        } else if !(err.contains("Permission denied") || err.contains("Operation not permitted")) {
            problems.push(format!("{what}: unexpected error {err:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_same_snapshot(&before, &snapshot(&real.join("rootonly")));
}

#[test]
fn every_kind_of_change_reaches_the_real_tree() {
    skip_without_fuse!();
    let Rw { m, real, .. } = rw_fixture();
    let d = |p: &str| m.at(&format!("data/{p}"));
    let r = |p: &str| real.join("data").join(p);

    fs::write(d("created"), b"created\n").unwrap();
    assert_eq!(
        fs::read(r("created")).unwrap(),
        b"created\n",
        "create+write"
    );
    fs::OpenOptions::new()
        .append(true)
        .open(d("created"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    assert_eq!(
        fs::read(r("created")).unwrap(),
        b"created\nappended\n",
        "append"
    );
    let f = fs::OpenOptions::new().write(true).open(d("file")).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"AB", 2).unwrap();
    drop(f);
    assert_eq!(fs::read(r("file")).unwrap(), b"01AB456789\n", "pwrite");
    truncate(&d("file"), 4).unwrap();
    assert_eq!(fs::read(r("file")).unwrap(), b"01AB", "truncate");
    fs::create_dir(d("dir")).unwrap();
    assert!(r("dir").is_dir(), "mkdir");
    std::os::unix::fs::symlink("../elsewhere", d("link")).unwrap();
    assert_eq!(
        fs::read_link(r("link")).unwrap(),
        PathBuf::from("../elsewhere"),
        "symlink"
    );
    fs::hard_link(d("created"), d("hard")).unwrap();
    assert_eq!(
        fs::metadata(r("hard")).unwrap().ino(),
        fs::metadata(r("created")).unwrap().ino(),
        "link"
    );
    fs::rename(d("hard"), d("dir/moved")).unwrap();
    assert!(r("dir/moved").exists() && !r("hard").exists(), "rename");
    fs::set_permissions(d("created"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(r("created")).unwrap().mode() & 0o7777,
        0o600,
        "chmod"
    );
    std::os::unix::fs::chown(d("created"), Some(KEY_UID), Some(4343)).unwrap();
    let md = fs::metadata(r("created")).unwrap();
    assert_eq!((md.uid(), md.gid()), (KEY_UID, 4343), "chown");
    set_times(&d("created"), 1_300_000_000, 42);
    let md = fs::metadata(r("created")).unwrap();
    assert_eq!(
        (md.mtime(), md.mtime_nsec()),
        (1_300_000_000, 42),
        "utimens"
    );
    setxattr(&d("created"), "user.rw", b"yes").unwrap();
    assert_eq!(
        getxattr(&r("created"), "user.rw").unwrap(),
        b"yes",
        "setxattr"
    );
    removexattr(&d("created"), "user.rw").unwrap();
    assert_errno(
        "removexattr",
        getxattr(&r("created"), "user.rw"),
        libc::ENODATA,
    );
    mkfifo(&d("fifo"), 0o600).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(
            &fs::symlink_metadata(r("fifo")).unwrap().file_type()
        ),
        "mkfifo"
    );
    fs::remove_file(d("dir/moved")).unwrap();
    assert!(!r("dir/moved").exists(), "unlink");
    fs::remove_dir(d("dir")).unwrap();
    assert!(!r("dir").exists(), "rmdir");
    // What the mount shows agrees with the real tree.
    assert_eq!(fs::read(d("created")).unwrap(), b"created\nappended\n");
    assert_eq!(fs::metadata(d("file")).unwrap().len(), 4);
}

#[test]
fn names_owned_by_rules_cannot_be_renamed_or_removed() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let app = b.root().join("app");
    mkdir_p(&app);
    mkdir_p(&real.join("srv"));
    mkdir_p(&real.join("keys"));
    let keystore = b.root().join("keystore");
    mkdir_p(&keystore);
    let m = b
        .map_mode("/", &real, "rw")
        .map_mode("/srv/app", &app, "rw")
        .map_mode("/keys", &keystore, "rw")
        .mount();
    let snap = || {
        [
            snapshot(&app),
            snapshot(&keystore),
            snapshot(&real.join("srv")),
            snapshot(&real.join("keys")),
        ]
    };
    let before = snap();
    let mut p = Vec::new();
    p.extend(errno_problems! { libc::EBUSY;
        "rename /keys" => fs::rename(m.at("keys"), m.at("k2")),
        "rmdir /keys" => fs::remove_dir(m.at("keys")),
        "rename /srv (parent of a from)" => fs::rename(m.at("srv"), m.at("s2")),
        "rmdir /srv/app" => fs::remove_dir(m.at("srv/app")),
        "rename over /keys" =>
            fs::create_dir(m.at("other")).and_then(|_| fs::rename(m.at("other"), m.at("keys"))),
    });
    assert!(p.is_empty(), "{}", p.join("\n"));
    for (b, a) in before.iter().zip(snap().iter()) {
        assert_same_snapshot(b, a);
    }
}

#[test]
fn ro_and_deny_rules_inside_rw_rule_keep_their_meaning() {
    skip_without_fuse!();
    let Rw { m, real, keystore } = rw_fixture();
    let before = snapshot(&keystore);
    assert_errno(
        "write under ro /keys",
        fs::write(m.at("keys/k"), b"x"),
        libc::EROFS,
    );
    assert_errno(
        "create under ro /keys",
        fs::write(m.at("keys/new"), b"x"),
        libc::EROFS,
    );
    assert_errno(
        "mkdir under ro /keys",
        fs::create_dir(m.at("keys/d")),
        libc::EROFS,
    );
    assert_errno(
        "create under deny",
        fs::write(m.at("keys/admin/new"), b"x"),
        libc::EACCES,
    );
    assert_errno(
        "remove under deny",
        fs::remove_file(m.at("keys/admin/secret")),
        libc::EACCES,
    );
    assert_same_snapshot(&before, &snapshot(&keystore));
    // ... while the rw rule next to them writes.
    fs::write(m.at("data/ok"), b"ok").unwrap();
    assert_eq!(fs::read(real.join("data/ok")).unwrap(), b"ok");
    // Cross-rule rename/link cannot silently copy: EXDEV (or refused).
    let r = fs::rename(m.at("data/ok"), m.at("keys/ok"));
    assert!(
        r.is_err(),
        "rename from an rw rule into an ro rule succeeded"
    );
    assert!(!keystore.join("ok").exists());
}

#[test]
fn successful_changes_are_audited() {
    skip_without_fuse!();
    let Rw { m, real, .. } = rw_fixture();
    let dir = m.at("data/newdir");
    let (pid, out) = run_as_pid(0, 0, Command::new("mkdir").arg(&dir));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let e = wait_for_audit(&m.audit, ev("mkdir", &dir, Some(pid)), AUDIT_TIMEOUT);
    assert_eq!(s(&e, "result"), Some("ok"), "{e}");
    assert_eq!(s(&e, "target"), real.join("data/newdir").to_str(), "{e}");

    let from = m.at("data/file");
    let to = m.at("data/renamed");
    let (pid, out) = run_as_pid(0, 0, Command::new("mv").arg(&from).arg(&to));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let e = wait_for_audit(&m.audit, ev("rename", &from, Some(pid)), AUDIT_TIMEOUT);
    assert_eq!(s(&e, "result"), Some("ok"), "{e}");
    let dest = e.get("dest").map(|d| d.to_string()).unwrap_or_default();
    assert!(
        dest.contains("renamed"),
        "rename event names its destination: {e}"
    );

    let (pid, out) = run_as_pid(0, 0, Command::new("rm").arg(&to));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let e = wait_for_audit(&m.audit, ev("unlink", &to, Some(pid)), AUDIT_TIMEOUT);
    assert_eq!(s(&e, "result"), Some("ok"), "{e}");
}
