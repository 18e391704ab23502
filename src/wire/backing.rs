//! Kernel passthrough on the ring path: the core's `RegisterBacking` seam, implemented with
//! the `/dev/fuse` backing ioctls (`sys::fusedev`). The core decides which opens are passed
//! through and calls `register` acting as the opener; a backing id lives while the core
//! holds its `Backing` (one clone per open handle of its inode) and is closed with the last.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Weak};

use crate::fs::{Backing, Opened, RegisterBacking};
use crate::sys::fusedev;

/// Registers backing files on the connection behind a `/dev/fuse` fd.
pub(super) struct DevKernel<'a>(pub(super) &'a Arc<OwnedFd>);

impl RegisterBacking for DevKernel<'_> {
    fn register(&self, file: &File) -> io::Result<Backing> {
        let id = fusedev::backing_open(self.0.as_fd(), file.as_fd())?;
        Ok(Arc::new(RingBacking {
            id,
            dev: Arc::downgrade(self.0),
        }))
    }
}

/// A backing id registered by the ring path. Closed on drop, if the `/dev/fuse` fd is still
/// open (as fuser's `BackingId`: once the transport is gone, so is the connection and every
/// id with it; holding only a weak reference keeps an open handle from keeping the fd open).
#[derive(Debug)]
pub struct RingBacking {
    id: u32,
    dev: Weak<OwnedFd>,
}

impl RingBacking {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// An id no connection holds, closed by no one (tests of the reply encoding).
    #[cfg(test)]
    pub(super) fn unregistered(id: u32) -> RingBacking {
        RingBacking {
            id,
            dev: Weak::new(),
        }
    }
}

impl Drop for RingBacking {
    fn drop(&mut self) {
        if let Some(dev) = self.dev.upgrade() {
            if let Err(e) = fusedev::backing_close(dev.as_fd(), self.id) {
                log::warn!("closing backing id {}: {e}", self.id);
            }
        }
    }
}

/// The backing id an open reply names, if the core passed the open through. A backing the
/// fuser adapter registered (its `BackingId` does not show its id) cannot be named here: the
/// open is then served by the daemon, as the adapter does the other way round.
pub(super) fn id_of(opened: &Opened) -> Option<u32> {
    let backing = opened.passthrough.as_deref()?;
    let id = backing.downcast_ref::<RingBacking>().map(RingBacking::id);
    if id.is_none() {
        log::error!(
            "handle {}: backing file not registered by the ring transport; no passthrough",
            opened.fh
        );
    }
    id
}
