//! Changes through read-write rules: create, write, mkdir, mknod, symlink, link, unlink, rmdir,
//! rename, setattr and xattrs, each done as the caller (fsuid/fsgid/groups/umask) on `*at()`
//! calls from the parent's fd, never following a symlink, and each audited with its result.
//! Read-only rules and virtual directories refuse every change with EROFS.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::{Attr, Audited, Caller, Errno, Fs, Handle, Result};
use crate::node::{is_bad_name, Kind, Link, Node};
use crate::sys;

/// What a setattr changes; `None` leaves a field as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// `Some(None)` is "now" (UTIME_NOW).
    pub atime: sys::SetTime,
    pub mtime: sys::SetTime,
    /// The open file the change came through (ftruncate), if any.
    pub fh: Option<u64>,
}

impl SetAttr {
    /// "mode=0644 size=0 ..." for the audit log.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.mode {
            parts.push(format!("mode={:04o}", m & 0o7777));
        }
        if let Some(u) = self.uid {
            parts.push(format!("uid={u}"));
        }
        if let Some(g) = self.gid {
            parts.push(format!("gid={g}"));
        }
        if let Some(s) = self.size {
            parts.push(format!("size={s}"));
        }
        if self.atime.is_some() {
            parts.push("atime".into());
        }
        if self.mtime.is_some() {
            parts.push("mtime".into());
        }
        parts.join(" ")
    }
}

/// The real directory a change happens in: its node and fd, checked writable.
struct Dir<'a> {
    node: Arc<Node>,
    fd: std::os::fd::BorrowedFd<'a>,
}

impl Fs {
    /// A directory node that accepts changes below it, and the name it will get, checked.
    fn change_dir(&self, parent: &Arc<Node>, name: &OsStr) -> Result<()> {
        if is_bad_name(name) {
            return Err(Errno::EINVAL);
        }
        self.writable(parent)?;
        // A name the prefix table owns is a mountpoint of sorts: it cannot be replaced,
        // removed or renamed from here.
        if parent
            .trie
            .and_then(|t| parent.rules.table.child(t, name))
            .is_some()
        {
            return Err(Errno(libc::EBUSY));
        }
        if !parent.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(())
    }

    /// Registers an object just made below `parent` as a node (one kernel lookup).
    fn new_node(&self, parent: &Arc<Node>, name: &OsStr, fd: OwnedFd) -> Result<Attr> {
        let Kind::Real { rule, .. } = parent.kind else {
            return Err(Errno::EROFS);
        };
        let stat = sys::fstat(fd.as_fd())?;
        let link = Link {
            parent: Some(Arc::clone(parent)),
            name: name.to_os_string(),
        };
        Ok(self.register(parent, rule, fd, stat, None, link))
    }

    /// Runs `f` with the parent's fd, as the caller, and audits the result as `op`.
    fn change_below<T>(
        &self,
        caller: Caller,
        op: &'static str,
        parent: u64,
        name: &OsStr,
        umask: Option<u32>,
        f: impl FnOnce(&Dir<'_>) -> Result<T>,
    ) -> Result<T> {
        let parent = self.node(parent)?;
        let result = self.change_dir(&parent, name).and_then(|()| {
            let fd = self.fd(&parent)?.ok_or(Errno::EROFS)?;
            let dir = Dir {
                node: Arc::clone(&parent),
                fd: fd.as_fd(),
            };
            let _as_caller = self.as_caller(caller, umask)?;
            f(&dir)
        });
        self.record_change(
            caller,
            Audited {
                op,
                node: &parent,
                name: Some(name),
                flags: None,
                dest: None,
                detail: None,
            },
            result.as_ref().map(|_| ()),
        );
        result
    }

    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Attr, u64)> {
        let parent_node = self.node(parent)?;
        let result = self.change_dir(&parent_node, name).and_then(|()| {
            let fd = self.fd(&parent_node)?.ok_or(Errno::EROFS)?;
            let opener = self.opener(caller);
            let admitted = self.admit(caller.uid)?;
            let created = self.as_caller(caller, Some(umask)).and_then(|_as_caller| {
                let kept = flags & CREATE_FLAGS_KEPT;
                Ok(sys::create_child(fd.as_fd(), name, kept, mode)?)
            });
            let file = match created {
                Ok(file) => file,
                Err(e) => {
                    self.nodes.set_budget(self.budget.release(caller.uid, true));
                    return Err(e);
                }
            };
            let attr = self.new_node(&parent_node, name, sys::path_fd_of(&file)?)?;
            let node = self.node(attr.id)?;
            let fh = self.add_handle(admitted, &node, Handle::File(file), opener, flags);
            Ok((attr, fh))
        });
        self.record_change(
            caller,
            Audited {
                op: "create",
                node: &parent_node,
                name: Some(name),
                flags: Some(crate::audit::access_flags(flags)),
                dest: None,
                detail: Some(format!("mode={:04o}", mode & 0o7777).into()),
            },
            result.as_ref().map(|_| ()),
        );
        result
    }

    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Attr> {
        self.change_below(caller, "mkdir", parent, name, Some(umask), |dir| {
            sys::mkdir_child(dir.fd, name, mode)?;
            let fd = sys::open_child(dir.fd, name)?;
            self.new_node(&dir.node, name, fd)
        })
    }

    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<Attr> {
        self.change_below(caller, "mknod", parent, name, Some(umask), |dir| {
            // Device nodes follow the caller's own privilege, as natively: the kernel refuses
            // a caller without CAP_MKNOD before the request gets here, and the mknod runs with
            // the caller's fsuid, which leaves no CAP_MKNOD to a non-root caller (see `creds`).
            // `nodev` means what it means natively: devices on the mount cannot be opened
            // (the kernel enforces it on the FUSE mount; the daemon never opens one), not
            // that root cannot create them.
            sys::mknod_child(dir.fd, name, mode, u64::from(rdev))?;
            let fd = sys::open_child(dir.fd, name)?;
            self.new_node(&dir.node, name, fd)
        })
    }

    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<Attr> {
        self.change_below(caller, "symlink", parent, name, None, |dir| {
            sys::symlink_child(dir.fd, name, target)?;
            let fd = sys::open_child(dir.fd, name)?;
            self.new_node(&dir.node, name, fd)
        })
    }

    pub fn unlink(&self, caller: Caller, parent: u64, name: &OsStr) -> Result<()> {
        self.change_below(caller, "unlink", parent, name, None, |dir| {
            Ok(sys::unlink_child(dir.fd, name, 0)?)
        })
    }

    pub fn rmdir(&self, caller: Caller, parent: u64, name: &OsStr) -> Result<()> {
        self.change_below(caller, "rmdir", parent, name, None, |dir| {
            Ok(sys::unlink_child(dir.fd, name, libc::AT_REMOVEDIR)?)
        })
    }

    pub fn link(&self, caller: Caller, id: u64, newparent: u64, newname: &OsStr) -> Result<Attr> {
        let node = self.node(id)?;
        let dir = self.node(newparent)?;
        let result = self
            .writable(&node)
            .and_then(|()| self.change_dir(&dir, newname))
            .and_then(|()| {
                let (Some(obj), Some(dir_fd)) = (self.fd(&node)?, self.fd(&dir)?) else {
                    return Err(Errno::EROFS);
                };
                {
                    let _as_caller = self.as_caller(caller, None)?;
                    sys::link_child(obj.as_fd(), dir_fd.as_fd(), newname)?;
                }
                let fd = sys::open_child(dir_fd.as_fd(), newname)?;
                self.new_node(&dir, newname, fd)
            });
        self.record_change(
            caller,
            Audited {
                op: "link",
                node: &node,
                name: None,
                flags: None,
                dest: Some((&dir, newname)),
                detail: None,
            },
            result.as_ref().map(|_| ()),
        );
        result
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let from = self.node(parent)?;
        let to = self.node(newparent)?;
        let result = self
            .change_dir(&from, name)
            .and_then(|()| self.change_dir(&to, newname))
            .and_then(|()| {
                let (Some(from_fd), Some(to_fd)) = (self.fd(&from)?, self.fd(&to)?) else {
                    return Err(Errno::EROFS);
                };
                {
                    let _as_caller = self.as_caller(caller, None)?;
                    sys::rename_child(from_fd.as_fd(), name, to_fd.as_fd(), newname, flags)?;
                }
                // Keep the audit paths of moved nodes true: find them by identity.
                self.relink(&from, &to, newname);
                if flags & libc::RENAME_EXCHANGE != 0 {
                    self.relink(&to, &from, name);
                }
                Ok(())
            });
        self.record_change(
            caller,
            Audited {
                op: "rename",
                node: &from,
                name: Some(name),
                flags: None,
                dest: Some((&to, newname)),
                detail: None,
            },
            result.as_ref().map(|_| ()),
        );
        result
    }

    /// The object now at `newparent/newname` came from `oldparent`: point its node there.
    fn relink(&self, oldparent: &Arc<Node>, newparent: &Arc<Node>, newname: &OsStr) {
        let (Some(rule), Ok(Some(fd))) = (oldparent.rule(), self.fd(newparent)) else {
            return;
        };
        if let Ok(st) = sys::stat_child(fd.as_fd(), newname) {
            self.nodes.relink(
                (oldparent.rules.generation, rule, st.st_dev, st.st_ino),
                Link {
                    parent: Some(Arc::clone(newparent)),
                    name: newname.to_os_string(),
                },
            );
        }
    }

    pub fn setattr(&self, caller: Caller, id: u64, change: SetAttr) -> Result<Attr> {
        let node = self.node(id)?;
        let result = self
            .writable(&node)
            .and_then(|()| self.apply(caller, &node, change));
        self.record_change(
            caller,
            Audited {
                op: "setattr",
                node: &node,
                name: None,
                flags: None,
                dest: None,
                detail: Some(change.describe().into()),
            },
            result.as_ref().map(|_| ()),
        );
        result
    }

    /// Owner, then mode (chown may clear set-id bits), then size, then times; each as the
    /// caller, so the real filesystem decides.
    fn apply(&self, caller: Caller, node: &Arc<Node>, change: SetAttr) -> Result<Attr> {
        let Kind::Real { format, .. } = node.kind else {
            return Err(Errno::EROFS);
        };
        let fd = self.fd(node)?.ok_or(Errno::EROFS)?;
        let obj = fd.as_fd();
        if change.uid.is_some() || change.gid.is_some() {
            let _as_caller = self.as_caller(caller, None)?;
            let (uid, gid) = (
                change.uid.unwrap_or(u32::MAX),
                change.gid.unwrap_or(u32::MAX),
            );
            sys::chown(obj, uid, gid)?;
        }
        if let Some(mode) = change.mode {
            let mode = mode & 0o7777;
            let result = {
                let _as_caller = self.as_caller(caller, None)?;
                sys::chmod(obj, mode)
            };
            if let Err(e) = result {
                // After a write by someone other than the owner, the kernel clears set-id bits
                // by sending exactly such a chmod. Taking privileges away is always safe, so
                // that one is done with the daemon's own rights.
                let current = sys::fstat(obj)?.st_mode & 0o7777;
                let only_clears_setid =
                    mode != current && mode == current & !(libc::S_ISUID | libc::S_ISGID);
                if e.raw_os_error() != Some(libc::EPERM) || !only_clears_setid {
                    return Err(e.into());
                }
                sys::chmod(obj, mode)?;
            }
        }
        if let Some(size) = change.size {
            // ftruncate: through the open file (a passthrough one is reopened), as natively.
            let open = change.fh.and_then(|fh| self.io_file(fh).ok());
            let _as_caller = self.as_caller(caller, None)?;
            match &open {
                Some(io) => io.file()?.set_len(size)?,
                _ if format == libc::S_IFREG => sys::truncate(obj, size)?,
                _ if format == libc::S_IFDIR => return Err(Errno(libc::EISDIR)),
                _ => return Err(Errno::EINVAL),
            }
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let _as_caller = self.as_caller(caller, None)?;
            // On the object's own fd: a symlink's remembered name may lead elsewhere by now.
            sys::utimens(obj, change.atime, change.mtime)?;
        }
        let stat = sys::fstat(obj)?;
        Ok(self.attr_of(node, stat))
    }

    pub fn setxattr(
        &self,
        caller: Caller,
        id: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        self.xattr_change(caller, "setxattr", id, name, |obj| {
            Ok(sys::setxattr(obj, name, value, flags)?)
        })
    }

    pub fn removexattr(&self, caller: Caller, id: u64, name: &OsStr) -> Result<()> {
        self.xattr_change(caller, "removexattr", id, name, |obj| {
            Ok(sys::removexattr(obj, name)?)
        })
    }

    fn xattr_change(
        &self,
        caller: Caller,
        op: &'static str,
        id: u64,
        name: &OsStr,
        f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> Result<()>,
    ) -> Result<()> {
        let node = self.node(id)?;
        let result = self.writable(&node).and_then(|()| {
            let obj = self.fd(&node)?.ok_or(Errno::EROFS)?;
            let _as_caller = self.as_caller(caller, None)?;
            f(obj.as_fd())
        });
        self.record_change(
            caller,
            Audited {
                op,
                node: &node,
                name: None,
                flags: None,
                dest: None,
                detail: Some(name.to_os_string()),
            },
            result.as_ref().map(|_| ()),
        );
        result
    }

    // ---- ioctl: inode flags (lsattr/chattr), nothing else --------------------------------

    /// Answers an ioctl on open handle `fh` of node `id` as the real file would, for the few
    /// commands relocfs serves: the inode flags (`FS_IOC_GETFLAGS`/`SETFLAGS`, what
    /// lsattr/chattr use) and extended attributes (`FS_IOC_FSGETXATTR`/`FSSETXATTR`). The
    /// kernel's FUSE client sends these only from its fileattr code, after checking the
    /// caller's ownership and CAP_LINUX_IMMUTABLE itself, on a private read-only open.
    /// Changes go through rw rules only (EROFS elsewhere, like every change) and are made as
    /// the caller. Every other command, terminal ones (TCGETS at each Python open) included,
    /// gets ENOTTY: what a regular file or directory answers natively, and no command is ever
    /// passed on to the real file.
    pub fn ioctl(
        &self,
        caller: Caller,
        id: u64,
        fh: u64,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> Result<Vec<u8>> {
        let op = match IoctlOp::of(cmd) {
            Some(op) => op,
            None => return Err(Errno(libc::ENOTTY)),
        };
        let node = self.node(id)?;
        let handle = self.handle(fh)?;
        // A passthrough handle keeps no file of its own: reopen the object from its node.
        let io;
        // `None`: a virtual directory, which has no flags and takes none.
        let file = match &*handle {
            Handle::File(file) => Some(file),
            Handle::Passthrough(_) => {
                io = self.io_file(fh)?;
                Some(io.file()?)
            }
            Handle::Dir { file, .. } => file.as_ref(),
        };
        let reply = |mut data: Vec<u8>| {
            data.truncate(out_size as usize);
            Ok(data)
        };
        match op {
            IoctlOp::GetFlags => match file {
                Some(f) => reply(sys::get_inode_flags(f)?.to_ne_bytes().to_vec()),
                None => reply(vec![0; 4]),
            },
            IoctlOp::GetFsxattr => match file {
                Some(f) => reply(sys::get_fsxattr(f)?.to_vec()),
                None => reply(vec![0; sys::FSXATTR_SIZE]),
            },
            IoctlOp::SetFlags | IoctlOp::SetFsxattr => {
                let result = self.writable(&node).and_then(|()| {
                    let file = file.ok_or(Errno::EROFS)?;
                    let _as_caller = self.as_caller(caller, None)?;
                    if op == IoctlOp::SetFlags {
                        let bytes = input.get(..4).ok_or(Errno::EINVAL)?;
                        let flags =
                            u32::from_ne_bytes(bytes.try_into().map_err(|_| Errno::EINVAL)?);
                        sys::set_inode_flags(file, flags)?;
                    } else {
                        let bytes = input.get(..sys::FSXATTR_SIZE).ok_or(Errno::EINVAL)?;
                        let attr = bytes.try_into().map_err(|_| Errno::EINVAL)?;
                        sys::set_fsxattr(file, attr)?;
                    }
                    Ok(())
                });
                self.record_change(
                    caller,
                    Audited {
                        op: op.audit_name(),
                        node: &node,
                        name: None,
                        flags: None,
                        dest: None,
                        // The (x)flags word leads both structures.
                        detail: input.get(..4).and_then(|b| b.try_into().ok()).map(|b| {
                            format!("{}={:#x}", op.flags_name(), u32::from_ne_bytes(b)).into()
                        }),
                    },
                    result.as_ref().map(|_| ()),
                );
                result.map(|()| Vec::new())
            }
        }
    }

    // ---- I/O on open files: the open was the permission check ---------------------------

    /// Writes as the handle's opener, with no capability the opener lacks, so reserved
    /// blocks and quotas apply as they would natively.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        use std::os::unix::fs::FileExt;
        let io = self.io_file(fh)?;
        let _as_opener = self.as_opener(&io.opener)?;
        io.file()?.write_all_at(data, offset)?;
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let handle = self.handle(fh)?;
        let io;
        let file = match &*handle {
            Handle::Dir { file: Some(f), .. } => f,
            Handle::Dir { file: None, .. } => return Ok(()),
            Handle::File(_) | Handle::Passthrough(_) => {
                io = self.io_file(fh)?;
                io.file()?
            }
        };
        if datasync {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let io = self.io_file(fh)?;
        let _as_opener = self.as_opener(&io.opener)?;
        Ok(sys::fallocate(io.file()?, mode, offset, length)?)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
        flags: u32,
    ) -> Result<u32> {
        let input = self.io_file(fh_in)?;
        let output = self.io_file(fh_out)?;
        // The reply carries a u32: copy at most that much per request, as the kernel expects.
        let len = len.min(u64::from(!0xfff_u32));
        // The blocks written are the output opener's.
        let _as_opener = self.as_opener(&output.opener)?;
        let n = sys::copy_file_range(
            input.file()?,
            offset_in,
            output.file()?,
            offset_out,
            len,
            flags,
        )?;
        Ok(n as u32)
    }
}

/// Creation flags passed on to the real `openat`; O_CREAT and O_NOFOLLOW are always added.
const CREATE_FLAGS_KEPT: i32 = libc::O_ACCMODE
    | libc::O_EXCL
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_DIRECT
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_NOATIME
    | libc::O_LARGEFILE;

/// The ioctl commands relocfs serves (see `Fs::ioctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoctlOp {
    GetFlags,
    SetFlags,
    GetFsxattr,
    SetFsxattr,
}

impl IoctlOp {
    fn of(cmd: u32) -> Option<IoctlOp> {
        // Only the native-width commands, which the kernel's fileattr code sends after its own
        // checks (the VFS takes these four before any filesystem sees them). FS_IOC32_*FLAGS
        // from a 64-bit process would come straight from the client, and natively get ENOTTY.
        match cmd {
            c if c == libc::FS_IOC_GETFLAGS as u32 => Some(IoctlOp::GetFlags),
            c if c == libc::FS_IOC_SETFLAGS as u32 => Some(IoctlOp::SetFlags),
            sys::FS_IOC_FSGETXATTR => Some(IoctlOp::GetFsxattr),
            sys::FS_IOC_FSSETXATTR => Some(IoctlOp::SetFsxattr),
            _ => None,
        }
    }

    fn flags_name(self) -> &'static str {
        match self {
            IoctlOp::SetFsxattr | IoctlOp::GetFsxattr => "xflags",
            IoctlOp::SetFlags | IoctlOp::GetFlags => "flags",
        }
    }

    fn audit_name(self) -> &'static str {
        match self {
            IoctlOp::SetFlags => "setflags",
            IoctlOp::SetFsxattr => "fssetxattr",
            IoctlOp::GetFlags | IoctlOp::GetFsxattr => "ioctl",
        }
    }
}
