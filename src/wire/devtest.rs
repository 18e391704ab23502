//! The codec against the real kernel, before the ring exists: a FUSE mount whose requests
//! this test reads from `/dev/fuse` itself, splits as a ring entry holds them
//! (`Request::split`), and answers with `Wire::serve`. Everything a program does on the
//! mount then goes through the codec, and is compared with the real directory.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use super::abi::{self, Fields};
use super::{Outcome, Request, Wire};
use crate::fs::Fs;
use crate::options::Access;

/// The mount; unmounted (lazily, so a failed test never leaves it busy) on drop, which
/// ends the server thread.
struct Mounted {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    real: PathBuf,
    server: Option<JoinHandle<()>>,
    seen: Arc<Seen>,
    /// The Wire's `/dev/fuse` fd, not kept open by the test.
    wire_dev: Weak<OwnedFd>,
}

/// What the server saw, for the passthrough test.
#[derive(Default)]
struct Seen {
    /// The kernel offered passthrough at INIT and the reply took it.
    passthrough: AtomicBool,
    /// Open replies with FOPEN_PASSTHROUGH.
    passed_through: AtomicUsize,
    /// The backing id of the last open passed through.
    backing_id: AtomicU32,
    /// RELEASE requests served.
    releases: AtomicUsize,
    /// Create replies with FOPEN_PASSTHROUGH.
    created_through: AtomicUsize,
    /// READ and WRITE requests that reached the daemon.
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = crate::sys::umount(&self.mnt, libc::MNT_DETACH);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists() && crate::sys::geteuid() == 0;
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: the codec test needs /dev/fuse and root"
        );
        eprintln!("skipping: needs /dev/fuse and root");
    }
    ok
}

/// `passthrough`: ask for kernel passthrough at INIT, and give the Wire the real
/// `/dev/fuse` fd to register backing files on.
fn mount(passthrough: bool) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    // Other users (the passthrough test's reader) may walk to the mount.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let real = dir.path().join("real");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&real).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let fs = Arc::new(super::tests::core(
        &real,
        crate::audit::AuditLog::disabled(),
    ));
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap();
    // The server thread holds every `/dev/fuse` fd (its own and the Wire's): if it dies,
    // the kernel aborts the connection and no caller waits forever.
    let wire_dev = match passthrough {
        true => Arc::new(OwnedFd::from(dev.try_clone().unwrap())),
        false => super::tests::dev(),
    };
    let weak_dev = Arc::downgrade(&wire_dev);
    let wire = Wire::new(Arc::clone(&fs), super::tests::TUNING, wire_dev).with_access(Access::All);
    let seen = Arc::new(Seen::default());
    let options = format!(
        "rootmode=40000,user_id={},group_id=0,default_permissions,allow_other",
        crate::sys::geteuid()
    );
    crate::sys::fusedev::mount(dev.as_fd(), &mnt, &options).unwrap();
    let server = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || serve_dev(dev, &wire, &fs, &seen, passthrough))
    };
    Mounted {
        _dir: dir,
        mnt,
        real,
        server: Some(server),
        seen,
        wire_dev: weak_dev,
    }
}

/// Replies as `/dev/fuse` takes them: out header, then the args.
fn reply(dev: &mut File, unique: u64, outcome: Outcome, out: &[u8]) {
    let mut msg = outcome.out_header(unique).to_vec();
    msg.extend_from_slice(&out[..outcome.args_len()]);
    // ENOENT: the request was interrupted meanwhile; nothing to do.
    let _ = dev.write_all(&msg);
}

/// FUSE_INIT_EXT (flags), and FUSE_PASSTHROUGH (bit 37: flags2 bit 5).
const INIT_EXT: u32 = 1 << 30;
const PASSTHROUGH2: u32 = 1 << 5;

/// The INIT reply; whether passthrough was taken.
fn init_reply(op: &[u8], out: &mut [u8], passthrough: bool) -> (Outcome, bool) {
    let Some(init) = Fields::new(op, 20) else {
        return (Outcome::Error(libc::EINVAL), false);
    };
    let passthrough =
        passthrough && init.u32(12) & INIT_EXT != 0 && init.u32(16) & PASSTHROUGH2 != 0;
    // The adapter's flags, less POSIX_ACL (not needed here): ATOMIC_O_TRUNC, BIG_WRITES,
    // AUTO_INVAL_DATA, DO_READDIRPLUS, READDIRPLUS_AUTO, PARALLEL_DIROPS.
    let mut flags = (1 << 3) | (1 << 5) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 18);
    if passthrough {
        flags |= INIT_EXT;
    }
    let mut w = abi::Writer::new(out);
    w.u32(7);
    w.u32(init.u32(4).min(40));
    w.u32(init.u32(8));
    w.u32(flags & init.u32(12));
    w.bytes(&16u16.to_ne_bytes()); // max_background
    w.bytes(&12u16.to_ne_bytes()); // congestion_threshold
    w.u32(128 * 1024); // max_write
    w.u32(1); // time_gran
    w.zeros(4); // max_pages, map_alignment
    w.u32(if passthrough { PASSTHROUGH2 } else { 0 }); // flags2
    w.u32(u32::from(passthrough)); // max_stack_depth
    w.zeros(64 - 40);
    match w.finish() {
        Some(n) => (Outcome::Reply(n), passthrough),
        None => (Outcome::Error(libc::EIO), false),
    }
}

fn serve_dev(mut dev: File, wire: &Wire, fs: &Fs, seen: &Seen, passthrough: bool) {
    let mut buf = vec![0u8; 128 * 1024 + 4096];
    let mut out = vec![0u8; 128 * 1024 + 4096];
    loop {
        let n = match dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOENT)) => continue,
            // ENODEV: unmounted.
            Err(_) => return,
        };
        let Some(req) = Request::split(&buf[..n]) else {
            continue;
        };
        let h = req.header;
        match h.opcode {
            abi::INIT => {
                let (outcome, taken) = init_reply(req.op, &mut out, passthrough);
                if taken {
                    // As the adapter's init does when the kernel grants it.
                    fs.enable_passthrough();
                    seen.passthrough.store(true, Ordering::SeqCst);
                }
                reply(&mut dev, h.unique, outcome, &out);
            }
            abi::FORGET => {
                if let Some(f) = Fields::new(req.op, 8) {
                    fs.forget(h.nodeid, f.u64(0));
                }
            }
            abi::BATCH_FORGET => {
                let count = Fields::new(req.op, 8).map_or(0, |f| f.u32(0) as usize);
                for one in req.payload.chunks_exact(16).take(count) {
                    let f = Fields::new(one, 16).unwrap();
                    fs.forget(f.u64(0), f.u64(8));
                }
            }
            abi::INTERRUPT => {}
            _ => {
                let outcome = wire.serve(&req, &mut out);
                if h.opcode == abi::READ {
                    seen.reads.fetch_add(1, Ordering::SeqCst);
                }
                if h.opcode == abi::WRITE {
                    seen.writes.fetch_add(1, Ordering::SeqCst);
                }
                let create_flags =
                    Fields::new(&out, abi::CREATE_OUT_SIZE).map_or(0, |f| f.u32(136));
                if matches!(outcome, Outcome::Reply(abi::CREATE_OUT_SIZE))
                    && h.opcode == abi::CREATE
                    && create_flags & abi::FOPEN_PASSTHROUGH != 0
                {
                    seen.created_through.fetch_add(1, Ordering::SeqCst);
                }
                let open_flags = Fields::new(&out, 16).map_or(0, |f| f.u32(8));
                if matches!(outcome, Outcome::Reply(16))
                    && h.opcode == abi::OPEN
                    && open_flags & abi::FOPEN_PASSTHROUGH != 0
                {
                    let id = Fields::new(&out, 16).map_or(0, |f| f.u32(12));
                    seen.backing_id.store(id, Ordering::SeqCst);
                    seen.passed_through.fetch_add(1, Ordering::SeqCst);
                }
                if h.opcode == abi::RELEASE {
                    seen.releases.fetch_add(1, Ordering::SeqCst);
                }
                reply(&mut dev, h.unique, outcome, &out);
            }
        }
    }
}

#[test]
fn programs_on_a_mount_served_by_the_codec_see_the_real_directory() {
    if !fuse_available() {
        return;
    }
    let m = mount(false);
    let data = m.mnt.join("data");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(m.real.join("big"), &content).unwrap();
    std::fs::write(m.real.join("small"), b"small file").unwrap();
    std::fs::create_dir(m.real.join("sub")).unwrap();
    for i in 0..300 {
        std::fs::write(m.real.join(format!("sub/entry-{i:03}")), b"x").unwrap();
    }

    // LOOKUP, GETATTR, OPEN, READ (several requests for the big file), RELEASE.
    assert!(std::fs::metadata(m.mnt.join("data")).unwrap().is_dir());
    let meta = std::fs::metadata(data.join("big")).unwrap();
    assert_eq!(meta.len(), content.len() as u64);
    assert_eq!(std::fs::read(data.join("big")).unwrap(), content);
    assert_eq!(std::fs::read(data.join("small")).unwrap(), b"small file");
    assert_eq!(
        std::fs::metadata(data.join("missing"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );

    // OPENDIR, READDIR/READDIRPLUS over several requests, RELEASEDIR; stat of each entry.
    let mut names: Vec<String> = std::fs::read_dir(data.join("sub"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(e.metadata().unwrap().is_file());
            e.file_name().into_string().unwrap()
        })
        .collect();
    names.sort();
    let want: Vec<String> = (0..300).map(|i| format!("entry-{i:03}")).collect();
    assert_eq!(names, want);

    // CREATE, WRITE, FSYNC, SETATTR (truncate, chmod, times), COPY_FILE_RANGE.
    let new = data.join("new");
    let mut file = File::create(&new).unwrap();
    file.write_all(&content).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(std::fs::read(m.real.join("new")).unwrap(), content);
    File::options()
        .write(true)
        .open(&new)
        .unwrap()
        .set_len(1000)
        .unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600)).unwrap();
    let real_meta = std::fs::metadata(m.real.join("new")).unwrap();
    assert_eq!((real_meta.len(), real_meta.mode() & 0o7777), (1000, 0o600));
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 5);
    File::options()
        .write(true)
        .open(&new)
        .unwrap()
        .set_modified(when)
        .unwrap();
    assert_eq!(
        std::fs::metadata(m.real.join("new")).unwrap().mtime(),
        1_000_000_000
    );
    let copied = std::io::copy(
        &mut File::open(data.join("big")).unwrap(),
        &mut File::create(data.join("copy")).unwrap(),
    )
    .unwrap();
    assert_eq!(copied, content.len() as u64);
    assert_eq!(std::fs::read(m.real.join("copy")).unwrap(), content);

    // MKDIR, SYMLINK, READLINK, LINK, RENAME, UNLINK, RMDIR.
    std::fs::create_dir(data.join("d")).unwrap();
    std::os::unix::fs::symlink("new", data.join("d/sl")).unwrap();
    assert_eq!(
        std::fs::read_link(data.join("d/sl")).unwrap(),
        Path::new("new")
    );
    assert_eq!(
        std::fs::read_link(m.real.join("d/sl")).unwrap(),
        Path::new("new")
    );
    std::fs::hard_link(&new, data.join("d/hard")).unwrap();
    assert_eq!(std::fs::metadata(&new).unwrap().nlink(), 2);
    std::fs::rename(&new, data.join("d/moved")).unwrap();
    assert!(m.real.join("d/moved").exists() && !m.real.join("new").exists());
    assert_eq!(
        std::fs::remove_dir(data.join("d"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    for name in ["sl", "hard", "moved"] {
        std::fs::remove_file(data.join("d").join(name)).unwrap();
    }
    std::fs::remove_dir(data.join("d")).unwrap();
    assert!(!m.real.join("d").exists());

    // SETXATTR, GETXATTR (size probe, then value), LISTXATTR, REMOVEXATTR; STATFS.
    let small = data.join("small");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .arg(&small)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["setfattr", "-n", "user.wire", "-v", "through-the-codec"]);
    assert_eq!(
        run(&["getfattr", "--only-values", "-n", "user.wire"]),
        "through-the-codec"
    );
    assert!(run(&["getfattr", "-d"]).contains("user.wire=\"through-the-codec\""));
    run(&["setfattr", "-x", "user.wire"]);
    assert!(!run(&["getfattr", "-d"]).contains("user.wire"));
    let statfs = std::process::Command::new("stat")
        .args(["-f", "-c", "%l"])
        .arg(&data)
        .output()
        .unwrap();
    let real_statfs = std::process::Command::new("stat")
        .args(["-f", "-c", "%l"])
        .arg(&m.real)
        .output()
        .unwrap();
    assert!(statfs.status.success());
    assert_eq!(
        statfs.stdout, real_statfs.stdout,
        "the real filesystem's namelen"
    );

    // A change outside any rule: the core's refusal, through the codec.
    assert_eq!(
        std::fs::create_dir(m.mnt.join("elsewhere"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
}

/// Kernel passthrough on the codec's path: a user's open of a large file is passed through
/// to a backing file the Wire registered on `/dev/fuse` (FUSE_DEV_IOC_BACKING_OPEN), the
/// data never reaches the daemon, and the backing id is closed when the file is.
#[test]
fn a_users_large_file_is_passed_through_with_a_backing_id_the_wire_registered() {
    if !fuse_available() {
        return;
    }
    let m = mount(true);
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(m.real.join("big"), &content).unwrap();
    std::fs::set_permissions(m.real.join("big"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // The first request (a stat) completes INIT.
    assert!(std::fs::metadata(m.mnt.join("data/big")).unwrap().is_file());
    if !m.seen.passthrough.load(Ordering::SeqCst) {
        eprintln!("skipping: the kernel offers no FUSE passthrough");
        return;
    }
    // Root's opens are never passed through (fs/passthrough.rs); nobody's is.
    let status = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "cmp",
        ])
        .arg(m.mnt.join("data/big"))
        .arg(m.real.join("big"))
        .status()
        .unwrap();
    assert!(status.success(), "nobody reads the same bytes: {status}");
    assert_eq!(m.seen.passed_through.load(Ordering::SeqCst), 1);
    assert_eq!(
        m.seen.reads.load(Ordering::SeqCst),
        0,
        "a passed-through file's reads never reach the daemon"
    );

    // The kernel releases the file after cmp exits (asynchronously): the Wire then closed
    // the backing id, which the kernel no longer knows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while m.seen.releases.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no RELEASE came");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let id = m.seen.backing_id.load(Ordering::SeqCst);
    assert!(id > 0);
    let dev = m.wire_dev.upgrade().unwrap();
    let closed = crate::sys::fusedev::backing_close(dev.as_fd(), id).unwrap_err();
    assert_eq!(closed.raw_os_error(), Some(libc::ENOENT), "{closed}");
    drop(dev);

    // A file nobody creates is passed through from its CREATE reply: its writes never
    // reach the daemon either.
    std::fs::set_permissions(&m.real, std::fs::Permissions::from_mode(0o777)).unwrap();
    let made = m.mnt.join("data/made");
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["dd", "if=/dev/zero", "bs=64k", "count=16", "status=none"])
        .arg(format!("of={}", made.display()))
        .status()
        .unwrap();
    assert!(status.success(), "nobody writes: {status}");
    assert_eq!(m.seen.created_through.load(Ordering::SeqCst), 1);
    assert_eq!(m.seen.writes.load(Ordering::SeqCst), 0);
    let real_made = std::fs::metadata(m.real.join("made")).unwrap();
    assert_eq!((real_made.len(), real_made.uid()), (1 << 20, 65534));
}
