//! Per-thread credentials: fsuid, fsgid, supplementary groups, capabilities and umask.
//!
//! The raw syscalls are used on purpose: glibc's `setgroups`/`setfsuid` wrappers would apply the
//! change to every thread of the process, and the other FUSE threads serve other callers.

use std::io;

/// setfsuid for this thread, checked: the syscall reports failure only by not changing the id,
/// so the id is read back (setfsuid(-1) changes nothing and returns the current one). Returns
/// the previous fsuid.
pub fn set_fsuid(uid: u32) -> io::Result<u32> {
    // SAFETY: setfsuid changes only this thread's filesystem uid and returns the previous
    // value; it touches no memory.
    let old = unsafe { libc::syscall(libc::SYS_setfsuid, uid) } as u32;
    if fsuid() != uid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(old)
}

/// setfsgid for this thread, checked the same way. Returns the previous fsgid.
pub fn set_fsgid(gid: u32) -> io::Result<u32> {
    // SAFETY: setfsgid changes only this thread's filesystem gid and returns the previous
    // value; it touches no memory.
    let old = unsafe { libc::syscall(libc::SYS_setfsgid, gid) } as u32;
    if fsgid() != gid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(old)
}

/// This thread's filesystem uid.
pub fn fsuid() -> u32 {
    // SAFETY: setfsuid(-1) is a query that changes nothing.
    unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 }
}

/// This thread's filesystem gid.
pub fn fsgid() -> u32 {
    // SAFETY: setfsgid(-1) is a query that changes nothing.
    unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 }
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit words.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    /// 0: the calling thread.
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets (low word first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub effective: [u32; 2],
    pub permitted: [u32; 2],
    pub inheritable: [u32; 2],
}

impl Caps {
    /// capget of this thread (raw syscall; libcap and glibc are not involved).
    pub fn get() -> io::Result<Caps> {
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: version 3 makes the kernel write exactly two `CapData` records, which `data`
        // holds; the header is readable and writable.
        let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Caps {
            effective: [data[0].effective, data[1].effective],
            permitted: [data[0].permitted, data[1].permitted],
            inheritable: [data[0].inheritable, data[1].inheritable],
        })
    }

    /// capset of this thread only: credentials are per thread in the kernel, and the raw
    /// syscall (unlike glibc's set*id wrappers) is not broadcast to the other threads.
    pub fn set(&self) -> io::Result<()> {
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [0, 1].map(|i| CapData {
            effective: self.effective[i],
            permitted: self.permitted[i],
            inheritable: self.inheritable[i],
        });
        // SAFETY: the kernel reads the header and two `CapData` records, all initialised.
        let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// unshare(CLONE_FS): gives this thread its own fs struct (cwd, root, umask).
pub fn unshare_fs() -> io::Result<()> {
    // SAFETY: unshare(CLONE_FS) only detaches this thread's fs struct (cwd, root, umask).
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the umask (this thread's, once it has its own fs struct) and returns the previous one.
pub fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask only swaps the mask of the calling thread's fs struct; no memory effects.
    unsafe { libc::umask(mask) }
}

/// The calling thread's supplementary groups.
pub fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
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
pub fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the kernel reads `groups.len()` gids from the pointer.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
