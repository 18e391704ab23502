//! Namespace changes through read-write rules: create, mkdir, mknod, symlink, link, unlink,
//! rmdir and rename, each done as the caller (fsuid/fsgid/groups/umask) on `*at()` calls from
//! the parent's fd, never following a symlink, and each audited with its result. Read-only
//! rules and virtual directories refuse every change with EROFS.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::{Attr, Audited, Caller, Error, Fs, Handle, Opened, RegisterBacking, Result};
use crate::config::Mode;
use crate::node::{is_bad_name, Kind, Link, Node};
use crate::sys;

/// The real directory a change happens in: its node and fd, checked writable.
pub(super) struct Dir<'a> {
    pub(super) node: Arc<Node>,
    pub(super) fd: std::os::fd::BorrowedFd<'a>,
}

impl Fs {
    /// Whether a node's rule lets changes through.
    pub(super) fn writable(&self, node: &Node) -> Result<()> {
        match node.rule().and_then(|r| node.rules.root_of(r)) {
            Some(root) if root.mode == Mode::ReadWrite => Ok(()),
            Some(_) => Err(Error::ReadOnlyRule),
            None => Err(Error::VirtualDir),
        }
    }

    /// A directory node that accepts changes below it, and the name it will get, checked.
    pub(super) fn change_dir(&self, parent: &Arc<Node>, name: &OsStr) -> Result<()> {
        if is_bad_name(name) {
            return Err(Error::BadName);
        }
        self.writable(parent)?;
        // A name the prefix table owns is a mountpoint of sorts: it cannot be replaced,
        // removed or renamed from here.
        if parent
            .trie
            .and_then(|t| parent.rules.table.child(t, name))
            .is_some()
        {
            return Err(Error::RuleOwnedName);
        }
        if !parent.is_dir() {
            return Err(Error::NotDir);
        }
        Ok(())
    }

    /// Registers an object just made below `parent` as a node (one kernel lookup).
    pub(super) fn new_node(&self, parent: &Arc<Node>, name: &OsStr, fd: OwnedFd) -> Result<Attr> {
        let Kind::Real { rule, .. } = parent.kind else {
            return Err(Error::VirtualDir);
        };
        let stat = sys::fstat(fd.as_fd())?;
        let link = Link {
            parent: Some(Arc::clone(parent)),
            name: name.to_os_string(),
        };
        Ok(self.register(parent, rule, fd, stat, None, link))
    }

    /// Runs `f` with the parent's fd, as the caller, and audits the result as `op`.
    pub(super) fn change_below<T>(
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
            let fd = self.fd(&parent)?.ok_or(Error::VirtualDir)?;
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

    /// Creates and opens a file, its I/O served by the daemon (see `create_with`).
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Attr, Opened)> {
        self.create_as(caller, parent, name, (mode, umask, flags), None)
    }

    /// Creates and opens a file; `kernel` registers the backing file that passes its I/O
    /// through (see `passthrough.rs`).
    #[allow(clippy::too_many_arguments)]
    pub fn create_with(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        kernel: &dyn RegisterBacking,
    ) -> Result<(Attr, Opened)> {
        self.create_as(caller, parent, name, (mode, umask, flags), Some(kernel))
    }

    fn create_as(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        (mode, umask, flags): (u32, u32, i32),
        kernel: Option<&dyn RegisterBacking>,
    ) -> Result<(Attr, Opened)> {
        let parent_node = self.node(parent)?;
        let result = self.change_dir(&parent_node, name).and_then(|()| {
            self.stage_gate(caller, &parent_node, Some(name))?;
            let fd = self.fd(&parent_node)?.ok_or(Error::VirtualDir)?;
            let opener = self.opener(caller);
            let admitted = self.admit(caller.uid)?;
            let created = self.as_caller(caller, Some(umask)).and_then(|_as_caller| {
                let kept = flags & CREATE_FLAGS_KEPT;
                Ok(sys::create_child(fd.as_fd(), name, kept, mode)?)
            });
            let file = created?;
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
        let (attr, fh) = result?;
        let opened = self.serve(attr.id, fh, flags, true, kernel);
        Ok((attr, opened))
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
                    return Err(Error::VirtualDir);
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
                    return Err(Error::VirtualDir);
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
    pub(super) fn relink(&self, oldparent: &Arc<Node>, newparent: &Arc<Node>, newname: &OsStr) {
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
}

/// Creation flags passed on to the real `openat`; O_CREAT and O_NOFOLLOW are always added.
pub(super) const CREATE_FLAGS_KEPT: i32 = libc::O_ACCMODE
    | libc::O_EXCL
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_DIRECT
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_NOATIME
    | libc::O_LARGEFILE;
