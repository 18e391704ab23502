//! Who the caller is: `comm`, `exe` and (when enabled) `cmdline` from `/proc/TID`, the process
//! id (`Tgid`), the service (systemd unit, container) from `/proc/TID/cgroup` and the host name,
//! capped, and cached for a second per thread so a burst of operations costs one read.
//!
//! The cache is keyed by thread id *and* start time (`/proc/TID/stat` field 22, in clock ticks
//! since boot): a pid the kernel hands to a new process after the old one exited starts at a
//! different time, so the new process never gets the old one's name or unit. Reading `stat`
//! for every event would cost more than the rest of the event (measured: 19 µs a read on a
//! loaded 2-CPU VM), so a hit is checked by the inode number of `/proc/TID` instead (2 µs, one
//! `stat(2)`): the kernel makes a new inode, with a new number, whenever that directory names
//! another task (the old one fails revalidation once its task is gone). A changed inode with
//! the same start time is the same thread (its dentry was evicted) and keeps its entry. A miss
//! reads the files between two inode checks, so a pid recycled while we read is never
//! cached with a mix of both processes.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{encode, lock, CMDLINE_CAP, COMM_CAP, F_CMDLINE, F_COMM, F_EXE, PATH_CAP};

/// How long a thread's entry is trusted, even with the same start time: a process can change
/// its name (prctl) or be moved to another cgroup; a second is what a burst of operations costs
/// one set of `/proc` reads.
const COMM_TTL: Duration = Duration::from_secs(1);

/// Past this many cached pids the cache is pruned, so a busy machine can't grow it unbounded.
pub(super) const COMM_CACHE_MAX: usize = 4096;

/// Most of `/proc/TID/cgroup` read: a path is at most PATH_MAX (the kernel fails the read
/// otherwise), and a v1 host has a dozen hierarchies.
const CGROUP_READ_MAX: u64 = 64 * 1024;

/// Longest unit name systemd accepts (`UNIT_NAME_MAX`, 256 with its NUL).
pub const UNIT_CAP: usize = 255;
/// Longest host name (`HOST_NAME_MAX`).
pub const HOST_CAP: usize = 64;
/// Longest container id kept (docker, podman, containerd and CRI-O use 64 hex digits).
pub const CONTAINER_CAP: usize = 64;

/// What the process fields add to the longest line ([`super::MAX_LINE_BYTES`]): `host` with
/// every byte a 6-byte escape, the unit names with every byte a 2-byte one (`\\` is the only
/// unit character JSON escapes), the container id, `tgid` and the five keys.
pub(super) const LINE_BYTES: usize = 6 * HOST_CAP + 2 * 2 * UNIT_CAP + CONTAINER_CAP + 100;

/// Bit of `host` in a line's `escaped` list (past the event fields' u8 bits).
pub(super) const F_HOST: u16 = 1 << 8;

pub(super) struct CommEntry {
    at: Instant,
    /// Start time of the thread the entry describes (`/proc/TID/stat` field 22).
    start: u64,
    /// Inode number of its `/proc/TID`: the same while the directory names the same task.
    ino: u64,
    info: Arc<ProcInfo>,
}

/// The service a process belongs to, from its cgroup: a systemd unit (and, below a user's
/// service manager, the user's own unit) and a container id. Unit names are ASCII by systemd's
/// rules and at most [`UNIT_CAP`] long; a cgroup name that is not a valid unit name is not
/// reported as one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Service {
    /// The system unit: `jumpserver.service`, `session-3.scope`, `user@1000.service`.
    pub unit: Option<String>,
    /// Below `user@UID.service`: the unit of the user's manager (`foo.service`,
    /// `app-firefox-1234.scope`). The user creates these: see the README on spoofing.
    pub user_unit: Option<String>,
    /// The innermost container id: docker, podman (libpod), containerd, CRI-O, kubepods.
    pub container: Option<String>,
}

/// What the log says about the calling process: raw bytes, capped, escaped when written.
#[derive(Debug, Default)]
pub(super) struct ProcInfo {
    /// `/proc/PID/comm`, "?" when unreadable.
    pub(super) comm: Vec<u8>,
    /// `/proc/PID/exe`, when readable.
    pub(super) exe: Option<Vec<u8>>,
    /// `/proc/PID/cmdline` with NULs as spaces, only when enabled (it can hold secrets).
    pub(super) cmdline: Option<Vec<u8>>,
    /// The process the thread belongs to (`Tgid:` of `/proc/TID/status`), when readable.
    pub(super) tgid: Option<u32>,
    /// Unit and container, from `/proc/TID/cgroup`.
    pub(super) service: Service,
    /// This host's name (of the daemon's UTS namespace), at most [`HOST_CAP`] bytes.
    pub(super) host: Option<Arc<[u8]>>,
    /// Fields shortened to their caps (F_COMM, F_EXE, F_CMDLINE).
    pub(super) truncated: u8,
}

impl ProcInfo {
    pub(super) fn size(&self) -> u64 {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        let host = self.host.as_ref().map_or(0, |h| h.len());
        let text = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        let s = &self.service;
        (self.comm.len()
            + len(&self.exe)
            + len(&self.cmdline)
            + host
            + text(&s.unit)
            + text(&s.user_unit)
            + text(&s.container)) as u64
    }

    /// What is logged for a thread that could not be identified (gone, or its pid reused
    /// while it was read).
    fn unknown() -> ProcInfo {
        ProcInfo {
            comm: b"?".to_vec(),
            host: host(),
            ..ProcInfo::default()
        }
    }
}

/// (tid, start time) → process data, so a burst of operations from one thread costs one
/// `stat(2)` of `/proc/TID` each (see the module's comment).
#[derive(Default)]
pub(super) struct CommCache {
    pub(super) map: Mutex<HashMap<u32, CommEntry>>,
    /// Whether command lines are read too.
    pub(super) cmdline: bool,
}

impl CommCache {
    pub(super) fn lookup(&self, pid: u32) -> Arc<ProcInfo> {
        let now = Instant::now();
        // The thread as it is now: a cached entry is only used for the same task.
        let Some(ino) = proc_ino(pid) else {
            // Gone (or pid 0, a request the kernel made itself): nothing to attribute.
            return Arc::new(ProcInfo::unknown());
        };
        let mut known_start = None;
        {
            let mut map = lock(&self.map);
            if let Some(entry) = map.get_mut(&pid) {
                // duration_since saturates, so an entry stamped later by another thread is fresh.
                if now.duration_since(entry.at) < COMM_TTL {
                    if entry.ino == ino {
                        return Arc::clone(&entry.info);
                    }
                    known_start = Some(entry.start);
                }
            }
        }
        // Read outside the lock: other threads shouldn't wait on our /proc access.
        let Some(start) = read_start_time(pid) else {
            return Arc::new(ProcInfo::unknown());
        };
        if known_start == Some(start) {
            // The same thread under a new inode (its dentry was evicted): still its entry.
            let mut map = lock(&self.map);
            if let Some(entry) = map.get_mut(&pid).filter(|e| e.start == start) {
                entry.ino = ino;
                return Arc::clone(&entry.info);
            }
        }
        let info = self.read(pid);
        if proc_ino(pid) != Some(ino) {
            // The thread exited and its id went to another process while we read: what we
            // read may be either's. Say nothing rather than something wrong.
            return Arc::new(ProcInfo::unknown());
        }
        let info = Arc::new(info);
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
                start,
                ino,
                info: Arc::clone(&info),
            },
        );
        info
    }

    /// Everything `/proc` says about thread `pid`, capped.
    fn read(&self, pid: u32) -> ProcInfo {
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
        ProcInfo {
            comm,
            exe,
            cmdline,
            tgid: read_tgid(pid),
            service: read_service(pid),
            host: host(),
            truncated,
        }
    }
}

/// The systemd unit of process (or thread) `pid` now, as its audit events name it
/// (`Service::unit`); for decisions that depend on the caller's unit (brownout exemptions).
pub fn unit_of(pid: u32) -> Option<String> {
    let content = read_proc(&format!("/proc/{pid}/cgroup"), CGROUP_READ_MAX)?;
    parse_cgroup(&content).unit
}

/// At most `max` bytes of a `/proc` file; `None` if it cannot be opened or read.
fn read_proc(path: &str, max: u64) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let mut out = Vec::new();
    file.take(max).read_to_end(&mut out).ok()?;
    Some(out)
}

/// Inode number of `/proc/PID`: which task the number names now.
fn proc_ino(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.ino())
}

/// Start time of thread `pid` (`/proc/PID/stat` field 22, clock ticks after boot).
pub(super) fn read_start_time(pid: u32) -> Option<u64> {
    // The fixed fields after the name are at most a few hundred bytes; the name is at most
    // 64 bytes (with the kernel's escapes).
    parse_start_time(&read_proc(&format!("/proc/{pid}/stat"), 4096)?)
}

/// Field 22 of a `stat` line. The name (field 2) is in parentheses and may itself hold
/// spaces and `)`, so the fields are counted from the last `)`.
pub(super) fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = stat.get(close + 1..)?;
    // After the name: field 3 (state) is the first; field 22 the 20th.
    let field = rest
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// The process id of thread `pid` (`Tgid:` of `/proc/PID/status`).
pub(super) fn read_tgid(pid: u32) -> Option<u32> {
    parse_tgid(&read_proc(&format!("/proc/{pid}/status"), 16 * 1024)?)
}

/// The `Tgid:` line of a `status` file. The kernel escapes the one free-form field (`Name:`,
/// the first line), so a process cannot forge a line; the first `Tgid:` is taken anyway.
pub(super) fn parse_tgid(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Tgid:"))?;
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

/// How long the host name is reused before it is read again (`hostnamectl` may change it).
const HOST_TTL: Duration = Duration::from_secs(1);

/// The host name the daemon logs: of its UTS namespace, at most [`HOST_CAP`] bytes, read at
/// most once a second and shared.
pub(super) fn host() -> Option<Arc<[u8]>> {
    /// When it was read, and what.
    type Read = (Instant, Option<Arc<[u8]>>);
    static HOST: Mutex<Option<Read>> = Mutex::new(None);
    let now = Instant::now();
    let mut cached = lock(&HOST);
    if let Some((at, host)) = &*cached {
        if now.duration_since(*at) < HOST_TTL {
            return host.clone();
        }
    }
    let host: Option<Arc<[u8]>> = read_host().map(Arc::from);
    *cached = Some((now, host.clone()));
    host
}

/// The host name of the daemon's UTS namespace, at most [`HOST_CAP`] bytes.
fn read_host() -> Option<Vec<u8>> {
    let mut h = read_proc("/proc/sys/kernel/hostname", HOST_CAP as u64 + 1)?;
    if h.last() == Some(&b'\n') {
        h.pop();
    }
    h.truncate(HOST_CAP);
    (!h.is_empty()).then_some(h)
}

/// Unit and container of thread `pid`, from `/proc/PID/cgroup`.
pub(super) fn read_service(pid: u32) -> Service {
    read_proc(&format!("/proc/{pid}/cgroup"), CGROUP_READ_MAX)
        .map(|c| parse_cgroup(&c))
        .unwrap_or_default()
}

/// The service of a `/proc/PID/cgroup` file: from the cgroup v2 line (`0::/path`), or, on a
/// host without one (cgroup v1 only) or where it says only `/` (hybrid, v2 unused), from the
/// `name=systemd` v1 line. Cgroup names cannot hold a newline (the kernel refuses them), so
/// a line is one cgroup path; a path outside the daemon's cgroup namespace (`/..`) says
/// nothing.
pub fn parse_cgroup(content: &[u8]) -> Service {
    let mut v2 = None;
    let mut v1 = None;
    for line in content.split(|&b| b == b'\n') {
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == b"0" && controllers.is_empty() {
            v2.get_or_insert(path);
        } else if controllers
            .split(|&b| b == b',')
            .any(|c| c == b"name=systemd")
        {
            v1.get_or_insert(path);
        }
    }
    let path = match (v2, v1) {
        (Some(p), Some(q)) if p == b"/" => q,
        (Some(p), _) => p,
        (None, Some(q)) => q,
        (None, None) => return Service::default(),
    };
    parse_cgroup_path(path)
}

/// Unit types a process can run in (a slice only groups other units).
const PROCESS_UNITS: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// Whether `name` is a unit name systemd accepts, of a type that holds processes.
fn unit_name(name: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(name).ok()?;
    let valid = s.len() <= UNIT_CAP
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
    let (stem, _) = PROCESS_UNITS
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix).map(|stem| (stem, suffix)))?;
    (valid && !stem.is_empty()).then_some(s)
}

/// Skips slices, then takes the unit: the first component that is not a slice must be a
/// unit, as systemd reads it (`cg_path_get_unit`). Everything below a unit is the unit's own
/// (a delegated unit may create any names there), so it is never read as another unit.
fn first_unit<'a>(components: &mut impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let first = components.find(|c| !c.ends_with(b".slice"))?;
    unit_name(first).map(str::to_owned)
}

/// Whether `s` is a user's service manager: `user@` digits `.service`.
fn is_user_manager(s: &str) -> bool {
    s.strip_prefix("user@")
        .and_then(|r| r.strip_suffix(".service"))
        .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
}

/// A container id: 12 to 64 lowercase hex digits.
fn container_id(s: &[u8]) -> Option<String> {
    let ok = (12..=CONTAINER_CAP).contains(&s.len())
        && s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    ok.then(|| String::from_utf8_lossy(s).into_owned())
}

/// Container id named by one cgroup component: `docker-ID.scope`, `libpod-ID.scope`,
/// `cri-containerd-ID.scope`, `crio-ID.scope` (systemd cgroup driver), or a bare id below
/// `docker`, `libpod_parent`, or a kubepods `pod<uid>` (cgroupfs driver).
fn container_in(component: &[u8], parent: Option<&[u8]>, kubepods: bool) -> Option<String> {
    const SCOPES: [&[u8]; 5] = [
        b"docker-",
        b"libpod-",
        b"cri-containerd-",
        b"crio-",
        b"containerd-",
    ];
    if let Some(inner) = component.strip_suffix(b".scope") {
        return SCOPES
            .iter()
            .find_map(|p| inner.strip_prefix(*p))
            .and_then(container_id);
    }
    let parent = parent?;
    let below_runtime = parent == b"docker"
        || parent == b"libpod_parent"
        || (kubepods && parent.starts_with(b"pod"));
    below_runtime.then(|| container_id(component)).flatten()
}

/// The service of one cgroup path (see [`parse_cgroup`]).
pub fn parse_cgroup_path(path: &[u8]) -> Service {
    let path = path.strip_suffix(b"\r").unwrap_or(path);
    if !path.starts_with(b"/") {
        return Service::default();
    }
    let components: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if components.iter().any(|c| *c == b"..") {
        // Outside the daemon's cgroup namespace: not a path it can name.
        return Service::default();
    }
    let mut rest = components.iter().copied();
    let unit = first_unit(&mut rest);
    let user_unit = match &unit {
        Some(u) if is_user_manager(u) => first_unit(&mut rest),
        _ => None,
    };
    let mut kubepods = false;
    let container = components
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let parent = i.checked_sub(1).and_then(|p| components.get(p).copied());
            kubepods |= c.starts_with(b"kubepods");
            container_in(c, parent, kubepods)
        })
        .last();
    Service {
        unit,
        user_unit,
        container,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(path: &str) -> Service {
        parse_cgroup(format!("0::{path}\n").as_bytes())
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    const ID: &str = "4b7f3c2a9d1e8f6b5a4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    #[test]
    fn systemd_units_users_and_containers() {
        let s = svc("/system.slice/jumpserver.service");
        assert_eq!(s.unit, some("jumpserver.service"));
        assert_eq!((s.user_unit, s.container), (None, None));
        let s = svc("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service");
        assert_eq!(s.unit, some("user@1000.service"));
        assert_eq!(s.user_unit, some("foo.service"));
        let s = svc("/user.slice/user-1000.slice/user@1000.service/init.scope");
        assert_eq!(s.user_unit, some("init.scope"));
        let s = svc("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!((s.unit, s.user_unit), (some("session-3.scope"), None));
        // A unit's own sub-cgroups are the unit's (a delegated service names them freely).
        let s = svc("/system.slice/jumpserver.service/worker/gunicorn");
        assert_eq!(s.unit, some("jumpserver.service"));
        assert_eq!(svc("/init.scope").unit, some("init.scope"));
        assert_eq!(svc("/"), Service::default());
        assert_eq!(svc("/system.slice"), Service::default());
        // Escaped unit names (systemd-escape) are units.
        assert_eq!(
            svc("/system.slice/relocfs@-opt-legacy.service").unit,
            some("relocfs@-opt-legacy.service")
        );
        assert_eq!(
            svc(r"/system.slice/a\x2db.service").unit,
            some(r"a\x2db.service")
        );

        // Docker, systemd driver and cgroupfs driver.
        let s = svc(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(s.unit, Some(format!("docker-{ID}.scope")));
        assert_eq!(s.container, some(ID));
        let s = svc(&format!("/docker/{ID}"));
        assert_eq!((s.unit, s.container), (None, some(ID)));
        // Podman, as root and rootless (with its cgroup namespace's inner "container").
        let s = svc(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(s.container, some(ID));
        let s = svc(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        ));
        assert_eq!(s.unit, some("user@1000.service"));
        assert_eq!(s.user_unit, Some(format!("libpod-{ID}.scope")));
        assert_eq!(s.container, some(ID));
        // conmon is not the container.
        assert_eq!(
            svc(&format!("/machine.slice/libpod-conmon-{ID}.scope")).container,
            None
        );
        // containerd / CRI, systemd driver (kubepods slices) and cgroupfs driver.
        let s = svc(&format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0d3c1f2e_1a2b_4c5d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(s.unit, Some(format!("cri-containerd-{ID}.scope")));
        assert_eq!(s.container, some(ID));
        let s = svc(&format!(
            "/kubepods/burstable/pod0d3c1f2e-1a2b-4c5d-8e9f-0a1b2c3d4e5f/{ID}"
        ));
        assert_eq!((s.unit, s.container), (None, some(ID)));
        assert_eq!(svc(&format!("/crio-{ID}.scope")).container, some(ID));
        // Not below kubepods, a pod-like directory is nobody's runtime.
        assert_eq!(svc(&format!("/srv/pod1/{ID}")).container, None);
        // Nested (kind: a cluster in a docker container): the innermost.
        let inner = "aa".repeat(32);
        let s = svc(&format!(
            "/system.slice/docker-{ID}.scope/kubepods/besteffort/pod1/{inner}"
        ));
        assert_eq!(s.container, Some(inner));
    }

    #[test]
    fn which_line_of_the_file() {
        // Hybrid host, cgroup2 unused: the name=systemd line.
        let hybrid = b"12:pids:/\n1:name=systemd:/system.slice/cron.service\n0::/\n";
        assert_eq!(parse_cgroup(hybrid).unit, some("cron.service"));
        // cgroup2 in use: its line, whatever v1 says.
        let both = b"1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n";
        assert_eq!(parse_cgroup(both).unit, some("b.service"));
        // v1 only.
        let v1 = b"3:cpu,cpuacct:/x\n1:name=systemd:/system.slice/c.service\n";
        assert_eq!(parse_cgroup(v1).unit, some("c.service"));
        // Other v1 hierarchies say nothing about units.
        assert_eq!(
            parse_cgroup(b"4:memory:/system.slice/d.service\n"),
            Service::default()
        );
        // Outside the daemon's cgroup namespace.
        assert_eq!(svc("/../../system.slice/e.service"), Service::default());
        // The first v2 line counts (the kernel writes one).
        let two = b"0::/system.slice/f.service\n0::/system.slice/g.service\n";
        assert_eq!(parse_cgroup(two).unit, some("f.service"));
    }

    /// Whatever `/proc` holds, parsing returns (no panic) and names no unit it should not.
    #[test]
    fn hostile_contents_never_panic_nor_forge_units() {
        let huge = format!("0::/system.slice/{}.service\n", "a".repeat(1 << 20));
        assert_eq!(
            parse_cgroup(huge.as_bytes()).unit,
            None,
            "longer than a unit name"
        );
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\n\n\n".to_vec(),
            b"0::".to_vec(),
            b"0:".to_vec(),
            b":::".to_vec(),
            b"0::relative/x.service".to_vec(),
            b"0::/system.slice/\xff\xfe.service".to_vec(),
            b"0::/system.slice/caf\xc3\xa9.service".to_vec(),
            b"0::/system.slice/a b.service".to_vec(),
            b"0::/system.slice/.service".to_vec(),
            b"0::/system.slice/x.service\r".to_vec(),
            b"0::/system.slice/\x1b[31m.service".to_vec(),
            b"0::/docker/ZZZZZZZZZZZZ".to_vec(),
            b"0::/docker/0123".to_vec(),
            format!("0::/docker/{}", "a".repeat(65)).into_bytes(),
            vec![0u8; 100_000],
            vec![b'/'; 100_000],
            "0::/".repeat(50_000).into_bytes(),
            format!("0::{}", "/x.slice".repeat(100_000)).into_bytes(),
        ];
        for c in &cases {
            let s = parse_cgroup(c);
            for name in [&s.unit, &s.user_unit].into_iter().flatten() {
                assert!(unit_name(name.as_bytes()).is_some(), "{name:?} from {c:?}");
            }
            let _ = parse_start_time(c);
            let _ = parse_tgid(c);
        }
        assert_eq!(
            parse_cgroup(b"0::/system.slice/x.service\r\n").unit,
            some("x.service")
        );
        // A user's manager may create any name below it; a "system.slice" there is the
        // user's, never a system unit.
        let s = svc("/user.slice/user-65534.slice/user@65534.service/system.slice/sshd.service");
        assert_eq!(s.unit, some("user@65534.service"));
        assert_eq!(s.user_unit, some("sshd.service"));
        let s = svc("/user.slice/user-65534.slice/user@65534.service/x/system.slice/sshd.service");
        assert_eq!((s.unit, s.user_unit), (some("user@65534.service"), None));
        // Only user@DIGITS.service has user units below it.
        let s = svc("/system.slice/user@x.service/app.slice/foo.service");
        assert_eq!((s.unit, s.user_unit), (some("user@x.service"), None));
    }

    #[test]
    fn stat_and_status_fields() {
        // A name with spaces and parentheses cannot shift the fields.
        let stat = b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 99 0 0 0 0 0 0 0 20 0 1 0 \
                     123456789 2000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(parse_start_time(stat), Some(123_456_789));
        assert_eq!(parse_start_time(b"1 (x) S 1 2 3"), None);
        assert_eq!(parse_start_time(b"no parenthesis"), None);
        let me = crate::sys::gettid();
        let start = read_start_time(me).expect("own start time");
        assert_eq!(read_start_time(me), Some(start), "stable");
        assert_eq!(read_start_time(u32::MAX), None);

        let status = b"Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t777\nNgid:\t0\nPid:\t778\n";
        assert_eq!(parse_tgid(status), Some(777));
        assert_eq!(parse_tgid(b"Name:\tTgid:\t1\nPid:\t2\n"), None);
        assert_eq!(parse_tgid(b"Tgid:\t-1\n"), None);
        assert_eq!(read_tgid(me), Some(std::process::id()));
    }

    /// A cached entry is used only for the thread it was read for: the same id naming another
    /// task (another `/proc/TID` inode) with another start time (the id reused by a new
    /// process) reads afresh. The entry of an "old" process is planted under the current
    /// thread's id.
    #[test]
    fn a_recycled_pid_never_gets_the_old_process_entry() {
        let me = crate::sys::gettid();
        let start = read_start_time(me).unwrap();
        let ino = proc_ino(me).unwrap();
        let cache = CommCache::default();
        let old = Arc::new(ProcInfo {
            comm: b"old-process".to_vec(),
            service: Service {
                unit: some("sshd.service"),
                ..Service::default()
            },
            ..ProcInfo::default()
        });
        let plant = |start: u64, ino: u64| {
            lock(&cache.map).insert(
                me,
                CommEntry {
                    at: Instant::now(),
                    start,
                    ino,
                    info: Arc::clone(&old),
                },
            );
        };
        plant(start.wrapping_add(1), ino.wrapping_add(1));
        let got = cache.lookup(me);
        assert!(!Arc::ptr_eq(&got, &old), "entry of another start time used");
        assert_ne!(got.comm, b"old-process");
        assert_eq!(got.tgid, Some(std::process::id()));
        // The fresh entry replaced it, keyed by the real start time and inode.
        let key = |c: &CommCache| lock(&c.map).get(&me).map(|e| (e.start, e.ino));
        assert_eq!(key(&cache), Some((start, ino)));
        // Controls, so the check above is the identity, not a cache that never hits: the
        // same inode is the same task; another inode with the same start time is the same
        // thread whose dentry was evicted (the entry is kept, its inode updated).
        plant(start.wrapping_add(1), ino);
        assert!(Arc::ptr_eq(&cache.lookup(me), &old));
        plant(start, ino.wrapping_add(1));
        assert!(Arc::ptr_eq(&cache.lookup(me), &old));
        assert_eq!(key(&cache), Some((start, ino)));
    }

    #[test]
    fn own_process_is_read_whole() {
        let cache = CommCache::default();
        let me = cache.lookup(crate::sys::gettid());
        assert_eq!(me.tgid, Some(std::process::id()));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(me.host.as_deref(), Some(host.trim_end().as_bytes()));
        let cgroup = std::fs::read("/proc/self/cgroup").unwrap();
        assert_eq!(me.service, parse_cgroup(&cgroup));
        // A thread that is gone: nothing, and nothing cached.
        let gone = cache.lookup(u32::MAX);
        assert_eq!((gone.comm.as_slice(), gone.tgid), (&b"?"[..], None));
        assert!(!lock(&cache.map).contains_key(&u32::MAX));
    }
}
