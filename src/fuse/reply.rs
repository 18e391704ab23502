//! Replies: the conversions between the core's plain types and fuser's, and the one place
//! error replies go through, which logs them (rate-limited) with op, errno and inode.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileType, INodeNo, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek,
    ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};

use crate::fs::{self, Attr, Caller};
use crate::node::lock;

/// A reply that can carry an error (every fuser reply type).
pub(super) trait ErrorReply {
    fn error(self, errno: Errno);
}

macro_rules! error_reply {
    ($($reply:ty),* $(,)?) => {$(
        impl ErrorReply for $reply {
            fn error(self, errno: Errno) {
                <$reply>::error(self, errno)
            }
        }
    )*};
}

error_reply!(
    ReplyAttr,
    ReplyBmap,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyIoctl,
    ReplyLock,
    ReplyLseek,
    ReplyOpen,
    ReplyPoll,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);

/// At most this many error replies of each kind (routine, unexpected) are logged per second;
/// the others are counted, and the count goes with the next line logged. A client can make
/// the daemon fail as often as it likes (a loop of `stat` on a missing name), never flood
/// its log.
const LOGGED_PER_SECOND: u32 = 20;

/// The log of error replies: routine ones (a missing name, a refusal, the real filesystem's
/// answer) at debug level, unexpected ones (EIO, a handle the kernel should not have sent,
/// fds running out: see `fs::Error::is_routine`) at warn level, each under its own limit so
/// routine failures never crowd out the others.
#[derive(Default)]
pub(crate) struct ErrorLog {
    routine: Limit,
    unexpected: Limit,
}

impl ErrorLog {
    /// Logs an error reply to `op` on inode `ino`.
    pub(crate) fn log(&self, op: &str, ino: u64, e: fs::Error) {
        let (level, limit) = if e.is_routine() {
            (log::Level::Debug, &self.routine)
        } else {
            (log::Level::Warn, &self.unexpected)
        };
        if !log::log_enabled!(level) {
            return;
        }
        let Some(skipped) = limit.admit(Instant::now()) else {
            return;
        };
        let errno = e.errno();
        if skipped == 0 {
            log::log!(level, "{op} on inode {ino}: {e} (errno {errno})");
        } else {
            log::log!(
                level,
                "{op} on inode {ino}: {e} (errno {errno}); {skipped} earlier error replies not logged"
            );
        }
    }
}

/// A per-second budget of log lines.
#[derive(Default)]
struct Limit {
    state: Mutex<LimitState>,
}

#[derive(Default)]
struct LimitState {
    /// When the current second began.
    since: Option<Instant>,
    logged: u32,
    /// Lines not logged since the last one that was.
    skipped: u64,
}

impl Limit {
    /// Whether one more line may be logged at `now`, and if so how many were not since the
    /// last one.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut st = lock(&self.state);
        let new_second = st
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= Duration::from_secs(1));
        if new_second {
            st.since = Some(now);
            st.logged = 0;
        }
        if st.logged >= LOGGED_PER_SECOND {
            st.skipped += 1;
            return None;
        }
        st.logged += 1;
        Some(std::mem::take(&mut st.skipped))
    }
}

pub(super) fn errno(e: fs::Error) -> Errno {
    Errno::from_i32(e.errno())
}

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// `None` leaves the time (UTIME_OMIT); `Some(None)` is now.
pub(super) fn set_time(t: Option<TimeOrNow>) -> crate::sys::SetTime {
    t.map(|t| match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(at) => Some(match at.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
            Err(before) => {
                // Before 1970. fuser 0.18 builds this SystemTime from the kernel's (seconds,
                // nanoseconds) as "epoch minus |seconds| minus nanoseconds" instead of "plus
                // nanoseconds", so taking the distance apart again gives the kernel's values
                // back exactly (checked against the real filesystem by the tests).
                let d = before.duration();
                (-(d.as_secs() as i64), i64::from(d.subsec_nanos()))
            }
        }),
    })
}

pub(super) fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = nsecs.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        // Times before 1970 exist on real disks; SystemTime can hold them.
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

pub(super) fn file_type(format: u32) -> FileType {
    match format {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub(super) fn file_attr(attr: &Attr) -> FileAttr {
    let st = &attr.stat;
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode & libc::S_IFMT),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_limited_per_second_and_the_rest_counted() {
        let limit = Limit::default();
        let t0 = Instant::now();
        for _ in 0..LOGGED_PER_SECOND {
            assert_eq!(limit.admit(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limit.admit(t0 + Duration::from_millis(500)), None);
        }
        // The next second logs again, and says how many were left out.
        assert_eq!(limit.admit(t0 + Duration::from_secs(1)), Some(1000));
        assert_eq!(limit.admit(t0 + Duration::from_secs(1)), Some(0));
    }
}
