//! Who the caller is: `comm`, `exe` and (when enabled) `cmdline` from `/proc/PID`, capped,
//! and cached for a second per pid so a burst of operations costs one read.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{encode, lock, CMDLINE_CAP, COMM_CAP, F_CMDLINE, F_COMM, F_EXE, PATH_CAP};

/// How long a pid's `comm` is trusted. Short, because pids (tids) get reused, but long enough
/// that a burst of operations from one thread costs a single `/proc` read.
const COMM_TTL: Duration = Duration::from_secs(1);

/// Past this many cached pids the cache is pruned, so a busy machine can't grow it unbounded.
pub(super) const COMM_CACHE_MAX: usize = 4096;

pub(super) struct CommEntry {
    at: Instant,
    info: Arc<ProcInfo>,
}

/// What the log says about the calling process: raw bytes, capped, escaped when written.
#[derive(Debug)]
pub(super) struct ProcInfo {
    /// `/proc/PID/comm`, "?" when unreadable.
    pub(super) comm: Vec<u8>,
    /// `/proc/PID/exe`, when readable.
    pub(super) exe: Option<Vec<u8>>,
    /// `/proc/PID/cmdline` with NULs as spaces, only when enabled (it can hold secrets).
    pub(super) cmdline: Option<Vec<u8>>,
    /// Fields shortened to their caps (F_COMM, F_EXE, F_CMDLINE).
    pub(super) truncated: u8,
}

impl ProcInfo {
    pub(super) fn size(&self) -> u64 {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        (self.comm.len() + len(&self.exe) + len(&self.cmdline)) as u64
    }
}

/// pid → process name, so a burst of operations from one thread costs one `/proc` read.
#[derive(Default)]
pub(super) struct CommCache {
    pub(super) map: Mutex<HashMap<u32, CommEntry>>,
    /// Whether command lines are read too.
    pub(super) cmdline: bool,
}

impl CommCache {
    pub(super) fn lookup(&self, pid: u32) -> Arc<ProcInfo> {
        let now = Instant::now();
        {
            let map = lock(&self.map);
            if let Some(entry) = map.get(&pid) {
                // duration_since saturates, so an entry stamped later by another thread is fresh.
                if now.duration_since(entry.at) < COMM_TTL {
                    return Arc::clone(&entry.info);
                }
            }
        }
        // Read outside the lock: other threads shouldn't wait on our /proc access.
        let mut truncated = 0;
        let mut comm = read_comm(pid);
        if let Some(short) = encode::shorten(&comm, COMM_CAP) {
            comm = short;
            truncated |= F_COMM;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.into_os_string().into_vec())
            .map(|p| match encode::shorten(&p, PATH_CAP) {
                Some(short) => {
                    truncated |= F_EXE;
                    short
                }
                None => p,
            });
        let cmdline = self
            .cmdline
            .then(|| read_cmdline(pid))
            .flatten()
            .map(|(c, t)| {
                if t {
                    truncated |= F_CMDLINE;
                }
                c
            });
        let info = Arc::new(ProcInfo {
            comm,
            exe,
            cmdline,
            truncated,
        });
        let mut map = lock(&self.map);
        if map.len() >= COMM_CACHE_MAX {
            map.retain(|_, e| now.duration_since(e.at) < COMM_TTL);
            if map.len() >= COMM_CACHE_MAX {
                // All fresh: more distinct callers than we want to track; start over.
                map.clear();
            }
        }
        map.insert(
            pid,
            CommEntry {
                at: now,
                info: Arc::clone(&info),
            },
        );
        info
    }
}

/// The command line of `pid`, arguments separated by spaces, shortened to [`CMDLINE_CAP`]
/// (and whether it was); `None` if unreadable or empty (kernel threads). Read in pieces so a
/// huge command line costs no more memory than the cap.
pub(super) fn read_cmdline(pid: u32) -> Option<(Vec<u8>, bool)> {
    let mut file = File::open(format!("/proc/{pid}/cmdline")).ok()?;
    let mut head = Vec::new();
    let mut tail = VecDeque::new();
    let mut total = 0usize;
    let mut sep = false;
    let mut chunk = [0u8; 16 * 1024];
    let mut push = |b: u8, head: &mut Vec<u8>, tail: &mut VecDeque<u8>| {
        total += 1;
        if head.len() < CMDLINE_CAP {
            head.push(b);
        } else {
            tail.push_back(b);
            if tail.len() > CMDLINE_CAP {
                tail.pop_front();
            }
        }
    };
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &chunk[..n] {
            if b == 0 {
                sep = !head.is_empty();
                continue;
            }
            if sep {
                push(b' ', &mut head, &mut tail);
                sep = false;
            }
            push(b, &mut head, &mut tail);
        }
    }
    if head.is_empty() {
        return None;
    }
    let kept = head.len() + tail.len();
    let hidden = total - kept;
    head.extend(tail);
    match encode::shorten_with_gap(&head, CMDLINE_CAP, hidden) {
        Some(short) => Some((short, true)),
        None => Some((head, false)),
    }
}

/// Process (thread) name from `/proc/<pid>/comm`; works for thread ids too. "?" if unreadable
/// (e.g. the caller already exited, or pid 0 for kernel-initiated requests).
pub(super) fn read_comm(pid: u32) -> Vec<u8> {
    match std::fs::read(format!("/proc/{pid}/comm")) {
        Ok(mut bytes) => {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            if bytes.is_empty() {
                b"?".to_vec()
            } else {
                bytes
            }
        }
        Err(_) => b"?".to_vec(),
    }
}
