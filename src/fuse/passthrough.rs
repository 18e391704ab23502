//! The fuser side of kernel passthrough: registering backing files with the kernel (which
//! needs this session's `/dev/fuse` fd, so only a reply can do it) and replying to an open as
//! the core decided. The decision itself is the core's (`fs/passthrough.rs`).

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackingId, FileAttr, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};

use crate::fs::{Backing, Opened, OpenedFlags, RegisterBacking};

impl RegisterBacking for ReplyOpen {
    fn register(&self, file: &File) -> io::Result<Backing> {
        Ok(Arc::new(self.open_backing(file)?))
    }
}

impl RegisterBacking for ReplyCreate {
    fn register(&self, file: &File) -> io::Result<Backing> {
        Ok(Arc::new(self.open_backing(file)?))
    }
}

fn fopen_flags(flags: OpenedFlags) -> FopenFlags {
    let mut out = FopenFlags::empty();
    out.set(FopenFlags::FOPEN_KEEP_CACHE, flags.keep_cache);
    out.set(FopenFlags::FOPEN_NOFLUSH, flags.no_flush);
    out.set(FopenFlags::FOPEN_CACHE_DIR, flags.cache_dir);
    out
}

/// The kernel's id of the backing file an open is passed through to. Only the
/// `RegisterBacking` impls above make backings, so one is always fuser's `BackingId`.
fn backing_id(opened: &Opened) -> Option<&BackingId> {
    let backing = opened.passthrough.as_deref()?;
    let id = backing.downcast_ref::<BackingId>();
    if id.is_none() {
        log::error!(
            "handle {}: backing file not registered by the fuser adapter; no passthrough",
            opened.fh
        );
    }
    id
}

/// Replies to an open (or opendir) as `opened` says.
pub(super) fn reply_opened(reply: ReplyOpen, opened: &Opened) {
    let (fh, flags) = (FileHandle(opened.fh), fopen_flags(opened.flags));
    match backing_id(opened) {
        Some(id) => reply.opened_passthrough(fh, flags, id),
        None => reply.opened(fh, flags),
    }
}

/// Replies to a create as `opened` says.
pub(super) fn reply_created(reply: ReplyCreate, ttl: &Duration, attr: &FileAttr, opened: &Opened) {
    let (fh, flags) = (FileHandle(opened.fh), fopen_flags(opened.flags));
    match backing_id(opened) {
        Some(id) => reply.created_passthrough(ttl, attr, Generation(0), fh, flags, id),
        None => reply.created(ttl, attr, Generation(0), fh, flags),
    }
}
