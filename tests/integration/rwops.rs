//! One test per kind of change through an rw rule, each asserting the exact
//! result through the mount and at the real path: open/create flags, I/O on
//! open files, special files, renames with flags, ownership, times, xattrs,
//! and what FUSE does not support.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::common::*;

fn open_flags(p: &Path, flags: i32, mode: u32) -> std::io::Result<File> {
    let c = cpath(p);
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }
}

#[test]
fn create_with_excl_trunc_and_append() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let f = m.at("f");
    let wr = libc::O_WRONLY | libc::O_CREAT;

    // O_EXCL: creates once, then EEXIST (without touching the file).
    let mut a = open_flags(&f, wr | libc::O_EXCL, 0o640).expect("O_CREAT|O_EXCL on a new name");
    a.write_all(b"first").unwrap();
    drop(a);
    assert_errno(
        "O_CREAT|O_EXCL on an existing name",
        open_flags(&f, wr | libc::O_EXCL, 0o600),
        libc::EEXIST,
    );
    assert_eq!(fs::read(real.join("f")).unwrap(), b"first");
    assert_eq!(mode_owner(&real.join("f")).0, 0o640 & !current_umask());

    // O_TRUNC: an existing file is emptied at open, its mode kept.
    let mut t = open_flags(&f, wr | libc::O_TRUNC, 0o600).unwrap();
    assert_eq!(
        fs::metadata(real.join("f")).unwrap().len(),
        0,
        "O_TRUNC at open"
    );
    t.write_all(b"0123456789").unwrap();
    drop(t);
    assert_eq!(fs::read(real.join("f")).unwrap(), b"0123456789");
    assert_eq!(mode_owner(&real.join("f")).0, 0o640 & !current_umask());

    // O_APPEND: every write goes to the end, whatever the offset says.
    let mut ap = open_flags(&f, libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    ap.seek(SeekFrom::Start(0)).unwrap();
    ap.write_all(b"AB").unwrap();
    ap.write_at(b"CD", 0).unwrap(); // pwrite on O_APPEND appends on Linux
    drop(ap);
    assert_eq!(fs::read(real.join("f")).unwrap(), b"0123456789ABCD");
    assert_eq!(
        fs::read(&f).unwrap(),
        b"0123456789ABCD",
        "through the mount"
    );

    // O_CREAT|O_APPEND on a new name.
    let mut n = open_flags(&m.at("g"), wr | libc::O_APPEND, 0o644).unwrap();
    n.write_all(b"x").unwrap();
    n.write_all(b"y").unwrap();
    drop(n);
    assert_eq!(fs::read(real.join("g")).unwrap(), b"xy");
}

fn current_umask() -> u32 {
    // Read without changing it (umask(2) would race with other test threads).
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

#[test]
fn write_read_back_ftruncate_and_sync() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let data = pattern(3 << 20, 7);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.at("big"))
        .unwrap();
    // Out of order, unaligned, with a hole in the middle.
    f.write_all_at(&data[1_000_001..], 1_000_001).unwrap();
    f.write_all_at(&data[..777_777], 0).unwrap();
    f.sync_data().expect("fdatasync");
    f.sync_all().expect("fsync");
    let mut want = data.clone();
    want[777_777..1_000_001].fill(0);
    assert_eq!(
        fnv1a(&fs::read(real.join("big")).unwrap()),
        fnv1a(&want),
        "real file"
    );
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(fnv1a(&back), fnv1a(&want), "read back through the same fd");

    // ftruncate down and up.
    f.set_len(123_457).unwrap();
    assert_eq!(fs::metadata(real.join("big")).unwrap().len(), 123_457);
    f.set_len(200_000).unwrap();
    let got = fs::read(real.join("big")).unwrap();
    assert_eq!(got.len(), 200_000);
    assert_eq!(&got[..123_457], &want[..123_457]);
    assert!(
        got[123_457..].iter().all(|b| *b == 0),
        "extension reads as zeros"
    );
    assert_eq!(
        fs::metadata(m.at("big")).unwrap().len(),
        200_000,
        "size through the mount"
    );
    drop(f);

    // fsync/fdatasync of a directory opened through the mount.
    let d = File::open(m.mnt.clone()).unwrap();
    assert_eq!(
        unsafe { libc::fsync(d.as_raw_fd()) },
        0,
        "fsync(dir): {}",
        last_errno()
    );
    assert_eq!(
        unsafe { libc::fdatasync(d.as_raw_fd()) },
        0,
        "fdatasync(dir)"
    );
}

#[test]
fn fallocate_modes() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let content = pattern(16384, 3);
    fs::write(m.at("f"), &content).unwrap();
    let f = OpenOptions::new().write(true).open(m.at("f")).unwrap();
    let fa = |mode: i32, off: i64, len: i64| {
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let size = || fs::metadata(real.join("f")).unwrap().len();

    fa(0, 16384, 8192).expect("fallocate extend");
    assert_eq!(size(), 24576, "plain fallocate extends the size");
    fa(libc::FALLOC_FL_KEEP_SIZE, 24576, 65536).expect("KEEP_SIZE");
    assert_eq!(size(), 24576, "KEEP_SIZE keeps the size");
    assert!(
        fs::metadata(real.join("f")).unwrap().blocks() * 512 >= 24576 + 65536,
        "KEEP_SIZE allocated the blocks"
    );
    fa(
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        4096,
        4096,
    )
    .expect("PUNCH_HOLE");
    fa(libc::FALLOC_FL_ZERO_RANGE, 12288, 1000).expect("ZERO_RANGE");
    assert_errno(
        "PUNCH_HOLE without KEEP_SIZE",
        fa(libc::FALLOC_FL_PUNCH_HOLE, 0, 4096),
        libc::EOPNOTSUPP,
    );
    let mut want = content.clone();
    want.resize(24576, 0);
    want[4096..8192].fill(0);
    want[12288..13288].fill(0);
    assert_eq!(fs::read(real.join("f")).unwrap(), want, "real content");
    assert_eq!(
        fs::read(m.at("f")).unwrap(),
        want,
        "content through the mount"
    );
}

#[test]
fn copy_file_range_within_the_mount() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let src_data = pattern(100_000, 11);
    fs::write(m.at("src"), &src_data).unwrap();
    fs::write(m.at("dst"), b"HEADER").unwrap();
    let src = File::open(m.at("src")).unwrap();
    let dst = OpenOptions::new().write(true).open(m.at("dst")).unwrap();
    let cfr = |off_in: i64, off_out: i64, len: usize| {
        let (mut i, mut o) = (off_in, off_out);
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut i, dst.as_raw_fd(), &mut o, len, 0)
        };
        assert!(
            n >= 0,
            "copy_file_range: {}",
            std::io::Error::last_os_error()
        );
        (n, i, o)
    };
    assert_eq!(cfr(10, 6, 50_000), (50_000, 50_010, 50_006));
    // Past the end of the source: a short copy, then 0.
    assert_eq!(cfr(99_990, 50_006, 1000), (10, 100_000, 50_016));
    assert_eq!(cfr(100_000, 50_016, 1000), (0, 100_000, 50_016));
    let mut want = b"HEADER".to_vec();
    want.extend_from_slice(&src_data[10..50_010]);
    want.extend_from_slice(&src_data[99_990..]);
    assert_eq!(fs::read(real.join("dst")).unwrap(), want);
    assert_eq!(fs::read(m.at("dst")).unwrap(), want);
}

#[test]
fn fifo_and_unix_socket_work_through_the_mount() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    mkfifo(&m.at("fifo"), 0o600).unwrap();
    assert!(fs::symlink_metadata(real.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let p = m.at("fifo");
    let writer = std::thread::spawn(move || fs::write(p, b"through the fifo").unwrap());
    assert_eq!(fs::read(m.at("fifo")).unwrap(), b"through the fifo");
    writer.join().unwrap();

    // bind(2) creates the socket node through the daemon (mknod S_IFSOCK).
    let listener = UnixListener::bind(m.at("sock")).expect("bind in the mount");
    let md = fs::symlink_metadata(real.join("sock")).unwrap();
    assert!(md.file_type().is_socket(), "a socket at the real path");
    assert_eq!((md.uid(), md.gid()), (0, 0));
    let path = m.at("sock");
    let client = std::thread::spawn(move || {
        let mut s = UnixStream::connect(path).expect("connect through the mount");
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    conn.write_all(b"pong").unwrap();
    assert_eq!(&client.join().unwrap(), b"pong");
    fs::remove_file(m.at("sock")).unwrap();
    assert!(!real.join("sock").exists());
}

/// Device nodes follow the caller's own privilege, as natively; `nodev` (the default) stops
/// their opening, not their creation: root may mknod a device on a nodev filesystem natively,
/// and so through relocfs. An unprivileged user can create none, on any mount.
#[test]
fn device_nodes_follow_the_callers_privilege() {
    skip_without_fuse!();
    let null = libc::makedev(1, 3);
    let user_mknod = |path: PathBuf, kind: u32, dev: libc::dev_t| {
        spawn_as_user(KEY_UID, KEY_GID, &[KEY_GID], move || {
            mknod(&path, kind | 0o666, dev)
        })
        .join()
        .unwrap()
    };
    {
        let (m, real) = rw_root_with_home(&[]);
        let opts = mount_entry(&m.mnt).expect("mount listed").options;
        assert!(
            opts.iter().any(|o| o == "nodev"),
            "default is nodev: {opts:?}"
        );
        mknod(&m.at("null"), libc::S_IFCHR | 0o666, null).expect("root's mknod on nodev");
        mknod(&m.at("blk"), libc::S_IFBLK | 0o600, libc::makedev(7, 0))
            .expect("root's block device mknod on nodev");
        let md = fs::symlink_metadata(real.join("null")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), null);
        assert!(fs::symlink_metadata(real.join("blk"))
            .unwrap()
            .file_type()
            .is_block_device());
        let e = wait_for_audit(&m.audit, ev("mknod", &m.at("null"), None), AUDIT_TIMEOUT);
        assert_eq!(s(&e, "result"), Some("ok"), "{e}");
        // nodev: the device cannot be opened through the mount (EACCES, as natively).
        assert_errno(
            "open a char device on the nodev mount",
            fs::File::open(m.at("null")),
            libc::EACCES,
        );
        assert_errno(
            "write a char device on the nodev mount",
            fs::write(m.at("null"), b"x"),
            libc::EACCES,
        );
        // An unprivileged user cannot create one, not even in a directory of their own.
        assert_errno(
            "mknod as uid 4242 on nodev",
            user_mknod(m.at("home4242/null"), libc::S_IFCHR, null),
            libc::EPERM,
        );
        assert_errno(
            "block mknod as uid 4242 on nodev",
            user_mknod(m.at("home4242/blk"), libc::S_IFBLK, libc::makedev(7, 0)),
            libc::EPERM,
        );
        assert_eq!(dir_names(&real.join("home4242")), Vec::<String>::new());
        // Fifos are not devices: allowed to anyone who may write the directory.
        mkfifo(&m.at("fifo"), 0o600).unwrap();
        user_mknod(m.at("home4242/fifo"), libc::S_IFIFO, 0).expect("a user's fifo");
    }
    let (m, real) = rw_root_with_home(&["dev"]);
    mknod(&m.at("null"), libc::S_IFCHR | 0o666, null).expect("mknod as root with -o dev");
    let md = fs::symlink_metadata(real.join("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), null);
    assert_eq!(
        fs::metadata(m.at("null")).unwrap().rdev(),
        null,
        "through the mount"
    );
    // It is usable through the mount (the kernel opens it, not the daemon).
    fs::write(m.at("null"), b"discarded").expect("write to the null device");
    assert_eq!(fs::read(m.at("null")).unwrap(), b"");
    // An unprivileged user cannot, even with -o dev: the real filesystem decides.
    assert_errno(
        "mknod as uid 4242 with -o dev",
        user_mknod(m.at("home4242/null"), libc::S_IFCHR, null),
        libc::EPERM,
    );
    assert!(!real.join("home4242/null").exists());
}

#[test]
fn rename_noreplace_and_exchange() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    fs::write(m.at("a"), b"A").unwrap();
    fs::write(m.at("b"), b"B").unwrap();
    fs::create_dir(m.at("d")).unwrap();
    fs::write(m.at("d/inner"), b"I").unwrap();

    assert_errno(
        "RENAME_NOREPLACE onto an existing name",
        rename2(&m.at("a"), &m.at("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
    );
    assert_eq!(fs::read(real.join("a")).unwrap(), b"A");
    assert_eq!(fs::read(real.join("b")).unwrap(), b"B");
    rename2(&m.at("a"), &m.at("c"), libc::RENAME_NOREPLACE).expect("NOREPLACE to a new name");
    assert!(!real.join("a").exists());
    assert_eq!(fs::read(real.join("c")).unwrap(), b"A");

    let (ino_b, ino_c) = (
        fs::metadata(real.join("b")).unwrap().ino(),
        fs::metadata(real.join("c")).unwrap().ino(),
    );
    rename2(&m.at("b"), &m.at("c"), libc::RENAME_EXCHANGE).expect("exchange two files");
    assert_eq!(fs::read(real.join("b")).unwrap(), b"A");
    assert_eq!(fs::read(real.join("c")).unwrap(), b"B");
    assert_eq!(fs::metadata(real.join("b")).unwrap().ino(), ino_c);
    assert_eq!(fs::metadata(real.join("c")).unwrap().ino(), ino_b);
    assert_eq!(fs::read(m.at("b")).unwrap(), b"A", "through the mount");
    assert_eq!(fs::read(m.at("c")).unwrap(), b"B", "through the mount");

    // A file and a directory trade places.
    rename2(&m.at("b"), &m.at("d"), libc::RENAME_EXCHANGE).expect("exchange file and dir");
    assert!(real.join("b").is_dir());
    assert_eq!(fs::read(real.join("b/inner")).unwrap(), b"I");
    assert_eq!(fs::read(real.join("d")).unwrap(), b"A");
    assert_eq!(
        fs::read(m.at("b/inner")).unwrap(),
        b"I",
        "through the mount"
    );
    assert_eq!(fs::read(m.at("d")).unwrap(), b"A", "through the mount");
    assert_errno(
        "RENAME_EXCHANGE with a missing name",
        rename2(&m.at("c"), &m.at("missing"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
    );
}

#[test]
fn chown_by_root_and_by_an_unprivileged_user() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let f = real.join("home4242/f");
    write_owned(&f, b"x", 0o644, KEY_UID, KEY_GID);

    std::os::unix::fs::chown(m.at("home4242/f"), Some(NOBODY), Some(NOBODY)).expect("root chown");
    assert_eq!(mode_owner(&f), (0o644, NOBODY, NOBODY));
    std::os::unix::fs::chown(m.at("home4242/f"), Some(KEY_UID), Some(KEY_GID)).unwrap();

    let mp = m.at("home4242/f");
    let results = spawn_as_user(KEY_UID, KEY_GID, &[KEY_GID, 4343], move || {
        let ch = |u: Option<u32>, g: Option<u32>| std::os::unix::fs::chown(&mp, u, g);
        (
            ch(Some(NOBODY), None),
            ch(Some(0), None),
            ch(None, Some(NOBODY)),
            ch(None, Some(4343)),
            ch(Some(KEY_UID), None),
        )
    })
    .join()
    .unwrap();
    assert_errno("give the file away to nobody", results.0, libc::EPERM);
    assert_errno("give the file away to root", results.1, libc::EPERM);
    assert_errno(
        "chgrp to a group the user is not in",
        results.2,
        libc::EPERM,
    );
    results
        .3
        .expect("chgrp to a supplementary group of the user");
    results.4.expect("chown to oneself");
    assert_eq!(mode_owner(&f), (0o644, KEY_UID, 4343));
}

#[test]
fn utimensat_now_omit_and_explicit() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let f = real.join("home4242/f");
    write_file(&f, b"x", 0o666); // world-writable, owned by root
    set_times(&f, 1_000_000_000, 5);
    let times = |p: &Path| {
        let md = fs::metadata(p).unwrap();
        ((md.atime(), md.atime_nsec()), (md.mtime(), md.mtime_nsec()))
    };
    let omit = (0, libc::UTIME_OMIT);
    let now = (0, libc::UTIME_NOW);

    // As root: OMIT keeps, NOW sets, explicit sets exactly.
    utimensat(&m.at("home4242/f"), omit, (1_200_000_000, 123_456_789), 0).unwrap();
    assert_eq!(
        times(&f),
        ((1_000_000_000, 5), (1_200_000_000, 123_456_789))
    );
    let before = now_unix();
    utimensat(&m.at("home4242/f"), now, omit, 0).unwrap();
    let (a, mt) = times(&f);
    assert!(a.0 >= before && a.0 <= now_unix() + 1, "atime now: {a:?}");
    assert_eq!(mt, (1_200_000_000, 123_456_789), "mtime omitted");
    assert_eq!(times(&m.at("home4242/f")), times(&f), "through the mount");

    // A non-owner with write permission may set both times to "now" (as
    // with a NULL times array), nothing else: not one time alone, not
    // explicit times (natively too: EPERM).
    let p = m.at("home4242/f");
    let (r_now, r_one, r_explicit) = spawn_as_user(KEY_UID, KEY_GID, &[KEY_GID], move || {
        (
            utimensat(&p, now, now, 0),
            utimensat(&p, omit, now, 0),
            utimensat(&p, (1, 0), (1, 0), 0),
        )
    })
    .join()
    .unwrap();
    r_now.expect("UTIME_NOW for both by a writer who is not the owner");
    assert_errno("UTIME_OMIT + UTIME_NOW by a non-owner", r_one, libc::EPERM);
    assert_errno("explicit times by a non-owner", r_explicit, libc::EPERM);
    let (_, mt) = times(&f);
    assert!(mt.0 >= before, "mtime now: {mt:?}");

    // A symlink's own times (AT_SYMLINK_NOFOLLOW), its target untouched.
    std::os::unix::fs::symlink("home4242/f", m.at("link")).unwrap();
    let target_before = times(&f);
    utimensat(
        &m.at("link"),
        (1_100_000_000, 1),
        (1_100_000_000, 2),
        libc::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let md = fs::symlink_metadata(real.join("link")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 2));
    assert_eq!(times(&f), target_before);
}

/// Times before 1970 with a fraction of a second: `touch -d 1938-04-24T22:13:20.123456789`.
#[test]
fn explicit_times_before_1970_are_set_exactly() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let native = m.root().join("native");
    fs::write(&native, b"").unwrap();
    fs::write(m.at("f"), b"").unwrap();
    let mut problems = Vec::new();
    for t in [
        (-1_000_000_000, 0),
        (-1_000_000_000, 123_456_789),
        (-1, 999_999_999),
        (-1, 1),
    ] {
        utimensat(&native, t, t, 0).unwrap();
        utimensat(&m.at("f"), t, t, 0).unwrap();
        let n = fs::metadata(&native).unwrap();
        let r = fs::metadata(real.join("f")).unwrap();
        let want = (n.mtime(), n.mtime_nsec());
        assert_eq!(want, t, "native filesystem");
        let got = (r.mtime(), r.mtime_nsec());
        if got != want {
            problems.push(format!(
                "utimensat({t:?}): real mtime {got:?}, natively {want:?}"
            ));
        }
        let ga = (r.atime(), r.atime_nsec());
        if ga != want {
            problems.push(format!(
                "utimensat({t:?}): real atime {ga:?}, natively {want:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A symlink with two hard links: utimensat(AT_SYMLINK_NOFOLLOW) on one name
/// must change that symlink, whatever became of the other name.
#[test]
fn utimensat_nofollow_on_a_hard_linked_symlink_changes_that_symlink() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    std::os::unix::fs::symlink("target", m.at("a")).unwrap();
    // link(2) does not follow: a second name for the symlink itself.
    let (ca, cb) = (cpath(&m.at("a")), cpath(&m.at("b")));
    let rc = unsafe { libc::linkat(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), 0) };
    assert_eq!(rc, 0, "link a b: {}", errno_text(last_errno()));
    fs::remove_file(m.at("a")).unwrap();
    let t = (1_100_000_000, 7);
    let first = utimensat(&m.at("b"), t, t, libc::AT_SYMLINK_NOFOLLOW);
    // Another object now takes the name the symlink was first known by.
    fs::write(m.at("a"), b"unrelated").unwrap();
    set_times(&real.join("a"), 1_300_000_000, 0);
    let t2 = (1_200_000_000, 9);
    let second = utimensat(&m.at("b"), t2, t2, libc::AT_SYMLINK_NOFOLLOW);

    let mtime = |p: &str| {
        let md = fs::symlink_metadata(real.join(p)).unwrap();
        (md.mtime(), md.mtime_nsec())
    };
    let mut problems = Vec::new();
    if let Err(e) = first {
        problems.push(format!("utimensat(b) after unlink(a): {e} (natively: ok)"));
    }
    if let Err(e) = second {
        problems.push(format!(
            "utimensat(b) after a new a appeared: {e} (natively: ok)"
        ));
    }
    if mtime("b") != t2 {
        problems.push(format!("symlink b mtime {:?}, want {t2:?}", mtime("b")));
    }
    if mtime("a") != (1_300_000_000, 0) {
        problems.push(format!(
            "the unrelated file a was changed: mtime {:?}, want (1300000000, 0)",
            mtime("a")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn xattr_flags_and_permissions() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let f = m.at("f");
    fs::write(&f, b"x").unwrap();
    chmod(&real.join("f"), 0o644);
    setxattr_flags(&f, "user.k", b"one", libc::XATTR_CREATE).expect("XATTR_CREATE new");
    assert_errno(
        "XATTR_CREATE existing",
        setxattr_flags(&f, "user.k", b"two", libc::XATTR_CREATE),
        libc::EEXIST,
    );
    assert_errno(
        "XATTR_REPLACE missing",
        setxattr_flags(&f, "user.other", b"two", libc::XATTR_REPLACE),
        libc::ENODATA,
    );
    setxattr_flags(&f, "user.k", b"three", libc::XATTR_REPLACE).expect("XATTR_REPLACE existing");
    setxattr_flags(&f, "trusted.k", b"t", 0).expect("trusted.* as root");
    assert_eq!(getxattr(&real.join("f"), "user.k").unwrap(), b"three");
    assert_eq!(getxattr(&real.join("f"), "trusted.k").unwrap(), b"t");
    assert_eq!(listxattr(&f).unwrap(), ["trusted.k", "user.k"]);

    let p = f.clone();
    let r = spawn_as_user(KEY_UID, KEY_GID, &[KEY_GID], move || {
        (
            setxattr_flags(&p, "user.k", b"evil", 0),
            removexattr(&p, "user.k"),
            setxattr_flags(&p, "trusted.x", b"evil", 0),
            getxattr(&p, "user.k"),
        )
    })
    .join()
    .unwrap();
    assert_errno("user.* on a file the user cannot write", r.0, libc::EACCES);
    assert_errno(
        "removexattr on a file the user cannot write",
        r.1,
        libc::EACCES,
    );
    assert_errno("trusted.* as a user", r.2, libc::EPERM);
    assert_eq!(
        r.3.unwrap(),
        b"three",
        "reading user.* needs only read access"
    );
    removexattr(&f, "user.k").unwrap();
    assert_errno(
        "removed",
        getxattr(&real.join("f"), "user.k"),
        libc::ENODATA,
    );
    assert_errno("remove missing", removexattr(&f, "user.k"), libc::ENODATA);
}

/// Natively, listxattr(2) shows `trusted.*` names only to a caller with
/// CAP_SYS_ADMIN; an unprivileged user sees the same list through the mount.
#[test]
fn listxattr_hides_trusted_names_from_users_like_natively() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let native = m.root().join("native");
    for f in [&native, &real.join("f")] {
        fs::write(f, b"x").unwrap();
        chmod(f, 0o644);
        setxattr(f, "trusted.k", b"t").unwrap();
        setxattr(f, "user.k", b"u").unwrap();
    }
    assert_eq!(
        listxattr(&m.at("f")).unwrap(),
        ["trusted.k", "user.k"],
        "as root"
    );
    let (n, r) = (native.clone(), m.at("f"));
    let (natively, through) = spawn_as_user(KEY_UID, KEY_GID, &[KEY_GID], move || {
        (listxattr(&n), listxattr(&r))
    })
    .join()
    .unwrap();
    let natively = natively.unwrap();
    assert_eq!(natively, ["user.k"], "natively, as uid {KEY_UID}");
    assert_eq!(
        through.unwrap(),
        natively,
        "through relocfs, as uid {KEY_UID}"
    );
}

/// fuser 0.18 has no FUSE_TMPFILE: the kernel answers O_TMPFILE with
/// EOPNOTSUPP (applications such as systemd and some editors fall back).
#[test]
fn o_tmpfile_is_not_supported() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    let before = snapshot(&real);
    assert_errno(
        "open(O_TMPFILE) on the mount",
        open_flags(&m.mnt, libc::O_TMPFILE | libc::O_RDWR, 0o600),
        libc::EOPNOTSUPP,
    );
    assert_same_snapshot(&before, &snapshot(&real));
    // Natively (same filesystem) it works: the limit is FUSE's.
    open_flags(&m.root(), libc::O_TMPFILE | libc::O_RDWR, 0o600).expect("O_TMPFILE natively");
}

#[test]
fn new_files_belong_to_the_caller_with_its_supplementary_groups() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&[]);
    // A directory writable only through group 4343, which uid 4242 has only
    // as a supplementary group: the daemon must act with the caller's groups.
    mkdir_owned(&real.join("team"), 0, 4343, 0o770);
    let p = m.at("team/made-by-4242");
    let out = run_as_groups(
        KEY_UID,
        KEY_GID,
        &[KEY_GID, 4343],
        &mut sh("echo hi > \"$1\"", &[&p]),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert_eq!(mode_owner(&real.join("team/made-by-4242")).1, KEY_UID);
    assert_eq!(
        fs::metadata(real.join("team/made-by-4242")).unwrap().gid(),
        KEY_GID
    );
    // Without the group: refused, as at the real path.
    let q = m.at("team/not-made");
    let out = run_as_groups(
        KEY_UID,
        KEY_GID,
        &[KEY_GID],
        &mut sh("echo hi > \"$1\"", &[&q]),
    );
    assert!(!out.status.success());
    assert!(!real.join("team/not-made").exists());
}
