//! Acting as the caller: per-thread fsuid, fsgid, supplementary groups and umask, switched by an
//! RAII guard, so objects the daemon creates belong to the caller and the real filesystem makes
//! every permission decision with the caller's own credentials.
//!
//! For a caller other than root, the thread's effective capabilities shrink too, to the few the
//! daemon needs while acting (see [`CALLER_KEEPS`]): a root daemon whose fsuid is a user's still
//! has, for example, CAP_SYS_RESOURCE, and the real filesystem would let it into the blocks
//! reserved for root and past the user's quota.
//!
//! The syscalls themselves are in [`crate::sys::creds`] (raw, per thread: glibc's wrappers would
//! apply the change to every thread of the process, and the other FUSE threads serve other
//! callers).

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::node::lock;
use crate::sys::creds::{set_fsgid, set_fsuid, set_thread_groups, thread_groups, Caps};

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

/// Capabilities a non-root caller keeps while the daemon acts for it (bit numbers of
/// `linux/capability.h`). Everything else leaves the thread's effective set: a non-root caller
/// has none of them at the real path. setfsuid already clears the filesystem set (CAP_CHOWN,
/// CAP_DAC_*, CAP_FOWNER, CAP_FSETID, CAP_MKNOD, ...) but not, among others, CAP_SYS_RESOURCE
/// (the blocks ext4 reserves for root, quota limits), CAP_LINUX_IMMUTABLE (immutable and
/// append-only flags) or CAP_SETFCAP (file capabilities), which the real filesystem checks on
/// the thread doing the call, whatever its fsuid.
///
/// Kept: CAP_SETGID and CAP_SETUID (no file operation uses them; the guard restores ids and
/// groups with them even if a restore has to run before the capabilities come back) and
/// CAP_SYS_ADMIN, which registering a passthrough backing file needs (FUSE_DEV_IOC_BACKING_OPEN;
/// the kernel keeps the registering thread's credentials for the file's reads and writes, so
/// those then run without CAP_SYS_RESOURCE too). The kernel's FUSE client checks the caller's
/// own CAP_SYS_ADMIN before any request that needs it (trusted.* and security.* xattrs) reaches
/// the daemon.
const CALLER_KEEPS: [u32; 3] = [
    6,  /* CAP_SETGID */
    7,  /* CAP_SETUID */
    21, /* CAP_SYS_ADMIN */
];

/// Bit mask of [`CALLER_KEEPS`] in the low and high 32-bit words of a capability set.
fn keep_mask() -> [u32; 2] {
    let mut mask = [0u32; 2];
    for cap in CALLER_KEEPS {
        mask[(cap / 32) as usize] |= 1 << (cap % 32);
    }
    mask
}

/// While alive, the calling thread acts with the caller's credentials and umask; dropping it
/// restores the daemon's. Everything it changes belongs to the current thread only, so the
/// guard is neither `Send` nor `Sync`: it must be dropped on the thread that made it.
///
/// Restoring cannot fail in a way we could handle: the syscalls used never fail for values the
/// thread had before; a failure is logged.
pub struct AsCaller {
    /// Each field is `Some` once its change is made, so a half-made guard undoes exactly what
    /// it did.
    old_groups: Option<Vec<libc::gid_t>>,
    old_gid: Option<u32>,
    old_uid: Option<u32>,
    old_caps: Option<Caps>,
    old_umask: Option<libc::mode_t>,
    _this_thread: PhantomData<*const ()>,
}

impl AsCaller {
    /// Switches to `uid`/`gid` with `groups`; with `umask`, also the thread's umask (creation
    /// calls: the real filesystem then applies it, or a default ACL in its place). For a
    /// caller other than root, the thread's effective capabilities shrink to
    /// [`CALLER_KEEPS`]. On error nothing stays changed.
    pub fn new(
        uid: u32,
        gid: u32,
        groups: &[libc::gid_t],
        umask: Option<u32>,
    ) -> io::Result<AsCaller> {
        let mut guard = AsCaller {
            old_groups: None,
            old_gid: None,
            old_uid: None,
            old_caps: None,
            old_umask: None,
            _this_thread: PhantomData,
        };
        // The fsgid first: setfsgid and setgroups need the same privilege, so a thread that
        // lacks it fails here, before anything changed.
        guard.old_gid = Some(set_fsgid(gid)?);
        let old_groups = thread_groups()?;
        // The thread already holds exactly these groups (often: a daemon started without
        // supplementary groups, a caller with none): setgroups and its restore would change
        // nothing but cost two credential commits.
        if !same_groups(&old_groups, groups) {
            set_thread_groups(groups)?;
            guard.old_groups = Some(old_groups);
        }
        guard.old_uid = Some(set_fsuid(uid)?);
        if uid != 0 {
            let caps = Caps::get()?;
            let keep = keep_mask();
            let mut reduced = caps;
            for (word, mask) in reduced.effective.iter_mut().zip(keep) {
                *word &= mask;
            }
            if reduced.effective != caps.effective {
                reduced.set()?;
                guard.old_caps = Some(caps);
            }
        }
        if let Some(mask) = umask {
            own_fs_struct()?;
            // Only this thread's mask: its fs struct is private now.
            guard.old_umask = Some(crate::sys::creds::umask(mask as libc::mode_t));
        }
        Ok(guard)
    }
}

impl Drop for AsCaller {
    fn drop(&mut self) {
        if let Some(mask) = self.old_umask {
            // Restores the mask this thread held a moment ago.
            crate::sys::creds::umask(mask);
        }
        // Capabilities before ids: setfsuid(0) raises the filesystem set again from the
        // permitted set, and the rest must come back from the saved copy.
        if let Some(caps) = self.old_caps {
            if let Err(e) = caps.set() {
                log::error!("cannot restore the daemon's capabilities: {e}");
            }
        }
        if let Some(uid) = self.old_uid {
            if let Err(e) = set_fsuid(uid) {
                log::error!("cannot restore the daemon's fsuid: {e}");
            }
        }
        if let Some(groups) = &self.old_groups {
            if let Err(e) = set_thread_groups(groups) {
                log::error!("cannot restore the daemon's groups: {e}");
            }
        }
        if let Some(gid) = self.old_gid {
            if let Err(e) = set_fsgid(gid) {
                log::error!("cannot restore the daemon's fsgid: {e}");
            }
        }
    }
}

/// Whether two group lists hold the same set of groups (the kernel keeps them sorted; a list
/// read from `/proc` may repeat none but need not be in the same order).
fn same_groups(a: &[libc::gid_t], b: &[libc::gid_t]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// Gives this thread its own umask (and cwd), once: umask is per process otherwise.
fn own_fs_struct() -> io::Result<()> {
    if OWN_FS.with(Cell::get) {
        return Ok(());
    }
    crate::sys::creds::unshare_fs()?;
    OWN_FS.with(|c| c.set(true));
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
    fn groups_compare_as_sets() {
        assert!(same_groups(&[], &[]));
        assert!(same_groups(&[4, 24], &[24, 4]));
        assert!(!same_groups(&[4], &[]));
        assert!(!same_groups(&[4, 4], &[4, 24]));
        assert!(!same_groups(&[0], &[4]));
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
        if crate::sys::geteuid() != 0 {
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
            assert_eq!(crate::sys::creds::fsuid(), 0);
            assert!(!thread_groups().unwrap().contains(&4244));
        })
        .join()
        .unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243));
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    /// Run as root: a caller whose groups are the thread's own acts with exactly those (no
    /// setgroups is needed), and one with other groups still gets only its own, both ways.
    #[test]
    fn same_groups_need_no_switch() {
        if crate::sys::geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            set_thread_groups(&[7, 4245]).unwrap();
            let guard = AsCaller::new(4242, 4243, &[4245, 7], None).unwrap();
            assert_eq!(thread_groups().unwrap(), vec![7, 4245]);
            drop(guard);
            assert_eq!(thread_groups().unwrap(), vec![7, 4245]);
            let guard = AsCaller::new(4242, 4243, &[], None).unwrap();
            assert_eq!(thread_groups().unwrap(), Vec::<libc::gid_t>::new());
            drop(guard);
            assert_eq!(thread_groups().unwrap(), vec![7, 4245]);
            let guard = AsCaller::new(4242, 4243, &[7], None).unwrap();
            assert_eq!(thread_groups().unwrap(), vec![7]);
            drop(guard);
            assert_eq!(thread_groups().unwrap(), vec![7, 4245]);
        })
        .join()
        .unwrap();
    }

    /// `AsCaller` must not be `Send`: a guard dropped on another thread would restore that
    /// thread's ids and leave this one acting as the caller. This resolves only if exactly one
    /// impl applies, i.e. only if `AsCaller` is not `Send` (a `Send` type makes it ambiguous
    /// and the test fails to compile).
    #[test]
    fn guard_is_not_send() {
        trait AmbiguousIfSend<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfSend<()> for T {}
        #[allow(dead_code)]
        struct IsSend;
        impl<T: ?Sized + Send> AmbiguousIfSend<IsSend> for T {}
        <AsCaller as AmbiguousIfSend<_>>::check();
    }

    /// The thread's effective capabilities as /proc shows them (64-bit mask).
    fn cap_eff() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    }

    fn fsid_now() -> (u32, u32) {
        (crate::sys::creds::fsuid(), crate::sys::creds::fsgid())
    }

    const CAP_LINUX_IMMUTABLE: u64 = 1 << 9;
    const CAP_SYS_RESOURCE: u64 = 1 << 24;
    const CAP_SETFCAP: u64 = 1 << 31;

    /// Run as root: acting for a non-root caller leaves only `CALLER_KEEPS` in the thread's
    /// effective set (CAP_SYS_RESOURCE, CAP_LINUX_IMMUTABLE, CAP_SETFCAP, ... are gone), the
    /// daemon's set comes back whole on drop, and a root caller keeps everything.
    #[test]
    fn non_root_caller_has_no_extra_capabilities() {
        if crate::sys::geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            let before = cap_eff();
            let caps = Caps::get().unwrap();
            assert_eq!(
                u64::from(caps.effective[0]) | u64::from(caps.effective[1]) << 32,
                before,
                "capget agrees with /proc"
            );
            let keep = keep_mask();
            let keep = u64::from(keep[0]) | u64::from(keep[1]) << 32;
            let guard = AsCaller::new(4242, 4243, &[4244], None).unwrap();
            let during = cap_eff();
            assert_eq!(
                during & !keep,
                0,
                "effective set {during:#x} during the guard"
            );
            assert_eq!(during, before & keep);
            for cap in [CAP_LINUX_IMMUTABLE, CAP_SYS_RESOURCE, CAP_SETFCAP] {
                assert_eq!(during & cap, 0);
            }
            drop(guard);
            assert_eq!(cap_eff(), before, "restored on drop");
            assert_eq!(fsid_now(), (0, 0));

            let guard = AsCaller::new(0, 0, &[], Some(0o022)).unwrap();
            assert_eq!(
                cap_eff(),
                before,
                "root acting as root keeps its capabilities"
            );
            drop(guard);
            assert_eq!(cap_eff(), before);
        })
        .join()
        .unwrap();
    }

    /// Run as root: a thread without CAP_SETGID cannot take another fsgid. setfsgid says so
    /// only by not changing it; the guard notices, fails with EPERM and leaves nothing changed.
    #[test]
    fn setfsgid_failure_fails_the_guard_cleanly() {
        if crate::sys::geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            let full = Caps::get().unwrap();
            let mut no_setgid = full;
            no_setgid.effective[0] &= !(1 << 6);
            no_setgid.set().unwrap();
            let groups = thread_groups().unwrap();
            let eff = cap_eff();

            let err = set_fsgid(4243).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM));
            assert_eq!(fsid_now(), (0, 0));

            let err = AsCaller::new(4242, 4243, &[4244], Some(0o077))
                .err()
                .expect("the guard must fail without CAP_SETGID");
            assert_eq!(err.raw_os_error(), Some(libc::EPERM));
            assert_eq!(fsid_now(), (0, 0), "nothing stays changed");
            assert_eq!(thread_groups().unwrap(), groups);
            assert_eq!(cap_eff(), eff);
            full.set().unwrap();
        })
        .join()
        .unwrap();
    }
}
