//! Where the audit log lives and how it is opened: never through a final symlink, only as a
//! regular file, only in a directory no other user can write, and missing directories created
//! (0750) one name at a time without following anything planted there.
//!
//! Trust rule, checked from `/` down on the resolved path:
//! - every directory is owned by root or the daemon's user, and is not writable by everyone
//!   unless sticky; in a sticky directory others can write, the next name (directory or
//!   symlink) must belong to root or the daemon's user;
//! - the log's own directory is writable by nobody but its owner (no group or other write
//!   bit), except a sticky one, where the log file must then belong to the daemon's user;
//! - the log is a regular file (not a symlink, FIFO, socket or device).
//!
//! Symlinks in the configured path are followed once, at start (the operator's choice, as for
//! rule targets), under the same rule; reopening later (SIGHUP, a deleted log) walks the
//! resolved path and follows no symlink at all.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::sys;

/// How many symlinks resolving the configured path may follow (as the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// A checked place for the log: the resolved directory (the part that exists, then the names
/// to create) and the file name.
#[derive(Debug, Clone)]
pub struct LogPlace {
    /// The path as configured, for messages.
    pub path: PathBuf,
    /// The resolved directory, free of symlinks; its tail may not exist yet.
    dir: PathBuf,
    name: OsString,
    /// The daemon's user: root, or the user who mounts.
    uid: u32,
    /// The file is replaced by rename, never opened (the metrics textfile): whatever is at
    /// its name is not checked, since nothing is written through it.
    replaced: bool,
}

fn err(msg: String) -> io::Error {
    io::Error::other(msg)
}

fn is_shared(st: &libc::stat) -> bool {
    st.st_mode & 0o002 != 0
}

fn is_sticky(st: &libc::stat) -> bool {
    st.st_mode & libc::S_ISVTX != 0
}

fn kind(st: &libc::stat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

impl LogPlace {
    /// Resolves and checks `log` (absolute and normalised, as the config guarantees) without
    /// creating anything. The error is the reason only; callers name the log.
    pub fn resolve(log: &Path) -> io::Result<LogPlace> {
        LogPlace::resolve_as(log, false)
    }

    fn resolve_as(log: &Path, replaced: bool) -> io::Result<LogPlace> {
        let uid = sys::geteuid();
        let (Some(parent), Some(name)) = (log.parent(), log.file_name()) else {
            return Err(err("is not a file path".into()));
        };
        let dir = resolve_dir(parent, uid)?;
        let place = LogPlace {
            path: log.to_path_buf(),
            dir,
            name: name.to_os_string(),
            uid,
            replaced,
        };
        // Check what exists now, creating nothing (`relocfs check` mounts and makes nothing).
        place.walk(false)?;
        Ok(place)
    }

    /// As [`LogPlace::resolve`], for a file replaced by rename beside the checked directory
    /// rather than opened (the metrics textfile): see [`LogPlace::dir`].
    pub fn resolve_replaced(path: &Path) -> io::Result<LogPlace> {
        LogPlace::resolve_as(path, true)
    }

    /// The file's name in [`LogPlace::dir`].
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The directory, walked and checked from `/` again (nothing created): an `O_PATH`
    /// handle, and whether other users can write it (then it is sticky); `None` if missing.
    pub fn dir(&self) -> io::Result<Option<(OwnedFd, bool)>> {
        self.walk(false)
    }

    /// Opens the log for appending, creating missing directories (0750) and the file (0640).
    pub fn open(&self) -> io::Result<File> {
        let Some((dir, shared)) = self.walk(true)? else {
            return Err(err(
                "its directory disappeared while it was being created".into()
            ));
        };
        // Up to a few tries: a name can appear or vanish between our look and our open.
        for _ in 0..4 {
            match sys::stat_child(dir.as_fd(), &self.name) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::create_child(
                        dir.as_fd(),
                        &self.name,
                        libc::O_WRONLY | libc::O_APPEND | libc::O_EXCL,
                        0o640,
                    ) {
                        Ok(file) => return Ok(file),
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
                Ok(st) => {
                    self.check_file(&st, shared)?;
                    // O_PATH first, checked, then reopened through /proc/self/fd: the object
                    // opened for writing is the regular file just checked, whatever is
                    // renamed meanwhile; a FIFO is never opened (it would block).
                    let fd = sys::open_child(dir.as_fd(), &self.name)?;
                    let st = sys::fstat(fd.as_fd())?;
                    self.check_file(&st, shared)?;
                    return sys::reopen(fd.as_fd(), libc::O_WRONLY | libc::O_APPEND);
                }
            }
        }
        Err(err("it keeps changing while being opened".into()))
    }

    fn check_file(&self, st: &libc::stat, shared_dir: bool) -> io::Result<()> {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFLNK => {
                return Err(err(
                    "is a symlink, which relocfs does not follow (ELOOP): point [audit] log at \
                     the real file"
                        .into(),
                ))
            }
            _ => {
                return Err(err(format!(
                    "is {}: the audit log must be a regular file",
                    kind(st)
                )))
            }
        }
        if shared_dir && st.st_uid != self.uid {
            return Err(err(format!(
                "belongs to uid {} in a directory other users can write: the log must belong \
                 to uid {} there; use a directory only root can write",
                st.st_uid, self.uid
            )));
        }
        Ok(())
    }

    /// Walks the resolved directory from `/`, following no symlink, checking each directory;
    /// creates the missing tail with `create`. Returns the directory's fd and whether others
    /// can write it (sticky), or `None` when it does not exist (and `create` is off).
    fn walk(&self, create: bool) -> io::Result<Option<(OwnedFd, bool)>> {
        let mut fd = sys::open_dir_path(Path::new("/"))?;
        let mut st = sys::fstat(fd.as_fd())?;
        let mut here = PathBuf::from("/");
        let names: Vec<&OsStr> = self
            .dir
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        for name in names {
            check_dir(&here, &st, self.uid, false)?;
            let child = match sys::stat_child(fd.as_fd(), name) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    match sys::mkdir_child(fd.as_fd(), name, 0o750) {
                        Ok(()) => {}
                        // Someone else made it meanwhile: it is checked like any other.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => {
                            return Err(err(format!(
                                "cannot create its directory {}: {e}",
                                here.join(name).display()
                            )))
                        }
                    }
                    sys::stat_child(fd.as_fd(), name)?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // Only a check: the rest is created at mount.
                    return Ok(None);
                }
                Err(e) => return Err(err(format!("{}: {e}", here.join(name).display()))),
                Ok(child) => child,
            };
            let path = here.join(name);
            if child.st_mode & libc::S_IFMT != libc::S_IFDIR {
                let why = if child.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    "is a symlink, which relocfs does not follow here (ELOOP)".to_string()
                } else {
                    format!("is {}, not a directory", kind(&child))
                };
                return Err(err(format!("its directory {} {why}", path.display())));
            }
            if is_shared(&st) && child.st_uid != 0 && child.st_uid != self.uid {
                return Err(err(format!(
                    "its directory {} belongs to uid {} inside {}, which other users can write",
                    path.display(),
                    child.st_uid,
                    here.display()
                )));
            }
            let next = sys::open_child(fd.as_fd(), name)?;
            st = sys::fstat(next.as_fd())?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(err(format!(
                    "{} changed while being opened",
                    path.display()
                )));
            }
            // An O_PATH handle on a directory serves as the dirfd of the *at() calls below.
            fd = next;
            here = path;
        }
        check_dir(&here, &st, self.uid, true)?;
        let shared = st.st_mode & 0o022 != 0;
        if self.replaced {
            // Nothing is opened at the name: see `replaced`.
        } else if shared {
            // Allowed only sticky (check_dir said so) and with a file of ours: see check_file.
            if let Ok(file) = sys::stat_child(fd.as_fd(), &self.name) {
                self.check_file(&file, true)?;
            }
        } else if let Ok(file) = sys::stat_child(fd.as_fd(), &self.name) {
            self.check_file(&file, false)?;
        }
        Ok(Some((fd, shared)))
    }
}

/// The trust rule for one directory on the way (`last`: the log's own directory).
fn check_dir(path: &Path, st: &libc::stat, uid: u32, last: bool) -> io::Result<()> {
    let shown = path.display();
    let mode = st.st_mode & 0o7777;
    if st.st_uid != 0 && st.st_uid != uid {
        return Err(err(format!(
            "its directory {shown} belongs to uid {} (mode {mode:04o}): it could replace the \
             log; use a directory owned by root, e.g. /var/log/relocfs",
            st.st_uid
        )));
    }
    let writable = if last { mode & 0o022 } else { mode & 0o002 };
    if writable != 0 && !is_sticky(st) {
        return Err(err(format!(
            "its directory {shown} can be written by other users (mode {mode:04o}): they could \
             replace the log; use a directory only root can write, e.g. /var/log/relocfs"
        )));
    }
    Ok(())
}

/// Resolves the configured directory: symlinks are followed (each one checked like a
/// directory entry), and the missing tail is kept as names to create.
fn resolve_dir(dir: &Path, uid: u32) -> io::Result<PathBuf> {
    let mut pending: Vec<OsString> = names_of(dir);
    pending.reverse(); // a stack: next name last
    let mut here = PathBuf::from("/");
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        let path = here.join(&name);
        match sys::lstat(&path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Missing from here on: the rest is created at mount, name by name.
                let mut out = path;
                while let Some(n) = pending.pop() {
                    if n == ".." {
                        out.pop();
                    } else {
                        out.push(n);
                    }
                }
                return Ok(out);
            }
            Err(e) => return Err(err(format!("{}: {e}", path.display()))),
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(err(format!(
                        "{}: too many symlinks (ELOOP)",
                        path.display()
                    )));
                }
                let parent = sys::lstat(&here)?;
                if is_shared(&parent) && st.st_uid != 0 && st.st_uid != uid {
                    return Err(err(format!(
                        "its directory {} is a symlink of uid {} inside {}, which other users \
                         can write",
                        path.display(),
                        st.st_uid,
                        here.display()
                    )));
                }
                let target = std::fs::read_link(&path)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
                let mut names = names_of(&target);
                if target.is_absolute() {
                    here = PathBuf::from("/");
                }
                names.reverse();
                pending.extend(names);
            }
            Ok(_) => {
                if name == ".." {
                    here.pop();
                } else {
                    here = path;
                }
            }
        }
    }
    Ok(here)
}

/// The names of a path, `..` kept (resolved against the already-resolved prefix).
fn names_of(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}
