//! Kernel passthrough, decided here whichever transport brought the open: which opens are
//! passed through, the per-inode first-open rule, root never passed through, and the backing
//! file registered as the opener. A transport only registers the backing file when asked (it
//! needs its `/dev/fuse` fd: `RegisterBacking`) and replies as `Opened` says.
//!
//! The kernel allows one backing file per inode at a time, and no mixing of passthrough and
//! page-cached opens of one inode, so the first open of an inode decides for every open of it
//! until all are closed.
//!
//! The kernel does a backing file's I/O with the credentials of whoever registered it, and
//! every open of an inode that has a backing must share it (anything else fails with EIO).
//! So a backing is registered while acting as the opener (without the capabilities a
//! non-root opener lacks), and never for root: root's opens are served by the daemon, so no
//! backing ever carries root's rights (reserved blocks, quota exemption) to a user who opens
//! the same file later. The cost: root's own I/O through the mount is not passed through;
//! a root open of a file a user already has open through passthrough shares the user's
//! backing and writes with the user's rights (less than root's: it may meet ENOSPC in the
//! blocks ext4 reserves for root). Two non-root users of one inode share the first one's
//! backing; neither has a capability, so what can differ is only ext4's `resuid`/`resgid`
//! and group-based set-id clearing.
//!
//! Passthrough pays off for large files and for writing; for small files read whole, the
//! backing registration costs more than serving the read (once; the page cache keeps it):
//! measured on open+close of 1,000 small files, ~20% fewer opens per second with it.

use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Fs, Opener};
use crate::node::lock;

/// A backing file the kernel registered, as the transport that registered it holds it
/// (fuser's `BackingId`); dropping the last clone closes it in the kernel. The core keeps
/// one clone per open handle, so it lives while any handle of its inode is open.
pub type Backing = Arc<dyn Any + Send + Sync>;

/// The transport's part of passthrough: registering a backing file with the kernel, which
/// needs the transport's `/dev/fuse` fd. The core calls it at most once per open, acting as
/// the handle's opener.
pub trait RegisterBacking {
    fn register(&self, file: &File) -> io::Result<Backing>;
}

/// How the kernel is to serve a handle just opened: what a transport puts in its reply.
#[derive(Clone)]
pub struct Opened {
    pub fh: u64,
    pub flags: OpenedFlags,
    /// Pass the handle's I/O through to this backing file (FOPEN_PASSTHROUGH).
    pub passthrough: Option<Backing>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("fh", &self.fh)
            .field("flags", &self.flags)
            .field("passthrough", &self.passthrough.is_some())
            .finish()
    }
}

/// The FOPEN_* flags of an open reply that relocfs uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenedFlags {
    /// FOPEN_KEEP_CACHE: pages (or a listing) cached by earlier opens stay valid.
    pub keep_cache: bool,
    /// FOPEN_NOFLUSH: no FLUSH request at each close(2).
    pub no_flush: bool,
    /// FOPEN_CACHE_DIR: the kernel may keep the directory's listing.
    pub cache_dir: bool,
}

impl OpenedFlags {
    /// A regular file. NOFLUSH: writes go straight to the real file, so there is never
    /// anything to flush, and that saves a round trip per close. KEEP_CACHE (page-cached
    /// opens only): pages read earlier stay valid across opens; AUTO_INVAL_DATA drops them
    /// when the real file changes.
    pub(super) const fn file(passthrough: bool) -> OpenedFlags {
        OpenedFlags {
            keep_cache: !passthrough,
            no_flush: true,
            cache_dir: false,
        }
    }

    /// A directory. CACHE_DIR + KEEP_CACHE: the kernel keeps the listing and serves the next
    /// readdir of an unchanged directory itself (the opendir still comes here, and is
    /// audited); a change through the mount, or an mtime change seen after attr_timeout,
    /// drops it.
    pub(super) const DIR: OpenedFlags = OpenedFlags {
        keep_cache: true,
        no_flush: false,
        cache_dir: true,
    };
}

/// Regular files from this size on are read through passthrough.
const PASSTHROUGH_MIN_SIZE: u64 = 64 * 1024;

/// Kernel passthrough state (see the module comment).
#[derive(Default)]
pub(super) struct Passthrough {
    /// Whether passthrough is in use: negotiated by the transport, dropped for good when the
    /// kernel refuses to register a backing file for lack of privilege.
    enabled: AtomicBool,
    open: Mutex<OpenFiles>,
}

#[derive(Default)]
struct OpenFiles {
    /// Inodes open with passthrough, and their backing.
    backing: HashMap<u64, Weak<dyn Any + Send + Sync>>,
    /// Inodes open without passthrough: how many handles.
    served: HashMap<u64, usize>,
    /// Every open handle: its inode, and its backing when it has one.
    handles: HashMap<u64, (u64, Option<Backing>)>,
}

impl Passthrough {
    /// Decides how handle `fh` of node `ino`, opened by `opener`, is served: the inode's
    /// current backing, one registered now by `register` (which must act as the opener;
    /// never for root), or the daemon (`None`). `wants` says whether this open would choose
    /// passthrough on its own (large or written); it is asked only when this open is the one
    /// to decide.
    fn attach(
        &self,
        ino: u64,
        fh: u64,
        opener: Option<Opener>,
        wants: impl FnOnce() -> bool,
        register: impl FnOnce() -> Option<io::Result<Backing>>,
    ) -> Option<Backing> {
        let opener = opener.filter(|_| self.enabled.load(Ordering::Relaxed))?;
        // Held while registering, so racing opens of one inode agree.
        let mut open = lock(&self.open);
        let live = open.backing.get(&ino).and_then(Weak::upgrade);
        let backing = match live {
            Some(backing) => Some(backing),
            None if opener.uid == 0 || open.served.contains_key(&ino) || !wants() => None,
            None => match register() {
                Some(Ok(backing)) => {
                    open.backing.insert(ino, Arc::downgrade(&backing));
                    Some(backing)
                }
                Some(Err(e)) => {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        log::warn!(
                            "kernel passthrough needs CAP_SYS_ADMIN: serving I/O in the daemon"
                        );
                        self.enabled.store(false, Ordering::Relaxed);
                    } else {
                        log::debug!("no passthrough for inode {ino}: {e}");
                    }
                    None
                }
                None => None,
            },
        };
        if backing.is_none() {
            *open.served.entry(ino).or_insert(0) += 1;
        }
        open.handles.insert(fh, (ino, backing.clone()));
        backing
    }

    /// The handle closed; a backing goes with its inode's last handle.
    fn release(&self, fh: u64) {
        let mut open = lock(&self.open);
        let Some((ino, backing)) = open.handles.remove(&fh) else {
            return;
        };
        match backing {
            Some(backing) => {
                drop(backing);
                if open
                    .backing
                    .get(&ino)
                    .is_some_and(|w| w.strong_count() == 0)
                {
                    open.backing.remove(&ino);
                }
            }
            None => {
                if let Some(n) = open.served.get_mut(&ino) {
                    *n -= 1;
                    if *n == 0 {
                        open.served.remove(&ino);
                    }
                }
            }
        }
    }
}

impl Fs {
    /// The transport negotiated kernel passthrough: from now on opens may be passed through.
    pub fn enable_passthrough(&self) {
        self.passthrough.enabled.store(true, Ordering::Relaxed);
    }

    /// How handle `fh` of `ino`, just opened with `flags`, is served. A file just created is
    /// about to be written (`created`): passthrough. Otherwise, when this open decides for
    /// its inode, writes and files of `PASSTHROUGH_MIN_SIZE` or more are passed through (an
    /// fstat of the open file). Without `kernel`, every open is served by the daemon.
    pub(super) fn serve(
        &self,
        ino: u64,
        fh: u64,
        flags: i32,
        created: bool,
        kernel: Option<&dyn RegisterBacking>,
    ) -> Opened {
        let wants = || {
            created
                || flags & libc::O_ACCMODE != libc::O_RDONLY
                || self
                    .with_open_file(fh, |file| {
                        file.metadata()
                            .map_or(true, |m| m.len() >= PASSTHROUGH_MIN_SIZE)
                    })
                    .unwrap_or(false)
        };
        let register = || kernel.and_then(|kernel| self.register_backing(fh, kernel));
        let backing =
            self.passthrough
                .attach(ino, fh, self.handle_opener(fh).ok(), wants, register);
        if backing.is_some() {
            self.to_passthrough(fh);
        }
        Opened {
            fh,
            flags: OpenedFlags::file(backing.is_some()),
            passthrough: backing,
        }
    }

    /// Registers the file of handle `fh` as a backing file while acting as its opener: the
    /// kernel keeps the registering task's credentials for the backing file's I/O.
    fn register_backing(
        &self,
        fh: u64,
        kernel: &dyn RegisterBacking,
    ) -> Option<io::Result<Backing>> {
        let _as_opener = match self.as_handle_opener(fh) {
            Ok(guard) => guard,
            // Not EPERM: that would mean the kernel refuses passthrough altogether.
            Err(e) => return Some(Err(io::Error::other(format!("acting as opener: {e}")))),
        };
        self.with_open_file(fh, |file| kernel.register(file))
    }

    /// Forgets handle `fh`'s part in passthrough (its backing, or its page-cached share).
    pub(super) fn passthrough_release(&self, fh: u64) {
        self.passthrough.release(fh);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn opener(uid: u32) -> Option<Opener> {
        Some(Opener {
            uid,
            gid: uid,
            groups: Vec::new(),
        })
    }

    fn enabled() -> Passthrough {
        let p = Passthrough::default();
        p.enabled.store(true, Ordering::Relaxed);
        p
    }

    /// A registration that counts its calls and makes a backing (or fails with `errno`).
    fn register<'a>(
        calls: &'a Cell<u32>,
        errno: Option<i32>,
    ) -> impl FnOnce() -> Option<io::Result<Backing>> + 'a {
        move || {
            calls.set(calls.get() + 1);
            Some(match errno {
                Some(e) => Err(io::Error::from_raw_os_error(e)),
                None => Ok(Arc::new(()) as Backing),
            })
        }
    }

    #[test]
    fn root_never_registers_a_backing_and_others_share_the_first_one() {
        let p = enabled();
        let calls = Cell::new(0);
        // Root's open of a file it writes: served by the daemon, no backing with its rights.
        assert!(p
            .attach(7, 1, opener(0), || true, register(&calls, None))
            .is_none());
        assert_eq!(calls.get(), 0);
        p.release(1);
        // A user's open registers (as the user); root's open while it lasts shares it.
        let first = p.attach(7, 2, opener(1000), || true, register(&calls, None));
        let shared = p.attach(7, 3, opener(0), || true, register(&calls, None));
        assert_eq!(calls.get(), 1);
        assert!(Arc::ptr_eq(
            first.as_ref().unwrap(),
            shared.as_ref().unwrap()
        ));
        drop((first, shared));
        // The backing lives while a handle of the inode does, and goes with the last one.
        p.release(2);
        assert!(lock(&p.open).backing.get(&7).unwrap().upgrade().is_some());
        p.release(3);
        assert!(!lock(&p.open).backing.contains_key(&7));
    }

    #[test]
    fn the_first_open_of_an_inode_decides_for_the_others() {
        let p = enabled();
        let calls = Cell::new(0);
        // A small file read: page-cached; a later writer of the same inode stays cached too.
        assert!(p
            .attach(9, 1, opener(1000), || false, register(&calls, None))
            .is_none());
        assert!(p
            .attach(9, 2, opener(1000), || true, register(&calls, None))
            .is_none());
        assert_eq!(calls.get(), 0);
        p.release(1);
        p.release(2);
        // Once all are closed, the next open decides afresh.
        assert!(p
            .attach(9, 3, opener(1000), || true, register(&calls, None))
            .is_some());
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn a_kernel_refusing_for_privilege_turns_passthrough_off() {
        let p = enabled();
        let calls = Cell::new(0);
        let eperm = Some(libc::EPERM);
        assert!(p
            .attach(1, 1, opener(1000), || true, register(&calls, eperm))
            .is_none());
        assert!(p
            .attach(2, 2, opener(1000), || true, register(&calls, None))
            .is_none());
        assert_eq!(
            calls.get(),
            1,
            "no registration tried once refused for privilege"
        );
        // Disabled (never negotiated): nothing is tried.
        let off = Passthrough::default();
        assert!(off
            .attach(1, 1, opener(1000), || true, register(&calls, None))
            .is_none());
        assert_eq!(calls.get(), 1);
    }
}
