//! An ordinary user mounts through fusermount3 (as `nobody`, which fusermount3 can name), and
//! the refusals say exactly what is missing when it cannot.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const NOBODY: u32 = 65534;

/// The tests here change /dev/fuse's mode: one at a time.
static DEV_FUSE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Puts /dev/fuse's mode back however the test ends.
struct DevFuseMode(u32);

impl Drop for DevFuseMode {
    fn drop(&mut self) {
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}

fn dev_fuse_mode() -> u32 {
    fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777
}

/// A tree owned by nobody, and its config.
fn nobody_setup() -> (MountBuilder, std::path::PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"mine", 0o644);
    let b = b.map("/", &real);
    fs::write(b.config_path(), b.config_text()).unwrap();
    let root = b.root();
    let out = Command::new("chown")
        .arg("-R")
        .arg("65534:65534")
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    (b, root)
}

#[test]
fn ordinary_user_mounts_through_fusermount3() {
    skip_without_fuse!();
    let _one_at_a_time = DEV_FUSE.lock().unwrap_or_else(|p| p.into_inner());
    // Debian's default is 0666; some sandboxes ship 0600. Test the usual setup.
    let _restore = DevFuseMode(dev_fuse_mode());
    fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
    let (b, _root) = nobody_setup();
    let args = b.args();
    let m = b.into_mounted();
    let out = run_as(NOBODY, NOBODY, Command::new(BIN).args(&args));
    assert!(
        out.status.success(),
        "unprivileged mount: {}",
        stderr_str(&out)
    );
    let entry = mount_entry(&m.mnt).expect("mounted");
    assert_eq!(entry.fstype, "fuse.relocfs");
    let out = run_as(NOBODY, NOBODY, Command::new("cat").arg(m.mnt.join("f")));
    assert_eq!(stdout_str(&out), "mine");
    // The user's own status socket answers the user.
    let out = run_as(NOBODY, NOBODY, Command::new(BIN).arg("status").arg(&m.mnt));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let pid = m.daemon_pid();
    let out = run_as(
        NOBODY,
        NOBODY,
        Command::new("fusermount3").arg("-u").arg(&m.mnt),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(pid)));
    let opens = read_audit(&m.audit);
    assert!(opens
        .iter()
        .any(|e| e["op"] == "open" && e["uid"] == NOBODY));
}

#[test]
fn ordinary_user_refusals_name_what_is_missing() {
    skip_without_fuse!();
    let (b, _root) = nobody_setup();
    let args = b.args();
    let m = b.into_mounted();

    let _one_at_a_time = DEV_FUSE.lock().unwrap_or_else(|p| p.into_inner());
    let _restore = DevFuseMode(dev_fuse_mode());
    fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_as(NOBODY, NOBODY, Command::new(BIN).args(&args));
    assert_refusal(&out, &["/dev/fuse", "0666"]);
    assert!(!mounted(&m.mnt));

    fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
    let allowed = fs::read_to_string("/etc/fuse.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other");
    let out = run_as(
        NOBODY,
        NOBODY,
        Command::new(BIN).arg("-o").arg("allow_other").args(&args),
    );
    if allowed {
        assert!(out.status.success(), "{}", stderr_str(&out));
        m.unmount_all();
    } else {
        assert_refusal(&out, &["user_allow_other", "/etc/fuse.conf"]);
        assert!(!mounted(&m.mnt));
    }
}
