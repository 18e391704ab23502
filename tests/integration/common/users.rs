//! Acting as an unprivileged user: child processes (`run_as*`) and threads
//! of the test process itself (`spawn_as_user`, `UserWorker`).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::proc::run_with_timeout;

/// Runs `cmd` as `uid:gid` (no supplementary groups), cwd `/`, stdin null.
pub fn run_as(uid: u32, gid: u32, cmd: &mut Command) -> Output {
    cmd.uid(uid).gid(gid).current_dir("/");
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// Spawns `cmd` as `uid:gid` and returns (pid, output) -- the pid is needed
/// to find the child's own audit events.
pub fn run_as_pid(uid: u32, gid: u32, cmd: &mut Command) -> (u32, Output) {
    cmd.uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (pid, out)
}

/// Switches the CALLING THREAD ONLY to `uid`/`gid` with supplementary `groups`,
/// for good: raw syscalls, not glibc's wrappers (which would change every
/// thread of the test process). With all uids non-zero the thread loses every
/// capability, like a real unprivileged process. Use only in a thread that
/// ends afterwards (see [`spawn_as_user`]).
pub fn become_user_in_this_thread(uid: u32, gid: u32, groups: &[u32]) {
    let gs: Vec<libc::gid_t> = groups.to_vec();
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, gs.len(), gs.as_ptr()),
            0,
            "setgroups: {}",
            io::Error::last_os_error()
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            0,
            "setresgid: {}",
            io::Error::last_os_error()
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            0,
            "setresuid: {}",
            io::Error::last_os_error()
        );
    }
}

/// Runs `f` on a new thread that is `uid`/`gid` with `groups` (and no
/// capabilities); the rest of the test process stays root.
pub fn spawn_as_user<T, F>(uid: u32, gid: u32, groups: &[u32], f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let groups = groups.to_vec();
    std::thread::Builder::new()
        .name(format!("uid-{uid}"))
        .spawn(move || {
            become_user_in_this_thread(uid, gid, &groups);
            f()
        })
        .expect("spawn thread")
}

/// A long-lived unprivileged worker thread: jobs sent to it run as its user.
pub struct UserWorker {
    tx: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl UserWorker {
    pub fn new(uid: u32, gid: u32, groups: &[u32]) -> UserWorker {
        let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let handle = spawn_as_user(uid, gid, groups, move || {
            for job in rx {
                job();
            }
        });
        UserWorker {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Runs `f` on the worker and returns its result (panics propagate as a
    /// panic here, naming the worker).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (rtx, rrx) = mpsc::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = rtx.send(r);
        });
        self.tx
            .as_ref()
            .unwrap()
            .send(job)
            .expect("worker thread gone");
        match rrx.recv().expect("worker thread gone") {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for UserWorker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Like [`run_as`], with supplementary `groups` (std's `uid()` would drop
/// them: the switch is done here, in the child, before exec).
pub fn run_as_groups(uid: u32, gid: u32, groups: &[u32], cmd: &mut Command) -> Output {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.current_dir("/");
    run_with_timeout(cmd, Duration::from_secs(30))
}
