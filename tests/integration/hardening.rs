//! The sandboxed relocfs@.service still does its job: the daemon, run under the unit's own
//! restrictions, mounts, serves each caller as itself (kernel passthrough included), reloads
//! (with a verdict), reports its status and stops cleanly.
//!
//! systemd is not PID 1 where these tests run (a container, CI), so `systemctl start` and
//! `systemd-run -p ...` are not available. The restrictions are therefore applied by hand,
//! read from `packaging/systemd/relocfs@.service` itself (so the test follows the unit), with
//! the same kernel mechanisms systemd uses, in the child between fork and exec:
//!
//! Reproduced exactly (same kernel interface as systemd's):
//! - `CapabilityBoundingSet=`: every capability not listed is dropped from the bounding set
//!   (PR_CAPBSET_DROP); root's permitted set after execve is then the listed ones.
//! - `NoNewPrivileges=yes`: PR_SET_NO_NEW_PRIVS.
//! - `UMask=`: umask(2).
//! - `PrivateNetwork=yes`: a new network namespace (unshare CLONE_NEWNET); `ProtectHostname=`:
//!   a new UTS namespace. (systemd also brings "lo" up; the daemon uses no network.)
//! - `SystemCallFilter=` (allow list, then each `~` list removed), `SystemCallErrorNumber=`
//!   and `SystemCallArchitectures=native`: a seccomp filter built with libseccomp (which
//!   systemd uses too) from the groups as this machine's `systemd-analyze syscall-filter`
//!   expands them; default action EPERM; other architectures killed.
//! - `RestrictAddressFamilies=AF_UNIX`, `RestrictNamespaces=yes`, `MemoryDenyWriteExecute=yes`:
//!   the argument checks systemd adds to its seccomp filter (socket's family; CLONE_NEW* flags
//!   of unshare and clone, setns refused, clone3 answered ENOSYS so that libc falls back to
//!   clone; mmap with both PROT_WRITE and PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC).
//!
//! Not reproduced, and why:
//! - `DevicePolicy=`/`DeviceAllow=`, `IPAddressDeny=`: cgroup BPF programs that systemd
//!   attaches to the unit's cgroup; there is no unit cgroup here. The daemon opens no device
//!   but /dev/fuse and /dev/null, and has no network (its own namespace) anyway.
//! - `ProtectClock=`'s device rule (/dev/rtc read-only) for the same reason; its capability and
//!   @clock parts are in the bounding set and the filter above.
//! - `LockPersonality=`, `RestrictRealtime=`: argument checks on personality(2) and
//!   sched_setscheduler(2); the latter is in @resources, which the filter denies whole.
//!
//! The test fails when the unit gains a sandboxing setting this list does not name, so that
//! someone decides whether it is reproduced.

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::fs;
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::*;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/systemd/relocfs@.service"
);

/// `linux/capability.h`, by number.
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// [Service] settings of the unit that are about the job, not the sandbox.
const NOT_SANDBOXING: [&str; 10] = [
    "Type",
    "NotifyAccess",
    "ExecStart",
    "ExecReload",
    "ExecStopPost",
    "Restart",
    "RestartSec",
    "Environment",
    "PrivateMounts",
    "SystemCallErrorNumber",
];

/// Sandboxing settings this test applies (see the module comment).
const REPRODUCED: [&str; 10] = [
    "MemoryDenyWriteExecute",
    "CapabilityBoundingSet",
    "NoNewPrivileges",
    "UMask",
    "PrivateNetwork",
    "ProtectHostname",
    "SystemCallFilter",
    "SystemCallArchitectures",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
];

/// Sandboxing settings it does not apply, each for the reason the module comment gives.
const NOT_REPRODUCED: [&str; 6] = [
    "DevicePolicy",
    "DeviceAllow",
    "IPAddressDeny",
    "ProtectClock",
    "LockPersonality",
    "RestrictRealtime",
];

/// The unit's [Service] settings, in order (a key may repeat).
fn service_settings() -> Vec<(String, String)> {
    let text = fs::read_to_string(UNIT).unwrap();
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn values<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The system calls a group (or a single name) stands for on this machine's systemd.
fn expand(item: &str, out: &mut BTreeSet<String>) {
    if !item.starts_with('@') {
        out.insert(item.to_string());
        return;
    }
    let listing = Command::new("systemd-analyze")
        .args(["syscall-filter", item])
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "systemd-analyze syscall-filter {item}"
    );
    let text = String::from_utf8_lossy(&listing.stdout).into_owned();
    for line in text.lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        expand(name, out);
    }
}

// ---- libseccomp, loaded at run time (it is systemd's own dependency) --------------------------

const SCMP_ACT_ALLOW: u32 = 0x7fff_0000;
const fn scmp_act_errno(e: c_int) -> u32 {
    0x0005_0000 | (e as u32 & 0xffff)
}
const SCMP_CMP_EQ: c_uint = 4;
const SCMP_CMP_MASKED_EQ: c_uint = 7;

#[repr(C)]
#[derive(Clone, Copy)]
struct ScmpArgCmp {
    arg: c_uint,
    op: c_uint,
    datum_a: u64,
    datum_b: u64,
}

type InitFn = unsafe extern "C" fn(u32) -> *mut c_void;
type RuleFn = unsafe extern "C" fn(*mut c_void, u32, c_int, c_uint, *const ScmpArgCmp) -> c_int;
type ResolveFn = unsafe extern "C" fn(*const c_char) -> c_int;
type ExportFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type ReleaseFn = unsafe extern "C" fn(*mut c_void);

struct Seccomp {
    init: InitFn,
    rule: RuleFn,
    resolve: ResolveFn,
    export: ExportFn,
    release: ReleaseFn,
}

impl Seccomp {
    fn load() -> Option<Seccomp> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the type
        // seccomp.h declares for it.
        unsafe {
            let lib = libc::dlopen(c"libseccomp.so.2".as_ptr(), libc::RTLD_NOW);
            if lib.is_null() {
                return None;
            }
            let sym = |name: &std::ffi::CStr| {
                let p = libc::dlsym(lib, name.as_ptr());
                assert!(!p.is_null(), "libseccomp lacks {name:?}");
                p
            };
            Some(Seccomp {
                init: std::mem::transmute::<*mut c_void, InitFn>(sym(c"seccomp_init")),
                rule: std::mem::transmute::<*mut c_void, RuleFn>(sym(c"seccomp_rule_add_array")),
                resolve: std::mem::transmute::<*mut c_void, ResolveFn>(sym(
                    c"seccomp_syscall_resolve_name",
                )),
                export: std::mem::transmute::<*mut c_void, ExportFn>(sym(c"seccomp_export_bpf")),
                release: std::mem::transmute::<*mut c_void, ReleaseFn>(sym(c"seccomp_release")),
            })
        }
    }

    fn nr(&self, name: &str) -> Option<c_int> {
        let c = CString::new(name).unwrap();
        // SAFETY: a NUL-terminated name.
        let nr = unsafe { (self.resolve)(c.as_ptr()) };
        (nr >= 0).then_some(nr)
    }
}

fn masked(arg: c_uint, mask: u64, value: u64) -> ScmpArgCmp {
    ScmpArgCmp {
        arg,
        op: SCMP_CMP_MASKED_EQ,
        datum_a: mask,
        datum_b: value,
    }
}

/// The unit's system call restrictions as a compiled BPF program (raw `sock_filter`s).
fn build_filter(settings: &[(String, String)], sc: &Seccomp) -> Vec<u8> {
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for v in values(settings, "SystemCallFilter") {
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        for item in list.split_whitespace() {
            expand(item, if deny { &mut denied } else { &mut allowed });
        }
    }
    assert!(
        !allowed.is_empty(),
        "the unit has no SystemCallFilter allow list"
    );
    assert_eq!(values(settings, "SystemCallErrorNumber"), ["EPERM"]);
    assert_eq!(values(settings, "SystemCallArchitectures"), ["native"]);
    assert_eq!(values(settings, "RestrictAddressFamilies"), ["AF_UNIX"]);
    assert_eq!(values(settings, "RestrictNamespaces"), ["yes"]);
    assert_eq!(values(settings, "MemoryDenyWriteExecute"), ["yes"]);

    // Calls whose arguments are checked get conditional rules instead of a plain allow.
    let ns_all: u64 = (libc::CLONE_NEWNS
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET) as u64;
    let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let x = libc::PROT_EXEC as u64;
    let conditional: Vec<(&str, Vec<Vec<ScmpArgCmp>>)> = vec![
        (
            "socket",
            vec![vec![ScmpArgCmp {
                arg: 0,
                op: SCMP_CMP_EQ,
                datum_a: libc::AF_UNIX as u64,
                datum_b: 0,
            }]],
        ),
        ("unshare", vec![vec![masked(0, ns_all | 0x80, 0)]]),
        ("clone", vec![vec![masked(0, ns_all, 0)]]),
        (
            "mmap",
            vec![
                vec![masked(2, wx, 0)],
                vec![masked(2, wx, libc::PROT_WRITE as u64)],
                vec![masked(2, wx, x)],
            ],
        ),
        ("mprotect", vec![vec![masked(2, x, 0)]]),
        ("pkey_mprotect", vec![vec![masked(2, x, 0)]]),
    ];
    // SAFETY: libseccomp's API used as documented; the context is released below.
    unsafe {
        let ctx = (sc.init)(scmp_act_errno(libc::EPERM));
        assert!(!ctx.is_null());
        for name in allowed.difference(&denied) {
            if conditional.iter().any(|(n, _)| n == name) || name == "setns" {
                continue;
            }
            let Some(nr) = sc.nr(name) else { continue };
            assert_eq!(
                (sc.rule)(ctx, SCMP_ACT_ALLOW, nr, 0, std::ptr::null()),
                0,
                "{name}"
            );
        }
        for (name, alternatives) in &conditional {
            if denied.contains(*name) || !allowed.contains(*name) {
                continue;
            }
            let Some(nr) = sc.nr(name) else { continue };
            for cmp in alternatives {
                let rc = (sc.rule)(ctx, SCMP_ACT_ALLOW, nr, cmp.len() as c_uint, cmp.as_ptr());
                assert_eq!(rc, 0, "{name}");
            }
        }
        if let Some(nr) = sc.nr("clone3") {
            // systemd answers ENOSYS: its flags are out of a BPF filter's reach.
            assert_eq!(
                (sc.rule)(ctx, scmp_act_errno(libc::ENOSYS), nr, 0, std::ptr::null()),
                0
            );
        }
        let mut file = tempfile::tempfile().unwrap();
        assert_eq!((sc.export)(ctx, file.as_raw_fd()), 0, "seccomp_export_bpf");
        (sc.release)(ctx);
        file.rewind().unwrap();
        let mut bpf = Vec::new();
        file.read_to_end(&mut bpf).unwrap();
        assert_eq!(bpf.len() % std::mem::size_of::<libc::sock_filter>(), 0);
        bpf
    }
}

/// A BPF program as libseccomp exports it (native-endian `sock_filter`s).
fn sock_filters(bytes: &[u8]) -> Vec<libc::sock_filter> {
    bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// Everything the child applies between fork and exec, prepared before the fork.
struct Sandbox {
    drop_caps: Vec<c_int>,
    keep_mask: u64,
    umask: libc::mode_t,
    bpf: Vec<libc::sock_filter>,
}

impl Sandbox {
    /// The unit's restrictions, or `None` (after a skip message) where they cannot be built.
    fn from_unit() -> Option<Sandbox> {
        let settings = service_settings();
        for (key, _) in &settings {
            assert!(
                NOT_SANDBOXING.contains(&key.as_str())
                    || REPRODUCED.contains(&key.as_str())
                    || NOT_REPRODUCED.contains(&key.as_str()),
                "relocfs@.service has {key}=, which tests/integration/hardening.rs neither \
                 reproduces nor names as left out: decide, and say so in its module comment"
            );
        }
        if find_program("systemd-analyze").is_none() {
            skip_or_fail("systemd-analyze is missing (apt-get install systemd)");
            return None;
        }
        let Some(sc) = Seccomp::load() else {
            skip_or_fail("libseccomp.so.2 is missing (apt-get install libseccomp2)");
            return None;
        };
        let bpf = sock_filters(&build_filter(&settings, &sc));

        let mut keep = BTreeSet::new();
        for v in values(&settings, "CapabilityBoundingSet") {
            for cap in v.split_whitespace() {
                let name = cap.strip_prefix("CAP_").unwrap_or(cap);
                let n = CAPS
                    .iter()
                    .position(|c| *c == name)
                    .unwrap_or_else(|| panic!("unknown capability {cap}"));
                keep.insert(n as c_int);
            }
        }
        let last: c_int = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let drop_caps = (0..=last).filter(|c| !keep.contains(c)).collect();
        let keep_mask = keep.iter().fold(0u64, |m, c| m | 1 << c);
        assert_eq!(values(&settings, "NoNewPrivileges"), ["yes"]);
        assert_eq!(values(&settings, "PrivateNetwork"), ["yes"]);
        assert_eq!(values(&settings, "ProtectHostname"), ["yes"]);
        let umask = values(&settings, "UMask")
            .first()
            .map(|v| libc::mode_t::from_str_radix(v, 8).unwrap())
            .expect("UMask=");
        Some(Sandbox {
            drop_caps,
            keep_mask,
            umask,
            bpf,
        })
    }

    /// `cmd`, to be run under the restrictions (root, as the unit's User= is).
    fn apply(&self, cmd: &mut Command) {
        let drop_caps = self.drop_caps.clone();
        let umask = self.umask;
        let bpf = self.bpf.clone();
        // SAFETY: only async-signal-safe system calls run between fork and exec, on data
        // prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWUTS) != 0 {
                    return fail();
                }
                for &cap in &drop_caps {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                        return fail();
                    }
                }
                libc::umask(umask);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return fail();
                }
                let prog = libc::sock_fprog {
                    len: bpf.len() as u16,
                    filter: bpf.as_ptr() as *mut libc::sock_filter,
                };
                if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0 {
                    return fail();
                }
                Ok(())
            });
        }
    }
}

/// A `Key:\tvalue` line of /proc/PID/status.
fn status_field(pid: i32, key: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// The daemon as the unit starts it (`relocfs -f -o allow_other CONFIG MOUNTPOINT`), under
/// the unit's restrictions; its stderr goes to `log`.
fn spawn_daemon(sandbox: &Sandbox, m: &Mounted, log: &Path) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(["-f", "-o", "allow_other"])
        .arg(&m.config)
        .arg(&m.mnt)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap());
    sandbox.apply(&mut cmd);
    cmd.spawn().unwrap()
}

/// Mounts, serves callers as themselves, answers status, reloads with a verdict (valid and
/// invalid), and stops on SIGTERM with a clean unmount: all under the unit's restrictions,
/// which the daemon is checked to be running under.
#[test]
fn the_hardened_unit_mounts_serves_reloads_and_stops() {
    skip_without_fuse!();
    let Some(sandbox) = Sandbox::from_unit() else {
        return;
    };
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"served", 0o644);
    mkdir_owned(&real.join("pub"), 0, 0, 0o1777);
    let extra = b.root().join("extra");
    write_file(&extra.join("g"), b"reloaded", 0o644);
    let b = b.map_mode("/", &real, "rw");
    fs::write(b.config_path(), b.config_text()).unwrap();
    let m = b.into_mounted();
    let log = m.root().join("daemon.log");
    let mut daemon = spawn_daemon(&sandbox, &m, &log);
    assert!(
        wait_until(SETTLE_TIMEOUT, || mounted(&m.mnt)),
        "the sandboxed daemon did not mount: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let pid = daemon.id() as i32;

    // The daemon really runs under them.
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    let bnd = u64::from_str_radix(&status_field(pid, "CapBnd"), 16).unwrap();
    // What this process may hand on at all (a container may lack some, e.g. SYS_RESOURCE).
    let ours = u64::from_str_radix(&status_field(std::process::id() as i32, "CapBnd"), 16).unwrap();
    assert_eq!(bnd, sandbox.keep_mask & ours, "bounding set");
    let eff = u64::from_str_radix(&status_field(pid, "CapEff"), 16).unwrap();
    assert_eq!(
        eff & !sandbox.keep_mask,
        0,
        "effective capabilities outside the set"
    );
    let ns = |p: &str| fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "no network namespace of its own"
    );

    // Serves each caller as itself: a user's file is the user's, a user cannot write root's.
    assert_eq!(fs::read(m.at("f")).unwrap(), b"served");
    let made = m.at("pub/mine");
    let out = run_as(
        KEY_UID,
        KEY_GID,
        &mut sh(
            "umask 022 && echo mine > \"$1\" && chmod u+s \"$1\" && ! echo x 2>/dev/null > \"$2\"",
            &[&made, &m.at("f")],
        ),
    );
    assert!(out.status.success(), "as the caller: {}", stderr_str(&out));
    let md = fs::metadata(real.join("pub/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), (KEY_UID, KEY_GID));
    assert_eq!(
        md.mode() & 0o7777,
        0o4644,
        "the caller's umask and its set-uid bit"
    );
    assert_eq!(fs::read(real.join("f")).unwrap(), b"served");
    // The audit log still names the user's program (CAP_SYS_PTRACE: /proc/PID/exe of
    // another uid's process).
    let line = wait_for_audit(
        &m.audit,
        |v| n(v, "uid") == Some(u64::from(KEY_UID)) && s(v, "exe").is_some(),
        AUDIT_TIMEOUT,
    );
    assert!(s(&line, "exe").is_some_and(|e| e.ends_with("sh")), "{line}");
    // Root's file operations keep root's powers: chown to another user.
    std::os::unix::fs::chown(m.at("pub/mine"), Some(NOBODY), None).unwrap();
    assert_eq!(fs::metadata(real.join("pub/mine")).unwrap().uid(), NOBODY);

    // Kernel passthrough (CAP_SYS_ADMIN, the backing-file ioctl) still works: a user's read of
    // a large file moves next to none of its bytes through the daemon.
    if crate::passthrough::kernel_has_passthrough() {
        let large = 8 << 20;
        let data = pattern(large, 3);
        write_file(&real.join("big"), &data, 0o644);
        let before = crate::passthrough::daemon_io_bytes(pid);
        let path = m.at("big");
        spawn_as_user(KEY_UID, KEY_GID, &[], move || {
            assert!(
                fs::read(&path).unwrap() == data,
                "read back through the mount"
            );
        })
        .join()
        .expect("the user's read");
        let moved = crate::passthrough::daemon_io_bytes(pid) - before;
        assert!(
            moved < (large / 8) as u64,
            "under the sandbox the daemon moved {moved} bytes for a {large}-byte read: no \
             passthrough"
        );
    }

    // Status and reload, the latter as the unit's ExecReload runs it (same restrictions).
    let ask = |args: &[&Path]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        sandbox.apply(&mut cmd);
        run_with_timeout(&mut cmd, SETTLE_TIMEOUT)
    };
    let out = ask(&[Path::new("status"), &m.mnt]);
    assert!(out.status.success(), "status: {}", stderr_str(&out));
    let config = fs::read_to_string(&m.config).unwrap();
    fs::write(
        &m.config,
        format!("{config}\n[[map]]\nfrom = \"relative\"\n"),
    )
    .unwrap();
    let out = ask(&[Path::new("reload"), &m.mnt]);
    assert_refusal(&out, &["reload refused", "relative"]);
    fs::write(&m.config, with_map_first(&config, "/extra", &extra)).unwrap();
    let out = ask(&[Path::new("reload"), &m.mnt]);
    assert!(out.status.success(), "reload: {}", stderr_str(&out));
    assert_eq!(fs::read(m.at("extra/g")).unwrap(), b"reloaded");

    // Stop: SIGTERM, a clean unmount, exit 0.
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (exited, status) = wait_exit(&mut daemon, SETTLE_TIMEOUT);
    assert!(exited, "the sandboxed daemon did not stop on SIGTERM");
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit {status}: {text}");
    assert!(!mounted(&m.mnt));
    // Nothing it tried was refused by the sandbox along the way.
    for needle in ["Operation not permitted", "EPERM", "permission denied"] {
        assert!(
            !text.to_lowercase().contains(&needle.to_lowercase()),
            "the daemon met {needle:?} under the sandbox:\n{text}"
        );
    }
}

/// The by-hand sandbox bites: without @mount in the unit's allow list, the same daemon cannot
/// mount (mount(2) is refused, and NoNewPrivileges keeps the setuid fusermount3 from doing it
/// instead). This is what proves the filter the test above runs under is real.
#[test]
fn the_by_hand_sandbox_is_enforced() {
    skip_without_fuse!();
    let Some(mut sandbox) = Sandbox::from_unit() else {
        return;
    };
    let mut settings = service_settings();
    for (k, v) in settings.iter_mut() {
        if k == "SystemCallFilter" && !v.starts_with('~') {
            *v = v.replace("@mount", "");
        }
    }
    let sc = Seccomp::load().unwrap();
    sandbox.bpf = sock_filters(&build_filter(&settings, &sc));
    let b = MountBuilder::new();
    let real = b.real();
    let b = b.map("/", &real);
    fs::write(b.config_path(), b.config_text()).unwrap();
    let m = b.into_mounted();
    let log = m.root().join("daemon.log");
    let mut daemon = spawn_daemon(&sandbox, &m, &log);
    let (exited, status) = wait_exit(&mut daemon, SETTLE_TIMEOUT);
    assert!(exited && !status.success(), "{status}");
    assert!(!mounted(&m.mnt));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("cannot mount") && text.contains("Operation not permitted"),
        "{text}"
    );
}

/// After a crash (SIGKILL) of the sandboxed daemon, the unit's ExecStopPost= command, run under
/// the same restrictions as systemd runs it, removes the dead mount it left.
#[test]
fn the_hardened_unit_cleans_up_after_a_crash() {
    skip_without_fuse!();
    let Some(sandbox) = Sandbox::from_unit() else {
        return;
    };
    let settings = service_settings();
    let stop_post = values(&settings, "ExecStopPost");
    let [line] = stop_post.as_slice() else {
        panic!("expected one ExecStopPost=, got {stop_post:?}");
    };
    let (Some(open), Some(close)) = (line.find('\''), line.rfind('\'')) else {
        panic!("ExecStopPost= is no longer `/bin/sh -c '...' NAME %f`: {line}");
    };
    let script = &line[open + 1..close];
    assert!(line.ends_with(" relocfs-cleanup %f"), "{line}");

    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"x", 0o644);
    let b = b.map("/", &real);
    fs::write(b.config_path(), b.config_text()).unwrap();
    let m = b.into_mounted();
    let log = m.root().join("daemon.log");
    let mut daemon = spawn_daemon(&sandbox, &m, &log);
    assert!(wait_until(SETTLE_TIMEOUT, || mounted(&m.mnt)));
    kill9_and_wait(daemon.id() as i32);
    let _ = daemon.wait();
    assert!(
        mounted(&m.mnt),
        "the kernel keeps a dead mount after SIGKILL"
    );

    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg("relocfs-cleanup")
        .arg(&m.mnt)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    sandbox.apply(&mut cmd);
    let out = run_with_timeout(&mut cmd, SETTLE_TIMEOUT);
    assert!(out.status.success(), "ExecStopPost: {}", stderr_str(&out));
    assert!(
        wait_until(SETTLE_TIMEOUT, || !mounted(&m.mnt)),
        "the sandboxed ExecStopPost did not remove the dead mount"
    );
}
