//! The fuser adapter: unpacks each kernel request, calls the core (`fs`), and replies as the
//! core answered. Nothing here decides anything: passthrough, open flags and errnos are the
//! core's (see `fs/passthrough.rs`, `fs/error.rs`); error replies all go through
//! `Adapter::fail`, which logs them.

mod passthrough;
mod reply;

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, FileHandle, Filesystem, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier,
    RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{self, Attr, Fs, SetAttr};
pub(crate) use reply::ErrorLog;
use reply::{caller, errno, file_attr, file_type, set_time, ErrorReply};

/// How the kernel side is used, from the config's [fuse] section.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
    /// Ask for kernel passthrough of regular-file I/O.
    pub passthrough: bool,
    /// Let the kernel read directories with attributes (fewer lookups for `ls -l`, `find`).
    pub readdirplus: bool,
}

impl Tuning {
    /// The one time to live of a readdirplus entry, for both its name and its attributes:
    /// the shorter of the two, as neither may outlive its own timeout.
    pub fn dirent_ttl(&self) -> Duration {
        self.entry_timeout.min(self.attr_timeout)
    }
}

/// The largest write the kernel sends in one request (it splits larger ones): 1 MiB, which is
/// also max_pages at the kernel's default limit, and each io_uring entry's payload buffer.
const MAX_WRITE: u32 = 1 << 20;

/// The filesystem as fuser sees it.
pub struct Adapter {
    fs: Arc<Fs>,
    tuning: Tuning,
    errors: ErrorLog,
    /// Set when the daemon may serve over io_uring: INIT asks for it through this.
    ring: Option<Arc<crate::uring::Handshake>>,
}

impl Adapter {
    pub fn new(fs: Arc<Fs>, tuning: Tuning) -> Adapter {
        Adapter {
            fs,
            tuning,
            errors: ErrorLog::default(),
            ring: None,
        }
    }

    /// INIT asks for FUSE over io_uring when `handshake` wants it, and settles it there.
    pub fn with_ring(mut self, handshake: Arc<crate::uring::Handshake>) -> Adapter {
        self.ring = Some(handshake);
        self
    }

    /// The ring part of INIT: asks for FUSE_OVER_IO_URING when wanted and offered, and tells
    /// the daemon what the ring's payload buffers must hold.
    fn init_ring(&self, config: &mut KernelConfig) {
        let Some(handshake) = &self.ring else {
            return;
        };
        let offered = config
            .capabilities()
            .contains(InitFlags::FUSE_OVER_IO_URING);
        let asked = offered
            && handshake.wanted()
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
        // Each ring entry's payload buffer must hold max(max_write, max_pages pages), and
        // fuser derives max_pages from the larger of max_write and max_readahead: keep the
        // readahead at or below max_write so that the buffers stay MAX_WRITE.
        log::debug!(
            "INIT: FUSE_OVER_IO_URING offered {offered}, wanted {}, asked {asked}",
            handshake.wanted()
        );
        let readahead = match config.set_max_readahead(MAX_WRITE) {
            Ok(_) => MAX_WRITE,
            Err(nearest) => {
                let _ = config.set_max_readahead(nearest);
                nearest
            }
        };
        let page = crate::sys::uring::page_size();
        let max_pages = (MAX_WRITE.max(readahead).saturating_sub(1) as usize / page + 1) as u32;
        handshake.settle(crate::uring::Negotiated {
            offered,
            asked,
            payload: crate::uring::payload_size(MAX_WRITE, max_pages, page),
        });
    }

    /// The one way an error goes back to the kernel: logged (see `ErrorLog`), then replied.
    fn fail(&self, reply: impl ErrorReply, op: &str, ino: u64, e: fs::Error) {
        self.errors.log(op, ino, e);
        reply.error(errno(e));
    }

    fn entry(&self, reply: ReplyEntry, op: &str, ino: u64, result: fs::Result<Attr>) {
        match result {
            Ok(attr) => reply.entry_with_ttls(
                &self.tuning.attr_timeout,
                &self.tuning.entry_timeout,
                &file_attr(&attr),
                Generation(0),
            ),
            Err(e) => self.fail(reply, op, ino, e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, op: &str, ino: u64, result: fs::Result<()>) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => self.fail(reply, op, ino, e),
        }
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // POSIX_ACL: the kernel then enforces the real files' ACLs too, not only mode bits
        // (an ACL entry can deny a user whom the mode bits would let in), and leaves the umask
        // to us, so a default ACL of the real directory applies to new files as it would.
        // ATOMIC_O_TRUNC: O_TRUNC arrives with open, so a truncating open is one event.
        // PARALLEL_DIROPS: lookups and readdirs in one directory need not queue behind each
        // other. AUTO_INVAL_DATA: cached pages go when the real file's mtime or size changes.
        let mut wanted = InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_PARALLEL_DIROPS;
        if self.tuning.readdirplus {
            // AUTO: the kernel asks for attributes only while it is also looking entries up,
            // so a plain `ls -f` of a huge directory stays a plain readdir.
            wanted |= InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        }
        if self.tuning.passthrough {
            // Never together with writeback cache, which would disable it.
            wanted |= InitFlags::FUSE_PASSTHROUGH;
        }
        let available = wanted & config.capabilities();
        if let Err(missing) = config.add_capabilities(available) {
            log::warn!("kernel refused FUSE capabilities {missing:?}");
        }
        if !available.contains(InitFlags::FUSE_POSIX_ACL) {
            log::warn!("kernel lacks FUSE_POSIX_ACL: ACLs of real files are not enforced");
        }
        if available.contains(InitFlags::FUSE_PASSTHROUGH) {
            // Depth 1: backing files on a plain filesystem; a target on overlayfs falls back
            // to daemon I/O for its files, and relocfs itself can still be stacked under one.
            match config.set_max_stack_depth(1) {
                Ok(_) => self.fs.enable_passthrough(),
                Err(e) => log::warn!("kernel passthrough unavailable (stack depth {e})"),
            }
        } else if self.tuning.passthrough {
            log::info!("kernel has no FUSE passthrough: serving file I/O in the daemon");
        }
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        self.init_ring(config);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.fs.lookup(caller(req), parent.0, name);
        self.entry(reply, "lookup", parent.0, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.tuning.attr_timeout, &file_attr(&attr)),
            Err(e) => self.fail(reply, "getattr", ino.0, e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            fh: fh.map(|f| f.0),
        };
        match self.fs.setattr(caller(req), ino.0, change) {
            Ok(attr) => reply.attr(&self.tuning.attr_timeout, &file_attr(&attr)),
            Err(e) => self.fail(reply, "setattr", ino.0, e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(caller(req), ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => self.fail(reply, "readlink", ino.0, e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let result = self
            .fs
            .mknod(caller(req), parent.0, name, mode, umask, rdev);
        self.entry(reply, "mknod", parent.0, result);
    }

    /// Inode flags and extended attributes are served (lsattr, chattr: see `Fs::ioctl`);
    /// every other command gets ENOTTY, as a regular file or directory answers natively.
    /// Quietly (debug level, as a routine error): every Python open() asks TCGETS. Answering ENOSYS would not save the next
    /// round trip: the kernel turns it into ENOTTY and asks again (fs/fuse/ioctl.c keeps no
    /// "no ioctl" flag, unlike poll or xattrs).
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        match self
            .fs
            .ioctl(caller(req), ino.0, fh.0, cmd, in_data, out_size)
        {
            Ok(data) => reply.ioctl(0, &data),
            Err(e) => {
                log::trace!("ioctl {cmd:#x} on inode {}: {e}", ino.0);
                self.fail(reply, "ioctl", ino.0, e)
            }
        }
    }

    // fuser's defaults for the operations below log a warning per request. None of them is
    // served, and each answers ENOSYS, logged only at debug level: poll (the kernel then stops asking and
    // treats files as always ready, as regular files are), POSIX/BSD locks (only sent when
    // the daemon negotiates FUSE_POSIX_LOCKS/FLOCK_LOCKS, which relocfs does not: the kernel
    // keeps locks itself) and bmap (only for block-device-backed mounts).

    fn poll(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        self.fail(reply, "poll", ino.0, fs::Error::NotServed);
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        self.fail(reply, "getlk", ino.0, fs::Error::NotServed);
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.fail(reply, "setlk", ino.0, fs::Error::NotServed);
    }

    fn bmap(&self, _req: &Request, ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        self.fail(reply, "bmap", ino.0, fs::Error::NotServed);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.fs.mkdir(caller(req), parent.0, name, mode, umask);
        self.entry(reply, "mkdir", parent.0, result);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            reply,
            "unlink",
            parent.0,
            self.fs.unlink(caller(req), parent.0, name),
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            reply,
            "rmdir",
            parent.0,
            self.fs.rmdir(caller(req), parent.0, name),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self
            .fs
            .symlink(caller(req), parent.0, link_name, target.as_os_str());
        self.entry(reply, "symlink", parent.0, result);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.fs.rename(
            caller(req),
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
        );
        self.empty(reply, "rename", parent.0, result);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.fs.link(caller(req), ino.0, newparent.0, newname);
        self.entry(reply, "link", ino.0, result);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open_with(caller(req), ino.0, flags.0, &reply) {
            Ok(opened) => passthrough::reply_opened(reply, &opened),
            Err(e) => self.fail(reply, "open", ino.0, e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => self.fail(reply, "read", ino.0, e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => self.fail(reply, "write", ino.0, e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, "flush", ino.0, self.fs.flush(fh.0));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, "fsync", ino.0, self.fs.fsync(fh.0, datasync));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(caller(req), ino.0, flags.0) {
            Ok(opened) => passthrough::reply_opened(reply, &opened),
            Err(e) => self.fail(reply, "opendir", ino.0, e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.fs.readdir(fh.0, offset, |entry, next| {
            reply.add(
                INodeNo(entry.ino),
                next,
                file_type(entry.format),
                &entry.name,
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => self.fail(reply, "readdir", ino.0, e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.tuning.dirent_ttl();
        let result = self.fs.readdirplus(fh.0, offset, |entry, next, attr| {
            reply.add(
                INodeNo(attr.id),
                next,
                &entry.name,
                &ttl,
                &file_attr(attr),
                Generation(0),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => self.fail(reply, "readdirplus", ino.0, e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, "fsyncdir", ino.0, self.fs.fsync(fh.0, datasync));
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs(ino.0) {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                st.f_namemax as u32,
                st.f_frsize as u32,
            ),
            Err(e) => self.fail(reply, "statfs", ino.0, e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.empty(
            reply,
            "setxattr",
            ino.0,
            self.fs.setxattr(caller(req), ino.0, name, value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name, size) {
            Ok(value) if size == 0 => reply.size(value.len() as u32),
            Ok(value) => reply.data(&value),
            Err(e) => self.fail(reply, "getxattr", ino.0, e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(caller(req), ino.0, size) {
            Ok(names) if size == 0 => reply.size(names.len() as u32),
            Ok(names) => reply.data(&names),
            Err(e) => self.fail(reply, "listxattr", ino.0, e),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            reply,
            "removexattr",
            ino.0,
            self.fs.removexattr(caller(req), ino.0, name),
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.empty(reply, "access", ino.0, self.fs.access(ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let caller = caller(req);
        match self
            .fs
            .create_with(caller, parent.0, name, mode, umask, flags, &reply)
        {
            Ok((attr, opened)) => {
                let ttl = &self.tuning.entry_timeout;
                passthrough::reply_created(reply, ttl, &file_attr(&attr), &opened)
            }
            Err(e) => self.fail(reply, "create", parent.0, e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.empty(
            reply,
            "fallocate",
            ino.0,
            self.fs.fallocate(fh.0, offset, length, mode),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => self.fail(reply, "lseek", ino.0, e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.fs.copy_file_range(
            fh_in.0,
            offset_in,
            fh_out.0,
            offset_out,
            len,
            flags.bits() as u32,
        ) {
            Ok(n) => reply.written(n),
            Err(e) => self.fail(reply, "copy_file_range", ino_in.0, e),
        }
    }
}
