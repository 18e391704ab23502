//! relocfs's own FUSE request codec, for the requests that arrive over io_uring (fuser 0.18
//! keeps its parser and reply types private). A ring entry gives the request's
//! `fuse_in_header`, its per-op struct and its payload (names, write data) apart; `Wire::serve`
//! decodes them, calls the same core (`crate::fs::Fs`) the fuser adapter calls, with the
//! same arguments, and encodes the reply into the entry's payload buffer. Nothing here
//! decides what an operation does: TTLs come from `Tuning`, errnos from the core's table,
//! passthrough from the core, audit events from the core's record path; error replies are
//! logged through the adapter's `ErrorLog`. What this module adds is only what the fuser
//! session itself did before calling the adapter: the `allow_root`/owner-only filter
//! (`Wire::with_access`), ENOSYS for unrestricted ioctls, and the wire encoding.
//!
//! Bad bytes never panic and never write beyond `out`: every struct is read through a
//! length-checked `abi::Fields`, every reply through a bounds-checked `abi::Writer`.

pub mod abi;
mod backing;
#[cfg(test)]
mod devtest;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::fs::{self, Attr, Caller, Fs, Opened, SetAttr};
use crate::fuse::{ErrorLog, Tuning};
use crate::options::Access;
use abi::{Fields, Writer};
use backing::DevKernel;

/// The request's `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl InHeader {
    /// The header at the start of `bytes` (40 bytes; the ring's in_out area is 128, the
    /// rest is ignored); `None` when shorter.
    pub fn parse(bytes: &[u8]) -> Option<InHeader> {
        let f = Fields::new(bytes, abi::IN_HEADER_SIZE)?;
        Some(InHeader {
            len: f.u32(0),
            opcode: f.u32(4),
            unique: f.u64(8),
            nodeid: f.u64(16),
            uid: f.u32(24),
            gid: f.u32(28),
            pid: f.u32(32),
        })
    }

    fn caller(&self) -> Caller {
        Caller {
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// One request as a ring entry holds it: the header, the first in-arg (the per-op struct,
/// empty for ops whose args are only names), and the remaining in-args concatenated.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub header: InHeader,
    pub op: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Request<'a> {
    /// A request as `/dev/fuse` delivers it (header, then every in-arg concatenated), split
    /// as a ring entry would hold it: the per-op struct (`abi::op_size`) apart from the rest.
    /// `None` when the header is short, its length is not the buffer's, or the args are
    /// shorter than the op struct; an unknown opcode gets an empty op (and ENOSYS).
    pub fn split(bytes: &'a [u8]) -> Option<Request<'a>> {
        let header = InHeader::parse(bytes)?;
        let body = bytes.get(abi::IN_HEADER_SIZE..header.len as usize)?;
        let size = abi::op_size(header.opcode).unwrap_or(0);
        Some(Request {
            header,
            op: body.get(..size)?,
            payload: body.get(size..)?,
        })
    }
}

/// What `serve` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `n` bytes of reply args were written at the start of `out`.
    Reply(usize),
    /// Reply with this positive errno and no args.
    Error(i32),
}

impl Outcome {
    /// The `fuse_out_header` that goes with this outcome for request `unique`: len = 16 plus
    /// the args, error = minus the errno (0 for a reply). On the ring it goes in the entry's
    /// in_out area and the args' size in `payload_sz` (`Outcome::args_len`).
    pub fn out_header(&self, unique: u64) -> [u8; abi::OUT_HEADER_SIZE] {
        let (error, args) = match *self {
            Outcome::Reply(n) => (0, n),
            Outcome::Error(e) => (-e, 0),
        };
        let len = u32::try_from(abi::OUT_HEADER_SIZE + args).unwrap_or(u32::MAX);
        let mut h = [0u8; abi::OUT_HEADER_SIZE];
        h[..4].copy_from_slice(&len.to_ne_bytes());
        h[4..8].copy_from_slice(&error.to_ne_bytes());
        h[8..].copy_from_slice(&unique.to_ne_bytes());
        h
    }

    /// Bytes of reply args in the payload buffer (0 for an error).
    pub fn args_len(&self) -> usize {
        match *self {
            Outcome::Reply(n) => n,
            Outcome::Error(_) => 0,
        }
    }
}

/// Why a request failed: a malformed or unserved request (answered without the core), or
/// the core's error, logged as the adapter logs it.
enum Fail {
    Proto(i32),
    Core(&'static str, u64, fs::Error),
}

impl From<(&'static str, u64, fs::Error)> for Fail {
    fn from((op, ino, e): (&'static str, u64, fs::Error)) -> Fail {
        Fail::Core(op, ino, e)
    }
}

type Served = Result<usize, Fail>;

const EINVAL: Fail = Fail::Proto(libc::EINVAL);

/// A reply larger than the entry's payload buffer. The kernel sizes that buffer for the
/// largest reply it asks for (max_write, max_pages), so this is a sign of a bug, not input.
const TOO_BIG: Fail = Fail::Proto(libc::EIO);

/// Reads and writes above this size, served by the daemon (not passed through), go to
/// workers (`Wire::may_block_request`): 64 KiB is the size below which the core chooses not
/// to pass a read-only file through (`fs/passthrough.rs`), so small files keep being served
/// on the ring thread, where they are fastest.
pub const INLINE_IO_MAX: u32 = 64 * 1024;

/// The ring transport's codec and dispatcher, shared by all ring threads.
pub struct Wire {
    fs: Arc<Fs>,
    tuning: Tuning,
    dev: Arc<OwnedFd>,
    errors: ErrorLog,
    access: Access,
    /// The mounting user: the daemon's effective uid, as fuser's session takes it.
    owner: u32,
}

impl Wire {
    /// `dev` is a `/dev/fuse` fd of this connection (a dup of fuser's), for registering
    /// backing files. Only the mounting user is served until `with_access` says otherwise.
    pub fn new(fs: Arc<Fs>, tuning: Tuning, dev: Arc<OwnedFd>) -> Wire {
        Wire {
            fs,
            tuning,
            dev,
            errors: ErrorLog::default(),
            access: Access::Owner,
            owner: crate::sys::geteuid(),
        }
    }

    /// Who may use the mount, as the mount options say (`MountOptions::access`): the filter
    /// fuser's session applies before any op reaches the adapter (the kernel itself only
    /// filters for owner-only mounts; `allow_root` is `allow_other` filtered here).
    pub fn with_access(mut self, access: Access) -> Wire {
        self.access = access;
        self
    }

    /// Whether an op can block on the disk, or for long, and so goes to a worker instead of
    /// holding up the other requests of its CPU's queue. By opcode alone:
    /// - FSYNC, FSYNCDIR: wait for the disk by definition;
    /// - FALLOCATE, COPY_FILE_RANGE: allocate or copy any amount of data;
    /// - SETATTR: a truncate frees or zeroes any amount of blocks (chmod and utimes ride
    ///   along: rare, and a worker costs them only a hand-over);
    /// - IOCTL: setting inode flags or fsxattr is a journalled change;
    /// - LSEEK: SEEK_DATA/SEEK_HOLE walk the file's extents.
    ///
    /// Not here: LOOKUP, GETATTR, OPEN, RELEASE, READDIR and the other namespace ops, which
    /// touch cached metadata and are the hot path (a hand-over costs the wake-up of another
    /// thread, the very cost the ring saves); FLUSH, which does nothing (writes are never
    /// cached in the daemon). READ and WRITE depend on their size: see `may_block_request`.
    pub fn may_block(opcode: u32) -> bool {
        matches!(
            opcode,
            abi::FSYNC
                | abi::FSYNCDIR
                | abi::FALLOCATE
                | abi::COPY_FILE_RANGE
                | abi::SETATTR
                | abi::IOCTL
                | abi::LSEEK
        )
    }

    /// `may_block`, and reads and writes of more than `INLINE_IO_MAX` bytes. Passed-through
    /// I/O never reaches the daemon, so every READ or WRITE here is served by it: the small
    /// ones (small files read whole, the ones the core keeps out of passthrough) stay on the
    /// ring thread, large ones are likely to wait for the disk.
    pub fn may_block_request(req: &Request<'_>) -> bool {
        let size = || Fields::new(req.op, abi::READ_IN_SIZE).map_or(0, |f| f.u32(16));
        match req.header.opcode {
            abi::READ | abi::WRITE => size() > INLINE_IO_MAX,
            op => Self::may_block(op),
        }
    }

    /// Serves one request: the reply's args go to the start of `out`. Never panics on any
    /// bytes, never writes beyond `out`.
    pub fn serve(&self, req: &Request<'_>, out: &mut [u8]) -> Outcome {
        if !self.admits(&req.header) {
            return Outcome::Error(libc::EACCES);
        }
        match self.dispatch(req, out) {
            Ok(n) => Outcome::Reply(n),
            Err(Fail::Proto(errno)) => Outcome::Error(errno),
            Err(Fail::Core(op, ino, e)) => {
                self.errors.log(op, ino, e);
                Outcome::Error(e.errno())
            }
        }
    }

    /// fuser's session filter: on `allow_root` mounts only root and the owner, on owner-only
    /// mounts only the owner, may do anything but the ops the kernel sends on a file already
    /// open (or on its own behalf).
    fn admits(&self, h: &InHeader) -> bool {
        let allowed = match self.access {
            Access::All => true,
            Access::RootAndOwner => h.uid == self.owner || h.uid == 0,
            Access::Owner => h.uid == self.owner,
        };
        allowed
            || matches!(
                h.opcode,
                abi::READ
                    | abi::READDIR
                    | abi::READDIRPLUS
                    | abi::WRITE
                    | abi::FSYNC
                    | abi::FSYNCDIR
                    | abi::RELEASE
                    | abi::RELEASEDIR
            )
    }

    fn dispatch(&self, req: &Request<'_>, out: &mut [u8]) -> Served {
        let h = &req.header;
        let (ino, caller) = (h.nodeid, h.caller());
        let op = |size| Fields::new(req.op, size).ok_or(EINVAL);
        let mut w = Writer::new(out);
        match h.opcode {
            abi::LOOKUP => {
                let name = one_name(req.payload)?;
                let r = self.fs.lookup(caller, ino, name);
                self.entry(w, "lookup", ino, r)
            }
            abi::GETATTR => {
                op(abi::GETATTR_IN_SIZE)?;
                let attr = self.fs.getattr(ino).map_err(|e| ("getattr", ino, e))?;
                abi::put_attr_out(&mut w, &attr.stat, self.tuning.attr_timeout.into());
                done(w)
            }
            abi::SETATTR => {
                let f = op(abi::SETATTR_IN_SIZE)?;
                let attr = self
                    .fs
                    .setattr(caller, ino, set_attr(&f))
                    .map_err(|e| ("setattr", ino, e))?;
                abi::put_attr_out(&mut w, &attr.stat, self.tuning.attr_timeout.into());
                done(w)
            }
            abi::READLINK => {
                let target = self
                    .fs
                    .readlink(caller, ino)
                    .map_err(|e| ("readlink", ino, e))?;
                w.bytes(&target);
                done(w)
            }
            abi::SYMLINK => {
                let (name, rest) = abi::take_name(req.payload).ok_or(EINVAL)?;
                let (target, _) = abi::take_name(rest).ok_or(EINVAL)?;
                let r = self.fs.symlink(caller, ino, os(name), os(target));
                self.entry(w, "symlink", ino, r)
            }
            abi::MKNOD => {
                let f = op(abi::MKNOD_IN_SIZE)?;
                let name = one_name(req.payload)?;
                let (mode, rdev, umask) = (f.u32(0), f.u32(4), f.u32(8));
                let r = self.fs.mknod(caller, ino, name, mode, umask, rdev);
                self.entry(w, "mknod", ino, r)
            }
            abi::MKDIR => {
                let f = op(abi::MKDIR_IN_SIZE)?;
                let name = one_name(req.payload)?;
                let r = self.fs.mkdir(caller, ino, name, f.u32(0), f.u32(4));
                self.entry(w, "mkdir", ino, r)
            }
            abi::UNLINK => {
                let name = one_name(req.payload)?;
                self.fs
                    .unlink(caller, ino, name)
                    .map_err(|e| ("unlink", ino, e))?;
                Ok(0)
            }
            abi::RMDIR => {
                let name = one_name(req.payload)?;
                self.fs
                    .rmdir(caller, ino, name)
                    .map_err(|e| ("rmdir", ino, e))?;
                Ok(0)
            }
            abi::RENAME | abi::RENAME2 => {
                let (newdir, flags) = if h.opcode == abi::RENAME {
                    (op(abi::RENAME_IN_SIZE)?.u64(0), 0)
                } else {
                    let f = op(abi::RENAME2_IN_SIZE)?;
                    (f.u64(0), f.u32(8))
                };
                let (name, rest) = abi::take_name(req.payload).ok_or(EINVAL)?;
                let (newname, _) = abi::take_name(rest).ok_or(EINVAL)?;
                self.fs
                    .rename(caller, ino, os(name), newdir, os(newname), flags)
                    .map_err(|e| ("rename", ino, e))?;
                Ok(0)
            }
            abi::LINK => {
                let old = op(abi::LINK_IN_SIZE)?.u64(0);
                let newname = one_name(req.payload)?;
                let r = self.fs.link(caller, old, ino, newname);
                self.entry(w, "link", old, r)
            }
            abi::OPEN => {
                let flags = op(abi::OPEN_IN_SIZE)?.i32(0);
                let opened = self
                    .fs
                    .open_with(caller, ino, flags, &DevKernel(&self.dev))
                    .map_err(|e| ("open", ino, e))?;
                put_opened(&mut w, &opened);
                done(w)
            }
            abi::READ => {
                let f = op(abi::READ_IN_SIZE)?;
                let (fh, offset, size) = (f.u64(0), f.u64(8), f.u32(16));
                // A read never asks for more than the buffer the kernel gave the entry; if it
                // did, a short read is what the caller gets.
                let size = size.min(u32::try_from(w.room()).unwrap_or(u32::MAX));
                let data = self
                    .fs
                    .read(fh, offset, size)
                    .map_err(|e| ("read", ino, e))?;
                w.bytes(&data);
                done(w)
            }
            abi::WRITE => {
                let f = op(abi::WRITE_IN_SIZE)?;
                let (fh, offset, size) = (f.u64(0), f.u64(8), f.u32(16));
                let data = req.payload.get(..size as usize).ok_or(EINVAL)?;
                let n = self
                    .fs
                    .write(fh, offset, data)
                    .map_err(|e| ("write", ino, e))?;
                w.u32(n);
                w.u32(0);
                done(w)
            }
            abi::STATFS => {
                let st = self.fs.statfs(ino).map_err(|e| ("statfs", ino, e))?;
                w.u64(st.f_blocks);
                w.u64(st.f_bfree);
                w.u64(st.f_bavail);
                w.u64(st.f_files);
                w.u64(st.f_ffree);
                w.u32(st.f_bsize as u32);
                w.u32(st.f_namemax as u32);
                w.u32(st.f_frsize as u32);
                w.zeros(4 + 6 * 4);
                done(w)
            }
            abi::RELEASE => {
                self.fs.release(op(abi::RELEASE_IN_SIZE)?.u64(0));
                Ok(0)
            }
            abi::FSYNC | abi::FSYNCDIR => {
                let f = op(abi::FSYNC_IN_SIZE)?;
                let datasync = f.u32(8) & abi::FSYNC_FDATASYNC != 0;
                let name = if h.opcode == abi::FSYNC {
                    "fsync"
                } else {
                    "fsyncdir"
                };
                self.fs
                    .fsync(f.u64(0), datasync)
                    .map_err(|e| (name, ino, e))?;
                Ok(0)
            }
            abi::SETXATTR => {
                let f = op(abi::SETXATTR_IN_SIZE)?;
                let (size, flags) = (f.u32(0), f.i32(4));
                let (name, rest) = abi::take_name(req.payload).ok_or(EINVAL)?;
                let value = rest.get(..size as usize).ok_or(EINVAL)?;
                self.fs
                    .setxattr(caller, ino, os(name), value, flags)
                    .map_err(|e| ("setxattr", ino, e))?;
                Ok(0)
            }
            abi::GETXATTR => {
                let size = op(abi::GETXATTR_IN_SIZE)?.u32(0);
                let name = one_name(req.payload)?;
                let value = self
                    .fs
                    .getxattr(ino, name, size)
                    .map_err(|e| ("getxattr", ino, e))?;
                xattr_reply(w, size, &value)
            }
            abi::LISTXATTR => {
                let size = op(abi::GETXATTR_IN_SIZE)?.u32(0);
                let names = self
                    .fs
                    .listxattr(caller, ino, size)
                    .map_err(|e| ("listxattr", ino, e))?;
                xattr_reply(w, size, &names)
            }
            abi::REMOVEXATTR => {
                let name = one_name(req.payload)?;
                self.fs
                    .removexattr(caller, ino, name)
                    .map_err(|e| ("removexattr", ino, e))?;
                Ok(0)
            }
            abi::FLUSH => {
                let fh = op(abi::FLUSH_IN_SIZE)?.u64(0);
                self.fs.flush(fh).map_err(|e| ("flush", ino, e))?;
                Ok(0)
            }
            abi::OPENDIR => {
                let flags = op(abi::OPEN_IN_SIZE)?.i32(0);
                let opened = self
                    .fs
                    .opendir(caller, ino, flags)
                    .map_err(|e| ("opendir", ino, e))?;
                put_opened(&mut w, &opened);
                done(w)
            }
            abi::READDIR => {
                let f = op(abi::READ_IN_SIZE)?;
                let (fh, offset, size) = (f.u64(0), f.u64(8), f.u32(16) as usize);
                let max = size.min(w.room());
                self.fs
                    .readdir(fh, offset, |entry, next| {
                        put_dirent(&mut w, max, entry.ino, next, entry.format, &entry.name)
                    })
                    .map_err(|e| ("readdir", ino, e))?;
                done(w)
            }
            abi::READDIRPLUS => {
                let f = op(abi::READ_IN_SIZE)?;
                let (fh, offset, size) = (f.u64(0), f.u64(8), f.u32(16) as usize);
                let max = size.min(w.room());
                let ttl: abi::Ttl = self.tuning.dirent_ttl().into();
                self.fs
                    .readdirplus(fh, offset, |entry, next, attr| {
                        put_direntplus(&mut w, max, next, &entry.name, &attr.stat, ttl)
                    })
                    .map_err(|e| ("readdirplus", ino, e))?;
                done(w)
            }
            abi::RELEASEDIR => {
                self.fs.releasedir(op(abi::RELEASE_IN_SIZE)?.u64(0));
                Ok(0)
            }
            abi::ACCESS => {
                let mask = op(abi::ACCESS_IN_SIZE)?.i32(0);
                self.fs.access(ino, mask).map_err(|e| ("access", ino, e))?;
                Ok(0)
            }
            abi::CREATE => {
                let f = op(abi::CREATE_IN_SIZE)?;
                let (flags, mode, umask) = (f.i32(0), f.u32(4), f.u32(8));
                let name = one_name(req.payload)?;
                let (attr, opened) = self
                    .fs
                    .create_with(caller, ino, name, mode, umask, flags, &DevKernel(&self.dev))
                    .map_err(|e| ("create", ino, e))?;
                // As fuser's `created`: the entry timeout for both the entry and the attrs.
                let ttl = self.tuning.entry_timeout.into();
                abi::put_entry(&mut w, &attr.stat, ttl, ttl);
                put_opened(&mut w, &opened);
                done(w)
            }
            abi::IOCTL => {
                let f = op(abi::IOCTL_IN_SIZE)?;
                let (fh, flags, cmd) = (f.u64(0), f.u32(8), f.u32(12));
                let (in_size, out_size) = (f.u32(24), f.u32(28));
                if flags & abi::IOCTL_UNRESTRICTED != 0 {
                    // As fuser's session: only CUSE sends these.
                    return Err(Fail::Proto(libc::ENOSYS));
                }
                let input = req.payload.get(..in_size as usize).ok_or(EINVAL)?;
                let data = match self.fs.ioctl(caller, ino, fh, cmd, input, out_size) {
                    Ok(data) => data,
                    Err(e) => {
                        log::trace!("ioctl {cmd:#x} on inode {ino}: {e}");
                        return Err(("ioctl", ino, e).into());
                    }
                };
                // fuse_ioctl_out as fuser writes it: result 0, one in and one out iovec.
                w.i32(0);
                w.u32(0);
                w.u32(1);
                w.u32(1);
                w.bytes(&data);
                done(w)
            }
            abi::FALLOCATE => {
                let f = op(abi::FALLOCATE_IN_SIZE)?;
                self.fs
                    .fallocate(f.u64(0), f.u64(8), f.u64(16), f.i32(24))
                    .map_err(|e| ("fallocate", ino, e))?;
                Ok(0)
            }
            abi::LSEEK => {
                let f = op(abi::LSEEK_IN_SIZE)?;
                let pos = self
                    .fs
                    .lseek(f.u64(0), f.i64(8), f.i32(16))
                    .map_err(|e| ("lseek", ino, e))?;
                w.i64(pos);
                done(w)
            }
            abi::COPY_FILE_RANGE => {
                let f = op(abi::COPY_FILE_RANGE_IN_SIZE)?;
                // The syscall's flags are an unsigned int: wider ones are not the kernel's.
                let flags = u32::try_from(f.u64(48)).map_err(|_| EINVAL)?;
                let n = self
                    .fs
                    .copy_file_range(f.u64(0), f.u64(8), f.u64(24), f.u64(32), f.u64(40), flags)
                    .map_err(|e| ("copy_file_range", ino, e))?;
                w.u32(n);
                w.u32(0);
                done(w)
            }
            // Not served, as the adapter answers them (logged at debug level through the
            // same log): see the comment above `Adapter::poll`.
            abi::POLL => Err(("poll", ino, fs::Error::NotServed).into()),
            abi::GETLK => Err(("getlk", ino, fs::Error::NotServed).into()),
            abi::SETLK | abi::SETLKW => Err(("setlk", ino, fs::Error::NotServed).into()),
            abi::BMAP => Err(("bmap", ino, fs::Error::NotServed).into()),
            // INIT, DESTROY, FORGET, BATCH_FORGET, INTERRUPT and NOTIFY_REPLY stay on
            // `/dev/fuse` (fuser's loop serves them); STATX, TMPFILE, SYNCFS and anything
            // newer have no equivalent in the adapter, which fuser answers ENOSYS for.
            _ => Err(Fail::Proto(libc::ENOSYS)),
        }
    }

    /// An entry reply, as the adapter's `entry`: attr and entry timeouts from the tuning.
    fn entry(
        &self,
        mut w: Writer<'_>,
        op: &'static str,
        ino: u64,
        result: fs::Result<Attr>,
    ) -> Served {
        let attr = result.map_err(|e| (op, ino, e))?;
        let (entry_ttl, attr_ttl) = (self.tuning.entry_timeout, self.tuning.attr_timeout);
        abi::put_entry(&mut w, &attr.stat, entry_ttl.into(), attr_ttl.into());
        done(w)
    }
}

fn done(w: Writer<'_>) -> Served {
    w.finish().ok_or(TOO_BIG)
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// The payload's only name (NUL-terminated).
fn one_name(payload: &[u8]) -> Result<&OsStr, Fail> {
    abi::take_name(payload).map(|(n, _)| os(n)).ok_or(EINVAL)
}

/// `fuse_setattr_in` as fuser hands it to the adapter: each field only with its FATTR bit.
fn set_attr(f: &Fields<'_>) -> SetAttr {
    let valid = f.u32(0);
    let has = |bit| valid & bit != 0;
    let time = |bit, now_bit, secs_at, nsecs_at| -> crate::sys::SetTime {
        has(bit).then(|| (!has(now_bit)).then(|| (f.i64(secs_at), i64::from(f.u32(nsecs_at)))))
    };
    SetAttr {
        mode: has(abi::FATTR_MODE).then(|| f.u32(68)),
        uid: has(abi::FATTR_UID).then(|| f.u32(76)),
        gid: has(abi::FATTR_GID).then(|| f.u32(80)),
        size: has(abi::FATTR_SIZE).then(|| f.u64(16)),
        atime: time(abi::FATTR_ATIME, abi::FATTR_ATIME_NOW, 32, 56),
        mtime: time(abi::FATTR_MTIME, abi::FATTR_MTIME_NOW, 40, 60),
        fh: has(abi::FATTR_FH).then(|| f.u64(8)),
    }
}

/// `fuse_open_out` for an open as the core decided it.
fn put_opened(w: &mut Writer<'_>, opened: &Opened) {
    let mut flags = 0;
    if opened.flags.keep_cache {
        flags |= abi::FOPEN_KEEP_CACHE;
    }
    if opened.flags.no_flush {
        flags |= abi::FOPEN_NOFLUSH;
    }
    if opened.flags.cache_dir {
        flags |= abi::FOPEN_CACHE_DIR;
    }
    let backing_id = backing::id_of(opened);
    if backing_id.is_some() {
        flags |= abi::FOPEN_PASSTHROUGH;
    }
    abi::put_open(w, opened.fh, flags, backing_id.unwrap_or(0));
}

/// A getxattr/listxattr reply: the size asked for by a size-0 request, else the data.
fn xattr_reply(mut w: Writer<'_>, size: u32, value: &[u8]) -> Served {
    if size == 0 {
        w.u32(u32::try_from(value.len()).map_err(|_| Fail::Proto(libc::E2BIG))?);
        w.u32(0);
    } else {
        w.bytes(value);
    }
    done(w)
}

/// Adds a `fuse_dirent` if it fits within `max` bytes of reply; true when it does not (the
/// core's "buffer full", which stops the listing there).
fn put_dirent(
    w: &mut Writer<'_>,
    max: usize,
    ino: u64,
    next: u64,
    format: u32,
    name: &OsStr,
) -> bool {
    let name = name.as_bytes();
    let size = abi::dirent_align(abi::DIRENT_SIZE + name.len());
    if w.written() + size > max {
        return true;
    }
    put_dirent_fields(w, ino, next, abi::type_bits(format), name);
    false
}

fn put_dirent_fields(w: &mut Writer<'_>, ino: u64, next: u64, type_bits: u32, name: &[u8]) {
    let start = w.written();
    w.u64(ino);
    w.u64(next);
    w.u32(name.len() as u32);
    w.u32(type_bits >> 12);
    w.bytes(name);
    let pad = abi::dirent_align(w.written() - start) - (w.written() - start);
    w.zeros(pad);
}

/// Adds a `fuse_direntplus` if it fits within `max` bytes; true when it does not. The
/// entry's node id and inode number are the attr's `st_ino` (the node id, or 0 for an entry
/// listed without attributes), its type from the attr's mode, as fuser writes them.
fn put_direntplus(
    w: &mut Writer<'_>,
    max: usize,
    next: u64,
    name: &OsStr,
    st: &libc::stat,
    ttl: abi::Ttl,
) -> bool {
    let name = name.as_bytes();
    let size = abi::dirent_align(abi::DIRENTPLUS_SIZE + name.len());
    if w.written() + size > max {
        return true;
    }
    let start = w.written();
    abi::put_entry(w, st, ttl, ttl);
    put_dirent_fields(
        w,
        st.st_ino,
        next,
        abi::type_bits(st.st_mode & libc::S_IFMT),
        name,
    );
    debug_assert!(w.written() - start <= size);
    false
}
