//! Permissions are enforced as at the real path (default_permissions with
//! the real uid/gid/mode), for other users too (allow_other); deny rules
//! apply to root as well.

use std::fs;
use std::process::Command;

use crate::common::*;

#[test]
fn owner_only_file_readable_by_owner_refused_to_others() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let key = real.join("id_rsa");
    write_owned(&key, b"private key of 4242\n", 0o600, KEY_UID, KEY_GID);
    let m = b.map("/", &real).opt("allow_other").mount();
    let via = m.at("id_rsa");

    let owner = run_as(KEY_UID, KEY_GID, Command::new("cat").arg(&via));
    assert!(
        owner.status.success(),
        "owner could not read: {}",
        stderr_str(&owner)
    );
    assert_eq!(owner.stdout, b"private key of 4242\n");

    let other = run_as(NOBODY, NOBODY, Command::new("cat").arg(&via));
    assert!(
        !other.status.success(),
        "uid {NOBODY} read a 0600 file of uid {KEY_UID}"
    );
    assert!(
        stderr_str(&other).contains("Permission denied"),
        "expected EACCES: {}",
        stderr_str(&other)
    );
    // access(2) agrees, for both.
    let t = |uid, gid| {
        run_as(uid, gid, &mut sh("test -r \"$1\"", &[&via]))
            .status
            .success()
    };
    assert!(t(KEY_UID, KEY_GID), "access(R_OK) refused to the owner");
    assert!(!t(NOBODY, NOBODY), "access(R_OK) granted to uid {NOBODY}");
    // root reads it, as at the real path.
    assert_eq!(fs::read(&via).unwrap(), b"private key of 4242\n");

    let e = mount_entry(&m.mnt).unwrap();
    for o in ["default_permissions", "allow_other"] {
        assert!(
            e.super_options.iter().any(|x| x == o),
            "{o} missing from super options {:?}",
            e.super_options
        );
    }
}

#[test]
fn group_permissions_use_real_gid() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let f = real.join("group-readable");
    write_owned(&f, b"for group 4343\n", 0o640, KEY_UID, 4343);
    let m = b.map("/", &real).opt("allow_other").mount();
    let via = m.at("group-readable");

    let member = run_as(NOBODY, 4343, Command::new("cat").arg(&via));
    assert!(
        member.status.success(),
        "group member refused: {}",
        stderr_str(&member)
    );
    assert_eq!(member.stdout, b"for group 4343\n");
    let stranger = run_as(NOBODY, NOBODY, Command::new("cat").arg(&via));
    assert!(!stranger.status.success(), "non-member read a 0640 file");
    assert!(
        stderr_str(&stranger).contains("Permission denied"),
        "{}",
        stderr_str(&stranger)
    );
}

#[test]
fn private_directory_is_not_traversable_by_others() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let dir = real.join("home4242");
    write_file(&dir.join("notes"), b"notes\n", 0o644);
    chmod(&dir, 0o700);
    chown(&dir, KEY_UID, KEY_GID);
    let m = b.map("/", &real).opt("allow_other").mount();

    let owner = run_as(
        KEY_UID,
        KEY_GID,
        Command::new("cat").arg(m.at("home4242/notes")),
    );
    assert!(
        owner.status.success(),
        "owner refused: {}",
        stderr_str(&owner)
    );
    let ls_owner = run_as(KEY_UID, KEY_GID, Command::new("ls").arg(m.at("home4242")));
    assert_eq!(
        stdout_str(&ls_owner),
        "notes\n",
        "{}",
        stderr_str(&ls_owner)
    );

    let other = run_as(
        NOBODY,
        NOBODY,
        Command::new("cat").arg(m.at("home4242/notes")),
    );
    assert!(
        !other.status.success(),
        "traversed a 0700 directory of another user"
    );
    assert!(
        stderr_str(&other).contains("Permission denied"),
        "{}",
        stderr_str(&other)
    );
    let ls_other = run_as(NOBODY, NOBODY, Command::new("ls").arg(m.at("home4242")));
    assert!(
        !ls_other.status.success(),
        "listed a 0700 directory of another user"
    );
}

#[test]
fn world_readable_file_readable_by_other_users_with_allow_other() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("pub/readme"), b"public\n", 0o644);
    let m = b.map("/", &real).opt("allow_other").mount();
    for uid in [KEY_UID, NOBODY] {
        let out = run_as(uid, uid, Command::new("cat").arg(m.at("pub/readme")));
        assert!(out.status.success(), "uid {uid}: {}", stderr_str(&out));
        assert_eq!(out.stdout, b"public\n");
    }
}

#[test]
fn deny_rule_refuses_root() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("keys/admin/id_rsa"), b"admin key\n", 0o644);
    write_file(&real.join("keys/user/id_rsa"), b"user key\n", 0o644);
    let m = b
        .map("/", &real)
        .deny("/keys/admin")
        .opt("allow_other")
        .mount();

    assert_errno(
        "root read",
        fs::read(m.at("keys/admin/id_rsa")),
        libc::EACCES,
    );
    let cat = run_with_timeout(
        Command::new("cat").arg(m.at("keys/admin/id_rsa")),
        SETTLE_TIMEOUT,
    );
    assert!(!cat.status.success(), "root read a denied file");
    assert!(
        stderr_str(&cat).contains("Permission denied"),
        "{}",
        stderr_str(&cat)
    );
    let ls = run_with_timeout(Command::new("ls").arg(m.at("keys/admin")), SETTLE_TIMEOUT);
    assert!(!ls.status.success(), "root listed a denied directory");
    assert!(
        stdout_str(&ls).is_empty(),
        "listing leaked: {}",
        stdout_str(&ls)
    );
    // Other users as well.
    let other = run_as(
        NOBODY,
        NOBODY,
        Command::new("cat").arg(m.at("keys/admin/id_rsa")),
    );
    assert!(!other.status.success(), "uid {NOBODY} read a denied file");
    // The rest of /keys is fine.
    assert_eq!(fs::read(m.at("keys/user/id_rsa")).unwrap(), b"user key\n");
    // The real file is of course still readable at the real path.
    assert_eq!(
        fs::read(real.join("keys/admin/id_rsa")).unwrap(),
        b"admin key\n"
    );
}

/// A `system.posix_acl_access` value: (tag, perm, id) entries, sorted.
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

#[test]
fn posix_acls_of_real_files_are_enforced() {
    skip_without_fuse!();
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NONE: u32 = u32::MAX;
    let b = MountBuilder::new();
    let real = b.real();
    // 0600 file, but the ACL grants uid 65534 read.
    let granted = real.join("granted");
    write_file(&granted, b"granted by acl\n", 0o600);
    let grant = acl_xattr(&[
        (USER_OBJ, 6, NONE),
        (USER, 4, NOBODY),
        (GROUP_OBJ, 0, NONE),
        (MASK, 4, NONE),
        (OTHER, 0, NONE),
    ]);
    setxattr(&granted, "system.posix_acl_access", &grant).expect("set ACL");
    // World-readable file, but the ACL refuses uid 65534.
    let refused = real.join("refused");
    write_file(&refused, b"refused by acl\n", 0o644);
    let deny = acl_xattr(&[
        (USER_OBJ, 6, NONE),
        (USER, 0, NOBODY),
        (GROUP_OBJ, 4, NONE),
        (MASK, 4, NONE),
        (OTHER, 4, NONE),
    ]);
    setxattr(&refused, "system.posix_acl_access", &deny).expect("set ACL");
    let m = b.map("/", &real).opt("allow_other").mount();

    for (name, want_ok) in [("granted", true), ("refused", false)] {
        let at_real = run_as(NOBODY, NOBODY, Command::new("cat").arg(real.join(name)));
        assert_eq!(
            at_real.status.success(),
            want_ok,
            "precondition: ACL behaviour at the real path for {name}"
        );
        let via = run_as(NOBODY, NOBODY, Command::new("cat").arg(m.at(name)));
        assert_eq!(
            via.status.success(),
            want_ok,
            "uid {NOBODY} reading {name} through the mount: {}",
            stderr_str(&via)
        );
    }
}

#[test]
fn directory_swapped_for_symlink_does_not_escape() {
    skip_without_fuse!();
    // The daemon walks by file descriptor, never by path: once `dir` is
    // known, replacing it at the real path by a symlink to somewhere else
    // must not make the daemon serve files from there.
    let b = MountBuilder::new();
    let real = b.real();
    let outside = b.root().join("outside");
    write_file(&real.join("dir/file"), b"inside\n", 0o644);
    write_file(&outside.join("file"), b"OUTSIDE\n", 0o644);
    write_file(&outside.join("other"), b"OUTSIDE other\n", 0o644);
    let m = b
        .map("/", &real)
        .extra("[fuse]\nentry_timeout = 600.0\nattr_timeout = 600.0\n")
        .mount();
    // The kernel now holds `dir` (cached for 600 s).
    assert_eq!(fs::read(m.at("dir/file")).unwrap(), b"inside\n");
    fs::rename(real.join("dir"), real.join("dir.old")).unwrap();
    std::os::unix::fs::symlink(&outside, real.join("dir")).unwrap();

    for name in ["dir/file", "dir/other"] {
        if let Ok(got) = fs::read(m.at(name)) {
            assert!(
                !got.starts_with(b"OUTSIDE"),
                "{name}: the daemon followed a symlink swapped in at the real path"
            );
        }
    }
}

/// The daemon skips acting as the caller only for opens the real file grants the caller now,
/// read from the real file at each open, not from what the kernel cached: with attributes
/// cached for 600 s, each file here is first read by uid 65534 (allowed; the kernel keeps its
/// mode and the fact that it has no ACL), then changed at the real path so that the caller may
/// no longer read it, in each way the fast check decides: the owner's read bit, the group's,
/// others', and an ACL entry. The kernel's cached view still allows the open; the daemon must
/// refuse every one, as the real file does.
#[test]
fn opens_follow_the_real_file_not_the_kernels_cached_attributes() {
    skip_without_fuse!();
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NONE: u32 = u32::MAX;
    let b = MountBuilder::new();
    let real = b.real();
    // name, owner, group, mode then, how it changes at the real path.
    type Change = fn(&std::path::Path);
    let cases: [(&str, u32, u32, u32, Change); 4] = [
        ("owned", NOBODY, 0, 0o644, |p| chmod(p, 0o044)),
        ("group", 0, NOBODY, 0o644, |p| chmod(p, 0o604)),
        ("others", 0, 0, 0o644, |p| chmod(p, 0o640)),
        ("acl", 0, 0, 0o644, |p| {
            let deny = acl_xattr(&[
                (USER_OBJ, 6, NONE),
                (USER, 0, NOBODY),
                (GROUP_OBJ, 4, NONE),
                (MASK, 4, NONE),
                (OTHER, 4, NONE),
            ]);
            setxattr(p, "system.posix_acl_access", &deny).expect("set ACL");
        }),
    ];
    for (name, uid, gid, mode, _) in &cases {
        write_owned(&real.join(name), b"secret\n", *mode, *uid, *gid);
    }
    let m = b
        .map("/", &real)
        .opt("allow_other")
        .extra("[fuse]\nentry_timeout = 600.0\nattr_timeout = 600.0\n")
        .mount();
    for (name, _, _, _, change) in &cases {
        let via = m.at(name);
        let before = run_as(NOBODY, NOBODY, Command::new("cat").arg(&via));
        assert!(
            before.status.success(),
            "precondition: uid {NOBODY} reads {name}: {}",
            stderr_str(&before)
        );
        change(&real.join(name));
        let at_real = run_as(NOBODY, NOBODY, Command::new("cat").arg(real.join(name)));
        assert!(
            !at_real.status.success(),
            "precondition: the real {name} refuses uid {NOBODY} now"
        );
        let after = run_as(NOBODY, NOBODY, Command::new("cat").arg(&via));
        assert!(
            !after.status.success(),
            "uid {NOBODY} still read {name} through the mount after the real file refused it: {:?}",
            String::from_utf8_lossy(&after.stdout)
        );
    }
}
