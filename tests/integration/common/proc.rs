//! Processes and mounts: /proc/self/mountinfo, daemon pids, running commands
//! with a hang guard.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use relocfs::preflight::unescape_mountinfo;

use super::{BIN, SETTLE_TIMEOUT};

#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// Per-mount options (field 6), e.g. `rw,nosuid,nodev,relatime`.
    pub options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Superblock options, e.g. `rw,user_id=0,group_id=0,default_permissions`.
    pub super_options: Vec<String>,
    /// `major:minor` of the mount.
    pub dev: String,
}

pub fn mount_entries() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    if fields.len() < 10 {
        return None;
    }
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    Some(MountEntry {
        mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
        options: fields[5].split(',').map(str::to_string).collect(),
        fstype: fields[sep + 1].to_string(),
        source: unescape_mountinfo(fields[sep + 2]),
        super_options: fields[sep + 3].split(',').map(str::to_string).collect(),
        dev: fields[2].to_string(),
    })
}

/// The (topmost) mount entry whose mount point is exactly `path`.
pub fn mount_entry(path: &Path) -> Option<MountEntry> {
    mount_entries()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// How many mounts are stacked exactly at `path`.
pub fn mounts_at(path: &Path) -> usize {
    mount_entries()
        .iter()
        .filter(|e| e.mount_point == path)
        .count()
}

/// Is something mounted exactly at `path`?
pub fn mounted(path: &Path) -> bool {
    mount_entry(path).is_some()
}

/// Mount points strictly below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mount_entries()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p != dir && p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

/// Is `pid` a live process: does any of its threads still run? (A killed
/// multi-threaded process can show a zombie leader while other threads are
/// still exiting; a reaped-never zombie counts as gone.)
pub fn pid_alive(pid: i32) -> bool {
    let task_state = |path: &Path| -> Option<char> {
        let s = fs::read_to_string(path).ok()?;
        // "pid (comm) S ..." -- comm may contain spaces/parens.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
    };
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        !matches!(
            task_state(&t.path().join("stat")),
            Some('Z') | Some('X') | None
        )
    })
}

/// Pids of live processes (not this one, not mount helpers) whose command line
/// has an argument equal to `arg` -- like `pgrep -f`, but exact.
pub fn pids_with_arg(arg: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let want = arg.as_os_str().as_bytes();
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline.split(|b| *b == 0).any(|a| a == want) {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if matches!(
            comm,
            "umount" | "mount" | "fusermount" | "fusermount3" | "mount.fuse3"
        ) {
            continue;
        }
        if pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// `umount PATH`; its exit status.
pub fn umount(path: &Path) -> ExitStatus {
    Command::new("umount").arg(path).status().unwrap()
}

/// `umount -l PATH` (detach lazily); its exit status.
pub fn umount_lazy(path: &Path) -> ExitStatus {
    Command::new("umount").arg("-l").arg(path).status().unwrap()
}

/// Sends SIGKILL to `pid` and waits (up to `SETTLE_TIMEOUT`) until it is gone.
#[track_caller]
pub fn kill9_and_wait(pid: i32) {
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(wait_until(SETTLE_TIMEOUT, || !pid_alive(pid)));
}

/// Waits up to `timeout` for `child` to exit, kills it if it did not; returns
/// whether it exited by itself and its status.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> (bool, ExitStatus) {
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    (exited, child.wait().unwrap())
}

/// Polls `cond` every 10 ms until it is true or `timeout` elapses.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command with a hard timeout. stdout/stderr go to anonymous files,
/// not pipes, so a daemon that inherits them cannot make this block.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut out_f = tempfile::tempfile().unwrap();
    let mut err_f = tempfile::tempfile().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out_f.try_clone().unwrap())
        .stderr(err_f.try_clone().unwrap())
        .env("LC_ALL", "C");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    out_f.seek(SeekFrom::Start(0)).unwrap();
    out_f.read_to_end(&mut stdout).unwrap();
    err_f.seek(SeekFrom::Start(0)).unwrap();
    err_f.read_to_end(&mut stderr).unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs the relocfs binary with `args` (30 s timeout).
pub fn relocfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// `sh -c SCRIPT` (arguments available as $1, $2, ...).
pub fn sh(script: &str, args: &[&Path]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).arg("sh");
    for a in args {
        c.arg(a);
    }
    c
}

pub fn stdout_str(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr_str(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
