//! Read-only for now: every kind of change fails with EROFS and the real
//! tree stays untouched (compared by a recursive snapshot).

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A small real tree with a bit of everything.
fn populate(real: &Path) {
    write_file(&real.join("file"), b"original content\n", 0o644);
    setxattr(&real.join("file"), "user.keep", b"1").unwrap();
    write_file(&real.join("dir/inner"), b"inner\n", 0o600);
    write_file(&real.join("exist-target"), b"target\n", 0o644);
    mkdir_p(&real.join("emptydir"));
    std::os::unix::fs::symlink("file", real.join("link")).unwrap();
    set_times(&real.join("file"), 1_500_000_000, 500);
}

fn open_raw(p: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = CString::new(p.to_str().unwrap()).unwrap();
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe { libc::close(fd) };
    Ok(())
}

fn mounted_readonly_fixture() -> (Mounted, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    populate(&real);
    (b.map("/", &real).mount(), real)
}

#[test]
fn write_opens_fail_with_erofs() {
    skip_without_fuse!();
    let (m, real) = mounted_readonly_fixture();
    let before = snapshot(&real);
    let f = m.at("file");
    let new = m.at("newfile");
    let mut p = Vec::new();
    p.extend(errno_problems! { libc::EROFS;
        "open O_WRONLY" => OpenOptions::new().write(true).open(&f),
        "open O_RDWR" => OpenOptions::new().read(true).write(true).open(&f),
        "open O_WRONLY|O_TRUNC" => OpenOptions::new().write(true).truncate(true).open(&f),
        "open O_RDONLY|O_TRUNC" => open_raw(&f, libc::O_RDONLY | libc::O_TRUNC),
        "open O_APPEND" => OpenOptions::new().append(true).open(&f),
        "open O_WRONLY on file in subdir" => OpenOptions::new().write(true).open(m.at("dir/inner")),
        "open O_WRONLY|O_CREAT of existing" =>
            OpenOptions::new().write(true).create(true).truncate(false).open(&f),
        "creat new" => fs::File::create(&new),
        "open O_CREAT|O_EXCL new" => OpenOptions::new().write(true).create_new(true).open(&new),
        "open O_RDONLY|O_CREAT new" => open_raw(&new, libc::O_RDONLY | libc::O_CREAT),
        "open O_WRONLY through symlink" => OpenOptions::new().write(true).open(m.at("link")),
    });
    assert!(
        p.is_empty(),
        "write opens not refused with EROFS:\n{}",
        p.join("\n")
    );
    // Reading still works afterwards and the tree is untouched.
    assert_eq!(fs::read(&f).unwrap(), b"original content\n");
    assert_same_snapshot(&before, &snapshot(&real));
}

#[test]
fn namespace_changes_fail_with_erofs() {
    skip_without_fuse!();
    let (m, real) = mounted_readonly_fixture();
    let before = snapshot(&real);
    let mut p = Vec::new();
    p.extend(errno_problems! { libc::EROFS;
        "mkdir" => fs::create_dir(m.at("newdir")),
        "mkdir in subdir" => fs::create_dir(m.at("dir/newdir")),
        "unlink file" => fs::remove_file(m.at("file")),
        "unlink symlink" => fs::remove_file(m.at("link")),
        "unlink in subdir" => fs::remove_file(m.at("dir/inner")),
        "rmdir" => fs::remove_dir(m.at("emptydir")),
        "rename file" => fs::rename(m.at("file"), m.at("renamed")),
        "rename over existing" => fs::rename(m.at("file"), m.at("exist-target")),
        "rename dir" => fs::rename(m.at("dir"), m.at("dir2")),
        "rename into subdir" => fs::rename(m.at("file"), m.at("dir/file")),
        "symlink" => std::os::unix::fs::symlink("file", m.at("newlink")),
        "link" => fs::hard_link(m.at("file"), m.at("hardlink")),
        "mknod fifo" => mkfifo(&m.at("fifo"), 0o644),
        "remove_dir_all" => fs::remove_dir_all(m.at("dir")),
    });
    assert!(
        p.is_empty(),
        "namespace changes not refused with EROFS:\n{}",
        p.join("\n")
    );
    assert_same_snapshot(&before, &snapshot(&real));
    // Nothing new appeared through the mount either.
    for n in ["newdir", "renamed", "newlink", "hardlink", "fifo", "dir2"] {
        assert!(
            fs::symlink_metadata(m.at(n)).is_err(),
            "{n} exists through the mount"
        );
    }
}

#[test]
fn metadata_changes_fail_with_erofs() {
    skip_without_fuse!();
    let (m, real) = mounted_readonly_fixture();
    let before = snapshot(&real);
    let f = m.at("file");
    let mut p = Vec::new();
    p.extend(errno_problems! { libc::EROFS;
        "chmod" => fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        "chmod dir" =>
            fs::set_permissions(m.at("dir"), std::os::unix::fs::PermissionsExt::from_mode(0o700)),
        "chown" => std::os::unix::fs::chown(&f, Some(KEY_UID), Some(KEY_GID)),
        "lchown symlink" => std::os::unix::fs::lchown(m.at("link"), Some(KEY_UID), None),
        "truncate to 0" => truncate(&f, 0),
        "truncate to extend" => truncate(&f, 1 << 20),
        "utimes now" => utimes_now(&f),
        "utimes explicit" =>
            fs::File::open(&f).and_then(|h| {
                h.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            }),
        "setxattr new" => setxattr(&f, "user.new", b"v"),
        "setxattr replace" => setxattr(&f, "user.keep", b"2"),
        "removexattr" => removexattr(&f, "user.keep"),
        "setxattr dir" => setxattr(&m.at("dir"), "user.d", b"v"),
    });
    assert!(
        p.is_empty(),
        "metadata changes not refused with EROFS:\n{}",
        p.join("\n")
    );
    assert_same_snapshot(&before, &snapshot(&real));
    assert_eq!(getxattr(&f, "user.keep").unwrap(), b"1");
}

#[test]
fn virtual_directories_refuse_changes() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let data = b.root().join("data");
    write_file(&data.join("f"), b"f\n", 0o644);
    let m = b.map("/srv/app", &data).mount();
    let before = snapshot(&data);
    let mut p = Vec::new();
    p.extend(errno_problems! { libc::EROFS;
        "mkdir in virtual root" => fs::create_dir(m.at("new")),
        "create in virtual dir" => fs::File::create(m.at("srv/new")),
        "rmdir mapped dir" => fs::remove_dir(m.at("srv/app")),
        "rename virtual dir" => fs::rename(m.at("srv"), m.at("srv2")),
        "chmod virtual dir" =>
            fs::set_permissions(m.at("srv"), std::os::unix::fs::PermissionsExt::from_mode(0o777)),
        "symlink in virtual dir" => std::os::unix::fs::symlink("/etc", m.at("srv/l")),
    });
    assert!(
        p.is_empty(),
        "virtual directories not read-only:\n{}",
        p.join("\n")
    );
    assert_same_snapshot(&before, &snapshot(&data));
}

#[test]
fn ro_mount_option_and_explicit_ro_mode() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    populate(&real);
    let m = b.map_mode("/", &real, "ro").opt("ro").mount();
    let entry = mount_entry(&m.mnt).unwrap();
    assert!(
        entry.options.iter().any(|o| o == "ro"),
        "-o ro: mount options are {:?}",
        entry.options
    );
    assert_eq!(fs::read(m.at("file")).unwrap(), b"original content\n");
    assert_errno(
        "access W_OK",
        access(&m.at("file"), libc::W_OK),
        libc::EROFS,
    );
    assert_errno(
        "open O_WRONLY",
        OpenOptions::new().write(true).open(m.at("file")),
        libc::EROFS,
    );
    assert_errno("mkdir", fs::create_dir(m.at("x")), libc::EROFS);
    // Read-only opens with extra flags are fine.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(m.at("file"))
        .expect("read-only open with O_NOFOLLOW");
}
