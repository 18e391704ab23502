//! Reads through the mount behave exactly as at the real path.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Differences between lstat through the mount and lstat of the real path.
fn stat_diffs(via: &Path, real: &Path) -> Vec<String> {
    let a = match fs::symlink_metadata(via) {
        Ok(m) => m,
        Err(e) => return vec![format!("lstat {}: {e}", via.display())],
    };
    let r = fs::symlink_metadata(real).unwrap();
    let mut d = Vec::new();
    let mut cmp = |what: &str, x: i128, y: i128| {
        if x != y {
            d.push(format!(
                "{}: {what} {x:#o}/{x} via mount, {y:#o}/{y} real",
                via.display()
            ));
        }
    };
    cmp("ino", a.ino().into(), r.ino().into());
    cmp("size", a.size().into(), r.size().into());
    cmp("mode", a.mode().into(), r.mode().into());
    cmp("uid", a.uid().into(), r.uid().into());
    cmp("gid", a.gid().into(), r.gid().into());
    cmp("nlink", a.nlink().into(), r.nlink().into());
    cmp("mtime", a.mtime().into(), r.mtime().into());
    cmp("mtime_nsec", a.mtime_nsec().into(), r.mtime_nsec().into());
    cmp("ctime", a.ctime().into(), r.ctime().into());
    cmp("ctime_nsec", a.ctime_nsec().into(), r.ctime_nsec().into());
    cmp("blocks", a.blocks().into(), r.blocks().into());
    cmp("rdev", a.rdev().into(), r.rdev().into());
    if a.dev() == r.dev() {
        d.push(format!(
            "{}: st_dev equals the real one ({})",
            via.display(),
            a.dev()
        ));
    }
    d
}

#[test]
fn stat_matches_real_path() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("plain"), b"hello\n", 0o644);
    write_owned(
        &real.join("owned"),
        b"owned by 4242\n",
        0o640,
        KEY_UID,
        4343,
    );
    set_times(&real.join("owned"), 1_600_000_000, 123_456_789);
    write_file(&real.join("empty"), b"", 0o600);
    write_file(&real.join("run.sh"), b"#!/bin/sh\n", 0o755);
    write_file(&real.join("sub/inner"), &pattern(70_000, 1), 0o444);
    set_times(&real.join("sub/inner"), 1_234_567_890, 987_654_321);
    mkdir_p(&real.join("sub/deeper"));
    chmod(&real.join("sub"), 0o751);
    set_times(&real.join("sub"), 1_500_000_000, 1);
    std::os::unix::fs::symlink("plain", real.join("link")).unwrap();
    set_times(&real.join("link"), 1_400_000_000, 999_999_999);
    mkfifo(&real.join("pipe"), 0o640).unwrap();
    chmod(&real.join("pipe"), 0o640);
    // Special mode bits and a character device (like /dev/null).
    write_file(&real.join("suid"), b"#!/bin/sh\n", 0o4755);
    write_file(&real.join("sgid"), b"x", 0o2750);
    mkdir_p(&real.join("sticky"));
    chmod(&real.join("sticky"), 0o1777);
    let null = cpath(&real.join("null"));
    let rc = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    let m = b.map("/", &real).mount();

    let mut problems = Vec::new();
    for rel in [
        "",
        "plain",
        "owned",
        "empty",
        "run.sh",
        "sub",
        "sub/inner",
        "sub/deeper",
        "link",
        "pipe",
        "suid",
        "sgid",
        "sticky",
        "null",
    ] {
        problems.extend(stat_diffs(&m.at(rel), &real.join(rel)));
    }
    assert!(
        problems.is_empty(),
        "stat differs:\n{}",
        problems.join("\n")
    );

    // File types come through as well.
    assert!(fs::symlink_metadata(m.at("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::symlink_metadata(m.at("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(fs::metadata(m.at("sub")).unwrap().is_dir());
    // stat (following) of the symlink is the stat of its target.
    assert_eq!(
        fs::metadata(m.at("link")).unwrap().ino(),
        fs::metadata(real.join("plain")).unwrap().ino()
    );
}

#[test]
fn readdir_small_directory_matches() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("d/a.txt"), b"a", 0o644);
    write_file(&real.join("d/.hidden"), b"h", 0o600);
    write_file(&real.join("d/with space"), b"s", 0o644);
    write_file(&real.join("d/ünïcødé"), b"u", 0o644);
    mkdir_p(&real.join("d/subdir"));
    std::os::unix::fs::symlink("/nonexistent/target", real.join("d/dangling")).unwrap();
    mkfifo(&real.join("d/fifo"), 0o644).unwrap();
    mkdir_p(&real.join("empty"));
    let m = b.map("/", &real).mount();

    let list = |p: &Path| -> BTreeMap<std::ffi::OsString, &'static str> {
        fs::read_dir(p)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), kind_name(&e.file_type().unwrap()))
            })
            .collect()
    };
    assert_eq!(
        list(&m.at("d")),
        list(&real.join("d")),
        "listing of d differs"
    );
    assert_eq!(
        list(&m.at("")),
        list(&real),
        "listing of the mount root differs"
    );
    assert!(
        list(&m.at("empty")).is_empty(),
        "empty dir is not empty via mount"
    );

    // `ls -a` also sees . and .. and nothing else extra.
    let out = run_with_timeout(Command::new("ls").arg("-a1").arg(m.at("d")), SETTLE_TIMEOUT);
    assert!(out.status.success(), "ls -a: {}", stderr_str(&out));
    let names: Vec<String> = stdout_str(&out).lines().map(str::to_string).collect();
    assert_eq!(names.len(), 7 + 2, "ls -a1 output: {names:?}");
    assert!(names.contains(&".".to_string()) && names.contains(&"..".to_string()));
}

#[test]
fn readdir_huge_directory_matches() {
    skip_without_fuse!();
    const N: usize = 20_000;
    // Creating 20,000 files is much faster on tmpfs than on a journaled
    // disk; the huge directory lives there when /dev/shm exists. Declared
    // before the mount so that it outlives it.
    let shm = tempfile::Builder::new()
        .prefix("relocfs-test-big-")
        .tempdir_in("/dev/shm")
        .ok();
    let b = MountBuilder::new();
    let real = b.real();
    let big = match &shm {
        Some(d) => d.path().to_path_buf(),
        None => b.root().join("big"),
    };
    mkdir_p(&big);
    chmod(&big, 0o755);
    for i in 0..N {
        // Long-ish names so the listing spans many readdir buffers.
        fs::File::create(big.join(format!("entry-{i:06}-padding-to-make-names-longer"))).unwrap();
    }
    let m = b.map("/", &real).map("/big", &big).mount();

    let names = |p: &Path| -> Vec<std::ffi::OsString> {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let via = names(&m.at("big"));
    let want = names(&big);
    assert_eq!(want.len(), N);
    assert_eq!(via.len(), N, "number of entries via mount");
    let mut dup = via.clone();
    dup.dedup();
    assert_eq!(dup.len(), N, "duplicate names via mount");
    assert!(
        via == want,
        "names via mount differ from the real directory"
    );
    // A second listing (possibly cached) is still complete.
    assert_eq!(names(&m.at("big")).len(), N, "second listing");
}

#[test]
fn readlink_returns_links_as_stored() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let outside = b.root().join("outside");
    write_file(&outside.join("secret"), b"outside secret\n", 0o644);
    write_file(&real.join("dir/file"), b"file\n", 0o644);
    let links: &[(&str, &str)] = &[
        ("rel", "dir/file"),
        ("dotdot", "../real/dir/file"),
        ("abs", "/etc/hostname"),
        ("dangling", "does/not/exist"),
        ("dangling-abs", "/nonexistent/relocfs/target"),
        ("escape", outside.to_str().unwrap()),
        ("dir/up", "../dir"),
        ("self-loop", "self-loop"),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, real.join(name)).unwrap();
    }
    let m = b.map("/", &real).mount();

    for (name, target) in links {
        let via = m.at(name);
        let md = fs::symlink_metadata(&via).unwrap_or_else(|e| panic!("lstat {name}: {e}"));
        assert!(
            md.file_type().is_symlink(),
            "{name} is not shown as a symlink"
        );
        assert_eq!(md.size(), target.len() as u64, "st_size of symlink {name}");
        assert_eq!(
            fs::read_link(&via).unwrap_or_else(|e| panic!("readlink {name}: {e}")),
            Path::new(target),
            "readlink {name}"
        );
    }
    // Relative links resolve inside the mount (by the kernel, not the daemon).
    assert_eq!(fs::read(m.at("rel")).unwrap(), b"file\n");
    // A link pointing outside stays a link; following it leaves the mount.
    assert_eq!(
        fs::read(m.at("escape/secret")).unwrap(),
        b"outside secret\n"
    );
    // Dangling links are dangling through the mount as well.
    assert_errno(
        "stat dangling",
        fs::metadata(m.at("dangling")),
        libc::ENOENT,
    );
    assert_errno(
        "stat self-loop",
        fs::metadata(m.at("self-loop")),
        libc::ELOOP,
    );
}

#[test]
fn read_file_content() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let big = pattern(3 * 1024 * 1024 + 17, 7);
    write_file(&real.join("big.bin"), &big, 0o644);
    write_file(&real.join("small.txt"), b"small\n", 0o644);
    write_file(&real.join("empty"), b"", 0o644);
    let m = b.map("/", &real).mount();

    let got = fs::read(m.at("big.bin")).unwrap();
    assert_eq!(got.len(), big.len(), "size of big.bin read through mount");
    assert!(got == big, "content of big.bin differs");
    assert_eq!(fs::read(m.at("small.txt")).unwrap(), b"small\n");
    assert_eq!(fs::read(m.at("empty")).unwrap(), b"");

    // Positional reads.
    let f = fs::File::open(m.at("big.bin")).unwrap();
    for off in [0usize, 1, 4095, 131_072 - 3, 1_048_576 + 5, big.len() - 10] {
        let mut buf = vec![0u8; 8192];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        let want = &big[off..(off + 8192).min(big.len())];
        assert_eq!(&buf[..n], &want[..n], "pread at {off}");
        assert!(n > 0, "pread at {off} returned 0");
    }
    let mut buf = [0u8; 16];
    assert_eq!(
        f.read_at(&mut buf, big.len() as u64 + 100).unwrap(),
        0,
        "read past EOF"
    );
    // Directories cannot be read as files.
    assert_errno("read dir", fs::read(m.at("")), libc::EISDIR);
}

#[test]
fn mmap_of_file_matches() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let data = pattern(1024 * 1024 + 123, 3);
    write_file(&real.join("mapped.bin"), &data, 0o644);
    let m = b.map("/", &real).mount();

    let f = fs::File::open(m.at("mapped.bin")).unwrap();
    for (name, flags) in [
        ("MAP_PRIVATE", libc::MAP_PRIVATE),
        ("MAP_SHARED", libc::MAP_SHARED),
    ] {
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                data.len(),
                libc::PROT_READ,
                flags,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap({name}) through the mount failed: {}",
            std::io::Error::last_os_error()
        );
        let slice = unsafe { std::slice::from_raw_parts(p as *const u8, data.len()) };
        let equal = slice == &data[..];
        unsafe { libc::munmap(p, data.len()) };
        assert!(equal, "mmap({name}) content differs from the real file");
    }
}

#[test]
fn execute_script_and_binary_from_mount() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(
        &real.join("bin/hello.sh"),
        b"#!/bin/sh\necho \"hello from script: $1\"\n",
        0o755,
    );
    mkdir_p(&real.join("bin"));
    for tool in ["true", "echo"] {
        let dst = real.join("bin").join(tool);
        fs::copy(Path::new("/bin").join(tool), &dst).unwrap();
        chmod(&dst, 0o755);
    }
    let m = b.map("/", &real).mount();

    let out = run_with_timeout(
        Command::new(m.at("bin/hello.sh")).arg("arg1"),
        SETTLE_TIMEOUT,
    );
    assert!(out.status.success(), "script failed: {}", stderr_str(&out));
    assert_eq!(stdout_str(&out), "hello from script: arg1\n");

    let out = run_with_timeout(&mut Command::new(m.at("bin/true")), SETTLE_TIMEOUT);
    assert!(out.status.success(), "copied /bin/true failed: {out:?}");

    let out = run_with_timeout(Command::new(m.at("bin/echo")).arg("echoed"), SETTLE_TIMEOUT);
    assert!(
        out.status.success(),
        "copied /bin/echo failed: {}",
        stderr_str(&out)
    );
    assert_eq!(stdout_str(&out), "echoed\n");

    // Also through sh, by path lookup in a PATH inside the mount.
    let out = run_with_timeout(
        &mut sh(
            "PATH=\"$1:$PATH\"; export PATH; hello.sh viapath",
            &[&m.at("bin")],
        ),
        SETTLE_TIMEOUT,
    );
    assert_eq!(
        stdout_str(&out),
        "hello from script: viapath\n",
        "{}",
        stderr_str(&out)
    );
}

#[test]
fn statfs_matches_real_filesystem() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"x", 0o644);
    let m = b.map("/", &real).mount();

    let via = statvfs(&m.at("")).expect("statvfs through mount");
    let want = statvfs(&real).unwrap();
    assert_eq!(via.f_bsize, want.f_bsize, "block size (f_bsize)");
    assert_eq!(via.f_blocks, want.f_blocks, "total blocks (f_blocks)");
    assert_eq!(via.f_files, want.f_files, "total inodes (f_files)");

    // `stat -f` agrees.
    let fmt = |p: &Path| {
        let o = run_with_timeout(
            Command::new("stat").args(["-f", "-c", "%S %b"]).arg(p),
            SETTLE_TIMEOUT,
        );
        assert!(
            o.status.success(),
            "stat -f {}: {}",
            p.display(),
            stderr_str(&o)
        );
        stdout_str(&o)
    };
    assert_eq!(fmt(&m.at("f")), fmt(&real.join("f")), "stat -f -c '%S %b'");
}

#[test]
fn access_reports_permissions() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("data.txt"), b"d", 0o644);
    write_file(&real.join("tool.sh"), b"#!/bin/sh\n", 0o755);
    let m = b.map("/", &real).mount();

    access(&m.at("data.txt"), libc::F_OK).expect("F_OK");
    access(&m.at("data.txt"), libc::R_OK).expect("R_OK");
    access(&m.at("tool.sh"), libc::X_OK).expect("X_OK on 0755 script");
    access(&m.at(""), libc::X_OK).expect("X_OK on the mount root");
    assert_errno(
        "X_OK on 0644 file",
        access(&m.at("data.txt"), libc::X_OK),
        libc::EACCES,
    );
    assert_errno(
        "F_OK on missing",
        access(&m.at("missing"), libc::F_OK),
        libc::ENOENT,
    );
}

#[test]
fn xattrs_are_visible() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let f = real.join("tagged");
    write_file(&f, b"tagged\n", 0o644);
    setxattr(&f, "user.relocfs.color", b"blue").unwrap();
    setxattr(&f, "user.relocfs.empty", b"").unwrap();
    setxattr(&f, "user.relocfs.binary", &[0, 1, 2, 255]).unwrap();
    mkdir_p(&real.join("tagdir"));
    setxattr(&real.join("tagdir"), "user.dirtag", b"yes").unwrap();
    let m = b.map("/", &real).mount();

    let via = m.at("tagged");
    assert_eq!(getxattr(&via, "user.relocfs.color").unwrap(), b"blue");
    assert_eq!(getxattr(&via, "user.relocfs.empty").unwrap(), b"");
    assert_eq!(
        getxattr(&via, "user.relocfs.binary").unwrap(),
        [0, 1, 2, 255]
    );
    assert_errno(
        "getxattr of a missing name",
        getxattr(&via, "user.relocfs.missing"),
        libc::ENODATA,
    );
    let user = |v: Vec<String>| -> Vec<String> {
        v.into_iter().filter(|n| n.starts_with("user.")).collect()
    };
    assert_eq!(
        user(listxattr(&via).expect("listxattr through mount")),
        user(listxattr(&f).unwrap()),
        "listxattr user.* names"
    );
    assert_eq!(getxattr(&m.at("tagdir"), "user.dirtag").unwrap(), b"yes");

    // The getfattr tool (package `attr`) sees the same.
    let out = run_with_timeout(
        Command::new("getfattr")
            .args(["--only-values", "-n", "user.relocfs.color"])
            .arg(&via),
        SETTLE_TIMEOUT,
    );
    assert!(out.status.success(), "getfattr: {}", stderr_str(&out));
    assert_eq!(stdout_str(&out), "blue");
}

#[test]
fn seek_data_and_hole_on_sparse_file() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let path = real.join("sparse");
    const MIB: u64 = 1024 * 1024;
    {
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(&pattern(8192, 9)).unwrap();
        f.set_len(4 * MIB).unwrap();
        f.seek(SeekFrom::Start(2 * MIB)).unwrap();
        f.write_all(&pattern(4096, 10)).unwrap();
        f.sync_all().unwrap();
    }
    let m = b.map("/", &real).mount();

    let seeks = |p: &Path| -> Vec<Result<i64, i32>> {
        let f = fs::File::open(p).unwrap();
        let fd = f.as_raw_fd();
        [
            (0, libc::SEEK_HOLE),
            (0, libc::SEEK_DATA),
            (100, libc::SEEK_HOLE),
            (16_384, libc::SEEK_DATA),
            (2 * MIB as i64, libc::SEEK_HOLE),
            (2 * MIB as i64 + 8192, libc::SEEK_DATA),
        ]
        .iter()
        .map(|&(off, whence)| {
            let r = unsafe { libc::lseek(fd, off, whence) };
            if r < 0 {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap())
            } else {
                Ok(r)
            }
        })
        .collect()
    };
    let want = seeks(&path);
    assert!(
        matches!(want[0], Ok(h) if (h as u64) < 4 * MIB),
        "the real file is not sparse on this filesystem: {want:?}"
    );
    assert_eq!(
        seeks(&m.at("sparse")),
        want,
        "SEEK_HOLE/SEEK_DATA results via mount vs real"
    );
    assert_eq!(fs::read(m.at("sparse")).unwrap(), fs::read(&path).unwrap());
}

#[test]
fn hard_links_share_inode() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("one"), b"linked content\n", 0o644);
    mkdir_p(&real.join("other"));
    fs::hard_link(real.join("one"), real.join("other/two")).unwrap();
    let m = b.map("/", &real).mount();

    let a = fs::metadata(m.at("one")).unwrap();
    let c = fs::metadata(m.at("other/two")).unwrap();
    assert_eq!(a.ino(), c.ino(), "two names of one file must share st_ino");
    assert_eq!(
        a.ino(),
        fs::metadata(real.join("one")).unwrap().ino(),
        "st_ino as real"
    );
    assert_eq!(a.nlink(), 2, "nlink of one");
    assert_eq!(c.nlink(), 2, "nlink of other/two");
    assert_eq!(fs::read(m.at("other/two")).unwrap(), b"linked content\n");
    assert_eq!(fs::read(m.at("one")).unwrap(), b"linked content\n");
}

#[test]
fn odd_file_names_are_served() {
    skip_without_fuse!();
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let b = MountBuilder::new();
    let real = b.real();
    let names: Vec<&OsStr> = vec![
        OsStr::from_bytes(b"latin1-\xe9t\xe9"), // not UTF-8
        OsStr::new("quote\"and\\backslash"),
        OsStr::new("new\nline"),
        OsStr::new("-dash"),
        OsStr::new("日本語"),
        OsStr::new(" leading space"),
    ];
    for (i, n) in names.iter().enumerate() {
        write_file(&real.join(n), format!("content {i}\n").as_bytes(), 0o644);
    }
    let long = "L".repeat(255);
    write_file(&real.join(&long), b"long\n", 0o644);
    let m = b.map("/", &real).mount();

    for (i, n) in names.iter().enumerate() {
        let got = fs::read(m.mnt.join(n)).unwrap_or_else(|e| panic!("read {n:?}: {e}"));
        assert_eq!(got, format!("content {i}\n").as_bytes(), "content of {n:?}");
    }
    assert_eq!(fs::read(m.at(&long)).unwrap(), b"long\n", "255-byte name");
    let mut via: Vec<_> = fs::read_dir(m.at(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut want: Vec<_> = fs::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    via.sort();
    want.sort();
    assert_eq!(via, want, "readdir with odd names");
}

#[test]
fn reads_beyond_4gib_offsets() {
    skip_without_fuse!();
    const GIB: u64 = 1 << 30;
    let b = MountBuilder::new();
    let real = b.real();
    let path = real.join("huge-sparse");
    let tail = pattern(10_000, 11);
    {
        let f = fs::File::create(&path).unwrap();
        f.write_all_at(&tail, 5 * GIB - 1).unwrap();
    }
    let m = b.map("/", &real).mount();

    let f = fs::File::open(m.at("huge-sparse")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 5 * GIB - 1 + tail.len() as u64);
    let mut buf = vec![0u8; tail.len()];
    f.read_exact_at(&mut buf, 5 * GIB - 1).unwrap();
    assert!(buf == tail, "data after 5 GiB differs");
    let mut zeros = vec![1u8; 4096];
    f.read_exact_at(&mut zeros, 4 * GIB + 12_345).unwrap();
    assert!(zeros.iter().all(|b| *b == 0), "hole at 4 GiB not zero");
}

#[test]
fn parallel_readers_get_correct_data() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("f{i}"),
                pattern(300_000 + i * 7_919, 100 + i as u64),
            )
        })
        .collect();
    for (n, d) in &files {
        write_file(&real.join(n), d, 0o644);
    }
    let m = b.map("/", &real).extra("[fuse]\nthreads = 2\n").mount();
    std::thread::scope(|sc| {
        for (n, d) in &files {
            let p = m.at(n);
            sc.spawn(move || {
                for round in 0..5 {
                    let got = fs::read(&p).unwrap();
                    assert!(got == *d, "{n}: wrong content in round {round}");
                }
            });
        }
    });
}

#[test]
fn real_tree_changes_visible_with_zero_timeouts() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("conf"), b"version 1\n", 0o644);
    write_file(&real.join("old"), b"old\n", 0o644);
    let m = b
        .map("/", &real)
        .extra("[fuse]\nattr_timeout = 0.0\nentry_timeout = 0.0\n")
        .mount();
    assert_eq!(fs::read(m.at("conf")).unwrap(), b"version 1\n");
    assert!(m.at("old").exists());

    // The installation is updated in place, at the real path.
    fs::write(real.join("conf"), b"version 2, longer\n").unwrap();
    fs::remove_file(real.join("old")).unwrap();
    write_file(&real.join("new"), b"new\n", 0o644);

    assert_eq!(
        fs::read(m.at("conf")).unwrap(),
        b"version 2, longer\n",
        "changed content"
    );
    assert_eq!(
        fs::metadata(m.at("conf")).unwrap().len(),
        18,
        "changed size"
    );
    assert_errno("stat removed file", fs::metadata(m.at("old")), libc::ENOENT);
    assert_eq!(fs::read(m.at("new")).unwrap(), b"new\n", "new file");

    // Deployment tools replace files atomically (write a temp file, rename it
    // over the old one): the new inode must be served, not the old one.
    let held = fs::File::open(m.at("conf")).unwrap(); // keep the old node alive
    write_file(&real.join("conf.tmp"), b"version 3 via rename\n", 0o644);
    fs::rename(real.join("conf.tmp"), real.join("conf")).unwrap();
    assert_eq!(
        fs::read(m.at("conf")).unwrap(),
        b"version 3 via rename\n",
        "content after atomic replace"
    );
    assert_eq!(
        fs::metadata(m.at("conf")).unwrap().ino(),
        fs::metadata(real.join("conf")).unwrap().ino(),
        "st_ino after atomic replace"
    );
    drop(held);
    // Delete and recreate (ext4 often reuses the inode number).
    fs::remove_file(real.join("new")).unwrap();
    write_file(&real.join("new"), b"recreated\n", 0o600);
    assert_eq!(
        fs::read(m.at("new")).unwrap(),
        b"recreated\n",
        "recreated file"
    );
    let md = fs::metadata(m.at("new")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600, "mode of recreated file");
}
