//! Mounting from an fstab line through the real mount(8) and mount.fuse3, as at boot. The
//! lines use mount.fuse3's `PROGRAM#SOURCE` form to name the binary under test; an installed
//! relocfs is found by the type `fuse.relocfs` instead (checked by .ci/run on the package).

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

pub(crate) fn fstab_line(config: &std::path::Path, mnt: &std::path::Path, options: &str) -> String {
    format!(
        "{}#{} {} fuse {options} 0 0\n",
        BIN,
        config.display(),
        mnt.display()
    )
}

#[test]
fn fstab_line_mounts_through_mount8_and_unmounts() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"via fstab", 0o644);
    let b = b.map("/", &real);
    fs::write(b.config_path(), b.config_text()).unwrap();
    let fstab = b.root().join("fstab");
    let options = "defaults,allow_other,nosuid,nodev,nofail,_netdev,noauto,\
                   x-systemd.requires-mounts-for=/tmp,x-systemd.automount";
    fs::write(&fstab, fstab_line(&b.config_path(), &b.mnt(), options)).unwrap();
    let m = b.into_mounted();

    let out = run_with_timeout(
        Command::new("mount").arg("-T").arg(&fstab).arg(&m.mnt),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "mount(8) failed: {}",
        stderr_str(&out)
    );
    // mount(8) returned: the filesystem is already serving.
    assert_eq!(fs::read_to_string(m.mnt.join("f")).unwrap(), "via fstab");
    let entry = mount_entry(&m.mnt).expect("listed in mountinfo");
    assert_eq!(entry.fstype, "fuse.relocfs");
    assert!(
        entry.options.iter().any(|o| o == "nosuid"),
        "{:?}",
        entry.options
    );
    assert!(
        entry.options.iter().any(|o| o == "nodev"),
        "{:?}",
        entry.options
    );
    assert!(entry.super_options.iter().any(|o| o == "allow_other"));

    let pid = m.daemon_pid();
    let out = Command::new("umount").arg(&m.mnt).output().unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert!(!mounted(&m.mnt));
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(pid)));
}

#[test]
fn fstab_failure_is_mount8s_exit_status_and_message() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let b = b.map("/", &real);
    fs::write(b.config_path(), b.config_text()).unwrap();
    let fstab = b.root().join("fstab");
    fs::write(
        &fstab,
        fstab_line(
            &b.config_path(),
            &b.mnt(),
            "defaults,allow_other,colour=blue",
        ),
    )
    .unwrap();
    let m = b.into_mounted();
    let out = run_with_timeout(
        Command::new("mount").arg("-T").arg(&fstab).arg(&m.mnt),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        stderr_str(&out).contains("relocfs: unknown mount option 'colour=blue'"),
        "{}",
        stderr_str(&out)
    );
    assert!(!mounted(&m.mnt));
}
