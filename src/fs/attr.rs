//! Attribute changes and reads: setattr, extended attributes and the inode-flag ioctls, each
//! change done as the caller through read-write rules only and audited.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::{Attr, Audited, Caller, Error, Fs, Handle, Result};
use crate::node::{Kind, Node};
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
    pub(super) fn describe(&self) -> String {
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

impl Fs {
    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        match self.fd(&node)? {
            Some(fd) => Ok(sys::getxattr(fd.as_fd(), name, size as usize)?),
            None => Err(Error::NoXattr),
        }
    }

    /// The names of a node's extended attributes, as the caller would see them natively:
    /// `trusted.*` names only for root. The daemon lists as root, and the kernel passes the
    /// list on unfiltered, so the filtering is ours. With `size` 0, only the length counts.
    pub fn listxattr(&self, caller: Caller, id: u64, size: u32) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        let Some(fd) = self.fd(&node)? else {
            return Ok(Vec::new());
        };
        if caller.uid == 0 {
            return Ok(sys::listxattr(fd.as_fd(), size as usize)?);
        }
        let needed = sys::listxattr(fd.as_fd(), 0)?.len();
        let all = sys::listxattr(fd.as_fd(), needed)?;
        let visible: Vec<u8> = all
            .split_inclusive(|&b| b == 0)
            .filter(|name| !name.starts_with(b"trusted."))
            .flatten()
            .copied()
            .collect();
        if size != 0 && visible.len() > size as usize {
            return Err(Error::XattrListTooLong);
        }
        Ok(visible)
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
    pub(super) fn apply(&self, caller: Caller, node: &Arc<Node>, change: SetAttr) -> Result<Attr> {
        let Kind::Real { format, .. } = node.kind else {
            return Err(Error::VirtualDir);
        };
        let fd = self.fd(node)?.ok_or(Error::VirtualDir)?;
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
                _ if format == libc::S_IFDIR => return Err(Error::TruncateDir),
                _ => return Err(Error::TruncateSpecial),
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

    pub(super) fn xattr_change(
        &self,
        caller: Caller,
        op: &'static str,
        id: u64,
        name: &OsStr,
        f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> Result<()>,
    ) -> Result<()> {
        let node = self.node(id)?;
        let result = self.writable(&node).and_then(|()| {
            let obj = self.fd(&node)?.ok_or(Error::VirtualDir)?;
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
            None => return Err(Error::UnservedIoctl),
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
                    let file = file.ok_or(Error::VirtualDir)?;
                    let _as_caller = self.as_caller(caller, None)?;
                    if op == IoctlOp::SetFlags {
                        let bytes = input.get(..4).ok_or(Error::ShortIoctlArgument)?;
                        let flags = u32::from_ne_bytes(
                            bytes.try_into().map_err(|_| Error::ShortIoctlArgument)?,
                        );
                        sys::set_inode_flags(file, flags)?;
                    } else {
                        let bytes = input
                            .get(..sys::FSXATTR_SIZE)
                            .ok_or(Error::ShortIoctlArgument)?;
                        let attr = bytes.try_into().map_err(|_| Error::ShortIoctlArgument)?;
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
}

/// The ioctl commands relocfs serves (see `Fs::ioctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IoctlOp {
    GetFlags,
    SetFlags,
    GetFsxattr,
    SetFsxattr,
}

impl IoctlOp {
    pub(super) fn of(cmd: u32) -> Option<IoctlOp> {
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
