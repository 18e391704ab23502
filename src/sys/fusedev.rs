//! The `/dev/fuse` ioctls of kernel passthrough (`include/uapi/linux/fuse.h`): registering a
//! backing file with the FUSE connection, and closing the registration.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use super::{check, cstring};

/// `struct fuse_backing_map`: the fd of the backing file, flags (none defined), padding.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

const IOC_MAGIC: libc::c_ulong = 229;

/// `_IOW(type, nr, size)`: direction write (1) in bits 30-31, size in 16-29, type, number.
const fn iow(nr: libc::c_ulong, size: usize) -> libc::c_ulong {
    (1 << 30) | ((size as libc::c_ulong) << 16) | (IOC_MAGIC << 8) | nr
}

/// `FUSE_DEV_IOC_BACKING_OPEN`.
pub const BACKING_OPEN: libc::c_ulong = iow(1, std::mem::size_of::<BackingMap>());
/// `FUSE_DEV_IOC_BACKING_CLOSE`.
pub const BACKING_CLOSE: libc::c_ulong = iow(2, std::mem::size_of::<u32>());

/// Registers `file` as a backing file of the connection behind `dev` (a `/dev/fuse` fd);
/// returns the backing id an open reply names. The kernel keeps the calling thread's
/// credentials for the backing file's I/O, and needs CAP_SYS_ADMIN (EPERM without).
pub fn backing_open(dev: BorrowedFd<'_>, file: BorrowedFd<'_>) -> io::Result<u32> {
    let map = BackingMap {
        fd: file.as_raw_fd(),
        flags: 0,
        padding: 0,
    };
    // SAFETY: `map` is a live, properly laid out fuse_backing_map the kernel only reads;
    // both fds are borrowed and open for the duration of the call.
    let id = check(unsafe { libc::ioctl(dev.as_raw_fd(), BACKING_OPEN as _, &map) })?;
    // The kernel's ids are positive ints.
    u32::try_from(id).map_err(|_| io::Error::from_raw_os_error(libc::EIO))
}

/// Closes backing id `id` of the connection behind `dev`.
pub fn backing_close(dev: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    // SAFETY: the kernel reads one u32 through the pointer, which points at a live local.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), BACKING_CLOSE as _, &id) })?;
    Ok(())
}

/// Mounts a FUSE filesystem served on `dev` (an open `/dev/fuse`) at `target`, nosuid and
/// nodev, with `options` after the `fd=` option (`rootmode=...,user_id=...,...`). For tests
/// of the codec against the kernel; the daemon mounts through fuser.
pub fn mount(dev: BorrowedFd<'_>, target: &Path, options: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = cstring(target.as_os_str().as_bytes())?;
    let data = cstring(format!("fd={},{options}", dev.as_raw_fd()).as_bytes())?;
    let (source, kind) = (c"relocfs-wire-test", c"fuse.relocfs-wire-test");
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // As the kernel's _IOW(229, 1, struct fuse_backing_map) and _IOW(229, 2, uint32_t).
        assert_eq!(std::mem::size_of::<BackingMap>(), 16);
        assert_eq!(BACKING_OPEN, 0x4010_e501);
        assert_eq!(BACKING_CLOSE, 0x4004_e502);
    }

    /// On a `/dev/fuse` fd not yet bound to a mount the kernel knows both ioctls and refuses
    /// them for want of a connection (EPERM); a wrong number would be ENOTTY.
    #[test]
    fn the_kernel_knows_both_ioctls() {
        use std::os::fd::AsFd;
        let dev = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            Ok(dev) => dev,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping: /dev/fuse: {e}");
                return;
            }
            Err(e) => panic!("/dev/fuse: {e}"),
        };
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let open = backing_open(dev.as_fd(), file.as_fd()).unwrap_err();
        assert_eq!(open.raw_os_error(), Some(libc::EPERM), "{open}");
        let close = backing_close(dev.as_fd(), 1).unwrap_err();
        assert_eq!(close.raw_os_error(), Some(libc::EPERM), "{close}");
    }
}
