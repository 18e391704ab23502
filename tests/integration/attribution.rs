//! Which service, which process, which host: every event names the caller's systemd unit (from
//! its cgroup), its process id beside the thread id FUSE reports, and the host; `relocfs
//! report` groups by unit and host and names users. Real cgroups: the tests make
//! systemd-style cgroups under the cgroup2 mount and move real processes into them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use crate::common::*;

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host),
/// if it is mounted at the root of this cgroup namespace and writable.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        let writable = f.get(5)?.split(',').any(|o| o == "rw");
        let at = f.get(4)?;
        (post.starts_with("cgroup2 ") && f.get(3) == Some(&"/") && writable)
            .then(|| PathBuf::from(at))
    })
}

/// A tree of test cgroups below the cgroup2 root: one top-level slice of its own, removed on
/// drop whatever happened (processes still in it are moved back to the root first).
struct TestCgroups {
    root: PathBuf,
    /// `relocfs-test-PID-N.slice`.
    slice: String,
}

impl TestCgroups {
    /// `None` (after the skip message, or a failure on CI) without a writable cgroup2.
    fn new() -> Option<TestCgroups> {
        static N: AtomicU32 = AtomicU32::new(0);
        let Some(root) = cgroup2_mount() else {
            assert!(
                !skip_or_fail("no writable cgroup2 mounted at the namespace root"),
                "cgroup2 required"
            );
            return None;
        };
        let n = N.fetch_add(1, Ordering::Relaxed);
        let slice = format!("relocfs-test-{}-{n}.slice", std::process::id());
        if let Err(e) = fs::create_dir(root.join(&slice)) {
            assert!(
                !skip_or_fail(&format!(
                    "cannot create a cgroup below {}: {e}",
                    root.display()
                )),
                "cgroup2 not writable"
            );
            return None;
        }
        Some(TestCgroups { root, slice })
    }

    /// Creates `rel` (below the test slice) and returns its directory and its path as
    /// `/proc/PID/cgroup` shows it.
    fn make(&self, rel: &str) -> (PathBuf, String) {
        let dir = self.root.join(&self.slice).join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        (dir, format!("/{}/{rel}", self.slice))
    }

    /// Moves `pid` into the cgroup at `dir` (as root: what systemd does when it starts a unit).
    fn put(&self, dir: &Path, pid: u32) {
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} to {}: {e}", dir.display()));
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        // Deepest first; processes left behind (a failed test) go back to the root.
        let mut dirs = Vec::new();
        let mut stack = vec![self.root.join(&self.slice)];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = fs::write(self.root.join("cgroup.procs"), pid);
                }
            }
            // A process that just exited leaves its cgroup once reaped: retry briefly.
            wait_until(SETTLE_TIMEOUT, || fs::remove_dir(d).is_ok() || !d.exists());
        }
    }
}

/// A shell that waits for a line on stdin before it runs `script`, so the test can move it
/// into a cgroup before it touches the mount.
fn waiting_shell(script: &str, args: &[&Path], uid: Option<u32>) -> Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("read go || exit 9\n{script}"))
        .arg("sh")
        .args(args)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd.spawn().expect("spawn sh")
}

/// Lets a [`waiting_shell`] go and returns its stdout and stderr.
fn release(mut child: Child) -> (String, String) {
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release the shell");
    let (done, out) = {
        let out = child.wait_with_output().expect("wait");
        (out.status.success(), out)
    };
    assert!(done, "shell failed: {}", stderr_str(&out));
    (stdout_str(&out), stderr_str(&out))
}

fn mount_with_file() -> (Mounted, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("etc/app.conf"), b"conf\n", 0o644);
    let m = b.map("/", &real).opt("allow_other").mount();
    let file = m.at("etc/app.conf");
    (m, file)
}

/// The event of `op` on `path` with `comm`.
fn event_of(m: &Mounted, op: &str, path: &Path, comm: &str) -> Value {
    let comm = comm.to_owned();
    let want = ev(op, path, None);
    wait_for_audit(
        &m.audit,
        move |e| want(e) && s(e, "comm") == Some(comm.as_str()),
        AUDIT_TIMEOUT,
    )
}

/// A process that systemd would have started as `relocfs-test-….service` (its cgroup made
/// the same way) is attributed to that unit, with its process id and this host's name.
#[test]
fn a_process_in_a_unit_cgroup_is_attributed_to_the_unit() {
    skip_without_fuse!();
    let Some(cg) = TestCgroups::new() else { return };
    let unit = format!("relocfs-test-{}.service", std::process::id());
    let (dir, cgroup) = cg.make(&unit);
    let (m, file) = mount_with_file();
    let sh = waiting_shell("exec cat \"$1\"", &[&file], None);
    let pid = sh.id();
    cg.put(&dir, pid);
    let seen = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of child");
    assert!(seen.lines().any(|l| l == format!("0::{cgroup}")), "{seen}");
    let (out, _) = release(sh);
    assert_eq!(out, "conf\n");

    let e = event_of(&m, "open", &file, "cat");
    assert_eq!(s(&e, "unit"), Some(unit.as_str()), "{e}");
    assert_eq!(e.get("user_unit"), None, "{e}");
    assert_eq!(e.get("container"), None, "{e}");
    assert_eq!(n(&e, "pid"), Some(u64::from(pid)), "{e}");
    assert_eq!(n(&e, "tgid"), Some(u64::from(pid)), "{e}");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(s(&e, "host"), Some(host.trim_end()), "{e}");

    // And the test process itself, in no test unit: not that unit.
    let mine = m.at("etc");
    fs::read_dir(&mine).expect("list").for_each(drop);
    let own = wait_for_audit(&m.audit, ev("opendir", &mine, None), AUDIT_TIMEOUT);
    assert_ne!(s(&own, "unit"), Some(unit.as_str()), "{own}");
}

/// A container's process: a cgroup named as docker's systemd driver names it gives the
/// container id.
#[test]
fn a_container_cgroup_gives_the_container_id() {
    skip_without_fuse!();
    let Some(cg) = TestCgroups::new() else { return };
    let id = format!("{:016x}", u64::from(std::process::id()) << 20 | 0xc0ffe).repeat(4);
    let scope = format!("docker-{id}.scope");
    let (dir, _) = cg.make(&scope);
    let (m, file) = mount_with_file();
    let sh = waiting_shell("exec cat \"$1\"", &[&file], None);
    cg.put(&dir, sh.id());
    release(sh);
    let e = event_of(&m, "open", &file, "cat");
    assert_eq!(s(&e, "unit"), Some(scope.as_str()), "{e}");
    assert_eq!(s(&e, "container"), Some(id.as_str()), "{e}");
}

/// What an unprivileged user can and cannot claim. Its user manager (`user@65534.service`,
/// delegated to it as systemd does: the cgroup and its `cgroup.procs` owned by the user)
/// lets it make any cgroup below, named like a system unit too: it gets a `user_unit` of its
/// choosing, but the unit stays `user@65534.service`. Into a real system unit's cgroup it
/// cannot move itself at all (the kernel refuses: the files are root's), so it is never
/// attributed to one.
#[test]
fn an_unprivileged_process_cannot_claim_a_system_unit() {
    skip_without_fuse!();
    let Some(cg) = TestCgroups::new() else { return };
    let system = format!("relocfs-test-{}-sshd.service", std::process::id());
    let (system_dir, _) = cg.make(&system);
    let manager = format!("user@{NOBODY}.service");
    let (user_dir, _) = cg.make(&format!("user-{NOBODY}.slice/{manager}"));
    // Delegation, as systemd's Delegate=yes does it.
    for p in [
        user_dir.clone(),
        user_dir.join("cgroup.procs"),
        user_dir.join("cgroup.subtree_control"),
        user_dir.join("cgroup.threads"),
    ] {
        chown(&p, NOBODY, NOBODY);
    }
    let (m, file) = mount_with_file();
    // The mount must let nobody read the file.
    fs::set_permissions(m.real().join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    let script = "
        if echo $$ > \"$1/cgroup.procs\" 2>/dev/null; then echo MOVED-INTO-SYSTEM-UNIT; fi
        mkdir -p \"$2/system.slice/$3\" || exit 3
        echo $$ > \"$2/system.slice/$3/cgroup.procs\" || exit 4
        cat /proc/self/cgroup >&2
        exec cat \"$4\"
    ";
    let sh = waiting_shell(
        script,
        &[&system_dir, &user_dir, Path::new(&system), &file],
        Some(NOBODY),
    );
    cg.put(&user_dir, sh.id());
    let (out, err) = release(sh);
    assert_eq!(out, "conf\n", "{err}");
    assert!(
        fs::read_to_string(system_dir.join("cgroup.procs"))
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "nobody got into the system unit's cgroup"
    );
    let e = event_of(&m, "open", &file, "cat");
    assert_eq!(n(&e, "uid"), Some(u64::from(NOBODY)), "{e}");
    // It can name its own unit...
    assert_eq!(s(&e, "user_unit"), Some(system.as_str()), "{e}\n{err}");
    // ...but never be taken for the system unit of that name.
    assert_eq!(s(&e, "unit"), Some(manager.as_str()), "{e}\n{err}");
}

/// FUSE names the calling thread; the event also names its process.
#[test]
fn a_thread_is_attributed_to_its_process() {
    skip_without_fuse!();
    let (m, file) = mount_with_file();
    let path = file.clone();
    let tid = std::thread::spawn(move || {
        fs::read(&path).expect("read in a thread");
        // SAFETY: gettid has no memory effects.
        unsafe { libc::gettid() as u32 }
    })
    .join()
    .expect("thread");
    assert_ne!(tid, std::process::id());
    let e = wait_for_audit(&m.audit, ev("open", &file, Some(tid)), AUDIT_TIMEOUT);
    assert_eq!(n(&e, "tgid"), Some(u64::from(std::process::id())), "{e}");
}

/// Runs the daemon of `b` in a UTS namespace of its own named `host`: a second "host" on this
/// machine.
pub(crate) fn mount_on_host(b: MountBuilder, host: &str) -> Mounted {
    fs::write(b.config_path(), b.config_text()).expect("config");
    let mut cmd = Command::new("unshare");
    cmd.arg("--uts")
        .arg("sh")
        .arg("-c")
        .arg("echo \"$1\" > /proc/sys/kernel/hostname && shift && exec \"$@\"")
        .arg("sh")
        .arg(host)
        .arg(BIN)
        .args(b.args());
    let out = run_with_timeout(&mut cmd, SETTLE_TIMEOUT);
    assert!(
        out.status.success(),
        "mount on {host}: {}",
        stderr_str(&out)
    );
    let m = b.into_mounted();
    assert!(mounted(&m.mnt), "not mounted");
    m
}

/// Real logs of two "hosts" (two daemons, one in a UTS namespace of its own) and a process in
/// a test unit: `relocfs report --by unit` and `--by host` over both, with user names.
#[test]
fn report_by_unit_and_by_host_on_real_logs() {
    skip_without_fuse!();
    let Some(cg) = TestCgroups::new() else { return };
    let unit = format!("relocfs-test-{}-report.service", std::process::id());
    let (dir, _) = cg.make(&unit);
    let (a, file_a) = mount_with_file();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("etc/app.conf"), b"conf\n", 0o644);
    let b = mount_on_host(b.map("/", &real).opt("allow_other"), "relocfs-test-b");
    let file_b = b.at("etc/app.conf");

    // In the unit: three reads on host a, one on b. Outside: nobody reads once on b.
    let sh = waiting_shell(
        "cat \"$1\" \"$1\" \"$1\" \"$2\" >/dev/null",
        &[&file_a, &file_b],
        None,
    );
    cg.put(&dir, sh.id());
    release(sh);
    let out = run_as(NOBODY, NOBODY, Command::new("cat").arg(&file_b));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let in_unit = |e: &Value| s(e, "unit") == Some(unit.as_str());
    wait_for_audit_n(
        &a.audit,
        |e| s(e, "op") == Some("open") && in_unit(e),
        3,
        AUDIT_TIMEOUT,
    );
    let b_open = wait_for_audit(
        &b.audit,
        |e| s(e, "op") == Some("open") && n(e, "uid") == Some(u64::from(NOBODY)),
        AUDIT_TIMEOUT,
    );
    assert_eq!(s(&b_open, "host"), Some("relocfs-test-b"), "{b_open}");
    wait_for_audit(
        &b.audit,
        |e| s(e, "op") == Some("open") && in_unit(e),
        AUDIT_TIMEOUT,
    );

    let report = |args: &[&str]| {
        let mut all: Vec<&std::ffi::OsStr> = vec!["report".as_ref()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        all.push(a.audit.as_os_str());
        all.push(b.audit.as_os_str());
        let out = relocfs(all);
        assert!(out.status.success(), "{}", stderr_str(&out));
        stdout_str(&out)
    };
    let json = |by: &str| -> Value {
        serde_json::from_str(&report(&["--by", by, "--format", "json", "--limit", "0"]))
            .expect("json")
    };
    let r = json("unit");
    let rows = r["groups"]["rows"].as_array().expect("rows");
    let row = rows
        .iter()
        .find(|g| g["unit"] == unit.as_str())
        .expect("unit row");
    // Every event of the unit: its opens, and the lookups that found the file.
    let events_in_unit = |log: &Path| {
        read_audit(log)
            .iter()
            .filter(|e| in_unit(e))
            .map(|e| n(e, "count").unwrap_or(1))
            .sum::<u64>()
    };
    assert_eq!(
        row["hits"],
        events_in_unit(&a.audit) + events_in_unit(&b.audit)
    );
    assert_eq!(row["users"], 1);
    assert_eq!(r["totals"]["hosts"], 2);

    let host_a = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let host_a = host_a.trim_end();
    let r = json("host");
    let hits = |host: &str| {
        r["groups"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|g| g["host"] == host)
            .map(|g| g["hits"].as_u64().unwrap_or(0))
    };
    let events = |log: &Path| {
        read_audit(log)
            .iter()
            .map(|e| n(e, "count").unwrap_or(1))
            .sum::<u64>()
    };
    assert_eq!(hits(host_a), Some(events(&a.audit)));
    assert_eq!(hits("relocfs-test-b"), Some(events(&b.audit)));
    // Users are named, uid kept.
    let name = Command::new("id")
        .args(["-nu", &NOBODY.to_string()])
        .output()
        .expect("id");
    let name = stdout_str(&name).trim().to_owned();
    let nobody = r["processes"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|p| p["uid"] == NOBODY)
        .expect("nobody's row")
        .clone();
    assert_eq!(nobody["user"], name.as_str());
    assert_eq!(nobody["host"], "relocfs-test-b");

    // The table: the unit in its column, a HOST column (two hosts), the user's name.
    let table = report(&["--limit", "0"]);
    let line = |has: &[&str]| table.lines().any(|l| has.iter().all(|h| l.contains(h)));
    assert!(line(&["UNIT", "HOST", "USER"]), "{table}");
    assert!(line(&["cat ", &unit, host_a]), "{table}");
    assert!(line(&["cat ", &unit, "relocfs-test-b"]), "{table}");
    assert!(
        line(&[&format!(" {NOBODY}  {name} "), "relocfs-test-b"]),
        "{table}"
    );
    let csv = report(&["--by", "unit", "--format", "csv"]);
    assert!(csv.starts_with("unit,user_unit,container,hits,"), "{csv}");
    assert!(csv.contains(&format!("\n{unit},,,")), "{csv}");
}

/// The published contract, `docs/audit-schema.json`.
fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit-schema.json")
}

/// Validates every line of `logs` against the schema with the `jsonschema` package (Draft
/// 2020-12) of the distribution's python3; returns the kinds (`op`s) of the lines checked.
fn validate_with_python(logs: &[&Path]) -> std::collections::BTreeSet<String> {
    const SCRIPT: &str = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
bad = 0
for log in sys.argv[2:]:
    for n, line in enumerate(open(log, encoding="utf-8"), 1):
        if not line.strip():
            continue
        value = json.loads(line)
        errors = list(v.iter_errors(value))
        if errors:
            bad += 1
            best = jsonschema.exceptions.best_match(errors)
            print(f"{log}:{n}: {best.message} at {list(best.absolute_path)}: {line.strip()}")
        else:
            print("ok", value["op"])
sys.exit(1 if bad else 0)
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c").arg(SCRIPT).arg(schema_path()).args(logs);
    let out = run_with_timeout(&mut cmd, SETTLE_TIMEOUT);
    let text = stdout_str(&out);
    assert!(
        out.status.success(),
        "lines the schema refuses:\n{}\n{}",
        text.lines()
            .filter(|l| !l.starts_with("ok "))
            .collect::<Vec<_>>()
            .join("\n"),
        stderr_str(&out)
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("ok ").map(str::to_owned))
        .collect()
}

fn has_jsonschema() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import jsonschema"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every kind of line a real mount writes, with every optional field that can be made to
/// appear (escaped, truncated, collapsed, refused, a unit and a container, rate-limited),
/// validates against `docs/audit-schema.json` with a real validator; and the schema is
/// strict (no other fields), so a field the daemon starts writing without documenting it
/// fails here.
#[test]
fn real_log_lines_validate_against_the_published_schema() {
    use std::os::unix::ffi::OsStrExt;
    skip_without_fuse!();
    if !has_jsonschema() {
        assert!(
            !skip_or_fail(
                "python3-jsonschema is not installed (apt-get install python3-jsonschema)"
            ),
            "python3-jsonschema required"
        );
        return;
    }
    let Some(cg) = TestCgroups::new() else { return };
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("etc/app.conf"), b"conf\n", 0o644);
    write_file(&real.join("keys/admin/root_key"), b"k\n", 0o644);
    let odd = std::ffi::OsStr::from_bytes(b"odd\xffname");
    write_file(&real.join("etc").join(odd), b"x\n", 0o644);
    let m = b
        .map_mode("/", &real, "rw")
        .deny("/keys/admin")
        .opt("allow_other")
        .extra("cmdline = true\ncollapse_window = 2\n")
        .mount();
    let file = m.at("etc/app.conf");
    // Reads, misses (twice the same: collapsed into a count), a refusal with a reason, a
    // name that is not UTF-8, a command line over its cap, and changes with dest and detail.
    let (dir, _) = cg.make(&format!("docker-{}.scope", "0f".repeat(32)));
    let script = "
        cat \"$1\" >/dev/null
        stat \"$2\" \"$2\" >/dev/null 2>&1
        cat \"$3\" >/dev/null 2>&1
        cat \"$4\"/odd* >/dev/null
        cp \"$1\" \"$4/copy\" && mv \"$4/copy\" \"$4/moved\" && chmod 600 \"$4/moved\"
        ln -s moved \"$4/link\" && readlink \"$4/link\" >/dev/null && rm \"$4/link\" \"$4/moved\"
        mkdir \"$4/d\" && rmdir \"$4/d\"
        ls \"$4\" >/dev/null
    ";
    let sh = waiting_shell(
        script,
        &[
            &file,
            &m.at("etc/missing"),
            &m.at("keys/admin/root_key"),
            &m.at("etc"),
        ],
        None,
    );
    cg.put(&dir, sh.id());
    release(sh);
    let long = "x".repeat(5000);
    let out = Command::new("cat")
        .arg(&file)
        .arg(&long)
        .output()
        .expect("cat");
    assert!(!out.status.success());
    // Over the rate limit: a second mount whose small budget nobody floods.
    let b2 = MountBuilder::new();
    let real2 = b2.real();
    mkdir_p(&real2.join("d"));
    let m2 = b2
        .map("/", &real2)
        .opt("allow_other")
        .extra("rate_limit = 65536\nrate_burst = 65536\n")
        .mount();
    let d = m2.at("d");
    spawn_as_user(NOBODY, NOBODY, &[], move || {
        for i in 0..2000 {
            let _ = fs::symlink_metadata(d.join(format!("x{i}")));
        }
    })
    .join()
    .expect("flood");

    let lines = wait_for_audit_n(&m.audit, |e| s(e, "op").is_some(), 1, AUDIT_TIMEOUT);
    assert!(!lines.is_empty());
    wait_for_audit(
        &m.audit,
        |e| s(e, "op") == Some("opendir") && e.get("container").is_some(),
        AUDIT_TIMEOUT,
    );
    wait_for_audit(
        &m.audit,
        |e| {
            e.get("cmdline")
                .is_some_and(|c| c.as_str().is_some_and(|c| c.len() > 4000))
        },
        AUDIT_TIMEOUT,
    );
    wait_for_audit(
        &m2.audit,
        |e| s(e, "op") == Some("suppressed"),
        AUDIT_TIMEOUT,
    );
    let all = read_audit(&m.audit);
    for want in [
        "count",
        "escaped",
        "truncated",
        "reason",
        "dest",
        "detail",
        "unit",
        "container",
        "tgid",
        "host",
    ] {
        assert!(
            all.iter().any(|e| e.get(want).is_some()),
            "no line with `{want}`"
        );
    }
    let kinds = validate_with_python(&[&m.audit, &m2.audit]);
    for op in [
        "open",
        "lookup",
        "rename",
        "setattr",
        "symlink",
        "readlink",
        "unlink",
        "mkdir",
        "rmdir",
        "opendir",
        "suppressed",
    ] {
        assert!(
            kinds.contains(op),
            "no `{op}` line was validated: {kinds:?}"
        );
    }
}

/// The validator is not a rubber stamp: a line with a field the schema does not know, and a
/// line with a wrong type, are refused.
#[test]
fn the_schema_refuses_what_relocfs_does_not_write() {
    if !has_jsonschema() {
        assert!(
            !skip_or_fail("python3-jsonschema is not installed"),
            "python3-jsonschema required"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let good = r#"{"v":1,"ts":"2026-11-27T21:49:09.123456Z","host":"web-01","op":"open","path":"/l/a","pid":2,"tgid":1,"uid":0,"gid":0,"comm":"cat","unit":"jumpserver.service","result":"ok"}"#;
    let log = dir.path().join("good.jsonl");
    fs::write(
        &log,
        format!(
            "{good}\n{}\n",
            r#"{"v":1,"ts":"2026-11-27T21:49:09.123456Z","op":"dropped","count":3}"#
        ),
    )
    .unwrap();
    assert_eq!(validate_with_python(&[&log]).len(), 2);
    for bad in [
        good.replace(r#""tgid":1"#, r#""tgid":1,"pod":"x""#),
        good.replace(r#""pid":2"#, r#""pid":"2""#),
        good.replace("jumpserver.service", "jumpserver"),
        good.replace(r#""v":1"#, r#""v":2"#),
        good.replace(".123456Z", "Z"),
    ] {
        let log = dir.path().join("bad.jsonl");
        fs::write(&log, format!("{bad}\n")).unwrap();
        let out = run_with_timeout(
            Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(
                    "import json,sys,jsonschema\n\
                 v=jsonschema.Draft202012Validator(json.load(open(sys.argv[1])))\n\
                 sys.exit(0 if v.is_valid(json.loads(open(sys.argv[2]).readline())) else 3)",
                )
                .arg(schema_path())
                .arg(&log),
            SETTLE_TIMEOUT,
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "accepted: {bad}\n{}",
            stderr_str(&out)
        );
    }
}

/// A tmpfs of `size` mounted at `dir` for the test, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        mkdir_p(dir);
        let out = run_with_timeout(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0755"),
                    "tmpfs",
                ])
                .arg(dir),
            SETTLE_TIMEOUT,
        );
        assert!(out.status.success(), "mount tmpfs: {}", stderr_str(&out));
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = umount_lazy(&self.0);
    }
}

/// The third kind of line, from a real mount too: the log's filesystem fills up, the daemon
/// holds what it can and counts the rest, and once there is room again it writes a `dropped`
/// line, which validates like the others.
#[test]
fn a_dropped_record_from_a_full_log_disk_validates() {
    skip_without_fuse!();
    if !has_jsonschema() {
        assert!(
            !skip_or_fail("python3-jsonschema is not installed"),
            "python3-jsonschema required"
        );
        return;
    }
    let b = MountBuilder::new();
    let real = b.real();
    mkdir_p(&real.join("d"));
    let logfs = SmallFs::mount(&b.root().join("logfs"), "4m");
    let log = logfs.0.join("audit.jsonl");
    let config = format!(
        "[[map]]\nfrom = \"/\"\nto = {}\n[audit]\nlog = {}\n",
        serde_json::to_string(real.to_str().unwrap()).unwrap(),
        serde_json::to_string(log.to_str().unwrap()).unwrap()
    );
    let m = b.no_audit().raw_config(&config).mount();
    let d = m.at("d");
    assert!(fs::symlink_metadata(d.join("first")).is_err());
    wait_for_audit(&log, |e| s(e, "op") == Some("lookup"), AUDIT_TIMEOUT);
    // Fill the filesystem.
    let filler = logfs.0.join("filler");
    {
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // More than the writer holds while the log takes no writes (1 MiB of lines).
    for i in 0..6000 {
        assert!(fs::symlink_metadata(d.join(format!("while-full-{i}"))).is_err());
    }
    // The queue holds them all; only the writer, failing to write them, drops some. Room is
    // made once it has.
    let dropped_so_far = || {
        let out = relocfs([
            std::ffi::OsStr::new("status"),
            std::ffi::OsStr::new("--json"),
            m.mnt.as_os_str(),
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["audit_dropped"].as_u64().unwrap_or(0)
    };
    assert!(
        wait_until(AUDIT_TIMEOUT, || dropped_so_far() > 0),
        "the writer dropped nothing while the log's disk was full"
    );
    fs::remove_file(&filler).unwrap();
    // The next events find room; the writer says what it lost.
    let dropped = wait_until(AUDIT_TIMEOUT, || {
        assert!(fs::symlink_metadata(d.join("after")).is_err());
        read_audit(&log)
            .iter()
            .any(|e| s(e, "op") == Some("dropped"))
    });
    if !dropped {
        let lines = read_audit(&log);
        let status = relocfs([std::ffi::OsStr::new("status"), m.mnt.as_os_str()]);
        let df = Command::new("df")
            .arg(&logfs.0)
            .output()
            .map(|o| stdout_str(&o));
        panic!(
            "no dropped line after the disk filled: {} lines, the last {:?}\n{}\n{df:?}",
            lines.len(),
            lines.last(),
            stdout_str(&status)
        );
    }
    let kinds = validate_with_python(&[&log]);
    assert!(
        kinds.contains("dropped") && kinds.contains("lookup"),
        "{kinds:?}"
    );
    drop(m);
}
