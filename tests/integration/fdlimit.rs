//! Under a small open-file limit the daemon closes node fds and reopens them by name, so a
//! walk of more files than it may hold open still works, and a name that now leads to another
//! object is never served as the old one.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::common::*;

/// Mounts with RLIMIT_NOFILE 256 (the daemon then keeps at most 128 node fds).
fn mount_with_fd_limit(b: MountBuilder) -> Mounted {
    mount_with_hard_fd_limit(b, 256)
}

#[test]
fn walk_of_more_files_than_fds_succeeds() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    for d in 0..10 {
        let dir = real.join(format!("d{d}"));
        mkdir_p(&dir);
        for f in 0..100 {
            write_file(
                &dir.join(format!("f{f}")),
                format!("{d}/{f}").as_bytes(),
                0o644,
            );
        }
    }
    let m = mount_with_fd_limit(b.map_mode("/", &real, "rw"));
    // Twice: the second walk reopens nodes whose fds were closed during the first.
    for _ in 0..2 {
        for d in 0..10 {
            for f in 0..100 {
                let p = m.mnt.join(format!("d{d}/f{f}"));
                let via_mount = fs::metadata(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                let real_meta = fs::metadata(real.join(format!("d{d}/f{f}"))).unwrap();
                assert_eq!(via_mount.ino(), real_meta.ino(), "{p:?}");
                assert_eq!(fs::read_to_string(&p).unwrap(), format!("{d}/{f}"));
            }
        }
    }
    // Changes through nodes whose fds were closed still land in the right place.
    fs::write(m.mnt.join("d0/f0"), "changed").unwrap();
    fs::rename(m.mnt.join("d0/f1"), m.mnt.join("d1/moved")).unwrap();
    assert_eq!(fs::read_to_string(real.join("d0/f0")).unwrap(), "changed");
    assert!(real.join("d1/moved").exists() && !real.join("d0/f1").exists());
}

#[test]
fn replaced_name_is_not_served_as_the_old_object() {
    skip_without_fuse!();
    let b = MountBuilder::new().extra("[fuse]\nattr_timeout = 0\nentry_timeout = 0\n");
    let real = b.real();
    mkdir_p(&real.join("many"));
    write_file(&real.join("config"), b"old", 0o644);
    let m = mount_with_fd_limit(b.map("/", &real));
    assert_eq!(fs::read_to_string(m.mnt.join("config")).unwrap(), "old");
    // Push the node's fd out with other lookups, then replace the file at the real path the
    // way editors and deploy tools do (write a new file, rename it over the old one).
    for i in 0..400 {
        write_file(&real.join(format!("many/{i}")), b"x", 0o644);
        fs::metadata(m.mnt.join(format!("many/{i}"))).unwrap();
    }
    write_file(&real.join("config.new"), b"new", 0o644);
    fs::rename(real.join("config.new"), real.join("config")).unwrap();
    let now = fs::read_to_string(m.mnt.join("config")).unwrap();
    assert_eq!(now, "new");
    assert_eq!(
        fs::metadata(m.mnt.join("config")).unwrap().ino(),
        fs::metadata(real.join("config")).unwrap().ino()
    );
}
