//! Byte-level tests of the ring codec: requests built as the kernel lays them out, served by
//! a real core over temporary directories, replies checked byte by byte; struct sizes
//! against the kernel's header; and random bytes for every opcode.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::abi::{self, Fields, Writer};
use super::{InHeader, Outcome, Request, Wire};
use crate::audit::AuditLog;
use crate::fs::{Fs, FsOptions};
use crate::fuse::Tuning;
use crate::node::ROOT_ID;
use crate::options::Access;
use crate::prefix::PrefixTable;

pub(super) const TUNING: Tuning = Tuning {
    attr_timeout: Duration::from_millis(1500),
    entry_timeout: Duration::from_millis(2500),
    passthrough: false,
    readdirplus: true,
};

struct Fixture {
    _dir: tempfile::TempDir,
    real: PathBuf,
    fs: Arc<Fs>,
    wire: Wire,
}

pub(super) fn core(real: &Path, audit: AuditLog) -> Fs {
    let text = format!(
        "[[map]]\nfrom = \"/data\"\nto = {}\nmode = \"rw\"\n",
        toml::Value::String(real.to_str().unwrap().into())
    );
    let config = crate::config::parse(&text, Path::new("wire-test.toml")).unwrap();
    let roots = crate::preflight::open_roots(&config).unwrap();
    let table = PrefixTable::new(&config.rules);
    Fs::new(
        PathBuf::from("/legacy"),
        table,
        roots,
        Arc::new(audit),
        FsOptions::default(),
    )
    .unwrap()
}

/// Not a `/dev/fuse` fd: passthrough is never negotiated in these tests, so no ioctl is made.
pub(super) fn dev() -> Arc<OwnedFd> {
    Arc::new(std::fs::File::open("/dev/null").unwrap().into())
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let fs = Arc::new(core(&real, AuditLog::disabled()));
    let wire = Wire::new(Arc::clone(&fs), TUNING, dev());
    Fixture {
        _dir: dir,
        real,
        fs,
        wire,
    }
}

/// The test's own uid and gid, as the kernel would put them in a request (`/proc/self` is
/// owned by the process's effective ids).
fn me() -> (u32, u32) {
    let st = std::fs::metadata("/proc/self").unwrap();
    (
        crate::sys::geteuid(),
        std::os::unix::fs::MetadataExt::gid(&st),
    )
}

/// A struct as the kernel writes it: fields in order, native byte order.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u32(mut self, v: u32) -> Bytes {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Bytes {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(mut self, n: &str) -> Bytes {
        self.0.extend_from_slice(n.as_bytes());
        self.0.push(0);
        self
    }
    fn raw(mut self, b: &[u8]) -> Bytes {
        self.0.extend_from_slice(b);
        self
    }
}

fn b() -> Bytes {
    Bytes::default()
}

fn header(opcode: u32, nodeid: u64) -> InHeader {
    let (uid, gid) = me();
    InHeader {
        len: 0,
        opcode,
        unique: 7,
        nodeid,
        uid,
        gid,
        pid: std::process::id(),
    }
}

impl Fixture {
    fn call_as(&self, h: InHeader, op: &Bytes, payload: &Bytes, out: &mut [u8]) -> Outcome {
        let req = Request {
            header: h,
            op: &op.0,
            payload: &payload.0,
        };
        self.wire.serve(&req, out)
    }

    /// Serves a request; the reply bytes, or the errno.
    fn call(&self, opcode: u32, nodeid: u64, op: Bytes, payload: Bytes) -> Result<Vec<u8>, i32> {
        let mut out = vec![0u8; 256 * 1024];
        match self.call_as(header(opcode, nodeid), &op, &payload, &mut out) {
            Outcome::Reply(n) => {
                out.truncate(n);
                Ok(out)
            }
            Outcome::Error(e) => Err(e),
        }
    }

    fn lookup(&self, parent: u64, name: &str) -> Result<Vec<u8>, i32> {
        self.call(abi::LOOKUP, parent, b(), b().name(name))
    }

    /// The node id of `/data`, the rule's directory.
    fn data(&self) -> u64 {
        nodeid(&self.lookup(ROOT_ID, "data").unwrap())
    }

    fn open(&self, ino: u64, flags: i32) -> u64 {
        let out = self
            .call(abi::OPEN, ino, b().u32(flags as u32).u32(0), b())
            .unwrap();
        assert_eq!(out.len(), abi::OPEN_OUT_SIZE);
        f(&out).u64(0)
    }

    fn opendir(&self, ino: u64) -> u64 {
        let out = self
            .call(abi::OPENDIR, ino, b().u32(0).u32(0), b())
            .unwrap();
        assert_eq!(out.len(), abi::OPEN_OUT_SIZE);
        let flags = f(&out).u32(8);
        assert_eq!(flags, abi::FOPEN_KEEP_CACHE | abi::FOPEN_CACHE_DIR);
        f(&out).u64(0)
    }
}

fn f(bytes: &[u8]) -> Fields<'_> {
    Fields::new(bytes, bytes.len()).unwrap()
}

fn nodeid(entry: &[u8]) -> u64 {
    assert_eq!(entry.len(), abi::ENTRY_OUT_SIZE);
    f(entry).u64(0)
}

/// A `fuse_read_in` (also READDIR's).
fn read_in(fh: u64, offset: u64, size: u32) -> Bytes {
    b().u64(fh)
        .u64(offset)
        .u32(size)
        .u32(0)
        .u64(0)
        .u32(0)
        .u32(0)
}

fn write_in(fh: u64, offset: u64, size: u32) -> Bytes {
    read_in(fh, offset, size)
}

// Attr offsets within fuse_attr.
const A_INO: usize = 0;
const A_SIZE: usize = 8;
const A_MODE: usize = 60;
const A_NLINK: usize = 64;

#[test]
fn struct_sizes_are_the_kernels() {
    // From include/uapi/linux/fuse.h (7.42): sizeof of each struct.
    let st = crate::sys::zeroed_stat();
    let mut buf = [0u8; 512];
    let mut w = Writer::new(&mut buf);
    abi::put_attr(&mut w, &st);
    assert_eq!(w.written(), 88, "fuse_attr");
    let mut w = Writer::new(&mut buf);
    abi::put_entry(&mut w, &st, Duration::ZERO.into(), Duration::ZERO.into());
    assert_eq!(w.written(), 128, "fuse_entry_out");
    let mut w = Writer::new(&mut buf);
    abi::put_attr_out(&mut w, &st, Duration::ZERO.into());
    assert_eq!(w.written(), 104, "fuse_attr_out");
    let mut w = Writer::new(&mut buf);
    abi::put_open(&mut w, 1, 2, 3);
    assert_eq!(w.written(), 16, "fuse_open_out");
    let sizes = [
        (abi::IN_HEADER_SIZE, 40, "fuse_in_header"),
        (abi::OUT_HEADER_SIZE, 16, "fuse_out_header"),
        (abi::ATTR_SIZE, 88, "fuse_attr"),
        (abi::ENTRY_OUT_SIZE, 128, "fuse_entry_out"),
        (abi::ATTR_OUT_SIZE, 104, "fuse_attr_out"),
        (abi::OPEN_OUT_SIZE, 16, "fuse_open_out"),
        (abi::CREATE_OUT_SIZE, 144, "entry_out + open_out"),
        (abi::WRITE_OUT_SIZE, 8, "fuse_write_out"),
        (abi::STATFS_OUT_SIZE, 80, "fuse_statfs_out"),
        (abi::GETXATTR_OUT_SIZE, 8, "fuse_getxattr_out"),
        (abi::LSEEK_OUT_SIZE, 8, "fuse_lseek_out"),
        (abi::IOCTL_OUT_SIZE, 16, "fuse_ioctl_out"),
        (abi::DIRENT_SIZE, 24, "FUSE_NAME_OFFSET"),
        (abi::DIRENTPLUS_SIZE, 152, "FUSE_NAME_OFFSET_DIRENTPLUS"),
        (abi::GETATTR_IN_SIZE, 16, "fuse_getattr_in"),
        (abi::SETATTR_IN_SIZE, 88, "fuse_setattr_in"),
        (abi::OPEN_IN_SIZE, 8, "fuse_open_in"),
        (abi::CREATE_IN_SIZE, 16, "fuse_create_in"),
        (abi::RELEASE_IN_SIZE, 24, "fuse_release_in"),
        (abi::FLUSH_IN_SIZE, 24, "fuse_flush_in"),
        (abi::READ_IN_SIZE, 40, "fuse_read_in"),
        (abi::WRITE_IN_SIZE, 40, "fuse_write_in"),
        (abi::FSYNC_IN_SIZE, 16, "fuse_fsync_in"),
        (abi::SETXATTR_IN_SIZE, 8, "FUSE_COMPAT_SETXATTR_IN_SIZE"),
        (abi::GETXATTR_IN_SIZE, 8, "fuse_getxattr_in"),
        (abi::ACCESS_IN_SIZE, 8, "fuse_access_in"),
        (abi::MKNOD_IN_SIZE, 16, "fuse_mknod_in"),
        (abi::MKDIR_IN_SIZE, 8, "fuse_mkdir_in"),
        (abi::RENAME_IN_SIZE, 8, "fuse_rename_in"),
        (abi::RENAME2_IN_SIZE, 16, "fuse_rename2_in"),
        (abi::LINK_IN_SIZE, 8, "fuse_link_in"),
        (abi::FALLOCATE_IN_SIZE, 32, "fuse_fallocate_in"),
        (abi::LSEEK_IN_SIZE, 24, "fuse_lseek_in"),
        (abi::COPY_FILE_RANGE_IN_SIZE, 56, "fuse_copy_file_range_in"),
        (abi::IOCTL_IN_SIZE, 32, "fuse_ioctl_in"),
        (abi::POLL_IN_SIZE, 24, "fuse_poll_in"),
        (abi::LK_IN_SIZE, 48, "fuse_lk_in"),
        (abi::BMAP_IN_SIZE, 16, "fuse_bmap_in"),
        (abi::FORGET_IN_SIZE, 8, "fuse_forget_in"),
        (abi::BACKING_MAP_SIZE, 16, "fuse_backing_map"),
        (abi::INIT_IN_SIZE, 64, "fuse_init_in"),
        (abi::STATX_IN_SIZE, 24, "fuse_statx_in"),
    ];
    for (ours, kernel, name) in sizes {
        assert_eq!(ours, kernel, "{name}");
    }
    assert_eq!(abi::dirent_align(24 + 1), 32);
    assert_eq!(abi::dirent_align(32), 32);
}

#[test]
fn in_header_is_parsed_field_by_field_and_a_short_one_refused() {
    let bytes = b()
        .u32(56)
        .u32(abi::LOOKUP)
        .u64(0x1122_3344_5566_7788)
        .u64(42)
        .u32(1000)
        .u32(100)
        .u32(4321)
        .u32(0)
        .raw(&[0xff; 88]); // the rest of the ring's 128-byte in_out area
    let h = InHeader::parse(&bytes.0).unwrap();
    assert_eq!(
        h,
        InHeader {
            len: 56,
            opcode: abi::LOOKUP,
            unique: 0x1122_3344_5566_7788,
            nodeid: 42,
            uid: 1000,
            gid: 100,
            pid: 4321,
        }
    );
    assert_eq!(InHeader::parse(&bytes.0[..39]), None);
    assert_eq!(InHeader::parse(&[]), None);
}

#[test]
fn lookup_and_getattr_reply_entry_and_attr_with_the_tuning_ttls() {
    let fx = fixture();
    std::fs::write(fx.real.join("f"), b"hello").unwrap();
    let data = fx.data();
    let entry = fx.lookup(data, "f").unwrap();
    let e = f(&entry);
    let id = e.u64(0);
    assert!(id > ROOT_ID);
    assert_eq!(e.u64(8), 0, "generation");
    assert_eq!((e.u64(16), e.u32(32)), (2, 500_000_000), "entry_valid");
    assert_eq!((e.u64(24), e.u32(36)), (1, 500_000_000), "attr_valid");
    assert_eq!(e.u64(40 + A_INO), id, "st_ino is the node id");
    assert_eq!(e.u64(40 + A_SIZE), 5);
    assert_eq!(e.u32(40 + A_MODE) & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(e.u32(40 + A_NLINK), 1);

    let out = fx
        .call(abi::GETATTR, id, b().u32(0).u32(0).u64(0), b())
        .unwrap();
    assert_eq!(out.len(), abi::ATTR_OUT_SIZE);
    let a = f(&out);
    assert_eq!((a.u64(0), a.u32(8)), (1, 500_000_000));
    // The attr is the one lookup gave.
    assert_eq!(&out[16..], &entry[40..]);

    // Errors are the core's; malformed requests EINVAL; unknown ops ENOSYS.
    assert_eq!(fx.lookup(data, "missing"), Err(libc::ENOENT));
    assert_eq!(
        fx.call(abi::LOOKUP, data, b(), b().raw(b"f")),
        Err(libc::EINVAL),
        "a name without its NUL"
    );
    assert_eq!(
        fx.call(abi::GETATTR, id, b().u32(0), b()),
        Err(libc::EINVAL)
    );
    assert_eq!(fx.call(abi::STATX, id, b(), b()), Err(libc::ENOSYS));
    assert_eq!(fx.call(9999, id, b(), b()), Err(libc::ENOSYS));
    assert_eq!(
        fx.call(abi::POLL, id, b().u64(0).u64(0).u32(0).u32(0), b()),
        Err(libc::ENOSYS)
    );
}

#[test]
fn open_read_and_release_serve_the_real_file() {
    let fx = fixture();
    let content: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    std::fs::write(fx.real.join("f"), &content).unwrap();
    let data = fx.data();
    let id = nodeid(&fx.lookup(data, "f").unwrap());
    let out = fx
        .call(abi::OPEN, id, b().u32(libc::O_RDONLY as u32).u32(0), b())
        .unwrap();
    let (fh, flags, backing) = (f(&out).u64(0), f(&out).u32(8), f(&out).u32(12));
    // Served by the daemon: page-cached, no flush, no backing.
    assert_eq!(flags, abi::FOPEN_KEEP_CACHE | abi::FOPEN_NOFLUSH);
    assert_eq!(backing, 0);
    assert_eq!(
        fx.call(abi::READ, id, read_in(fh, 100, 4096), b()).unwrap(),
        &content[100..4196]
    );
    assert_eq!(
        fx.call(abi::READ, id, read_in(fh, 9_000, 4096), b())
            .unwrap(),
        &content[9_000..]
    );
    // A read larger than the entry's buffer is cut to it, never written past it.
    let mut small = [0u8; 64];
    let got = fx.call_as(
        header(abi::READ, id),
        &read_in(fh, 0, 4096),
        &b(),
        &mut small,
    );
    assert_eq!(got, Outcome::Reply(64));
    assert_eq!(&small[..], &content[..64]);
    assert_eq!(
        fx.call(abi::FLUSH, id, b().u64(fh).u64(0).u64(0), b()),
        Ok(vec![])
    );
    let release = b().u64(fh).u32(0).u32(0).u64(0);
    assert_eq!(fx.call(abi::RELEASE, id, release, b()), Ok(vec![]));
    // The handle is gone.
    assert_eq!(
        fx.call(abi::READ, id, read_in(fh, 0, 10), b()),
        Err(libc::EBADF)
    );
}

/// Walks a READDIR reply: (ino, next offset, type, name) of each record, checking the
/// kernel's 8-byte alignment and that every record lies within the reply.
fn dirents(mut reply: &[u8], header: usize) -> Vec<(u64, u64, u32, String)> {
    let mut out = Vec::new();
    while !reply.is_empty() {
        let d = Fields::new(&reply[header - abi::DIRENT_SIZE..], abi::DIRENT_SIZE).unwrap();
        let namelen = d.u32(16) as usize;
        let size = abi::dirent_align(header + namelen);
        assert!(size <= reply.len(), "record past the reply");
        let name = &reply[header..header + namelen];
        assert!(reply[header + namelen..size].iter().all(|&b| b == 0));
        out.push((
            d.u64(0),
            d.u64(8),
            d.u32(20),
            String::from_utf8(name.to_vec()).unwrap(),
        ));
        reply = &reply[size..];
    }
    out
}

#[test]
fn readdir_honours_the_request_size_and_resumes_at_the_offset() {
    let fx = fixture();
    for i in 0..20 {
        std::fs::write(fx.real.join(format!("file-{i:02}")), b"x").unwrap();
    }
    std::fs::create_dir(fx.real.join("sub")).unwrap();
    let data = fx.data();
    let fh = fx.opendir(data);
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        // 100 bytes: three records of 32 ("file-NN" is 24 + 7, aligned to 32).
        let reply = fx
            .call(abi::READDIR, data, read_in(fh, offset, 100), b())
            .unwrap();
        assert!(reply.len() <= 100);
        assert_eq!(reply.len() % 8, 0);
        let entries = dirents(&reply, abi::DIRENT_SIZE);
        if entries.is_empty() {
            break;
        }
        for (_, next, typ, name) in entries {
            if name == "sub" {
                assert_eq!(typ, libc::DT_DIR as u32);
            } else if name.starts_with("file-") {
                assert_eq!(typ, libc::DT_REG as u32);
            }
            names.push(name);
            offset = next;
        }
    }
    names.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("file-{i:02}")).collect();
    want.extend([".".into(), "..".into(), "sub".into()]);
    want.sort();
    assert_eq!(names, want);
    let releasedir = b().u64(fh).u32(0).u32(0).u64(0);
    assert_eq!(fx.call(abi::RELEASEDIR, data, releasedir, b()), Ok(vec![]));
}

#[test]
fn readdirplus_entries_are_lookups_and_the_one_that_does_not_fit_is_not() {
    let fx = fixture();
    for name in ["a", "b", "c"] {
        std::fs::write(fx.real.join(name), b"xyz").unwrap();
    }
    let data = fx.data();
    let fh = fx.opendir(data);
    let nodes = fx.fs.node_count();
    // Room for exactly one direntplus with a one-letter name (152 + 1 -> 160).
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let reply = fx
            .call(abi::READDIRPLUS, data, read_in(fh, offset, 160), b())
            .unwrap();
        let entries = dirents(&reply, abi::DIRENTPLUS_SIZE);
        if entries.is_empty() {
            break;
        }
        assert_eq!(entries.len(), 1);
        let e = f(&reply);
        let (ino, next, _, name) = entries[0].clone();
        offset = next;
        if name == "." || name == ".." {
            continue;
        }
        // The entry_out: node id = inode number, the dirent TTL for both, the real size.
        assert_eq!(e.u64(0), ino);
        assert_eq!((e.u64(16), e.u32(32)), (1, 500_000_000));
        assert_eq!((e.u64(24), e.u32(36)), (1, 500_000_000));
        assert_eq!(e.u64(40 + A_SIZE), 3);
        seen.push((name, ino));
    }
    seen.sort();
    assert_eq!(seen.len(), 3, "{seen:?}");
    // One node per entry sent, none for the entries that did not fit and were sent again.
    assert_eq!(fx.fs.node_count(), nodes + 3);
    // The ids are the ones a lookup finds (the same node, one more kernel lookup).
    for (name, ino) in &seen {
        assert_eq!(nodeid(&fx.lookup(data, name).unwrap()), *ino);
    }
}

#[test]
fn changes_reach_the_real_directory() {
    let fx = fixture();
    let data = fx.data();

    // CREATE + WRITE + SETATTR(size) + FSYNC.
    let flags = (libc::O_WRONLY | libc::O_CREAT) as u32;
    let out = fx
        .call(
            abi::CREATE,
            data,
            b().u32(flags).u32(0o640).u32(0o022).u32(0),
            b().name("new"),
        )
        .unwrap();
    assert_eq!(out.len(), abi::CREATE_OUT_SIZE);
    let id = f(&out).u64(0);
    // Entry and attr TTLs are both the entry timeout, as fuser's `created`.
    assert_eq!((f(&out).u64(16), f(&out).u64(24)), (2, 2));
    assert_eq!(f(&out).u32(40 + A_MODE), libc::S_IFREG | 0o640);
    let fh = f(&out[abi::ENTRY_OUT_SIZE..]).u64(0);
    let out = fx
        .call(abi::WRITE, id, write_in(fh, 0, 11), b().raw(b"hello world"))
        .unwrap();
    assert_eq!(out, b().u32(11).u32(0).0);
    // A write whose data is shorter than it says: refused, nothing written.
    assert_eq!(
        fx.call(abi::WRITE, id, write_in(fh, 0, 100), b().raw(b"short")),
        Err(libc::EINVAL)
    );
    let setattr = b()
        .u32(abi::FATTR_SIZE | abi::FATTR_FH)
        .u32(0)
        .u64(fh)
        .u64(5)
        .raw(&[0; 64]);
    let out = fx.call(abi::SETATTR, id, setattr, b()).unwrap();
    assert_eq!(f(&out).u64(16 + A_SIZE), 5);
    assert_eq!(std::fs::read(fx.real.join("new")).unwrap(), b"hello");
    assert_eq!(
        fx.call(abi::FSYNC, id, b().u64(fh).u32(1).u32(0), b()),
        Ok(vec![])
    );
    assert_eq!(
        fx.call(abi::RELEASE, id, b().u64(fh).u64(0).u64(0), b()),
        Ok(vec![])
    );

    // MKDIR, SYMLINK + READLINK, LINK, RENAME, UNLINK, RMDIR.
    let dir = nodeid(
        &fx.call(abi::MKDIR, data, b().u32(0o755).u32(0), b().name("d"))
            .unwrap(),
    );
    assert!(fx.real.join("d").is_dir());
    let link = nodeid(
        &fx.call(abi::SYMLINK, data, b(), b().name("sl").name("new"))
            .unwrap(),
    );
    assert_eq!(fx.call(abi::READLINK, link, b(), b()).unwrap(), b"new");
    let hard = fx
        .call(abi::LINK, dir, b().u64(id), b().name("hard"))
        .unwrap();
    assert_eq!(nodeid(&hard), id);
    assert_eq!(f(&hard).u32(40 + A_NLINK), 2);
    assert!(fx.real.join("d/hard").exists());
    let rename2 = b().u64(dir).u32(libc::RENAME_NOREPLACE).u32(0);
    assert_eq!(
        fx.call(abi::RENAME2, data, rename2, b().name("new").name("hard")),
        Err(libc::EEXIST)
    );
    assert_eq!(
        fx.call(
            abi::RENAME,
            data,
            b().u64(dir),
            b().name("new").name("moved")
        ),
        Ok(vec![])
    );
    assert!(fx.real.join("d/moved").exists() && !fx.real.join("new").exists());
    assert_eq!(
        fx.call(abi::RMDIR, data, b(), b().name("d")),
        Err(libc::ENOTEMPTY)
    );
    for name in ["moved", "hard"] {
        assert_eq!(fx.call(abi::UNLINK, dir, b(), b().name(name)), Ok(vec![]));
    }
    assert_eq!(fx.call(abi::RMDIR, data, b(), b().name("d")), Ok(vec![]));
    assert!(!fx.real.join("d").exists());

    // MKNOD of a fifo; ACCESS; STATFS.
    let fifo = fx
        .call(
            abi::MKNOD,
            data,
            b().u32(libc::S_IFIFO | 0o600).u32(0).u32(0).u32(0),
            b().name("p"),
        )
        .unwrap();
    assert_eq!(f(&fifo).u32(40 + A_MODE) & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(
        fx.call(abi::ACCESS, data, b().u32(libc::R_OK as u32).u32(0), b()),
        Ok(vec![])
    );
    let st = fx.call(abi::STATFS, data, b(), b()).unwrap();
    assert_eq!(st.len(), abi::STATFS_OUT_SIZE);
    assert!(f(&st).u32(44) > 0, "namelen");
}

#[test]
fn xattrs_lseek_and_fallocate_go_through_the_core() {
    let fx = fixture();
    std::fs::write(fx.real.join("f"), b"0123456789").unwrap();
    let data = fx.data();
    let id = nodeid(&fx.lookup(data, "f").unwrap());
    let setx = fx.call(
        abi::SETXATTR,
        id,
        b().u32(3).u32(0),
        b().name("user.wire").raw(b"abc"),
    );
    if setx == Err(libc::EOPNOTSUPP) {
        eprintln!("skipping xattr checks: the temporary filesystem has no user xattrs");
    } else {
        assert_eq!(setx, Ok(vec![]));
        // Size probe, then the value.
        let size = fx
            .call(abi::GETXATTR, id, b().u32(0).u32(0), b().name("user.wire"))
            .unwrap();
        assert_eq!(size, b().u32(3).u32(0).0);
        let value = fx
            .call(abi::GETXATTR, id, b().u32(64).u32(0), b().name("user.wire"))
            .unwrap();
        assert_eq!(value, b"abc");
        let list = fx
            .call(abi::LISTXATTR, id, b().u32(256).u32(0), b())
            .unwrap();
        assert!(list.windows(10).any(|w| w == b"user.wire\0"));
        assert_eq!(
            fx.call(abi::REMOVEXATTR, id, b(), b().name("user.wire")),
            Ok(vec![])
        );
        // A value shorter than its size: refused.
        assert_eq!(
            fx.call(
                abi::SETXATTR,
                id,
                b().u32(30).u32(0),
                b().name("user.x").raw(b"ab")
            ),
            Err(libc::EINVAL)
        );
    }
    let fh = fx.open(id, libc::O_RDWR);
    let lseek = b().u64(fh).u64(3).u32(libc::SEEK_SET as u32).u32(0);
    assert_eq!(fx.call(abi::LSEEK, id, lseek, b()).unwrap(), b().u64(3).0);
    let fallocate = b().u64(fh).u64(0).u64(4096).u32(0).u32(0);
    assert_eq!(fx.call(abi::FALLOCATE, id, fallocate, b()), Ok(vec![]));
    assert_eq!(std::fs::metadata(fx.real.join("f")).unwrap().len(), 4096);
    // An ioctl relocfs does not serve: ENOTTY, as a real file answers TCGETS.
    let ioctl = b()
        .u64(fh)
        .u32(0)
        .u32(libc::TCGETS as u32)
        .u64(0)
        .u32(0)
        .u32(60);
    assert_eq!(fx.call(abi::IOCTL, id, ioctl, b()), Err(libc::ENOTTY));
}

#[test]
fn only_the_owner_is_served_unless_the_mount_says_otherwise() {
    let fx = fixture();
    std::fs::write(fx.real.join("f"), b"x").unwrap();
    let data = fx.data();
    let id = nodeid(&fx.lookup(data, "f").unwrap());
    let fh = fx.open(id, libc::O_RDONLY);
    let mut stranger = header(abi::LOOKUP, data);
    stranger.uid = fx.wire.owner.wrapping_add(4242);
    let mut out = vec![0u8; 4096];
    // Owner-only (the default): a stranger's lookup is refused before the core sees it...
    assert_eq!(
        fx.call_as(stranger, &b(), &b().name("f"), &mut out),
        Outcome::Error(libc::EACCES)
    );
    // ...but the kernel's reads on a handle already open are served (as fuser's session).
    stranger.opcode = abi::READ;
    stranger.nodeid = id;
    assert_eq!(
        fx.call_as(stranger, &read_in(fh, 0, 10), &b(), &mut out),
        Outcome::Reply(1)
    );
    // allow_root: root and the owner only.
    let wire = Wire::new(Arc::clone(&fx.fs), TUNING, dev()).with_access(Access::RootAndOwner);
    stranger.opcode = abi::GETATTR;
    let getattr = b().u64(0).u64(0);
    let req = Request {
        header: stranger,
        op: &getattr.0,
        payload: &[],
    };
    if stranger.uid != 0 {
        assert_eq!(wire.serve(&req, &mut out), Outcome::Error(libc::EACCES));
    }
    let wire = Wire::new(Arc::clone(&fx.fs), TUNING, dev()).with_access(Access::All);
    assert_eq!(
        wire.serve(&req, &mut out),
        Outcome::Reply(abi::ATTR_OUT_SIZE)
    );
}

#[test]
fn an_open_on_the_ring_path_is_audited_as_on_the_fuser_path() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("f"), b"x").unwrap();
    let path = dir.path().join("audit.jsonl");
    let fs = Arc::new(core(&real, AuditLog::open(&path, 64).unwrap()));
    let fx = Fixture {
        wire: Wire::new(Arc::clone(&fs), TUNING, dev()),
        fs,
        real,
        _dir: dir,
    };
    let data = fx.data();
    let id = nodeid(&fx.lookup(data, "f").unwrap());
    fx.open(id, libc::O_RDONLY);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("\"open\"") {
            assert!(text.contains("/legacy/data/f"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no open event: {text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn may_block_sends_slow_ops_and_large_daemon_io_to_workers() {
    for op in [
        abi::FSYNC,
        abi::FSYNCDIR,
        abi::FALLOCATE,
        abi::COPY_FILE_RANGE,
        abi::SETATTR,
    ] {
        assert!(Wire::may_block(op), "{op}");
    }
    for op in [
        abi::LOOKUP,
        abi::GETATTR,
        abi::OPEN,
        abi::RELEASE,
        abi::READDIR,
        abi::FLUSH,
    ] {
        assert!(!Wire::may_block(op), "{op}");
    }
    let small = read_in(1, 0, 4096);
    let large = read_in(1, 0, 1024 * 1024);
    let req = |opcode, op: &Bytes| {
        Wire::may_block_request(&Request {
            header: header(opcode, 2),
            op: &op.0,
            payload: &[],
        })
    };
    assert!(!req(abi::READ, &small));
    assert!(req(abi::READ, &large));
    assert!(req(abi::WRITE, &large));
    assert!(
        !req(abi::READ, &b()),
        "a malformed read is answered at once"
    );
}

/// A tiny deterministic generator: the same bytes on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_and_truncated_requests_never_panic_nor_write_past_out() {
    let fx = fixture();
    std::fs::write(fx.real.join("f"), vec![7u8; 5000]).unwrap();
    std::fs::create_dir(fx.real.join("sub")).unwrap();
    let data = fx.data();
    let file = nodeid(&fx.lookup(data, "f").unwrap());
    let fh = fx.open(file, libc::O_RDWR);
    let dh = fx.opendir(data);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    const CANARY: u8 = 0xa5;
    for round in 0..20_000 {
        let opcode = match round % 3 {
            0 => (round / 3 % 60) as u32,
            1 => [
                abi::READ,
                abi::READDIR,
                abi::READDIRPLUS,
                abi::GETXATTR,
                abi::IOCTL,
            ][rng.below(5)],
            _ => rng.next() as u32 % 64,
        };
        let nodeid = [ROOT_ID, data, file, rng.next(), 0][rng.below(5)];
        // Op structs: truncated real-looking ones (a live handle first), or noise.
        let mut op = match rng.below(3) {
            0 => {
                read_in(
                    [fh, dh][rng.below(2)],
                    rng.below(6000) as u64,
                    rng.below(70_000) as u32,
                )
                .0
            }
            1 => {
                let n = rng.below(100);
                rng.bytes(n)
            }
            _ => Vec::new(),
        };
        op.truncate(rng.below(op.len() + 1) + if rng.below(2) == 0 { op.len() } else { 0 });
        let payload = match rng.below(4) {
            0 => b().name("f").name("g").0,
            1 => {
                let n = rng.below(300);
                rng.bytes(n)
            }
            2 => b"no-nul".to_vec(),
            _ => Vec::new(),
        };
        let room = [0, 8, 16, 100, 104, 128, 160, 4096][rng.below(8)];
        let mut buf = vec![CANARY; room + 64];
        let mut h = header(opcode, nodeid);
        if rng.below(8) == 0 {
            h.uid = rng.next() as u32;
        }
        // Never let the noise remove the fixture's own files (the later rounds use them).
        if matches!(
            opcode,
            abi::UNLINK | abi::RMDIR | abi::RENAME | abi::RENAME2
        ) {
            continue;
        }
        let req = Request {
            header: h,
            op: &op,
            payload: &payload,
        };
        let outcome = fx.wire.serve(&req, &mut buf[..room]);
        assert!(
            buf[room..].iter().all(|&b| b == CANARY),
            "round {round}: op {opcode} wrote past out"
        );
        match outcome {
            Outcome::Reply(n) => assert!(n <= room, "round {round}: op {opcode}: {n} > {room}"),
            Outcome::Error(e) => assert!(e > 0, "round {round}: op {opcode}: errno {e}"),
        }
    }
}

#[test]
fn wire_is_shared_by_ring_threads() {
    fn check<T: Send + Sync>() {}
    check::<Wire>();
}

#[test]
fn a_passed_through_open_names_its_backing_id_and_a_foreign_backing_is_not_used() {
    use crate::fs::{Opened, OpenedFlags};
    let flags = OpenedFlags {
        keep_cache: false,
        no_flush: true,
        cache_dir: false,
    };
    let ring = super::backing::RingBacking::unregistered(42);
    let opened = Opened {
        fh: 9,
        flags,
        passthrough: Some(Arc::new(ring)),
    };
    let mut buf = [0u8; 16];
    let mut w = Writer::new(&mut buf);
    super::put_opened(&mut w, &opened);
    assert_eq!(w.finish(), Some(16));
    let out = b()
        .u64(9)
        .u32(abi::FOPEN_NOFLUSH | abi::FOPEN_PASSTHROUGH)
        .u32(42);
    assert_eq!(&buf[..], &out.0[..]);
    // A backing some other transport registered: served by the daemon, no id.
    let foreign = Opened {
        passthrough: Some(Arc::new(())),
        ..opened
    };
    let mut w = Writer::new(&mut buf);
    super::put_opened(&mut w, &foreign);
    assert_eq!(w.finish(), Some(16));
    assert_eq!(&buf[..], &b().u64(9).u32(abi::FOPEN_NOFLUSH).u32(0).0[..]);
}

#[test]
fn a_dev_fuse_request_splits_at_its_op_struct_and_bad_lengths_are_refused() {
    let h = |opcode: u32, len: u32| {
        b().u32(len)
            .u32(opcode)
            .u64(5)
            .u64(9)
            .u32(1)
            .u32(2)
            .u32(3)
            .u32(0)
    };
    // MKDIR: fuse_mkdir_in, then the name.
    let bytes = h(abi::MKDIR, 40 + 8 + 2).u32(0o755).u32(0o22).name("d");
    let req = Request::split(&bytes.0).unwrap();
    assert_eq!((req.header.opcode, req.header.nodeid), (abi::MKDIR, 9));
    assert_eq!(req.op, &b().u32(0o755).u32(0o22).0[..]);
    assert_eq!(req.payload, b"d\0");
    // LOOKUP: no op struct, the name only.
    let bytes = h(abi::LOOKUP, 40 + 2).name("x");
    let req = Request::split(&bytes.0).unwrap();
    assert_eq!((req.op, req.payload), (&[][..], &b"x\0"[..]));
    // A length other than the buffer's, or args shorter than the op struct.
    assert!(Request::split(&h(abi::LOOKUP, 99).name("x").0).is_none());
    assert!(Request::split(&h(abi::LOOKUP, 10).0).is_none());
    assert!(Request::split(&h(abi::READ, 40 + 8).u64(0).0).is_none());
    // Random bytes never panic.
    let mut rng = Rng(77);
    for _ in 0..20_000 {
        let n = rng.below(120);
        let mut bytes = rng.bytes(n);
        if bytes.len() >= 8 && rng.below(2) == 0 {
            bytes[..4].copy_from_slice(&(n as u32).to_ne_bytes());
            let opcode = rng.below(60) as u32;
            bytes[4..8].copy_from_slice(&opcode.to_ne_bytes());
        }
        if let Some(req) = Request::split(&bytes) {
            assert!(req.op.len() + req.payload.len() + abi::IN_HEADER_SIZE <= bytes.len());
        }
    }
}

#[test]
fn out_headers_carry_the_length_the_negative_errno_and_the_unique() {
    let reply = Outcome::Reply(128).out_header(0x0102_0304_0506_0708);
    assert_eq!(
        &reply[..],
        &b().u32(144).u32(0).u64(0x0102_0304_0506_0708).0[..]
    );
    let error = Outcome::Error(libc::ENOENT).out_header(3);
    assert_eq!(
        &error[..],
        &b().u32(16).u32((-libc::ENOENT) as u32).u64(3).0[..]
    );
    assert_eq!(Outcome::Error(libc::ENOENT).args_len(), 0);
    assert_eq!(Outcome::Reply(7).args_len(), 7);
}

/// Op structs of the right size with random fields (live handles and nodes most of the
/// time), so the core itself gets arbitrary values through the codec: never a panic.
#[test]
fn well_sized_requests_with_random_fields_never_panic() {
    let fx = fixture();
    std::fs::write(fx.real.join("f"), vec![7u8; 5000]).unwrap();
    std::fs::create_dir(fx.real.join("sub")).unwrap();
    let data = fx.data();
    let file = nodeid(&fx.lookup(data, "f").unwrap());
    let fh = fx.open(file, libc::O_RDWR);
    let dh = fx.opendir(data);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..10_000u32 {
        let opcode = round % 53;
        // Not the ones that destroy the fixture or could allocate without bound.
        if matches!(
            opcode,
            abi::UNLINK
                | abi::RMDIR
                | abi::RENAME
                | abi::RENAME2
                | abi::FALLOCATE
                | abi::COPY_FILE_RANGE
                | abi::WRITE
                | abi::SETATTR
        ) {
            continue;
        }
        let size = abi::op_size(opcode).unwrap_or(0);
        let mut op = rng.bytes(size);
        // The handle is the first field of most op structs.
        if size >= 8 && rng.below(4) != 0 {
            let handle = [fh, dh][rng.below(2)];
            op[..8].copy_from_slice(&handle.to_ne_bytes());
        }
        let payload = match rng.below(3) {
            0 => b().name("f").name("sub").0,
            1 => b().name("user.x").raw(&rng.bytes(8)).0,
            _ => {
                let n = rng.below(64);
                rng.bytes(n)
            }
        };
        let nodeid = [ROOT_ID, data, file, rng.next()][rng.below(4)];
        let mut out = vec![0u8; 64 * 1024];
        let req = Request {
            header: header(opcode, nodeid),
            op: &op,
            payload: &payload,
        };
        match fx.wire.serve(&req, &mut out) {
            Outcome::Reply(n) => assert!(n <= out.len()),
            Outcome::Error(e) => assert!(e > 0, "op {opcode}: errno {e}"),
        }
    }
}
