//! Acting as the caller: per-thread fsuid, fsgid, supplementary groups and umask, switched by an
//! RAII guard, so objects the daemon creates belong to the caller and the real filesystem makes
//! every permission decision with the caller's own credentials.
//!
//! The raw syscalls are used on purpose: glibc's `setgroups`/`setfsuid` wrappers would apply the
//! change to every thread of the process, and the other FUSE threads serve other callers.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::node::lock;

/// How long a process's supplementary groups are trusted from `/proc`: they rarely change, and
/// reading them per request would cost a file read per create.
const GROUPS_TTL: Duration = Duration::from_secs(1);
const GROUPS_CACHE_MAX: usize = 4096;

/// A short-lived cache of callers' supplementary groups, by pid.
#[derive(Default)]
pub struct GroupsCache {
    map: Mutex<HashMap<u32, (Instant, Vec<libc::gid_t>)>>,
}

impl GroupsCache {
    /// The supplementary groups of `pid` (a thread id), or none if it is already gone.
    pub fn groups(&self, pid: u32) -> Vec<libc::gid_t> {
        let now = Instant::now();
        if let Some((at, groups)) = lock(&self.map).get(&pid) {
            if now.duration_since(*at) < GROUPS_TTL {
                return groups.clone();
            }
        }
        let groups = read_groups(pid).unwrap_or_default();
        let mut map = lock(&self.map);
        if map.len() >= GROUPS_CACHE_MAX {
            map.retain(|_, (at, _)| now.duration_since(*at) < GROUPS_TTL);
        }
        map.insert(pid, (now, groups.clone()));
        groups
    }
}

/// Parses the `Groups:` line of `/proc/PID/status`.
fn read_groups(pid: u32) -> io::Result<Vec<libc::gid_t>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_groups(&status))
}

fn parse_groups(status: &str) -> Vec<libc::gid_t> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

thread_local! {
    /// Whether this thread has its own umask (after `unshare(CLONE_FS)`).
    static OWN_FS: Cell<bool> = const { Cell::new(false) };
}

/// While alive, the calling thread acts with the caller's credentials and umask; dropping it
/// restores the daemon's. Restoring cannot fail in a way we could handle: the syscalls used
/// never fail for values the thread had before.
pub struct AsCaller {
    old_uid: u32,
    old_gid: u32,
    old_groups: Vec<libc::gid_t>,
    old_umask: Option<libc::mode_t>,
}

impl AsCaller {
    /// Switches to `uid`/`gid` with `groups`; with `umask`, also the thread's umask (creation
    /// calls: the real filesystem then applies it, or a default ACL in its place).
    pub fn new(
        uid: u32,
        gid: u32,
        groups: &[libc::gid_t],
        umask: Option<u32>,
    ) -> io::Result<AsCaller> {
        let old_groups = thread_groups()?;
        set_thread_groups(groups)?;
        // SAFETY: setfsgid/setfsuid change only this thread's filesystem ids and return the
        // previous value; they touch no memory.
        let old_gid = unsafe { libc::syscall(libc::SYS_setfsgid, gid) } as u32;
        // SAFETY: as above.
        let old_uid = unsafe { libc::syscall(libc::SYS_setfsuid, uid) } as u32;
        let mut guard = AsCaller {
            old_uid,
            old_gid,
            old_groups,
            old_umask: None,
        };
        // setfsuid reports failure only by not changing the id: check it took.
        // SAFETY: setfsuid(-1) is a query that changes nothing.
        let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) } as u32;
        if now != uid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if let Some(mask) = umask {
            own_fs_struct()?;
            // SAFETY: umask only swaps this thread's mask (its fs struct is private now).
            guard.old_umask = Some(unsafe { libc::umask(mask as libc::mode_t) });
        }
        Ok(guard)
    }
}

impl Drop for AsCaller {
    fn drop(&mut self) {
        // SAFETY: restoring ids and mask this thread held a moment ago; no memory effects.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, self.old_uid);
            libc::syscall(libc::SYS_setfsgid, self.old_gid);
            if let Some(mask) = self.old_umask {
                libc::umask(mask);
            }
        }
        if let Err(e) = set_thread_groups(&self.old_groups) {
            log::error!("cannot restore the daemon's groups: {e}");
        }
    }
}

/// Gives this thread its own umask (and cwd), once: umask is per process otherwise.
fn own_fs_struct() -> io::Result<()> {
    if OWN_FS.with(Cell::get) {
        return Ok(());
    }
    // SAFETY: unshare(CLONE_FS) only detaches this thread's fs struct (cwd, root, umask).
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    OWN_FS.with(|c| c.set(true));
    Ok(())
}

fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: getgroups(0, NULL) only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` has room for `n` entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

/// setgroups for this thread only (the raw syscall; glibc's wrapper changes every thread).
fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the kernel reads `groups.len()` gids from the pointer.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_line_is_parsed() {
        let status = "Name:\tbash\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27]);
        assert_eq!(parse_groups("Groups:\t\n"), Vec::<libc::gid_t>::new());
        assert_eq!(parse_groups("Name:\tx\n"), Vec::<libc::gid_t>::new());
    }

    #[test]
    fn own_groups_are_read() {
        let cache = GroupsCache::default();
        let mine = thread_groups().unwrap();
        let mut read = cache.groups(std::process::id());
        let mut expected = mine.clone();
        read.sort_unstable();
        expected.sort_unstable();
        assert_eq!(read, expected);
    }

    /// Run as root: a file created under the guard belongs to the caller, and the daemon's ids
    /// come back afterwards.
    #[test]
    fn guard_switches_and_restores() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let path = dir.path().join("f");
        // Run in a fresh thread so the test harness's thread keeps its credentials whatever
        // happens.
        let p = path.clone();
        std::thread::spawn(move || {
            let guard = AsCaller::new(4242, 4243, &[4244], Some(0o077)).unwrap();
            std::fs::write(&p, b"x").unwrap();
            drop(guard);
            let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) } as u32;
            assert_eq!(now, 0);
            assert!(!thread_groups().unwrap().contains(&4244));
        })
        .join()
        .unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243));
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
}
