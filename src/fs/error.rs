//! The core's errors, in one table: each refusal of relocfs's own is a variant with the errno
//! the caller gets and the short reason its audit line carries; `Os` is what the real
//! filesystem (or the kernel) said, passed on untouched and without a reason. `Error::table`
//! matches exhaustively, so a new variant does not compile until both are chosen.

use std::io;

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A change below a read-only rule.
    ReadOnlyRule,
    /// A change in or of a virtual directory (a legacy directory that exists only because a
    /// rule lies below it).
    VirtualDir,
    /// The path of a deny rule.
    DenyRule,
    /// A change of a name the prefix table owns (a rule's path, or a parent of one).
    RuleOwnedName,
    /// A change naming `.`, `..`, an empty name or one with `/`.
    BadName,
    /// The same names, looked up.
    BadNameLookup,
    /// A name no rule provides, looked up in a virtual directory.
    NotInTable,
    /// Over the caller's share of open handles (see `handles::Budget`).
    HandleShare,
    /// A node whose name now leads to another object, or to none (closed under fd pressure
    /// and not found again): the kernel looks the name up afresh.
    Stale,
    /// A node id the node table does not hold.
    UnknownNode,
    /// A file handle the handle table does not hold, or one of the wrong kind.
    BadHandle,
    /// An open of a virtual directory as a file.
    OpenVirtualDir,
    /// An open of a device or fifo: the kernel opens those itself, never through the daemon.
    SpecialFile,
    /// A directory operation on something else (lookup below, opendir, readdir, a change
    /// below a file).
    NotDir,
    /// A readlink of a virtual directory.
    NotSymlink,
    /// A statfs of a virtual directory when no rule has a target.
    NoTarget,
    /// An extended attribute read from a virtual directory, which has none.
    NoXattr,
    /// A listxattr whose buffer is smaller than the names the caller may see.
    XattrListTooLong,
    /// An ioctl relocfs does not serve (what a regular file or directory answers natively).
    UnservedIoctl,
    /// An inode-flag ioctl whose argument is too short.
    ShortIoctlArgument,
    /// A truncate of a directory.
    TruncateDir,
    /// A truncate of something that is neither a regular file nor a directory.
    TruncateSpecial,
    /// An operation relocfs does not serve at all (poll, locks, bmap).
    NotServed,
    /// A new lookup or open below a rule inside one of its brownout windows.
    Brownout,
    /// A new lookup or open below a retired rule (its stage, or past its `retire_after`).
    Retired,
    /// What the real filesystem or the kernel said.
    Os(i32),
}

impl Error {
    /// The table: errno for the caller, and the reason the audit line carries.
    const fn table(self) -> (i32, Option<&'static str>) {
        use Error::*;
        match self {
            ReadOnlyRule => (libc::EROFS, Some("read-only rule")),
            VirtualDir => (libc::EROFS, Some("virtual directory")),
            DenyRule => (libc::EACCES, Some("deny rule")),
            RuleOwnedName => (libc::EBUSY, Some("rule-owned name")),
            BadName => (libc::EINVAL, Some("bad name")),
            BadNameLookup => (libc::ENOENT, Some("bad name")),
            NotInTable => (libc::ENOENT, Some("virtual directory")),
            HandleShare => (libc::EMFILE, Some("over the handle share")),
            Stale => (libc::ESTALE, Some("stale node")),
            UnknownNode => (libc::EBADF, Some("unknown node")),
            BadHandle => (libc::EBADF, Some("bad handle")),
            OpenVirtualDir => (libc::EISDIR, Some("virtual directory")),
            SpecialFile => (libc::EPERM, Some("device or fifo")),
            NotDir => (libc::ENOTDIR, Some("not a directory")),
            NotSymlink => (libc::EINVAL, Some("virtual directory")),
            NoTarget => (libc::ENOENT, Some("no rule target")),
            NoXattr => (libc::ENODATA, Some("virtual directory")),
            XattrListTooLong => (libc::ERANGE, Some("buffer too small")),
            UnservedIoctl => (libc::ENOTTY, Some("unserved ioctl")),
            ShortIoctlArgument => (libc::EINVAL, Some("short ioctl argument")),
            TruncateDir => (libc::EISDIR, Some("directory")),
            TruncateSpecial => (libc::EINVAL, Some("not a regular file")),
            NotServed => (libc::ENOSYS, Some("not served")),
            // As if the rule had been removed: the name is not there.
            Brownout => (libc::ENOENT, Some("brownout")),
            Retired => (libc::ENOENT, Some("retired")),
            Os(errno) => (errno, None),
        }
    }

    /// The errno the caller gets.
    pub const fn errno(self) -> i32 {
        self.table().0
    }

    /// Why relocfs refused, for the audit log; `None` when the real filesystem said so.
    pub const fn reason(self) -> Option<&'static str> {
        self.table().1
    }

    /// Whether an error reply is routine (a missing name, a refusal, the real filesystem's
    /// answer to what a caller asked) rather than a sign that something is wrong in the
    /// daemon or below it (EIO, a handle the kernel should not have sent, fds running out),
    /// which the operator should see.
    pub fn is_routine(self) -> bool {
        match self {
            Error::UnknownNode | Error::BadHandle => false,
            Error::Os(errno) => !matches!(
                errno,
                libc::EIO
                    | libc::EBADF
                    | libc::EMFILE
                    | libc::ENFILE
                    | libc::ENOMEM
                    | libc::EFAULT
                    | libc::ENXIO
                    | libc::EUCLEAN
            ),
            _ => true,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        if crate::node::is_stale(&e) {
            return Error::Stale;
        }
        Error::Os(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errno = self.errno();
        let name = crate::audit::errno_name(errno);
        match self.reason() {
            Some(reason) => write!(f, "{name} ({reason})"),
            None => write!(f, "{name}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The errnos are the ones the daemon gave before the table (the tests assert them).
    #[test]
    fn refusals_keep_their_errnos_and_os_errors_have_no_reason() {
        assert_eq!(Error::DenyRule.errno(), libc::EACCES);
        assert_eq!(Error::ReadOnlyRule.errno(), libc::EROFS);
        assert_eq!(Error::RuleOwnedName.errno(), libc::EBUSY);
        assert_eq!(Error::HandleShare.errno(), libc::EMFILE);
        assert_eq!(Error::DenyRule.reason(), Some("deny rule"));
        assert_eq!(Error::Os(libc::EACCES).errno(), libc::EACCES);
        assert_eq!(Error::Os(libc::EACCES).reason(), None);
        assert_eq!(
            Error::from(io::Error::from_raw_os_error(libc::ENOENT)),
            Error::Os(libc::ENOENT)
        );
        assert_eq!(Error::from(crate::node::stale()), Error::Stale);
        assert_eq!(Error::Stale.errno(), libc::ESTALE);
        // An error without an errno is an I/O error, and one the operator should see.
        assert_eq!(Error::from(io::Error::other("?")), Error::Os(libc::EIO));
        assert!(!Error::Os(libc::EIO).is_routine());
        assert!(Error::Os(libc::ENOENT).is_routine());
    }
}
