//! The handle table: open files and directories, the per-uid budget that admits them, and
//! the credentials of their openers.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{Caller, DirState, Error, Fs, Result};
use crate::creds::AsCaller;
use crate::node::{lock, Node, OpenObject};
use crate::sys;

/// An open file or directory.
#[derive(Debug)]
pub(super) enum Handle {
    /// A regular file whose I/O the daemon serves.
    File(File),
    /// A regular file whose reads and writes the kernel does itself through the backing file
    /// it registered (passthrough), which pins the file: the daemon keeps no fd for it and
    /// reopens the object (pinned node fd) for the few operations that still come here.
    Passthrough(Arc<Node>),
    Dir {
        node: Arc<Node>,
        /// `None` for virtual directories.
        file: Option<File>,
        /// Where the kernel is in the listing; read from the fd as the kernel asks.
        state: Mutex<DirState>,
    },
}

impl OpenObject for Handle {
    fn path_fd(&self) -> Option<io::Result<OwnedFd>> {
        match self {
            Handle::File(file)
            | Handle::Dir {
                file: Some(file), ..
            } => Some(sys::path_fd_of(file)),
            _ => None,
        }
    }
}

/// Who opened a handle: every write through it is made with these credentials (a WRITE
/// request's own uid is not usable: writeback and mmap writes carry none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opener {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

/// An entry of the handle table.
pub(super) struct Open {
    pub(super) handle: Arc<Handle>,
    pub(super) node: Arc<Node>,
    pub(super) opener: Opener,
    /// Open flags of a file (the access mode is reused when the object is reopened).
    pub(super) flags: i32,
}

/// How many handles the daemon grants, out of RLIMIT_NOFILE. The daemon keeps a reserve for
/// its own fds (FUSE devices, audit log, control socket, work in progress) and a minimum of
/// node fds; of the rest, root may use everything, other users all but a reserve for root,
/// and each non-root uid at most `per_uid`, so one user holding files open leaves the others
/// (and root) able to work. Node fds get what the handles leave.
#[derive(Debug)]
pub(super) struct Budget {
    pub(super) limit: usize,
    pub(super) reserve: usize,
    /// Handles anybody may hold (root), and non-root users together.
    pub(super) pool: usize,
    pub(super) users_pool: usize,
    pub(super) per_uid: usize,
    pub(super) state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
pub(super) struct BudgetState {
    pub(super) total: usize,
    pub(super) users: usize,
    /// Handles that hold an fd (passthrough files hold none).
    pub(super) fds: usize,
    pub(super) by_uid: HashMap<u32, usize>,
}

impl Budget {
    /// `transport_fds`: fds the transport holds beyond what the reserve already counts.
    pub(super) fn new(limit: usize, transport_fds: usize) -> Budget {
        let reserve = 12 + limit / 64 + transport_fds;
        let node_min = crate::node::MIN_BUDGET + limit / 64;
        let pool = limit.saturating_sub(reserve + node_min).max(8);
        let users_pool = pool - (4 + limit / 128).min(pool / 2);
        let per_uid = users_pool - (users_pool / 8).max(4).min(users_pool / 2);
        Budget {
            limit,
            reserve,
            pool,
            users_pool,
            per_uid,
            state: Mutex::new(BudgetState::default()),
        }
    }

    /// Node fds that fit beside the handles' fds (half the limit at most, as before).
    pub(super) fn node_budget(&self, handle_fds: usize) -> usize {
        (self.limit / 2).min(self.limit.saturating_sub(self.reserve + handle_fds))
    }

    /// Grants `uid` one more handle, or EMFILE; returns the node fd budget left.
    pub(super) fn admit(&self, uid: u32, holds_fd: bool) -> Result<usize> {
        let mut st = lock(&self.state);
        let mine = st.by_uid.get(&uid).copied().unwrap_or(0);
        let full = if uid == 0 {
            st.total >= self.pool
        } else {
            st.users >= self.users_pool || mine >= self.per_uid
        };
        if full {
            return Err(Error::HandleShare);
        }
        st.total += 1;
        if uid != 0 {
            st.users += 1;
            *st.by_uid.entry(uid).or_insert(0) += 1;
        }
        st.fds += usize::from(holds_fd);
        Ok(self.node_budget(st.fds))
    }

    /// A handle closed; returns the node fd budget.
    pub(super) fn release(&self, uid: u32, held_fd: bool) -> usize {
        let mut st = lock(&self.state);
        st.total = st.total.saturating_sub(1);
        if uid != 0 {
            st.users = st.users.saturating_sub(1);
            if let Some(n) = st.by_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    st.by_uid.remove(&uid);
                }
            }
        }
        if held_fd {
            st.fds = st.fds.saturating_sub(1);
        }
        self.node_budget(st.fds)
    }

    /// A handle gave its fd up (passthrough); returns the node fd budget.
    pub(super) fn fd_released(&self) -> usize {
        let mut st = lock(&self.state);
        st.fds = st.fds.saturating_sub(1);
        self.node_budget(st.fds)
    }
}

impl Fs {
    /// Acts as the caller until the guard drops (see `creds`); a no-op for a daemon that is
    /// not root, which can only be its own user.
    pub(super) fn as_caller(&self, caller: Caller, umask: Option<u32>) -> Result<Option<AsCaller>> {
        let Some(groups) = &self.groups else {
            return Ok(None);
        };
        // Root acting as root: nothing to switch (root's rights do not depend on its groups);
        // a create still needs the caller's umask.
        if caller.uid == 0 && caller.gid == 0 && umask.is_none() {
            return Ok(None);
        }
        let groups = groups.groups(caller.pid);
        AsCaller::new(caller.uid, caller.gid, &groups, umask)
            .map(Some)
            .map_err(|e| {
                log::error!("cannot act as uid {} gid {}: {e}", caller.uid, caller.gid);
                Error::from(e)
            })
    }

    /// Whether opening the object behind `fd` (a regular file) with `flags` for `caller`, who
    /// has `opener`'s groups, must be done acting as the caller, or whether acting as the caller
    /// cannot change the outcome, so the five credential switches there and back are skipped:
    ///
    /// - a root caller (umask aside, which an open of an existing file does not use): root's
    ///   open does not depend on its gid or groups;
    /// - a read-only open (no O_TRUNC) that the real file's own mode bits and ACL grant the
    ///   caller, read now with `fstat` (not the kernel's cached attributes, which may be up to
    ///   `attr_timeout` old): the owner with the owner's read bit (ACLs never restrict the
    ///   owner), or another user whose class (group if the file's group is one of theirs, else
    ///   others) has the read bit on a file that has no ACL. Only on filesystems whose
    ///   permission check is the kernel's generic one ([`GENERIC_PERMISSION_FS`]); anywhere
    ///   else (NFS, FUSE, ...) the filesystem may decide otherwise, so the open is made as the
    ///   caller.
    ///
    /// It only ever skips an open that acting as the caller would allow; anything it cannot
    /// decide (an error, a write, O_NOATIME by a non-owner, an ACL) is made as the caller.
    pub(super) fn open_as_caller_matters(
        &self,
        caller: Caller,
        opener: &Opener,
        fd: BorrowedFd<'_>,
        flags: i32,
    ) -> bool {
        if self.groups.is_none() || caller.uid == 0 {
            return false;
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return true;
        }
        let Ok(st) = sys::fstat(fd) else {
            return true;
        };
        if !self.generic_permission_fs(fd, st.st_dev) {
            return true;
        }
        if st.st_uid == caller.uid {
            return st.st_mode & libc::S_IRUSR == 0;
        }
        if flags & libc::O_NOATIME != 0 {
            // Only the owner (or CAP_FOWNER, which the caller loses) may use it.
            return true;
        }
        let in_group = st.st_gid == caller.gid || opener.groups.contains(&st.st_gid);
        let class_reads = if in_group {
            st.st_mode & libc::S_IRGRP != 0
        } else {
            st.st_mode & libc::S_IROTH != 0
        };
        !class_reads || !no_access_acl(fd)
    }

    /// Whether the filesystem of `fd` (device `dev`) checks permissions the generic way; the
    /// last device found so is remembered, so this costs an `fstatfs` only on a change.
    fn generic_permission_fs(&self, fd: BorrowedFd<'_>, dev: u64) -> bool {
        let key = dev.wrapping_add(1);
        if self.generic_dev.load(Ordering::Relaxed) == key {
            return true;
        }
        let generic = sys::fs_magic(fd).is_ok_and(|m| GENERIC_PERMISSION_FS.contains(&m));
        if generic {
            self.generic_dev.store(key, Ordering::Relaxed);
        }
        generic
    }

    /// The credentials of `caller`, kept with a handle for the writes made through it.
    pub(super) fn opener(&self, caller: Caller) -> Opener {
        Opener {
            uid: caller.uid,
            gid: caller.gid,
            groups: self
                .groups
                .as_ref()
                .map(|g| g.groups(caller.pid))
                .unwrap_or_default(),
        }
    }

    /// Acts as a handle's opener until the guard drops (root's opener: nothing to switch).
    pub(super) fn as_opener(&self, opener: &Opener) -> Result<Option<AsCaller>> {
        if self.groups.is_none() || (opener.uid == 0 && opener.gid == 0) {
            return Ok(None);
        }
        AsCaller::new(opener.uid, opener.gid, &opener.groups, None)
            .map(Some)
            .map_err(|e| {
                log::error!("cannot act as uid {} gid {}: {e}", opener.uid, opener.gid);
                Error::from(e)
            })
    }

    /// Acts as the opener of handle `fh` (the kernel keeps the creds of whoever registers a
    /// passthrough backing file, and does that file's I/O with them).
    pub(super) fn as_handle_opener(&self, fh: u64) -> Result<Option<AsCaller>> {
        let opener = self.handle_opener(fh)?;
        self.as_opener(&opener)
    }

    /// The credentials handle `fh` was opened with.
    pub(super) fn handle_opener(&self, fh: u64) -> Result<Opener> {
        lock(&self.handles)
            .get(&fh)
            .map(|o| o.opener.clone())
            .ok_or(Error::BadHandle)
    }

    /// Takes one handle of `uid`'s share (EMFILE past it), closing node fds if the handles
    /// now need them. Returns the proof to hand to `add_handle`.
    pub(super) fn admit(&self, uid: u32) -> Result<Admitted<'_>> {
        let nodes = self.budget.admit(uid, true)?;
        self.nodes.set_budget(nodes);
        Ok(Admitted { fs: self, uid })
    }

    pub(super) fn add_handle(
        &self,
        admitted: Admitted<'_>,
        node: &Arc<Node>,
        handle: Handle,
        opener: Opener,
        flags: i32,
    ) -> u64 {
        // From here the slot is the handle's: `close` gives it back.
        std::mem::forget(admitted);
        let handle = Arc::new(handle);
        if matches!(
            &*handle,
            Handle::File(_) | Handle::Dir { file: Some(_), .. }
        ) {
            let object: Arc<dyn OpenObject> = Arc::clone(&handle) as Arc<dyn OpenObject>;
            node.add_open(Arc::downgrade(&object));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(
            fh,
            Open {
                handle,
                node: Arc::clone(node),
                opener,
                flags,
            },
        );
        fh
    }

    /// The kernel registered a backing file for handle `fh` (passthrough): from now on it
    /// does the I/O itself, so the daemon drops its fd and keeps the node's fd pinned for the
    /// operations that still come here (fsync, fallocate, lseek, ioctl...).
    pub(super) fn to_passthrough(&self, fh: u64) {
        let mut handles = lock(&self.handles);
        let Some(open) = handles.get_mut(&fh) else {
            return;
        };
        if !matches!(&*open.handle, Handle::File(_)) {
            return;
        }
        open.node.pin();
        open.handle = Arc::new(Handle::Passthrough(Arc::clone(&open.node)));
        drop(handles);
        self.nodes.set_budget(self.budget.fd_released());
    }

    pub(super) fn close_handle(&self, fh: u64) {
        let Some(open) = lock(&self.handles).remove(&fh) else {
            return;
        };
        let held_fd = !matches!(&*open.handle, Handle::Passthrough(_));
        if let Handle::Passthrough(node) = &*open.handle {
            self.nodes.unpin(node);
        }
        drop(open.handle);
        self.nodes
            .set_budget(self.budget.release(open.opener.uid, held_fd));
    }

    pub(super) fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .map(|o| Arc::clone(&o.handle))
            .ok_or(Error::BadHandle)
    }

    /// The file behind a file handle for I/O, with the handle's opener.
    pub(super) fn io_file(&self, fh: u64) -> Result<IoFile> {
        let (handle, opener, flags) = {
            let handles = lock(&self.handles);
            let open = handles.get(&fh).ok_or(Error::BadHandle)?;
            (Arc::clone(&open.handle), open.opener.clone(), open.flags)
        };
        let reopened = match &*handle {
            Handle::File(_) => None,
            Handle::Passthrough(node) => {
                let fd = self.fd(node)?.ok_or(Error::BadHandle)?;
                // As the daemon: the open was the permission check (a file created 0444 and
                // opened for writing stays writable through its fd).
                Some(sys::reopen(fd.as_fd(), flags & libc::O_ACCMODE)?)
            }
            Handle::Dir { .. } => return Err(Error::BadHandle),
        };
        Ok(IoFile {
            handle,
            reopened,
            opener,
        })
    }
}

/// Filesystems whose permission check is the kernel's `generic_permission` (mode bits and POSIX
/// ACLs, nothing else): ext2/3/4, xfs, btrfs, tmpfs, f2fs (`statfs.f_type`).
const GENERIC_PERMISSION_FS: [i64; 5] =
    [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0xF2F5_2010];

/// Whether the object behind `fd` has no access ACL (none set, or ACLs unsupported there); an
/// error says nothing, so it counts as "may have one".
fn no_access_acl(fd: BorrowedFd<'_>) -> bool {
    match sys::getxattr(fd, std::ffi::OsStr::new("system.posix_acl_access"), 0) {
        Ok(_) => false,
        Err(e) => matches!(
            e.raw_os_error(),
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
        ),
    }
}

/// A slot of a uid's handle share, taken by `Fs::admit`: `add_handle` turns it into a handle;
/// dropped before that (the open or create failed on any path), it goes back to the share, so a
/// caller whose opens keep failing cannot use up its share, or the users' part, for good.
#[must_use]
pub(super) struct Admitted<'a> {
    fs: &'a Fs,
    uid: u32,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let nodes = self.fs.budget.release(self.uid, true);
        self.fs.nodes.set_budget(nodes);
    }
}

/// A file to do I/O on for a handle: its own, or the object reopened for a passthrough one.
pub(super) struct IoFile {
    pub(super) handle: Arc<Handle>,
    pub(super) reopened: Option<File>,
    pub(super) opener: Opener,
}

impl IoFile {
    pub(super) fn file(&self) -> Result<&File> {
        match (&*self.handle, &self.reopened) {
            (Handle::File(file), _) | (_, Some(file)) => Ok(file),
            _ => Err(Error::BadHandle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants handles to `uid` until EMFILE; returns how many.
    fn fill(budget: &Budget, uid: u32) -> usize {
        let mut n = 0;
        while budget.admit(uid, true).is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn one_uid_gets_its_share_and_leaves_room_for_others_and_root() {
        let budget = Budget::new(128, 0);
        assert_eq!(fill(&budget, 1000), budget.per_uid);
        assert_eq!(budget.per_uid, 87);
        // Another user gets the rest of the users' part, root its reserve on top.
        assert_eq!(fill(&budget, 1001), budget.users_pool - budget.per_uid);
        assert_eq!(fill(&budget, 0), budget.pool - budget.users_pool);
        // Node fds keep their minimum, and the daemon its reserve.
        let fds = lock(&budget.state).fds;
        assert!(budget.node_budget(fds) >= crate::node::MIN_BUDGET);
        assert!(fds + budget.node_budget(fds) + budget.reserve <= 128);
        // Closing gives the share back.
        budget.release(1000, true);
        assert!(budget.admit(1000, true).is_ok());
        assert_eq!(budget.admit(1000, true), Err(Error::HandleShare));
    }

    #[test]
    fn shares_hold_at_any_limit() {
        for limit in [0, 1, 16, 64, 128, 256, 1024, 20_000, 1 << 20] {
            let b = Budget::new(limit, 0);
            assert!(
                b.per_uid <= b.users_pool && b.users_pool <= b.pool,
                "limit {limit}"
            );
            assert!(b.per_uid > 0, "limit {limit}");
            if limit >= 128 {
                assert!(b.pool + b.reserve <= limit, "limit {limit}");
                assert!(b.users_pool - b.per_uid >= 4, "limit {limit}");
            }
        }
    }
}
