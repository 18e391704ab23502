//! The fuser adapter: unpacks each kernel request, calls the core in `fs.rs`, and replies.
//! Nothing here decides anything; errors go back as the core's errno.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle,
    FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig,
    LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyBmap,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLock, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use crate::fs::{self, Attr, Caller, Fs, SetAttr};
use crate::node::lock;

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

/// Flags of every open regular file. NOFLUSH: the kernel need not ask the daemon at each
/// close(2): writes go straight to the real file, so there is never anything to flush, and
/// that saves a round trip per close.
const FILE_FLAGS: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// The filesystem as fuser sees it.
pub struct Adapter {
    fs: Arc<Fs>,
    tuning: Tuning,
    passthrough: Passthrough,
}

/// Kernel passthrough state. The kernel allows one backing file per inode at a time, and no
/// mixing of passthrough and page-cached opens of one inode, so the first open of an inode
/// decides for every open of it until all are closed.
///
/// The kernel does a backing file's I/O with the credentials of whoever registered it, and
/// every open of an inode that has a backing must share it (anything else fails with EIO).
/// So a backing is registered while acting as the opener (without the capabilities a
/// non-root opener lacks), and never for root: root's opens are served by the daemon, so no
/// backing ever carries root's rights (reserved blocks, quota exemption) to a user who opens
/// the same file later. The cost: root's own I/O through the mount is not passed through;
/// a root open of a file a user already has open through passthrough shares the user's
/// backing and writes with the user's rights (less than root's: it may meet ENOSPC in the
/// blocks ext4 reserves for root). Two non-root users of one inode share the first one's
/// backing; neither has a capability, so what can differ is only ext4's `resuid`/`resgid`
/// and group-based set-id clearing.
///
/// Passthrough pays off for large files and for writing; for small files read whole, the
/// backing registration costs more than serving the read (once; the page cache keeps it):
/// measured on open+close of 1,000 small files, ~20% fewer opens per second with it.
#[derive(Default)]
struct Passthrough {
    /// Whether passthrough is in use: negotiated at init, dropped for good when the kernel
    /// refuses to register a backing file for lack of privilege.
    enabled: AtomicBool,
    open: Mutex<OpenFiles>,
}

#[derive(Default)]
struct OpenFiles {
    /// Inodes open with passthrough, and their backing id.
    backing: HashMap<u64, Weak<BackingId>>,
    /// Inodes open without passthrough: how many handles.
    served: HashMap<u64, usize>,
    /// Every open handle: its inode, and its backing id when it has one.
    handles: HashMap<u64, (u64, Option<Arc<BackingId>>)>,
}

/// How an open is served.
enum Serve {
    Passthrough(Arc<BackingId>),
    /// By the daemon, through the page cache.
    Cached,
}

/// Regular files from this size on are read through passthrough.
const PASSTHROUGH_MIN_SIZE: u64 = 64 * 1024;

impl Passthrough {
    /// Decides how handle `fh` of node `ino`, opened by `opener`, is served: the inode's
    /// current backing, one registered now by `register` (which must act as the opener;
    /// never for root), or the daemon. `wants` says whether this open would choose
    /// passthrough on its own (large or written); it is asked only when this open is the one
    /// to decide.
    fn attach(
        &self,
        ino: u64,
        fh: u64,
        opener: Option<fs::Opener>,
        wants: impl FnOnce() -> bool,
        register: impl FnOnce() -> Option<io::Result<BackingId>>,
    ) -> Serve {
        let Some(opener) = opener.filter(|_| self.enabled.load(Ordering::Relaxed)) else {
            return Serve::Cached;
        };
        // Held while registering, so racing opens of one inode agree.
        let mut open = lock(&self.open);
        let live = open.backing.get(&ino).and_then(Weak::upgrade);
        let serve = match live {
            Some(id) => Serve::Passthrough(id),
            None if opener.uid == 0 || open.served.contains_key(&ino) || !wants() => Serve::Cached,
            None => match register() {
                Some(Ok(id)) => {
                    let id = Arc::new(id);
                    open.backing.insert(ino, Arc::downgrade(&id));
                    Serve::Passthrough(id)
                }
                Some(Err(e)) => {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        log::warn!(
                            "kernel passthrough needs CAP_SYS_ADMIN: serving I/O in the daemon"
                        );
                        self.enabled.store(false, Ordering::Relaxed);
                    } else {
                        log::debug!("no passthrough for inode {ino}: {e}");
                    }
                    Serve::Cached
                }
                None => Serve::Cached,
            },
        };
        let id = match &serve {
            Serve::Passthrough(id) => Some(Arc::clone(id)),
            Serve::Cached => {
                *open.served.entry(ino).or_insert(0) += 1;
                None
            }
        };
        open.handles.insert(fh, (ino, id));
        serve
    }

    /// The handle closed; a backing id goes with its inode's last handle.
    fn release(&self, fh: u64) {
        let mut open = lock(&self.open);
        let Some((ino, id)) = open.handles.remove(&fh) else {
            return;
        };
        match id {
            Some(id) => {
                drop(id);
                if open
                    .backing
                    .get(&ino)
                    .is_some_and(|w| w.strong_count() == 0)
                {
                    open.backing.remove(&ino);
                }
            }
            None => {
                if let Some(n) = open.served.get_mut(&ino) {
                    *n -= 1;
                    if *n == 0 {
                        open.served.remove(&ino);
                    }
                }
            }
        }
    }
}

impl Adapter {
    pub fn new(fs: Arc<Fs>, tuning: Tuning) -> Adapter {
        Adapter {
            fs,
            tuning,
            passthrough: Passthrough::default(),
        }
    }

    /// Registers the file of handle `fh` as a backing file while acting as its opener: the
    /// kernel keeps the registering task's credentials for the backing file's I/O.
    fn register_backing(
        &self,
        fh: u64,
        open_backing: impl FnOnce(&std::fs::File) -> io::Result<BackingId>,
    ) -> Option<io::Result<BackingId>> {
        let _as_opener = match self.fs.as_handle_opener(fh) {
            Ok(guard) => guard,
            // Not EPERM: that would mean the kernel refuses passthrough altogether.
            Err(e) => return Some(Err(io::Error::other(format!("acting as opener: {e:?}")))),
        };
        self.fs.with_open_file(fh, open_backing)
    }

    fn entry(&self, reply: ReplyEntry, result: fs::Result<Attr>) {
        match result {
            Ok(attr) => reply.entry_with_ttls(
                &self.tuning.attr_timeout,
                &self.tuning.entry_timeout,
                &file_attr(&attr),
                Generation(0),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn errno(e: fs::Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn empty(reply: ReplyEmpty, result: fs::Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// `None` leaves the time (UTIME_OMIT); `Some(None)` is now.
fn set_time(t: Option<TimeOrNow>) -> crate::sys::SetTime {
    t.map(|t| match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(at) => Some(match at.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
            Err(before) => {
                // Before 1970. fuser 0.18 builds this SystemTime from the kernel's (seconds,
                // nanoseconds) as "epoch minus |seconds| minus nanoseconds" instead of "plus
                // nanoseconds", so taking the distance apart again gives the kernel's values
                // back exactly (checked against the real filesystem by the tests).
                let d = before.duration();
                (-(d.as_secs() as i64), i64::from(d.subsec_nanos()))
            }
        }),
    })
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = nsecs.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        // Times before 1970 exist on real disks; SystemTime can hold them.
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

fn file_type(format: u32) -> FileType {
    match format {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    let st = &attr.stat;
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode & libc::S_IFMT),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
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
                Ok(_) => self.passthrough.enabled.store(true, Ordering::Relaxed),
                Err(e) => log::warn!("kernel passthrough unavailable (stack depth {e})"),
            }
        } else if self.tuning.passthrough {
            log::info!("kernel has no FUSE passthrough: serving file I/O in the daemon");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.fs.lookup(caller(req), parent.0, name);
        self.entry(reply, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.tuning.attr_timeout, &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
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
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(caller(req), ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
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
        self.entry(reply, result);
    }

    /// Inode flags and extended attributes are served (lsattr, chattr: see `Fs::ioctl`);
    /// every other command gets ENOTTY, as a regular file or directory answers natively.
    /// Quietly: every Python open() asks TCGETS. Answering ENOSYS would not save the next
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
                log::trace!("ioctl {cmd:#x} on inode {}: errno {}", ino.0, e.errno());
                reply.error(errno(e))
            }
        }
    }

    // fuser's defaults for the operations below log a warning per request. None of them is
    // served, and each answers ENOSYS without a word: poll (the kernel then stops asking and
    // treats files as always ready, as regular files are), POSIX/BSD locks (only sent when
    // the daemon negotiates FUSE_POSIX_LOCKS/FLOCK_LOCKS, which relocfs does not: the kernel
    // keeps locks itself) and bmap (only for block-device-backed mounts).

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        reply.error(Errno::ENOSYS);
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
        self.entry(reply, result);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.unlink(caller(req), parent.0, name));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.rmdir(caller(req), parent.0, name));
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
        self.entry(reply, result);
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
        empty(reply, result);
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
        self.entry(reply, result);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fh = match self.fs.open(caller(req), ino.0, flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply.error(errno(e)),
        };
        // Asked only when this open decides for its inode (an fstat of the open file).
        let wants = || {
            flags.0 & libc::O_ACCMODE != libc::O_RDONLY
                || self
                    .fs
                    .with_open_file(fh, |file| {
                        file.metadata()
                            .map_or(true, |m| m.len() >= PASSTHROUGH_MIN_SIZE)
                    })
                    .unwrap_or(false)
        };
        let serve =
            self.passthrough
                .attach(ino.0, fh, self.fs.handle_opener(fh).ok(), wants, || {
                    self.register_backing(fh, |file| reply.open_backing(file))
                });
        match serve {
            Serve::Passthrough(id) => {
                self.fs.to_passthrough(fh);
                reply.opened_passthrough(FileHandle(fh), FILE_FLAGS, &id)
            }
            // KEEP_CACHE: pages read earlier stay valid across opens; AUTO_INVAL_DATA drops
            // them when the real file changes.
            Serve::Cached => {
                reply.opened(FileHandle(fh), FILE_FLAGS | FopenFlags::FOPEN_KEEP_CACHE)
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
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
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes go straight to the real file (no write-back cache): nothing is pending.
        reply.ok();
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
        self.passthrough.release(fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(fh.0, datasync));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(caller(req), ino.0, flags.0) {
            // CACHE_DIR + KEEP_CACHE: the kernel keeps the listing and serves the next
            // readdir of an unchanged directory itself (the opendir still comes here, and is
            // audited); a change through the mount, or an mtime change seen after
            // attr_timeout, drops it.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
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
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.tuning.entry_timeout.min(self.tuning.attr_timeout);
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
            Err(e) => reply.error(errno(e)),
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
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(fh.0, datasync));
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
            Err(e) => reply.error(errno(e)),
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
        empty(
            reply,
            self.fs.setxattr(caller(req), ino.0, name, value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name, size) {
            Ok(value) if size == 0 => reply.size(value.len() as u32),
            Ok(value) => reply.data(&value),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(caller(req), ino.0, size) {
            Ok(names) if size == 0 => reply.size(names.len() as u32),
            Ok(names) => reply.data(&names),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.removexattr(caller(req), ino.0, name));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.fs.access(ino.0, mask.bits()));
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
        let (attr, fh) = match self
            .fs
            .create(caller(req), parent.0, name, mode, umask, flags)
        {
            Ok(created) => created,
            Err(e) => return reply.error(errno(e)),
        };
        let ttl = &self.tuning.entry_timeout;
        // A new file is about to be written: passthrough.
        let serve = self.passthrough.attach(
            attr.id,
            fh,
            self.fs.handle_opener(fh).ok(),
            || true,
            || self.register_backing(fh, |file| reply.open_backing(file)),
        );
        let (fattr, handle) = (file_attr(&attr), FileHandle(fh));
        match serve {
            Serve::Passthrough(id) => {
                self.fs.to_passthrough(fh);
                reply.created_passthrough(ttl, &fattr, Generation(0), handle, FILE_FLAGS, &id)
            }
            Serve::Cached => reply.created(
                ttl,
                &fattr,
                Generation(0),
                handle,
                FILE_FLAGS | FopenFlags::FOPEN_KEEP_CACHE,
            ),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fallocate(fh.0, offset, length, mode));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
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
            Err(e) => reply.error(errno(e)),
        }
    }
}
