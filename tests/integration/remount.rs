//! `mount -o remount` of a relocfs mount (what `systemctl reload` of its mount unit runs):
//! mount(8) hands it to mount.fuse3, which runs `relocfs CONFIG MOUNTPOINT -o remount,...`;
//! relocfs asks the running daemon to reload and reports its verdict. Never a second mount.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use crate::fstab::fstab_line;

const OPTIONS: &str = "defaults,allow_other,nosuid,nodev,noauto";

/// A relocfs mounted through mount(8) from a temporary fstab; `/` maps to `real`, which holds
/// `f`, and `extra` (with `g`) is a directory no rule maps yet.
struct Fixture {
    m: Mounted,
    fstab: PathBuf,
    extra: PathBuf,
}

impl Fixture {
    fn mount() -> Fixture {
        Fixture::mount_with(OPTIONS)
    }

    fn mount_with(options: &str) -> Fixture {
        let b = MountBuilder::new();
        let real = b.real();
        write_file(&real.join("f"), b"old rules", 0o644);
        let extra = b.root().join("extra");
        write_file(&extra.join("g"), b"new rule", 0o644);
        let b = b.map("/", &real);
        fs::write(b.config_path(), b.config_text()).unwrap();
        let fstab = b.root().join("fstab");
        fs::write(&fstab, fstab_line(&b.config_path(), &b.mnt(), options)).unwrap();
        let m = b.into_mounted();
        let out = mount8(Command::new("mount").arg("-T").arg(&fstab).arg(&m.mnt));
        assert!(out.status.success(), "mount(8): {}", stderr_str(&out));
        Fixture { m, fstab, extra }
    }

    /// `mount -T FSTAB -o remount,MORE MOUNTPOINT`.
    fn remount(&self, more: &str) -> Output {
        mount8(
            Command::new("mount")
                .arg("-T")
                .arg(&self.fstab)
                .arg("-o")
                .arg(format!("remount{more}"))
                .arg(&self.m.mnt),
        )
    }

    /// The config with a rule mapping `/extra` added in front.
    fn add_extra_rule(&self) {
        let config = fs::read_to_string(&self.m.config).unwrap();
        fs::write(
            &self.m.config,
            format!(
                "[[map]]\nfrom = \"/extra\"\nto = {}\n\n{config}",
                serde_json::to_string(self.extra.to_str().unwrap()).unwrap()
            ),
        )
        .unwrap();
    }

    /// Still the one daemon and the one mount, serving the old rules.
    #[track_caller]
    fn assert_unchanged(&self, pid: i32) {
        assert_eq!(self.m.daemon_pids(), vec![pid], "the daemon changed");
        assert_eq!(mounts_at(&self.m.mnt), 1, "mounts at the mountpoint");
        assert_eq!(fs::read(self.m.at("f")).unwrap(), b"old rules");
        assert_errno(
            "a rule that was never loaded",
            fs::metadata(self.m.at("extra/g")),
            libc::ENOENT,
        );
    }
}

fn mount8(cmd: &mut Command) -> Output {
    run_with_timeout(cmd.env("LC_ALL", "C"), Duration::from_secs(30))
}

/// A valid new config: mount(8) exits 0 once the running daemon has reloaded it, so the new
/// rule serves at once, from the same daemon and the same mount. Then systemd's own form of
/// the command (`mount SOURCE MOUNTPOINT -t fuse -o remount,OPTIONS`, as its mount units run
/// it) does the same.
#[test]
fn remount_through_mount8_reloads_the_running_daemon() {
    skip_without_fuse!();
    let fx = Fixture::mount();
    let pid = fx.m.daemon_pid();
    fx.add_extra_rule();
    let out = fx.remount("");
    assert!(out.status.success(), "remount: {}", stderr_str(&out));
    assert!(out.stderr.is_empty(), "{}", stderr_str(&out));
    // The verdict came after the reload: no waiting needed.
    assert_eq!(fs::read(fx.m.at("extra/g")).unwrap(), b"new rule");
    assert_eq!(fs::read(fx.m.at("f")).unwrap(), b"old rules");
    assert_eq!(fx.m.daemon_pids(), vec![pid]);
    assert_eq!(mounts_at(&fx.m.mnt), 1, "a second mount appeared");

    let source = format!("{BIN}#{}", fx.m.config.display());
    let out = mount8(
        Command::new("mount")
            .arg(&source)
            .arg(&fx.m.mnt)
            .args(["-t", "fuse", "-o"])
            .arg(format!("remount,{OPTIONS}")),
    );
    assert!(out.status.success(), "systemd's form: {}", stderr_str(&out));
    assert_eq!(fx.m.daemon_pids(), vec![pid]);
    assert_eq!(mounts_at(&fx.m.mnt), 1);
}

/// A line without `nodev,nosuid` (mount.fuse3 then passes `dev,suid`, at the mount and at the
/// remount alike): the flags the remount asks for are the mount's own, so it reloads.
#[test]
fn remount_of_a_dev_suid_line_reloads() {
    skip_without_fuse!();
    let fx = Fixture::mount_with("defaults,allow_other,noauto");
    let flags = statvfs(&fx.m.mnt).unwrap().f_flag;
    assert_eq!(
        flags & (libc::ST_NOSUID | libc::ST_NODEV),
        0,
        "mounted dev,suid"
    );
    fx.add_extra_rule();
    let out = fx.remount("");
    assert!(out.status.success(), "remount: {}", stderr_str(&out));
    assert_eq!(fs::read(fx.m.at("extra/g")).unwrap(), b"new rule");
}

/// An invalid new config: mount(8) fails with the daemon's one-line reason, and the old table
/// keeps serving (same daemon, same mount, the new rule absent). Fixed, the next remount
/// loads it.
#[test]
fn remount_with_an_invalid_config_fails_and_the_old_rules_serve() {
    skip_without_fuse!();
    let fx = Fixture::mount();
    let pid = fx.m.daemon_pid();
    fx.add_extra_rule();
    let good = fs::read_to_string(&fx.m.config).unwrap();
    fs::write(
        &fx.m.config,
        format!("{good}\n[[map]]\nfrom = \"relative\"\n"),
    )
    .unwrap();
    let out = fx.remount("");
    assert_refusal(&out, &["reload refused", "old rules stay", "relative"]);
    fx.assert_unchanged(pid);

    fs::write(&fx.m.config, good).unwrap();
    let out = fx.remount("");
    assert!(out.status.success(), "remount: {}", stderr_str(&out));
    assert!(
        wait_until(SETTLE_TIMEOUT, || fs::read(fx.m.at("extra/g"))
            .ok()
            .as_deref()
            == Some(b"new rule")),
        "the fixed config did not load"
    );
    assert_eq!(fx.m.daemon_pids(), vec![pid]);
}

/// No daemon serves the mountpoint: one line, exit non-zero, and nothing gets mounted (the
/// remount never falls back to mounting).
#[test]
fn remount_without_a_daemon_mounts_nothing() {
    skip_without_fuse!();
    let fx = Fixture::mount();
    let pid = fx.m.daemon_pid();
    assert!(umount(&fx.m.mnt).success());
    assert!(wait_until(SETTLE_TIMEOUT, || !mounted(&fx.m.mnt)));
    // Gone, not exiting (an exiting daemon still accepts and then closes unanswered).
    assert!(wait_until(SETTLE_TIMEOUT, || !pid_alive(pid)));
    let out = fx.remount("");
    assert!(!out.status.success());
    let err = stderr_str(&out);
    assert!(
        err.contains("relocfs: no relocfs daemon is serving"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!mounted(&fx.m.mnt), "a remount mounted something");
    assert!(fx.m.daemon_pids().is_empty());
}

/// What a remount cannot do: switch to another config file, or change a flag that is fixed
/// for the mount's life (`ro`): each is refused in one line before anything reloads.
#[test]
fn remount_cannot_switch_config_or_flags() {
    skip_without_fuse!();
    let fx = Fixture::mount();
    let pid = fx.m.daemon_pid();
    let other = fx.m.root().join("other.toml");
    fs::write(
        &other,
        format!(
            "[[map]]\nfrom = \"/\"\nto = {}\n",
            serde_json::to_string(fx.extra.to_str().unwrap()).unwrap()
        ),
    )
    .unwrap();
    fx.add_extra_rule();
    let out = relocfs([
        other.as_path(),
        fx.m.mnt.as_path(),
        Path::new("-o"),
        Path::new("rw,remount"),
    ]);
    assert_refusal(&out, &["cannot switch files", "other.toml"]);
    fx.assert_unchanged(pid);

    let out = fx.remount(",ro");
    assert_refusal(&out, &["cannot change", "'rw' to 'ro'", "nothing reloaded"]);
    fx.assert_unchanged(pid);
    // And the mount is still writable where it was: not quietly read-only either.
    assert!(
        statvfs(&fx.m.mnt).unwrap().f_flag & libc::ST_RDONLY == 0,
        "remount,ro changed the mount"
    );
}

/// An unprivileged user runs the remount command itself (relocfs is not setuid; mount(8)
/// refuses `remount` to users anyway): the daemon's control socket serves only root and the
/// mount's owner, so nothing reloads, and nothing is mounted on the user's behalf.
#[test]
fn a_user_cannot_reload_through_remount() {
    skip_without_fuse!();
    let fx = Fixture::mount();
    let pid = fx.m.daemon_pid();
    fx.add_extra_rule();
    let mut cmd = Command::new(BIN);
    cmd.arg(&fx.m.config)
        .arg(&fx.m.mnt)
        .args(["-o", "rw,nosuid,nodev,remount"])
        .env_remove("XDG_RUNTIME_DIR");
    let out = run_as(NOBODY, NOBODY, &mut cmd);
    assert_refusal(&out, &["permission denied"]);
    fx.assert_unchanged(pid);
}

/// A mount with no fstab line (made by `relocfs CONFIG MOUNTPOINT`, or by relocfs@.service):
/// `mount -o remount MOUNTPOINT` then takes the options from mountinfo, the kernel's own
/// (`user_id=0,group_id=0`) included, and mount.fuse3 runs `relocfs SOURCE MOUNTPOINT -o
/// VFS-OPTIONS,remount,SUPER-OPTIONS` (as strace shows it). mount.fuse3 finds `relocfs` on the
/// default PATH, where the binary under test is not installed, so that command is run here
/// as mount.fuse3 would build it from this mount's own mountinfo line.
#[test]
fn remount_of_a_mount_without_fstab_line_reloads() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"old rules", 0o644);
    let extra = b.root().join("extra");
    write_file(&extra.join("g"), b"new rule", 0o644);
    let m = b.map("/", &real).opt("allow_other").mount();
    let pid = m.daemon_pid();
    let entry = mount_entry(&m.mnt).expect("in mountinfo");
    let source = entry.source.clone();
    let options = format!(
        "{},remount,{}",
        entry.options.join(","),
        entry.super_options.join(",")
    );
    assert!(options.contains("user_id=0"), "{options}");
    let config = fs::read_to_string(&m.config).unwrap();
    fs::write(&m.config, with_map_first(&config, "/extra", &extra)).unwrap();
    let out = relocfs([
        Path::new(&source),
        m.mnt.as_path(),
        Path::new("-o"),
        Path::new(&options),
    ]);
    assert!(
        out.status.success(),
        "relocfs {source} {} -o {options}: {}",
        m.mnt.display(),
        stderr_str(&out)
    );
    assert_eq!(fs::read(m.at("extra/g")).unwrap(), b"new rule");
    assert_eq!(m.daemon_pids(), vec![pid]);
    assert_eq!(mounts_at(&m.mnt), 1);
}
