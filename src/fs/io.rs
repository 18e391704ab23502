//! File handles and their I/O: open, read, write, fsync, fallocate, copy_file_range, lseek
//! and release. The open was the permission check; I/O on a handle is done as its opener.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::{Caller, Error, Fs, Handle, Opened, RegisterBacking, Result};
use crate::audit;
use crate::node::{Kind, Node};
use crate::sys;

impl Fs {
    /// Opens node `id` for I/O served by the daemon (no passthrough: see `open_with`).
    pub fn open(&self, caller: Caller, id: u64, flags: i32) -> Result<Opened> {
        self.open_as(caller, id, flags, None)
    }

    /// Opens node `id`; `kernel` registers a backing file if this open is passed through
    /// (see `passthrough.rs`).
    pub fn open_with(
        &self,
        caller: Caller,
        id: u64,
        flags: i32,
        kernel: &dyn RegisterBacking,
    ) -> Result<Opened> {
        self.open_as(caller, id, flags, Some(kernel))
    }

    fn open_as(
        &self,
        caller: Caller,
        id: u64,
        flags: i32,
        kernel: Option<&dyn RegisterBacking>,
    ) -> Result<Opened> {
        let node = self.node(id)?;
        let result = self.open_inner(caller, &node, flags);
        self.record(
            caller,
            "open",
            &node,
            None,
            Some(audit::access_flags(flags)),
            result.as_ref().map(|_| ()),
        );
        Ok(self.serve(node.id, result?, flags, false, kernel))
    }

    pub(super) fn open_inner(&self, caller: Caller, node: &Arc<Node>, flags: i32) -> Result<u64> {
        self.stage_gate(caller, node, None)?;
        if wants_write(flags) {
            self.writable(node)?;
        }
        let Kind::Real { format, .. } = node.kind else {
            return Err(Error::OpenVirtualDir);
        };
        if format != libc::S_IFREG {
            // Devices and fifos are opened by the kernel itself; never through the daemon.
            return Err(Error::SpecialFile);
        }
        let fd = self.fd(node)?.ok_or(Error::SpecialFile)?;
        let opener = self.opener(caller);
        let admitted = self.admit(caller.uid)?;
        let file = if self.open_as_caller_matters(caller, &opener, fd.as_fd(), flags) {
            let _as_caller = self.as_caller(caller, None)?;
            sys::reopen(fd.as_fd(), flags & OPEN_FLAGS_KEPT)
        } else {
            // The daemon's open gets what the caller's would (see `open_as_caller_matters`).
            sys::reopen(fd.as_fd(), flags & OPEN_FLAGS_KEPT)
        };
        Ok(self.add_handle(admitted, node, Handle::File(file?), opener, flags))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let io = self.io_file(fh)?;
        let file = io.file()?;
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        // A short read is only the end of the file if the next read returns nothing.
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let io = self.io_file(fh)?;
        Ok(sys::lseek(io.file()?, offset, whence)?)
    }

    /// A close(2) of a handle (FLUSH): nothing to do, whichever transport asks. Writes go
    /// straight to the real file (no write-back cache in the daemon), so nothing is pending.
    pub fn flush(&self, _fh: u64) -> Result<()> {
        Ok(())
    }

    pub fn release(&self, fh: u64) {
        self.passthrough_release(fh);
        self.close_handle(fh);
    }
    /// Runs `f` on the real file behind an open handle (for kernel passthrough, and ioctls):
    /// the handle's own file, or for a passthrough handle the object reopened with the
    /// handle's access mode.
    pub(super) fn with_open_file<R>(&self, fh: u64, f: impl FnOnce(&File) -> R) -> Option<R> {
        let io = self.io_file(fh).ok()?;
        Some(f(io.file().ok()?))
    }
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

/// Open flags passed on to the real file; O_CREAT/O_EXCL only apply to `create`.
pub(super) const OPEN_FLAGS_KEPT: i32 = libc::O_ACCMODE
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_DIRECT
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_NOATIME
    | libc::O_LARGEFILE;

pub(super) fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_TRUNC | libc::O_CREAT) != 0
}
