//! The FUSE protocol structs relocfs's ring transport reads and writes, from the kernel's
//! `include/uapi/linux/fuse.h` (ABI 7.42): opcodes, flags, sizes, a bounds-checked reader
//! for the kernel's structs and a bounds-checked writer for the replies. Plain byte work, no
//! `unsafe`: every field is read from or written to a slice at its offset, in native byte
//! order (the kernel's, as the `/dev/fuse` protocol is).

// Opcodes (enum fuse_opcode).
pub const LOOKUP: u32 = 1;
pub const FORGET: u32 = 2;
pub const GETATTR: u32 = 3;
pub const SETATTR: u32 = 4;
pub const READLINK: u32 = 5;
pub const SYMLINK: u32 = 6;
pub const MKNOD: u32 = 8;
pub const MKDIR: u32 = 9;
pub const UNLINK: u32 = 10;
pub const RMDIR: u32 = 11;
pub const RENAME: u32 = 12;
pub const LINK: u32 = 13;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const WRITE: u32 = 16;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const FSYNC: u32 = 20;
pub const SETXATTR: u32 = 21;
pub const GETXATTR: u32 = 22;
pub const LISTXATTR: u32 = 23;
pub const REMOVEXATTR: u32 = 24;
pub const FLUSH: u32 = 25;
pub const INIT: u32 = 26;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const FSYNCDIR: u32 = 30;
pub const GETLK: u32 = 31;
pub const SETLK: u32 = 32;
pub const SETLKW: u32 = 33;
pub const ACCESS: u32 = 34;
pub const CREATE: u32 = 35;
pub const INTERRUPT: u32 = 36;
pub const BMAP: u32 = 37;
pub const DESTROY: u32 = 38;
pub const IOCTL: u32 = 39;
pub const POLL: u32 = 40;
pub const NOTIFY_REPLY: u32 = 41;
pub const BATCH_FORGET: u32 = 42;
pub const FALLOCATE: u32 = 43;
pub const READDIRPLUS: u32 = 44;
pub const RENAME2: u32 = 45;
pub const LSEEK: u32 = 46;
pub const COPY_FILE_RANGE: u32 = 47;
pub const SETUPMAPPING: u32 = 48;
pub const REMOVEMAPPING: u32 = 49;
pub const SYNCFS: u32 = 50;
pub const TMPFILE: u32 = 51;
pub const STATX: u32 = 52;

// Sizes of the structs (checked against the kernel's in the tests).
pub const IN_HEADER_SIZE: usize = 40;
pub const OUT_HEADER_SIZE: usize = 16;
pub const ATTR_SIZE: usize = 88;
pub const ENTRY_OUT_SIZE: usize = 128;
pub const ATTR_OUT_SIZE: usize = 104;
pub const OPEN_OUT_SIZE: usize = 16;
pub const CREATE_OUT_SIZE: usize = ENTRY_OUT_SIZE + OPEN_OUT_SIZE;
pub const WRITE_OUT_SIZE: usize = 8;
pub const STATFS_OUT_SIZE: usize = 80;
pub const GETXATTR_OUT_SIZE: usize = 8;
pub const LSEEK_OUT_SIZE: usize = 8;
pub const IOCTL_OUT_SIZE: usize = 16;
/// `fuse_dirent` up to its name (`FUSE_NAME_OFFSET`).
pub const DIRENT_SIZE: usize = 24;
/// `fuse_direntplus` up to its name: an entry_out, then a dirent.
pub const DIRENTPLUS_SIZE: usize = ENTRY_OUT_SIZE + DIRENT_SIZE;
pub const GETATTR_IN_SIZE: usize = 16;
pub const SETATTR_IN_SIZE: usize = 88;
pub const OPEN_IN_SIZE: usize = 8;
pub const CREATE_IN_SIZE: usize = 16;
pub const RELEASE_IN_SIZE: usize = 24;
pub const FLUSH_IN_SIZE: usize = 24;
pub const READ_IN_SIZE: usize = 40;
pub const WRITE_IN_SIZE: usize = 40;
pub const FSYNC_IN_SIZE: usize = 16;
/// Without FUSE_SETXATTR_EXT (relocfs never asks for it); with it the kernel sends 16 bytes,
/// whose first 8 are these.
pub const SETXATTR_IN_SIZE: usize = 8;
pub const GETXATTR_IN_SIZE: usize = 8;
pub const ACCESS_IN_SIZE: usize = 8;
pub const MKNOD_IN_SIZE: usize = 16;
pub const MKDIR_IN_SIZE: usize = 8;
pub const RENAME_IN_SIZE: usize = 8;
pub const RENAME2_IN_SIZE: usize = 16;
pub const LINK_IN_SIZE: usize = 8;
pub const FALLOCATE_IN_SIZE: usize = 32;
pub const LSEEK_IN_SIZE: usize = 24;
pub const COPY_FILE_RANGE_IN_SIZE: usize = 56;
pub const IOCTL_IN_SIZE: usize = 32;
pub const POLL_IN_SIZE: usize = 24;
pub const LK_IN_SIZE: usize = 48;
pub const BMAP_IN_SIZE: usize = 16;
pub const FORGET_IN_SIZE: usize = 8;
pub const BACKING_MAP_SIZE: usize = 16;
pub const INIT_IN_SIZE: usize = 64;
pub const STATX_IN_SIZE: usize = 24;

// fuse_open_out.open_flags.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;
pub const FOPEN_NOFLUSH: u32 = 1 << 5;
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;

// fuse_setattr_in.valid.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_FH: u32 = 1 << 6;
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;

// fuse_fsync_in.fsync_flags.
pub const FSYNC_FDATASYNC: u32 = 1 << 0;

// fuse_ioctl_in.flags.
pub const IOCTL_UNRESTRICTED: u32 = 1 << 1;

/// The size of an op's first in-arg, its per-op struct, as the kernel sends it (0 for ops
/// whose args are only names, or none); `None` for opcodes relocfs does not know. On the
/// ring the kernel puts this arg apart (`op_in`); on `/dev/fuse` it precedes the others,
/// and this is where they split (`Request::split`).
pub const fn op_size(opcode: u32) -> Option<usize> {
    Some(match opcode {
        LOOKUP | READLINK | SYMLINK | UNLINK | RMDIR | STATFS | REMOVEXATTR | DESTROY => 0,
        FORGET | INTERRUPT | BATCH_FORGET => 8,
        GETATTR | FSYNC | FSYNCDIR | BMAP => 16,
        SETATTR => SETATTR_IN_SIZE,
        MKNOD => MKNOD_IN_SIZE,
        MKDIR => MKDIR_IN_SIZE,
        RENAME => RENAME_IN_SIZE,
        RENAME2 => RENAME2_IN_SIZE,
        LINK => LINK_IN_SIZE,
        OPEN | OPENDIR => OPEN_IN_SIZE,
        READ | READDIR | READDIRPLUS => READ_IN_SIZE,
        WRITE => WRITE_IN_SIZE,
        RELEASE | RELEASEDIR => RELEASE_IN_SIZE,
        SETXATTR => SETXATTR_IN_SIZE,
        GETXATTR | LISTXATTR => GETXATTR_IN_SIZE,
        FLUSH => FLUSH_IN_SIZE,
        GETLK | SETLK | SETLKW => LK_IN_SIZE,
        ACCESS => ACCESS_IN_SIZE,
        CREATE => CREATE_IN_SIZE,
        IOCTL => IOCTL_IN_SIZE,
        POLL => POLL_IN_SIZE,
        FALLOCATE => FALLOCATE_IN_SIZE,
        LSEEK => LSEEK_IN_SIZE,
        COPY_FILE_RANGE => COPY_FILE_RANGE_IN_SIZE,
        INIT => INIT_IN_SIZE,
        STATX => STATX_IN_SIZE,
        _ => return None,
    })
}

/// Rounds a directory record up to the kernel's 8-byte alignment (`FUSE_DIRENT_ALIGN`).
pub const fn dirent_align(len: usize) -> usize {
    (len + 7) & !7
}

/// A bounds-checked view of one of the kernel's structs: each read names its offset, and a
/// struct shorter than the kernel's was refused when the reader was made (`Fields::new`).
pub struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The struct at the start of `bytes`, which must be at least `size` long; longer is
    /// fine (a kernel newer than the ABI relocfs knows may append fields).
    pub fn new(bytes: &'a [u8], size: usize) -> Option<Fields<'a>> {
        bytes.get(..size).map(|bytes| Fields { bytes })
    }

    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        // Offsets are constants within the size `new` checked; a wrong one reads zeros,
        // never out of bounds.
        if let Some(src) = self.bytes.get(at..at + N) {
            out.copy_from_slice(src);
        }
        out
    }

    pub fn u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.array(at))
    }

    pub fn i32(&self, at: usize) -> i32 {
        i32::from_ne_bytes(self.array(at))
    }

    pub fn u64(&self, at: usize) -> u64 {
        u64::from_ne_bytes(self.array(at))
    }

    pub fn i64(&self, at: usize) -> i64 {
        i64::from_ne_bytes(self.array(at))
    }
}

/// A reply being written into the entry's payload buffer: every write is bounds-checked,
/// and one that does not fit marks the reply as overflowed instead of writing anything
/// (`Writer::finish` then fails), so nothing is ever written beyond `out`.
pub struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut [u8]) -> Writer<'a> {
        Writer {
            out,
            len: 0,
            overflow: false,
        }
    }

    pub fn written(&self) -> usize {
        self.len
    }

    /// Bytes still free.
    pub fn room(&self) -> usize {
        self.out.len() - self.len
    }

    pub fn bytes(&mut self, b: &[u8]) {
        if self.overflow {
            return;
        }
        match self.out.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.overflow = true,
        }
    }

    pub fn zeros(&mut self, n: usize) {
        if self.overflow {
            return;
        }
        match self.out.get_mut(self.len..self.len + n) {
            Some(dst) => {
                dst.fill(0);
                self.len += n;
            }
            None => self.overflow = true,
        }
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_ne_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.bytes(&v.to_ne_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_ne_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.bytes(&v.to_ne_bytes());
    }

    /// The reply's length, or `None` when some write did not fit.
    pub fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }
}

/// `fuse_attr` (88 bytes) from a stat: the node id as `st_ino` (the core already put it
/// there), the type bits as fuser reports them (anything unknown as a regular file), and
/// the stat's seconds and nanoseconds as they are (fuser's conversion through `SystemTime`
/// gives the same values back, negative times included).
pub fn put_attr(w: &mut Writer<'_>, st: &libc::stat) {
    let nsec = |n: i64| n.clamp(0, 999_999_999) as u32;
    w.u64(st.st_ino);
    w.u64(st.st_size as u64);
    w.u64(st.st_blocks as u64);
    w.i64(st.st_atime);
    w.i64(st.st_mtime);
    w.i64(st.st_ctime);
    w.u32(nsec(st.st_atime_nsec));
    w.u32(nsec(st.st_mtime_nsec));
    w.u32(nsec(st.st_ctime_nsec));
    w.u32(type_bits(st.st_mode & libc::S_IFMT) | (st.st_mode & 0o7777));
    w.u32(st.st_nlink as u32);
    w.u32(st.st_uid);
    w.u32(st.st_gid);
    w.u32(st.st_rdev as u32);
    w.u32(st.st_blksize as u32);
    w.u32(0);
}

/// The `S_IFMT` bits the kernel is told, as fuser's `FileType` has them: every type it
/// knows, anything else as a regular file.
pub fn type_bits(format: u32) -> u32 {
    match format {
        libc::S_IFDIR
        | libc::S_IFLNK
        | libc::S_IFIFO
        | libc::S_IFSOCK
        | libc::S_IFCHR
        | libc::S_IFBLK => format,
        _ => libc::S_IFREG,
    }
}

/// `fuse_entry_out` (128 bytes).
pub fn put_entry(w: &mut Writer<'_>, st: &libc::stat, entry_ttl: Ttl, attr_ttl: Ttl) {
    w.u64(st.st_ino);
    w.u64(0); // generation
    w.u64(entry_ttl.secs);
    w.u64(attr_ttl.secs);
    w.u32(entry_ttl.nanos);
    w.u32(attr_ttl.nanos);
    put_attr(w, st);
}

/// `fuse_attr_out` (104 bytes).
pub fn put_attr_out(w: &mut Writer<'_>, st: &libc::stat, ttl: Ttl) {
    w.u64(ttl.secs);
    w.u32(ttl.nanos);
    w.u32(0);
    put_attr(w, st);
}

/// `fuse_open_out` (16 bytes).
pub fn put_open(w: &mut Writer<'_>, fh: u64, open_flags: u32, backing_id: u32) {
    w.u64(fh);
    w.u32(open_flags);
    w.u32(backing_id);
}

/// A time to live as the kernel takes it: seconds and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    pub secs: u64,
    pub nanos: u32,
}

impl From<std::time::Duration> for Ttl {
    fn from(d: std::time::Duration) -> Ttl {
        Ttl {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }
}

/// Splits a payload into its first NUL-terminated name and what follows the NUL; `None`
/// when there is no NUL.
pub fn take_name(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = payload.iter().position(|&b| b == 0)?;
    Some((&payload[..nul], &payload[nul + 1..]))
}
