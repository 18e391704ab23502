//! Kernel cache coherence with long cache lifetimes: a change made through the
//! mount is seen through the mount at once, even with `attr_timeout` and
//! `entry_timeout` at 60 s; a name that was missing (never cached) is seen
//! as soon as it appears at the real path.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use crate::common::*;

#[test]
fn changes_through_the_mount_are_seen_at_once_with_long_timeouts() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let m = b
        .map_mode("/", &real, "rw")
        .no_audit()
        .extra("[fuse]\nattr_timeout = 60.0\nentry_timeout = 60.0\n")
        .mount();
    let at = |p: &str| m.at(p);
    let gone = |p: &str| matches!(fs::symlink_metadata(at(p)), Err(e) if e.raw_os_error() == Some(libc::ENOENT));

    // A miss, then a create: visible at once.
    assert!(gone("a"));
    fs::write(at("a"), b"12345").unwrap();
    let md = fs::metadata(at("a")).unwrap();
    assert_eq!((md.len(), md.nlink()), (5, 1));
    let ino = md.ino();

    // Size and mode changes.
    OpenOptions::new()
        .append(true)
        .open(at("a"))
        .unwrap()
        .write_all(b"678")
        .unwrap();
    assert_eq!(fs::metadata(at("a")).unwrap().len(), 8, "size after append");
    truncate(&at("a"), 2).unwrap();
    assert_eq!(
        fs::metadata(at("a")).unwrap().len(),
        2,
        "size after truncate"
    );
    assert_eq!(fs::read(at("a")).unwrap(), b"12", "content after truncate");
    chmod(&at("a"), 0o600);
    assert_eq!(
        fs::metadata(at("a")).unwrap().mode() & 0o7777,
        0o600,
        "mode after chmod"
    );
    std::os::unix::fs::chown(at("a"), Some(KEY_UID), None).unwrap();
    assert_eq!(
        fs::metadata(at("a")).unwrap().uid(),
        KEY_UID,
        "owner after chown"
    );

    // Rename: the old name is gone, the new one is the same file.
    fs::rename(at("a"), at("b")).unwrap();
    assert!(gone("a"), "old name after rename");
    assert_eq!(fs::metadata(at("b")).unwrap().ino(), ino);
    assert_eq!(fs::read(at("b")).unwrap(), b"12");

    // Hard links: nlink on every name, after link and after unlink.
    fs::hard_link(at("b"), at("c")).unwrap();
    assert_eq!(fs::metadata(at("b")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(at("c")).unwrap().nlink(), 2);
    fs::remove_file(at("c")).unwrap();
    assert!(gone("c"));
    assert_eq!(
        fs::metadata(at("b")).unwrap().nlink(),
        1,
        "nlink after unlink of the other name"
    );

    // Rename over an existing file replaces it.
    fs::write(at("d"), b"dddd").unwrap();
    let d_ino = fs::metadata(at("d")).unwrap().ino();
    fs::rename(at("b"), at("d")).unwrap();
    assert!(gone("b"));
    let md = fs::metadata(at("d")).unwrap();
    assert_eq!((md.ino(), md.len()), (ino, 2), "d is now the renamed file");
    assert_ne!(md.ino(), d_ino);
    assert_eq!(
        fs::read(at("d")).unwrap(),
        b"12",
        "no stale page cache of the replaced file"
    );

    // Directories: mkdir, entries below, rmdir, and a file taking the name.
    fs::create_dir(at("dir")).unwrap();
    fs::write(at("dir/x"), b"x").unwrap();
    assert_eq!(dir_names(&at("dir")), ["x"]);
    fs::remove_file(at("dir/x")).unwrap();
    assert_eq!(
        dir_names(&at("dir")),
        Vec::<String>::new(),
        "listing after unlink"
    );
    fs::remove_dir(at("dir")).unwrap();
    assert!(gone("dir"));
    fs::write(at("dir"), b"now a file").unwrap();
    assert!(fs::metadata(at("dir")).unwrap().is_file());

    // xattrs.
    setxattr(&at("d"), "user.k", b"v1").unwrap();
    assert_eq!(getxattr(&at("d"), "user.k").unwrap(), b"v1");
    setxattr(&at("d"), "user.k", b"v2").unwrap();
    assert_eq!(getxattr(&at("d"), "user.k").unwrap(), b"v2");

    // Everything agrees with the real tree.
    assert_eq!(dir_names(&m.mnt), ["d", "dir"]);
    assert_eq!(dir_names(&real), ["d", "dir"]);

    // Misses are never cached: a name made at the real path after a miss
    // through the mount is there at once.
    assert!(gone("late"));
    fs::write(real.join("late"), b"made at the real path").unwrap();
    assert_eq!(fs::read(at("late")).unwrap(), b"made at the real path");
}

/// Directory listings are cached by the kernel (FOPEN_CACHE_DIR); a change made at the real
/// path, not through the mount, shows in the listing once the directory's attributes expire.
#[test]
fn listings_follow_changes_at_the_real_path_after_attr_timeout() {
    skip_without_fuse!();
    let b = MountBuilder::new().extra("[fuse]\nattr_timeout = 0.3\nentry_timeout = 0.3\n");
    let real = b.real();
    mkdir_p(&real.join("d"));
    write_file(&real.join("d/old"), b"x", 0o644);
    let m = b.map("/", &real).mount();
    let list = || {
        let mut names: Vec<String> = std::fs::read_dir(m.mnt.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(list(), ["old"]);
    assert_eq!(list(), ["old"], "a second listing, from the kernel's cache");
    write_file(&real.join("d/new"), b"y", 0o644);
    std::fs::remove_file(real.join("d/old")).unwrap();
    assert!(
        wait_until(std::time::Duration::from_secs(5), || list() == ["new"]),
        "the listing still shows {:?} after the attribute timeout",
        list()
    );
}
