//! Direct tests of the core that used to need a mount: lookup counts and forget, stable
//! readdir offsets, EROFS for every change under a read-only rule, EACCES for deny rules, and
//! the longest-prefix examples walked through `lookup`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use relocfs::audit::AuditLog;
use relocfs::fs::{Fs, SetAttr};
use relocfs::node::ROOT_ID;

use crate::fixture::{
    build, build_with_log, forget_all, getattr, list, list_handle, lookup, me, names, read_all,
    walk, Listed, RuleSpec,
};

fn mkdirs(root: &Path, dirs: &[&str]) {
    fs::create_dir_all(root).expect("mkdir");
    for d in dirs {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
}

fn write(root: &Path, file: &str, data: &str) {
    fs::write(root.join(file), data).expect("write");
}

fn os(name: &str) -> &OsStr {
    OsStr::new(name)
}

/// The id of `path`, looked up from the root (its lookups are left held).
fn id_of(fs_: &Fs, path: &str) -> u64 {
    match walk(fs_, path) {
        (_, Ok(seen)) => seen.id,
        (_, Err(e)) => panic!("{path}: errno {e}"),
    }
}

#[test]
fn forget_brings_the_node_count_back() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = tmp.path().join("t0");
    let t1 = tmp.path().join("t1");
    mkdirs(&t0, &["d/e"]);
    mkdirs(&t1, &[]);
    write(&t0, "d/e/f", "data");
    fs::hard_link(t0.join("d/e/f"), t0.join("d/e/g")).unwrap();
    let fs_ = build(&[RuleSpec::ro("/", &t0), RuleSpec::ro("/srv/app", &t1)]);
    assert_eq!(fs_.node_count(), 1, "the root alone");

    let (ids, seen) = walk(&fs_, "/d/e/f");
    let f = seen.unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(fs_.node_count(), 4);
    // The same object again, and under its other name: one node, more lookups on it.
    let e = ids[1];
    assert_eq!(lookup(&fs_, e, os("f")).unwrap().id, f.id);
    assert_eq!(lookup(&fs_, e, os("g")).unwrap().id, f.id);
    assert_eq!(fs_.node_count(), 4);
    // Three lookups on the file: it goes with the third forget, not before.
    fs_.forget(f.id, 2);
    assert_eq!(fs_.node_count(), 4);
    assert!(getattr(&fs_, f.id).is_ok());
    fs_.forget(f.id, 1);
    assert_eq!(fs_.node_count(), 3);
    assert_eq!(
        getattr(&fs_, f.id),
        Err(libc::EBADF),
        "a forgotten id is gone"
    );
    forget_all(&fs_, &ids[..2]);
    assert_eq!(fs_.node_count(), 1);

    // Virtual directories and rule roots are counted and freed the same way.
    let (ids, seen) = walk(&fs_, "/srv/app");
    assert!(seen.is_ok());
    assert_eq!(fs_.node_count(), 3);
    forget_all(&fs_, &ids);
    assert_eq!(fs_.node_count(), 1);

    // readdirplus counts one lookup per entry but `.` and `..`.
    let d = id_of(&fs_, "/d");
    let dir_e = lookup(&fs_, d, os("e")).unwrap().id;
    let fh = fs_.opendir(me(), dir_e, libc::O_RDONLY).unwrap().fh;
    let mut plus = Vec::new();
    fs_.readdirplus(fh, 0, |entry, _, attr| {
        if entry.name != "." && entry.name != ".." {
            plus.push(attr.id);
        }
        false
    })
    .unwrap();
    fs_.releasedir(fh);
    assert_eq!(plus, [f.id, f.id], "f and g, one node");
    assert_eq!(fs_.node_count(), 4);
    fs_.forget(f.id, 2);
    forget_all(&fs_, &[dir_e, d]);
    assert_eq!(fs_.node_count(), 1);

    // Forgetting more than was looked up, an unknown id, or the root is harmless.
    fs_.forget(ROOT_ID, 1000);
    fs_.forget(f.id, 5);
    fs_.forget(u64::MAX, 1);
    assert_eq!(fs_.node_count(), 1);
    assert!(getattr(&fs_, ROOT_ID).is_ok());
    assert_eq!(walk(&fs_, "/d/e/f").1.unwrap().ino, f.ino);
}

/// Lists `id` whole, then again in every way the kernel may: through other handles, in small
/// buffers, and resuming at each entry's offset (on the same and on a fresh handle).
fn check_offsets(fs_: &Fs, id: u64) -> Vec<Listed> {
    let full = list(fs_, id);
    assert_eq!(list(fs_, id), full, "a second handle lists the same");
    let fh = fs_.opendir(me(), id, libc::O_RDONLY).unwrap().fh;
    for chunk in [1, 2, 3, 7] {
        assert_eq!(list_handle(fs_, fh, 0, chunk), full, "in chunks of {chunk}");
    }
    for (i, entry) in full.iter().enumerate() {
        assert_eq!(
            list_handle(fs_, fh, entry.next, usize::MAX),
            full[i + 1..],
            "resumed after {:?} on the same handle",
            entry.name
        );
        let fresh = fs_.opendir(me(), id, libc::O_RDONLY).unwrap().fh;
        assert_eq!(
            list_handle(fs_, fresh, entry.next, 2),
            full[i + 1..],
            "resumed after {:?} on a fresh handle",
            entry.name
        );
        fs_.releasedir(fresh);
    }
    // Offset 0 rewinds, after any of that.
    assert_eq!(list_handle(fs_, fh, 0, usize::MAX), full);
    fs_.releasedir(fh);
    let offsets: std::collections::BTreeSet<u64> = full.iter().map(|e| e.next).collect();
    assert_eq!(offsets.len(), full.len(), "every entry has its own offset");
    assert!(!offsets.contains(&0), "no entry resumes at the start");
    full
}

#[test]
fn readdir_offsets_are_stable_across_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = tmp.path().join("t0");
    let t1 = tmp.path().join("t1");
    mkdirs(&t0, &["x", "sub"]);
    mkdirs(&t1, &[]);
    for i in 0..40 {
        write(&t0, &format!("f{i:02}"), "");
    }
    let fs_ = build(&[
        RuleSpec::ro("/", &t0),
        RuleSpec::ro("/x", &t1),
        RuleSpec::deny("/y"),
        RuleSpec::ro("/srv/a", &t1),
        RuleSpec::ro("/srv/b/c", &t1),
    ]);
    // A real directory with the rules' names after its own: "x" is listed once, as the rule.
    let root = check_offsets(&fs_, ROOT_ID);
    let mut got = names(&root);
    got.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
    want.extend([".", "..", "srv", "sub", "x", "y"].map(String::from));
    want.sort();
    assert_eq!(got, want.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
    let tail: Vec<&[u8]> = names(&root[root.len() - 3..]);
    assert_eq!(
        tail,
        [&b"srv"[..], b"x", b"y"],
        "the rules' names come last, sorted"
    );
    // A virtual directory.
    let srv = id_of(&fs_, "/srv");
    let listed = check_offsets(&fs_, srv);
    assert_eq!(names(&listed), [&b"."[..], b"..", b"a", b"b"]);
    // A real directory below a virtual one, with no rules' names in it.
    let sub = id_of(&fs_, "/sub");
    for i in 0..10 {
        write(&t0, &format!("sub/n{i}"), "");
    }
    assert_eq!(check_offsets(&fs_, sub).len(), 12);
}

/// What a directory holds, for checking that refused changes changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, u32, u64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let data = if meta.is_file() {
                fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            all.push((path.display().to_string(), meta.mode(), meta.len(), data));
        }
    }
    all.sort();
    all
}

/// Every change op through `dir` (and its entries `file` and `sub`), each answer collected.
fn try_changes(fs_: &Fs, dir: u64, file: u64, sub: u64, other_dir: u64) -> Vec<(&str, i32)> {
    let c = me();
    let err = |r: Result<(), relocfs::fs::Error>| match r {
        Ok(()) => 0,
        Err(e) => e.errno(),
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let mut answers = vec![
        (
            "create",
            err(fs_
                .create(c, dir, os("new"), 0o644, 0o022, flags)
                .map(|_| ())),
        ),
        (
            "mkdir",
            err(fs_.mkdir(c, dir, os("newdir"), 0o755, 0o022).map(|_| ())),
        ),
        (
            "mknod",
            err(fs_
                .mknod(c, dir, os("fifo"), libc::S_IFIFO | 0o644, 0o022, 0)
                .map(|_| ())),
        ),
        (
            "symlink",
            err(fs_.symlink(c, dir, os("ln"), os("f")).map(|_| ())),
        ),
        ("link", err(fs_.link(c, file, dir, os("hard")).map(|_| ()))),
        ("unlink", err(fs_.unlink(c, dir, os("f")))),
        ("rmdir", err(fs_.rmdir(c, dir, os("empty")))),
        ("rename", err(fs_.rename(c, dir, os("f"), dir, os("f2"), 0))),
        (
            "rename out",
            err(fs_.rename(c, dir, os("f"), other_dir, os("moved"), 0)),
        ),
        (
            "rename in",
            err(fs_.rename(c, other_dir, os("w"), dir, os("moved"), 0)),
        ),
    ];
    let changes = [
        (
            "setattr mode",
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        ),
        (
            "setattr size",
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        ),
        (
            "setattr mtime",
            SetAttr {
                mtime: Some(Some((1, 0))),
                ..SetAttr::default()
            },
        ),
        (
            "setattr owner",
            SetAttr {
                uid: Some(me().uid),
                ..SetAttr::default()
            },
        ),
    ];
    for (op, change) in changes {
        answers.push((op, err(fs_.setattr(c, file, change).map(|_| ()))));
    }
    answers.push((
        "setattr dir",
        err(fs_
            .setattr(
                c,
                sub,
                SetAttr {
                    mode: Some(0o700),
                    ..SetAttr::default()
                },
            )
            .map(|_| ())),
    ));
    for (op, flags) in [
        ("open wronly", libc::O_WRONLY),
        ("open rdwr", libc::O_RDWR),
        ("open trunc", libc::O_RDONLY | libc::O_TRUNC),
    ] {
        let r = fs_.open(c, file, flags).map(|o| fs_.release(o.fh));
        answers.push((op, err(r)));
    }
    answers
}

#[test]
fn read_only_rules_refuse_every_change_with_erofs() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    let rw = tmp.path().join("rw");
    for t in [&ro, &rw] {
        mkdirs(t, &["d/empty", "d/sub"]);
        write(t, "d/f", "keep");
        write(t, "d/w", "other");
    }
    let fs_ = build(&[
        RuleSpec::ro("/", &ro),
        RuleSpec::rw("/rw", &rw),
        RuleSpec::ro("/srv/app", &ro),
    ]);
    let before = snapshot(&ro);
    let d = id_of(&fs_, "/d");
    let f = lookup(&fs_, d, os("f")).unwrap().id;
    let sub = lookup(&fs_, d, os("sub")).unwrap().id;
    let rw_d = id_of(&fs_, "/rw/d");
    for (op, errno) in try_changes(&fs_, d, f, sub, rw_d) {
        assert_eq!(errno, libc::EROFS, "{op} under a read-only rule");
    }
    // The same in the rule root itself, and in a virtual directory.
    assert_eq!(
        fs_.mkdir(me(), ROOT_ID, os("x"), 0o755, 0o022)
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::EROFS),
        "mkdir in a read-only rule's root"
    );
    let srv = id_of(&fs_, "/srv");
    assert_eq!(
        fs_.mkdir(me(), srv, os("x"), 0o755, 0o022)
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::EROFS),
        "mkdir in a virtual directory"
    );
    assert_eq!(
        fs_.setattr(
            me(),
            srv,
            SetAttr {
                mode: Some(0o777),
                ..SetAttr::default()
            }
        )
        .map(|_| ())
        .map_err(|e| e.errno()),
        Err(libc::EROFS),
        "chmod of a virtual directory"
    );
    assert_eq!(
        snapshot(&ro),
        before,
        "nothing changed under the read-only rule"
    );
    assert_eq!(read_all(&fs_, f), Ok(b"keep".to_vec()));

    // The control: the same calls on the read-write rule pass the rule check, but the
    // renames across to the read-only rule (either way round).
    let rw_f = lookup(&fs_, rw_d, os("f")).unwrap().id;
    let rw_sub = lookup(&fs_, rw_d, os("sub")).unwrap().id;
    for (op, errno) in try_changes(&fs_, rw_d, rw_f, rw_sub, d) {
        match op {
            "rename in" | "rename out" => assert_eq!(errno, libc::EROFS, "{op}: across rules"),
            // "f" is unlinked before the rename tries to move it.
            "rename" if errno == libc::ENOENT => {}
            "mknod" if errno == libc::EPERM => {}
            _ => assert_ne!(errno, libc::EROFS, "{op} under a read-write rule"),
        }
    }
    assert!(rw.join("d/new").exists() && rw.join("d/newdir").is_dir());
    assert!(!rw.join("d/empty").exists());
}

#[test]
fn deny_rules_answer_eacces() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = tmp.path().join("t0");
    let keys = tmp.path().join("keys");
    mkdirs(&t0, &["secret", "keys"]);
    write(&t0, "secret/token", "t0 secret");
    mkdirs(&keys, &["admin", "host"]);
    write(&keys, "admin/id_rsa", "admin key");
    write(&keys, "host/id_rsa", "host key");
    let fs_ = build(&[
        RuleSpec::rw("/", &t0),
        RuleSpec::deny("/secret"),
        RuleSpec::ro("/keys", &keys),
        RuleSpec::deny("/keys/admin"),
    ]);
    assert_eq!(walk(&fs_, "/secret"), (vec![], Err(libc::EACCES)));
    let (keys_ids, seen) = walk(&fs_, "/keys/admin");
    assert_eq!(seen, Err(libc::EACCES));
    // Nothing below a deny rule is reachable, and a refused lookup leaves no node behind.
    let (ids, seen) = walk(&fs_, "/keys/admin/id_rsa");
    assert_eq!(seen, Err(libc::EACCES));
    assert_eq!(ids.len(), 1, "only /keys was found");
    forget_all(&fs_, &ids);
    forget_all(&fs_, &keys_ids);
    assert_eq!(fs_.node_count(), 1);
    // The denied names are listed, and readdirplus sends them without attributes (id 0),
    // so every access to them still comes to the core.
    let listed = list(&fs_, ROOT_ID);
    assert!(names(&listed).contains(&&b"secret"[..]));
    assert_eq!(listed.iter().filter(|e| e.name == "secret").count(), 1);
    let fh = fs_.opendir(me(), ROOT_ID, libc::O_RDONLY).unwrap().fh;
    let mut denied = Vec::new();
    fs_.readdirplus(fh, 0, |entry, _, attr| {
        if attr.id == 0 {
            denied.push(entry.name.as_bytes().to_vec());
        } else if entry.name != "." && entry.name != ".." {
            fs_.forget(attr.id, 1);
        }
        false
    })
    .unwrap();
    fs_.releasedir(fh);
    assert_eq!(denied, [b"secret".to_vec()]);
    assert_eq!(fs_.node_count(), 1);
    // A change naming a denied entry is refused too (the rule owns the name).
    assert_eq!(
        fs_.unlink(me(), ROOT_ID, os("secret"))
            .map_err(|e| e.errno()),
        Err(libc::EBUSY)
    );
    assert!(t0.join("secret/token").exists());
}

/// The examples of the prefix table (src/prefix.rs) walked through `lookup`: the longest
/// prefix wins, by whole components only.
#[test]
fn longest_prefix_wins_through_lookups() {
    let tmp = tempfile::tempdir().unwrap();
    let opt = tmp.path().join("opt");
    let keys = tmp.path().join("keys");
    mkdirs(&opt, &["bin", "keys/host"]);
    write(&opt, "bin/ls", "ls");
    write(&opt, "keys/host/id_rsa", "shadowed");
    mkdirs(&keys, &["host", "admin"]);
    write(&keys, "host/id_rsa", "real key");
    write(&keys, "admin/id_rsa", "admin key");
    let fs_ = build(&[
        RuleSpec::ro("/", &opt),
        RuleSpec::ro("/keys", &keys),
        RuleSpec::deny("/keys/admin"),
    ]);
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(getattr(&fs_, ROOT_ID).unwrap().ino, ino(&opt));
    let content = |path| read_all(&fs_, id_of(&fs_, path));
    assert_eq!(content("/bin/ls"), Ok(b"ls".to_vec()));
    assert_eq!(walk(&fs_, "/keys").1.unwrap().ino, ino(&keys));
    assert_eq!(content("/keys/host/id_rsa"), Ok(b"real key".to_vec()));
    assert_eq!(walk(&fs_, "/keys/admin").1, Err(libc::EACCES));
    assert_eq!(walk(&fs_, "/keys/admin/id_rsa").1, Err(libc::EACCES));

    // Whole components only: "/keysafe" and "/key" are not below "/keys".
    let only_keys = build(&[RuleSpec::ro("/keys", &keys)]);
    assert_eq!(
        walk(&only_keys, "/keys/host").1.unwrap().ino,
        ino(&keys.join("host"))
    );
    assert_eq!(walk(&only_keys, "/keysafe").1, Err(libc::ENOENT));
    assert_eq!(walk(&only_keys, "/keysafe/a").1, Err(libc::ENOENT));
    assert_eq!(walk(&only_keys, "/key").1, Err(libc::ENOENT));
    let root = getattr(&only_keys, ROOT_ID).unwrap();
    assert_eq!(
        root.mode,
        libc::S_IFDIR | 0o555,
        "no rule on /: a virtual root"
    );
    assert_eq!(
        names(&list(&only_keys, ROOT_ID)),
        [&b"."[..], b"..", b"keys"]
    );

    // Intermediates are virtual; names beside a deeper rule do not exist.
    let deep = build(&[RuleSpec::ro("/srv/app/data", &keys)]);
    assert_eq!(
        walk(&deep, "/srv/app").1.unwrap().mode,
        libc::S_IFDIR | 0o555
    );
    assert_eq!(walk(&deep, "/srv/other").1, Err(libc::ENOENT));
    assert_eq!(
        walk(&deep, "/srv/app/data/host").1.unwrap().ino,
        ino(&keys.join("host"))
    );
    // A deny rule on "/" leaves an empty virtual root; other rules stay reachable.
    let denied_root = build(&[RuleSpec::deny("/"), RuleSpec::ro("/keys", &keys)]);
    assert_eq!(
        names(&list(&denied_root, ROOT_ID)),
        [&b"."[..], b"..", b"keys"]
    );
    assert_eq!(walk(&denied_root, "/bin").1, Err(libc::ENOENT));
    assert_eq!(walk(&denied_root, "/keys").1.unwrap().ino, ino(&keys));
}

/// A symlink is served as itself: its target is read, never followed by a lookup.
#[test]
fn symlinks_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = tmp.path().join("t0");
    mkdirs(&t0, &["dir"]);
    write(&t0, "dir/file", "x");
    std::os::unix::fs::symlink("dir", t0.join("ln")).unwrap();
    std::os::unix::fs::symlink("/", t0.join("abs")).unwrap();
    let fs_ = build(&[RuleSpec::ro("/", &t0)]);
    let ln = walk(&fs_, "/ln").1.unwrap();
    assert_eq!(ln.format(), libc::S_IFLNK);
    assert_eq!(
        fs_.readlink(me(), ln.id).map_err(|e| e.errno()),
        Ok(b"dir".to_vec())
    );
    assert_eq!(walk(&fs_, "/ln/file").1, Err(libc::ENOTDIR));
    assert_eq!(walk(&fs_, "/abs/etc").1, Err(libc::ENOTDIR));
    assert_eq!(
        fs_.open(me(), ln.id, libc::O_RDONLY)
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::EPERM)
    );
}

/// The core audits its refusals itself, with the legacy path and the rule that decided.
#[test]
fn refusals_are_audited_with_their_legacy_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = tmp.path().join("t0");
    let keys = tmp.path().join("keys");
    mkdirs(&t0, &[]);
    mkdirs(&keys, &["admin"]);
    write(&t0, "f", "x");
    let log = tmp.path().join("log/audit.jsonl");
    let fs_ = build_with_log(
        &[
            RuleSpec::ro("/", &t0),
            RuleSpec::ro("/keys", &keys),
            RuleSpec::deny("/keys/admin"),
        ],
        AuditLog::open(&log, 64).unwrap(),
    );
    assert_eq!(walk(&fs_, "/keys/admin").1, Err(libc::EACCES));
    assert_eq!(walk(&fs_, "/missing").1, Err(libc::ENOENT));
    let f = id_of(&fs_, "/f");
    let wrote = fs_
        .open(me(), f, libc::O_WRONLY)
        .map(|_| ())
        .map_err(|e| e.errno());
    assert_eq!(wrote, Err(libc::EROFS));
    let made = fs_.mkdir(me(), ROOT_ID, os("new"), 0o755, 0o022);
    assert_eq!(made.map(|_| ()).map_err(|e| e.errno()), Err(libc::EROFS));
    assert_eq!(read_all(&fs_, f), Ok(b"x".to_vec()));
    // Dropping the core drops the log, which writes out everything queued.
    drop(fs_);
    let text = fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |op: &str, path: &str| {
        events
            .iter()
            .find(|e| e["op"] == op && e["path"] == path)
            .unwrap_or_else(|| panic!("no {op} {path} in\n{text}"))
    };
    let denied = find("lookup", "/legacy/keys/admin");
    assert_eq!(denied["result"], "EACCES");
    assert_eq!(denied["map"], "/keys/admin");
    assert_eq!(denied["uid"], me().uid);
    assert_eq!(find("lookup", "/legacy/missing")["result"], "ENOENT");
    assert_eq!(find("mkdir", "/legacy/new")["result"], "EROFS");
    let opens: Vec<_> = events
        .iter()
        .filter(|e| e["op"] == "open" && e["path"] == "/legacy/f")
        .map(|e| (e["flags"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(opens, [("w", "EROFS"), ("r", "ok")]);
}

/// Identity is (rule, device, inode): a hard link seen twice under one rule is one node, the
/// same file under a read-only and a read-write rule is two, each with its own rule's rights.
#[test]
fn one_file_under_two_rules_is_two_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    mkdirs(&t, &[]);
    write(&t, "f", "shared");
    fs::hard_link(t.join("f"), t.join("g")).unwrap();
    let fs_ = build(&[RuleSpec::ro("/ro", &t), RuleSpec::rw("/rw", &t)]);
    let real = fs::metadata(t.join("f")).unwrap().ino();
    let ro_f = walk(&fs_, "/ro/f").1.unwrap();
    let ro_g = walk(&fs_, "/ro/g").1.unwrap();
    let rw_f = walk(&fs_, "/rw/f").1.unwrap();
    assert_eq!(ro_f.id, ro_g.id, "a hard link under one rule is one node");
    assert_ne!(ro_f.id, rw_f.id, "one file under two rules is two nodes");
    assert_eq!(ro_f.ino, real, "the first keeps the real inode number");
    let open_w = |id| {
        fs_.open(me(), id, libc::O_WRONLY)
            .map(|o| fs_.release(o.fh))
    };
    assert_eq!(open_w(ro_f.id).map_err(|e| e.errno()), Err(libc::EROFS));
    assert_eq!(open_w(rw_f.id).map_err(|e| e.errno()), Ok(()));
    assert_eq!(read_all(&fs_, rw_f.id), Ok(b"shared".to_vec()));
}

/// An open that fails after its handle slot was taken from the caller's share (here: the
/// thread cannot take the caller's identity) gives the slot back, so failing opens never use
/// up a uid's share of the daemon's handles, nor the part all users share.
#[test]
fn failed_opens_give_their_handle_slot_back() {
    if me().uid != 0 {
        eprintln!("SKIP: switching to another uid needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t0 = tmp.path().join("t0");
    mkdirs(&t0, &[""]);
    write(&t0, "f", "data");
    let fs_ = std::sync::Arc::new(build(&[RuleSpec::ro("/", &t0)]));
    let id = id_of(&fs_, "/f");
    let user = relocfs::fs::Caller {
        pid: std::process::id(),
        uid: 4242,
        gid: 4242,
    };
    // More attempts than any share at the fd limits this runs under (at most 20,000 here).
    const ATTEMPTS: usize = 25_000;
    let failing = std::sync::Arc::clone(&fs_);
    let failed = std::thread::spawn(move || {
        // Without CAP_SETUID (bit 7) this thread cannot switch its fsuid to the user's.
        let mut caps = relocfs::sys::creds::Caps::get().expect("capget");
        caps.effective[0] &= !(1 << 7);
        caps.set().expect("capset");
        (0..ATTEMPTS)
            // O_NOATIME by a non-owner: an open made as the caller (a plain read-only open of
            // a world-readable file is made without switching, see `Fs::open`).
            .filter(|_| {
                failing
                    .open(user, id, libc::O_RDONLY | libc::O_NOATIME)
                    .is_err()
            })
            .count()
    })
    .join()
    .unwrap();
    assert_eq!(failed, ATTEMPTS, "opens without CAP_SETUID must fail");
    let opened = fs_
        .open(user, id, libc::O_RDONLY)
        .expect("the user's share is whole after its failed opens");
    fs_.release(opened.fh);
}
