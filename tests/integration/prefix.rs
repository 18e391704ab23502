//! The prefix table: longest prefix wins by whole components, virtual
//! parents, unmapped paths, deny rules.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn names(p: &Path) -> BTreeSet<String> {
    fs::read_dir(p)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A fresh builder and the paths of its `install` and `keystore` directories (made by the
/// files written into them).
fn install_and_keystore() -> (MountBuilder, PathBuf, PathBuf) {
    let b = MountBuilder::new();
    let root = b.root();
    (b, root.join("install"), root.join("keystore"))
}

#[test]
fn longest_prefix_wins() {
    skip_without_fuse!();
    let (b, install, store) = install_and_keystore();
    let roles = b.root().join("roles");
    write_file(&install.join("keys/k"), b"from install\n", 0o644);
    write_file(&install.join("keys/role_key/f"), b"install role\n", 0o644);
    write_file(&install.join("etc/conf"), b"conf\n", 0o644);
    write_file(&store.join("k"), b"from keystore\n", 0o644);
    write_file(&store.join("sub/x"), b"x\n", 0o644);
    write_file(&store.join("role_key/f"), b"keystore role\n", 0o644);
    write_file(&roles.join("f"), b"from roles\n", 0o644);
    // Rule order in the file must not matter.
    let m = b
        .map("/keys/role_key", &roles)
        .map("/", &install)
        .map("/keys", &store)
        .mount();

    assert_eq!(fs::read(m.at("keys/k")).unwrap(), b"from keystore\n");
    assert_eq!(fs::read(m.at("keys/sub/x")).unwrap(), b"x\n");
    assert_eq!(fs::read(m.at("keys/role_key/f")).unwrap(), b"from roles\n");
    assert_eq!(fs::read(m.at("etc/conf")).unwrap(), b"conf\n");
    assert_eq!(names(&m.at("keys")), names(&store), "listing of /keys");
    assert_eq!(names(&m.at("keys/role_key")), set(&["f"]));
    // The mapping point shows the target directory itself.
    assert_eq!(
        fs::metadata(m.at("keys")).unwrap().ino(),
        fs::metadata(&store).unwrap().ino(),
        "st_ino of /keys is the keystore's"
    );
    assert_eq!(
        fs::metadata(m.at("keys/role_key")).unwrap().ino(),
        fs::metadata(&roles).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(m.at("")).unwrap().ino(),
        fs::metadata(&install).unwrap().ino()
    );
}

#[test]
fn prefixes_match_whole_components_only() {
    skip_without_fuse!();
    let (b, install, store) = install_and_keystore();
    write_file(&install.join("keysafe/f"), b"right\n", 0o644);
    write_file(&install.join("keys2"), b"right keys2\n", 0o644);
    write_file(
        &store.join("afe/f"),
        b"WRONG: /keys matched /keysafe\n",
        0o644,
    );
    write_file(&store.join("2"), b"WRONG: /keys matched /keys2\n", 0o644);
    write_file(&store.join("k"), b"keystore\n", 0o644);
    let m = b.map("/", &install).map("/keys", &store).mount();

    assert_eq!(fs::read(m.at("keysafe/f")).unwrap(), b"right\n");
    assert_eq!(fs::read(m.at("keys2")).unwrap(), b"right keys2\n");
    assert_eq!(fs::read(m.at("keys/k")).unwrap(), b"keystore\n");
}

#[test]
fn uncovered_parents_are_read_only_virtual_dirs() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let root = b.root();
    let data = root.join("data");
    let logs = root.join("logs");
    let conf = root.join("conf");
    write_file(&data.join("f"), b"data file\n", 0o644);
    write_file(&logs.join("today.log"), b"log\n", 0o644);
    write_file(&conf.join("app.toml"), b"x = 1\n", 0o644);
    let m = b
        .map("/srv/app/data", &data)
        .map("/srv/logs", &logs)
        .map("/etc/app", &conf)
        .opt("allow_other")
        .mount();

    assert_eq!(names(&m.at("")), set(&["etc", "srv"]), "virtual root");
    assert_eq!(names(&m.at("srv")), set(&["app", "logs"]), "virtual /srv");
    assert_eq!(names(&m.at("srv/app")), set(&["data"]), "virtual /srv/app");
    assert_eq!(names(&m.at("etc")), set(&["app"]), "virtual /etc");
    for v in ["", "srv", "srv/app", "etc"] {
        let md = fs::metadata(m.at(v)).unwrap();
        assert!(md.is_dir(), "virtual {v:?} is not a directory");
        assert_eq!(
            md.permissions().mode() & 0o7777,
            0o555,
            "mode of virtual {v:?}"
        );
    }
    // Through them, the mapped directories.
    assert_eq!(fs::read(m.at("srv/app/data/f")).unwrap(), b"data file\n");
    assert_eq!(fs::read(m.at("srv/logs/today.log")).unwrap(), b"log\n");
    assert_eq!(fs::read(m.at("etc/app/app.toml")).unwrap(), b"x = 1\n");
    assert_eq!(names(&m.at("srv/app/data")), set(&["f"]));

    // Anybody may traverse and list them (0555).
    let out = run_as(NOBODY, NOBODY, Command::new("ls").arg(m.at("srv")));
    assert!(out.status.success(), "ls as nobody: {}", stderr_str(&out));
    assert_eq!(stdout_str(&out), "app\nlogs\n");
}

#[test]
fn unmapped_paths_do_not_exist() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let root = b.root();
    let data = root.join("data");
    write_file(&data.join("f"), b"f\n", 0o644);
    let m = b.map("/srv/app", &data).mount();

    for p in [
        "usr",
        "srv/other",
        "srv/ap",
        "srv/app2",
        "srv/app/missing",
        "srv/app/f/below-a-file",
    ] {
        let want = if p.ends_with("below-a-file") {
            libc::ENOTDIR
        } else {
            libc::ENOENT
        };
        assert_errno(&format!("stat {p}"), fs::symlink_metadata(m.at(p)), want);
    }
    assert_errno(
        "open srv/nope",
        fs::File::open(m.at("srv/nope")),
        libc::ENOENT,
    );
    assert_errno("readdir usr", fs::read_dir(m.at("usr")), libc::ENOENT);
}

#[test]
fn deny_rule_refuses_path_and_everything_below() {
    skip_without_fuse!();
    let (b, install, store) = install_and_keystore();
    write_file(&install.join("README"), b"install\n", 0o644);
    write_file(&store.join("admin/secret"), b"admin secret\n", 0o644);
    write_file(&store.join("admin/sub/deep"), b"deep\n", 0o644);
    write_file(&store.join("user/k"), b"user key\n", 0o644);
    write_file(&store.join("administrator/f"), b"not denied\n", 0o644);
    let m = b
        .map("/", &install)
        .map("/keys", &store)
        .deny("/keys/admin")
        .deny("/keys/ghost")
        .mount();

    let mut problems = Vec::new();
    for p in [
        "keys/admin",
        "keys/admin/secret",
        "keys/admin/sub",
        "keys/admin/sub/deep",
        "keys/admin/nonexistent",
        "keys/ghost",
        "keys/ghost/below",
    ] {
        problems.extend(check_errno(
            &format!("lstat {p}"),
            fs::symlink_metadata(m.at(p)),
            libc::EACCES,
        ));
    }
    problems.extend(check_errno(
        "open keys/admin/secret",
        fs::File::open(m.at("keys/admin/secret")),
        libc::EACCES,
    ));
    problems.extend(check_errno(
        "readdir keys/admin",
        fs::read_dir(m.at("keys/admin")).map(|_| ()),
        libc::EACCES,
    ));
    assert!(
        problems.is_empty(),
        "deny rule not enforced:\n{}",
        problems.join("\n")
    );

    // Neighbours are untouched by the rule.
    assert_eq!(fs::read(m.at("keys/user/k")).unwrap(), b"user key\n");
    assert_eq!(
        fs::read(m.at("keys/administrator/f")).unwrap(),
        b"not denied\n"
    );
    assert_eq!(fs::read(m.at("README")).unwrap(), b"install\n");
}
