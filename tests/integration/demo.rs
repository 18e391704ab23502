//! `relocfs demo` as root: what a local user cannot make it do (plant its scratch tree, steer
//! its writes and chowns to other files), the story it prints, and that it leaves nothing
//! mounted or behind however it ends.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Generous hang guard for one demo run.
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes what the test planted in /tmp, whatever happens.
struct Planted(Vec<PathBuf>);

impl Drop for Planted {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// A root-owned 0600 file and what it held, to prove it was never touched.
struct Victim {
    path: PathBuf,
    content: Vec<u8>,
}

impl Victim {
    fn new(dir: &Path, name: &str) -> Victim {
        let path = dir.join(name);
        let content = format!("root only: {name}\n").into_bytes();
        write_file(&path, &content, 0o600);
        Victim { path, content }
    }

    fn assert_untouched(&self) {
        let meta = fs::symlink_metadata(&self.path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&fs::read(&self.path).unwrap()),
            String::from_utf8_lossy(&self.content),
            "{} was overwritten",
            self.path.display()
        );
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{} was chowned",
            self.path.display()
        );
        assert_eq!(
            meta.mode() & 0o7777,
            0o600,
            "{} was chmodded",
            self.path.display()
        );
    }
}

/// The demo's own directory, from its first line ("An application moved from MP to REAL.").
fn demo_paths(stdout: &str) -> (PathBuf, PathBuf) {
    let first = stdout.lines().next().unwrap_or("");
    let rest = first
        .strip_prefix("An application moved from ")
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
    let (mp, _) = rest.split_once(" to ").unwrap();
    let mp = PathBuf::from(mp);
    let dir = mp
        .ancestors()
        .nth(3)
        .expect("mountpoint is DIR/home/optdir/jumpserver")
        .to_path_buf();
    (dir, mp)
}

/// Whatever a failing demo left: detached and removed when the test ends.
struct Leftover {
    dir: PathBuf,
    mp: PathBuf,
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if mounted(&self.mp) {
            let c = cpath(&self.mp);
            // SAFETY: `c` is a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn assert_cleaned_up(dir: &Path, mp: &Path) {
    assert!(!mounted(mp), "the demo left {} mounted", mp.display());
    assert!(
        mounts_below(dir).is_empty(),
        "mounts left below {}",
        dir.display()
    );
    assert!(
        fs::symlink_metadata(dir).is_err(),
        "the demo left its directory {} behind",
        dir.display()
    );
}

fn wait_child(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEMO_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {DEMO_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Before the fix the demo worked in `/tmp/relocfs-demo-<pid>`, accepted a tree another user
/// had made there, and wrote, chowned and chmodded through planted symlinks: a root-owned
/// 0600 file was overwritten with the demo key and handed to nobody, and the daemon appended
/// JSON to another one. Here the attacker (uid 65534) plants the demo's exact pid (the demo is
/// held in a shell until the tree is in place; `exec` keeps the pid) and the next ones.
#[test]
fn demo_as_root_never_uses_a_tree_another_user_planted() {
    skip_without_fuse!();
    let victims_dir = tempfile::Builder::new()
        .prefix("relocfs-victim-")
        .tempdir()
        .unwrap();
    fs::set_permissions(victims_dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let key_victim = Victim::new(victims_dir.path(), "shadow");
    let log_victim = Victim::new(victims_dir.path(), "secret.log");
    let config_victim = Victim::new(victims_dir.path(), "root.conf");

    let out_file = tempfile::tempfile().unwrap();
    let err_file = tempfile::tempfile().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "read go && exec \"$0\" demo"])
        .arg(BIN)
        .env_remove("TMPDIR")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(out_file.try_clone().unwrap())
        .stderr(err_file.try_clone().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();

    let mut planted = Planted(Vec::new());
    for p in pid..pid + 16 {
        let dir = PathBuf::from(format!("/tmp/relocfs-demo-{p}"));
        if fs::symlink_metadata(&dir).is_ok() {
            continue;
        }
        planted.0.push(dir.clone());
        let key_dir = dir.join("opt/jumpserver/keys/role_key/key-d92");
        let script = "set -e; mkdir -p \"$1\" \"$2\" \"$3/opt/jumpserver/keys/admin\" && \
                      ln -s \"$4\" \"$2/id_rsa\" && ln -s \"$5\" \"$3/audit.jsonl\" && \
                      ln -s \"$6\" \"$3/jumpserver.toml\" && chmod -R 777 \"$3\"";
        let out = run_as(
            NOBODY,
            NOBODY,
            &mut sh(
                script,
                &[
                    &dir.join("home/optdir/jumpserver"),
                    &key_dir,
                    &dir,
                    &key_victim.path,
                    &log_victim.path,
                    &config_victim.path,
                ],
            ),
        );
        assert!(
            out.status.success(),
            "planting {} as nobody: {}",
            dir.display(),
            stderr_str(&out)
        );
    }
    assert!(
        planted
            .0
            .iter()
            .any(|d| d.ends_with(format!("relocfs-demo-{pid}"))),
        "/tmp/relocfs-demo-{pid} existed before the test could plant it"
    );

    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_child(&mut child, "relocfs demo");
    let stdout = {
        use std::io::{Read, Seek};
        let mut f = out_file;
        let mut s = String::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };

    key_victim.assert_untouched();
    log_victim.assert_untouched();
    config_victim.assert_untouched();
    assert!(
        status.success(),
        "relocfs demo failed beside a planted tree: {stdout}"
    );
    let (dir, mp) = demo_paths(&stdout);
    let _leftover = Leftover {
        dir: dir.clone(),
        mp: mp.clone(),
    };
    assert!(
        !planted.0.contains(&dir),
        "the demo worked in the planted {}",
        dir.display()
    );
    // The planted trees are as the attacker left them: the demo created nothing in them.
    for p in &planted.0 {
        assert!(
            fs::symlink_metadata(p.join("opt/jumpserver/config.yml")).is_err(),
            "the demo wrote into the planted {}",
            p.display()
        );
    }
    assert_cleaned_up(&dir, &mp);
}

/// The story as printed: the key read through the mount by its owner (nobody), EACCES for
/// the denied key, ENOENT for the one the migration missed, EROFS for a write, and the audit
/// lines of each; afterwards nothing is mounted and the demo's directory is gone.
#[test]
fn demo_tells_the_story_and_cleans_up() {
    skip_without_fuse!();
    let out = run_with_timeout(Command::new(BIN).arg("demo"), DEMO_TIMEOUT);
    let stdout = stdout_str(&out);
    assert!(
        out.status.success(),
        "relocfs demo failed: {}\n{stdout}",
        stderr_str(&out)
    );
    let (dir, mp) = demo_paths(&stdout);
    let _leftover = Leftover {
        dir: dir.clone(),
        mp: mp.clone(),
    };
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("relocfs-demo-") && name.len() >= "relocfs-demo-".len() + 16,
        "the demo's directory name {name:?} is not random"
    );
    assert_cleaned_up(&dir, &mp);

    let key = mp.join("keys/role_key/key-d92/id_rsa");
    let expect = [
        "running as user nobody".to_string(),
        format!("  {}: -----BEGIN OPENSSH PRIVATE KEY-----", key.display()),
        format!("  {}/keys/admin/master.key: EACCES", mp.display()),
        format!("  {}/keys/role_key/key-0ld/id_rsa: ENOENT", mp.display()),
        format!("  {}/config.yml: EROFS", mp.display()),
        format!("  ls {}/keys: role_key", mp.display()),
    ];
    for line in expect {
        assert!(
            stdout.contains(&line),
            "the demo's output lacks {line:?}:\n{stdout}"
        );
    }

    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let has = |op: &str, path: &Path, result: &str| {
        events.iter().any(|e| {
            s(e, "op") == Some(op)
                && s(e, "path") == path.to_str()
                && s(e, "result") == Some(result)
        })
    };
    let key_read = events.iter().find(|e| {
        s(e, "op") == Some("open") && s(e, "path") == key.to_str() && s(e, "result") == Some("ok")
    });
    assert!(
        key_read.is_some_and(|e| n(e, "uid") == Some(u64::from(NOBODY))),
        "no audit line of nobody's read of the key:\n{stdout}"
    );
    assert!(
        has("lookup", &mp.join("keys/admin"), "EACCES"),
        "no EACCES audit line for the denied directory:\n{stdout}"
    );
    assert!(
        has("lookup", &mp.join("keys/role_key/key-0ld"), "ENOENT"),
        "no ENOENT audit line for the missed key:\n{stdout}"
    );
    assert!(
        has("open", &mp.join("config.yml"), "EROFS"),
        "no EROFS audit line for the refused write:\n{stdout}"
    );
}

/// A demo stopped by a signal while mounted (`--pause` holds it there) unmounts, removes its
/// directory and exits non-zero: TERM from a service manager, INT from Ctrl-C, HUP from a
/// closed terminal.
#[test]
fn demo_interrupted_by_a_signal_leaves_nothing_mounted() {
    skip_without_fuse!();
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mut child = Command::new(BIN)
            .args(["demo", "--pause"])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        let deadline = Instant::now() + DEMO_TIMEOUT;
        loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("the demo ended before pausing:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("press Enter") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no pause within {DEMO_TIMEOUT:?}"
            );
        }
        let (dir, mp) = demo_paths(&seen);
        let _leftover = Leftover {
            dir: dir.clone(),
            mp: mp.clone(),
        };
        assert!(mounted(&mp), "{} is not mounted while paused", mp.display());

        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = wait_child(&mut child, "the interrupted demo");
        assert!(
            !status.success(),
            "signal {signal}: the interrupted demo exited 0"
        );
        assert_cleaned_up(&dir, &mp);
    }
}

/// A TMPDIR that another user owns (so could swap entries in) is refused before anything is
/// made in it.
#[test]
fn demo_refuses_a_temporary_directory_another_user_owns() {
    skip_without_fuse!();
    let tmp = tempdir_0755("relocfs-test-");
    chown(tmp.path(), NOBODY, NOBODY);
    let out = run_with_timeout(
        Command::new(BIN).arg("demo").env("TMPDIR", tmp.path()),
        DEMO_TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "the demo ran in a directory nobody owns"
    );
    assert!(
        stderr_str(&out).contains("belongs to uid 65534"),
        "{}",
        stderr_str(&out)
    );
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}
