//! rename(2) and link(2) between rules: the real filesystems decide between
//! two rw rules (EXDEV across filesystems, allowed on one filesystem);
//! read-only rules refuse with EROFS in either direction; deny rules with
//! EACCES. Nothing is copied and nothing changes on a refusal.

use std::fs;
use std::path::PathBuf;

use crate::common::*;

struct Rules {
    m: Mounted,
    disk: PathBuf,
    disk2: PathBuf,
    shm: tempfile::TempDir,
    ro: PathBuf,
    denied: PathBuf,
}

/// `/` → disk (rw), `/disk2` → another directory on the same disk (rw),
/// `/shm` → a tmpfs directory (rw), `/ro` → disk (ro), `/deny` denied.
fn rules() -> Rules {
    let b = MountBuilder::new();
    let disk = b.real();
    let disk2 = b.root().join("disk2");
    let ro = b.root().join("ro");
    let denied = b.root().join("denied");
    let shm = tempfile::Builder::new()
        .prefix("relocfs-xrule-")
        .tempdir_in("/dev/shm")
        .unwrap();
    write_file(&disk.join("f"), b"on disk", 0o644);
    write_file(&disk.join("g"), b"on disk too", 0o644);
    write_file(&disk2.join("there"), b"disk2", 0o644);
    write_file(&shm.path().join("s"), b"on tmpfs", 0o644);
    write_file(&ro.join("r"), b"read-only", 0o644);
    write_file(&denied.join("secret"), b"denied", 0o644);
    let m = b
        .map_mode("/", &disk, "rw")
        .map_mode("/disk2", &disk2, "rw")
        .map_mode("/shm", shm.path(), "rw")
        .map("/ro", &ro)
        .deny("/deny")
        .mount();
    assert_ne!(
        statvfs(&disk).unwrap().f_fsid,
        statvfs(shm.path()).unwrap().f_fsid,
        "the tmpfs rule must be on another filesystem"
    );
    Rules {
        m,
        disk,
        disk2,
        shm,
        ro,
        denied,
    }
}

fn link(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    fs::hard_link(a, b)
}

#[test]
fn rw_rules_on_different_filesystems_give_exdev() {
    skip_without_fuse!();
    let r = rules();
    let m = &r.m;
    let before = [snapshot(&r.disk), snapshot(r.shm.path())];
    let mut p = Vec::new();
    p.extend(errno_problems! { libc::EXDEV;
        "rename disk -> tmpfs" => fs::rename(m.at("f"), m.at("shm/f")),
        "rename tmpfs -> disk" => fs::rename(m.at("shm/s"), m.at("s")),
        "link disk -> tmpfs" => link(&m.at("f"), &m.at("shm/f")),
        "link tmpfs -> disk" => link(&m.at("shm/s"), &m.at("s")),
        "RENAME_EXCHANGE disk <-> tmpfs" =>
            rename2(&m.at("f"), &m.at("shm/s"), libc::RENAME_EXCHANGE),
    });
    assert!(p.is_empty(), "{}", p.join("\n"));
    assert_same_snapshot(&before[0], &snapshot(&r.disk));
    assert_same_snapshot(&before[1], &snapshot(r.shm.path()));
    // mv(1) falls back to copy + unlink on EXDEV, as between two real filesystems.
    let out = run_as(
        0,
        0,
        std::process::Command::new("mv")
            .arg(m.at("g"))
            .arg(m.at("shm/g")),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert_eq!(fs::read(r.shm.path().join("g")).unwrap(), b"on disk too");
    assert!(!r.disk.join("g").exists());
}

#[test]
fn rw_rules_on_one_filesystem_rename_and_link_like_the_real_filesystem() {
    skip_without_fuse!();
    let r = rules();
    let m = &r.m;
    fs::rename(m.at("f"), m.at("disk2/f")).expect("rename between rules on one filesystem");
    assert!(!r.disk.join("f").exists());
    assert_eq!(fs::read(r.disk2.join("f")).unwrap(), b"on disk");
    assert_eq!(
        fs::read(m.at("disk2/f")).unwrap(),
        b"on disk",
        "through the mount"
    );
    assert_errno(
        "old name through the mount",
        fs::metadata(m.at("f")),
        libc::ENOENT,
    );
    fs::hard_link(m.at("disk2/there"), m.at("there")).expect("link between rules");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(r.disk.join("there")).unwrap()),
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(r.disk2.join("there")).unwrap()),
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&fs::metadata(m.at("there")).unwrap()),
        2,
        "nlink through the mount"
    );
}

#[test]
fn read_only_and_deny_rules_refuse_renames_and_links_both_ways() {
    skip_without_fuse!();
    let r = rules();
    let m = &r.m;
    let before = [snapshot(&r.disk), snapshot(&r.ro), snapshot(&r.denied)];
    let mut p = Vec::new();
    p.extend(errno_problems! { libc::EROFS;
        "rename rw -> ro" => fs::rename(m.at("f"), m.at("ro/f")),
        "rename ro -> rw" => fs::rename(m.at("ro/r"), m.at("r")),
        "link rw -> ro" => link(&m.at("f"), &m.at("ro/f")),
        "link ro -> rw" => link(&m.at("ro/r"), &m.at("r")),
        "RENAME_EXCHANGE rw <-> ro" => rename2(&m.at("f"), &m.at("ro/r"), libc::RENAME_EXCHANGE),
    });
    p.extend(errno_problems! { libc::EACCES;
        "rename rw -> deny" => fs::rename(m.at("f"), m.at("deny/f")),
        "rename deny -> rw" => fs::rename(m.at("deny/secret"), m.at("secret")),
        "link rw -> deny" => link(&m.at("f"), &m.at("deny/f")),
        "link deny -> rw" => link(&m.at("deny/secret"), &m.at("secret")),
    });
    assert!(p.is_empty(), "{}", p.join("\n"));
    assert_same_snapshot(&before[0], &snapshot(&r.disk));
    assert_same_snapshot(&before[1], &snapshot(&r.ro));
    assert_same_snapshot(&before[2], &snapshot(&r.denied));
    let e = wait_for_audit(&m.audit, ev("rename", &m.at("f"), None), AUDIT_TIMEOUT);
    assert_eq!(s(&e, "result"), Some("EROFS"), "{e}");
    assert_eq!(s(&e, "dest"), m.at("ro/f").to_str(), "{e}");
}
