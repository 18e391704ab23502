//! `-o` mount options, as given on the command line or by mount(8) from an fstab line.
//!
//! Options that belong to other layers (mount(8), systemd, fstab conventions) are accepted and
//! ignored; options that change the mount map onto fuser's; anything else is refused by name,
//! so a typo never silently mounts something other than what the operator wrote.

use fuser::{MountOption, SessionACL};

use crate::config::Transport;

/// Who may use the mount besides the user that mounted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Only the mounting user (FUSE's default).
    #[default]
    Owner,
    /// `allow_root`: the mounting user and root.
    RootAndOwner,
    /// `allow_other`: everyone, with the kernel checking permissions.
    All,
}

/// The parsed options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    pub access: Access,
    pub read_only: bool,
    pub fsname: Option<String>,
    /// Kernel flags passed through (`nodev` and `nosuid` are fuser's defaults).
    pub flags: Vec<MountOption>,
    /// `remount` (from `mount -o remount`, through mount.fuse3): ask the running daemon of the
    /// mountpoint to reload; never mount.
    pub remount: bool,
    /// `transport=auto|io_uring|dev`: overrides `[fuse] transport`.
    pub transport: Option<Transport>,
}

/// Options mount(8), systemd or fstab conventions handle themselves.
fn ignored(opt: &str) -> bool {
    matches!(
        opt,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "rw"
            | "default_permissions"
            | "relatime"
            | "norelatime"
            | "strictatime"
            | "lazytime"
            | "nolazytime"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
        || opt.starts_with("subtype=")
}

/// Options the kernel shows for a FUSE mount in /proc/self/mountinfo, which mount(8) passes
/// back for `mount -o remount MOUNTPOINT` of a mount that has no fstab line. Accepted with
/// `remount` only: relocfs sets them itself when it mounts.
fn kernel_reported(opt: &str) -> bool {
    [
        "user_id=",
        "group_id=",
        "max_read=",
        "blksize=",
        "rootmode=",
    ]
    .iter()
    .any(|p| opt.starts_with(p))
}

impl MountOptions {
    /// Parses every `-o` argument (each comma-separated). Errors name the offending option.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, String> {
        let mut opts = MountOptions::default();
        let all = || {
            args.iter()
                .flat_map(|a| a.as_ref().split(','))
                .map(str::trim)
                .filter(|o| !o.is_empty())
        };
        let remount = all().any(|o| o == "remount");
        for opt in all() {
            if ignored(opt) || (remount && kernel_reported(opt)) {
                continue;
            }
            let flag = match opt {
                "allow_other" => {
                    opts.access = Access::All;
                    continue;
                }
                "allow_root" => {
                    if opts.access != Access::All {
                        opts.access = Access::RootAndOwner;
                    }
                    continue;
                }
                "ro" => {
                    opts.read_only = true;
                    continue;
                }
                "remount" => {
                    opts.remount = true;
                    continue;
                }
                "dev" => MountOption::Dev,
                "nodev" => MountOption::NoDev,
                "suid" => MountOption::Suid,
                "nosuid" => MountOption::NoSuid,
                "exec" => MountOption::Exec,
                "noexec" => MountOption::NoExec,
                "atime" => MountOption::Atime,
                "noatime" => MountOption::NoAtime,
                "sync" => MountOption::Sync,
                "async" => MountOption::Async,
                "dirsync" => MountOption::DirSync,
                _ => {
                    if let Some(name) = opt.strip_prefix("fsname=") {
                        opts.fsname = Some(name.to_string());
                        continue;
                    }
                    if let Some(t) = opt.strip_prefix("transport=") {
                        opts.transport = Some(Transport::parse(t).ok_or_else(|| {
                            format!(
                                "mount option '{opt}' is not valid: write transport={}",
                                "auto, transport=io_uring or transport=dev"
                            )
                        })?);
                        continue;
                    }
                    return Err(format!("unknown mount option '{opt}'"));
                }
            };
            // A later option wins over an earlier opposite one, as with mount(8).
            opts.flags.retain(|f| !opposite(f, &flag));
            if !opts.flags.contains(&flag) {
                opts.flags.push(flag);
            }
        }
        Ok(opts)
    }

    /// fuser's mount options: always `default_permissions` (the kernel checks every caller's
    /// credentials against the real attributes), the `fuse.relocfs` type, and the source name.
    pub fn to_fuser(&self, source: &str) -> Vec<MountOption> {
        let mut out = vec![
            MountOption::DefaultPermissions,
            MountOption::CUSTOM("subtype=relocfs".into()),
            MountOption::FSName(self.fsname.clone().unwrap_or_else(|| source.to_string())),
        ];
        if self.read_only {
            out.push(MountOption::RO);
        }
        out.extend(self.flags.iter().cloned());
        out
    }

    /// What a remount asks of the mount's flags: `ro` always (mount(8) passes `ro` or `rw`
    /// explicitly), the others when given. As (flag, wanted set).
    pub fn remount_flags(&self) -> Vec<(&'static str, bool)> {
        let mut out = vec![("ro", self.read_only)];
        for flag in &self.flags {
            out.push(match flag {
                MountOption::NoSuid => ("nosuid", true),
                MountOption::Suid => ("nosuid", false),
                MountOption::NoDev => ("nodev", true),
                MountOption::Dev => ("nodev", false),
                MountOption::NoExec => ("noexec", true),
                MountOption::Exec => ("noexec", false),
                _ => continue,
            });
        }
        out
    }

    pub fn session_acl(&self) -> SessionACL {
        match self.access {
            Access::Owner => SessionACL::Owner,
            Access::RootAndOwner => SessionACL::RootAndOwner,
            Access::All => SessionACL::All,
        }
    }
}

fn opposite(a: &MountOption, b: &MountOption) -> bool {
    use MountOption::*;
    matches!(
        (a, b),
        (Dev, NoDev)
            | (NoDev, Dev)
            | (Suid, NoSuid)
            | (NoSuid, Suid)
            | (Exec, NoExec)
            | (NoExec, Exec)
            | (Atime, NoAtime)
            | (NoAtime, Atime)
            | (Sync, Async)
            | (Async, Sync)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_options_are_accepted() {
        let o = MountOptions::parse(&[
            "defaults,allow_other,nofail,_netdev,x-systemd.requires-mounts-for=/opt,noauto,users",
        ])
        .unwrap();
        assert_eq!(o.access, Access::All);
        assert!(!o.read_only);
        assert!(o.flags.is_empty());
    }

    #[test]
    fn flags_map_and_later_wins() {
        let o = MountOptions::parse(&["ro,noexec", "exec,nosuid,fsname=legacy"]).unwrap();
        assert!(o.read_only);
        assert_eq!(o.flags, vec![MountOption::Exec, MountOption::NoSuid]);
        assert_eq!(o.fsname.as_deref(), Some("legacy"));
        let fuser = o.to_fuser("/etc/x.toml");
        assert!(fuser.contains(&MountOption::DefaultPermissions));
        assert!(fuser.contains(&MountOption::RO));
        assert!(fuser.contains(&MountOption::FSName("legacy".into())));
    }

    #[test]
    fn default_permissions_always_on() {
        let o = MountOptions::parse::<&str>(&[]).unwrap();
        assert!(o.to_fuser("src").contains(&MountOption::DefaultPermissions));
        assert_eq!(o.session_acl(), SessionACL::Owner);
    }

    /// What mount.fuse3 passes for `mount -o remount` of an fstab line.
    #[test]
    fn remount_is_recognised_with_the_flags_it_asks_for() {
        let o = MountOptions::parse(&["rw,nosuid,nodev,remount,allow_other"]).unwrap();
        assert!(o.remount);
        assert_eq!(
            o.remount_flags(),
            vec![("ro", false), ("nosuid", true), ("nodev", true)]
        );
        let o = MountOptions::parse(&["ro,remount,exec"]).unwrap();
        assert_eq!(o.remount_flags(), vec![("ro", true), ("noexec", false)]);
        assert!(!MountOptions::parse(&["rw,nosuid"]).unwrap().remount);
    }

    /// Without an fstab line, mount(8) passes the mount's options from mountinfo, the
    /// kernel's own included; those are refused when mounting.
    #[test]
    fn remount_accepts_the_options_mountinfo_shows() {
        let mountinfo = "rw,nosuid,nodev,relatime,remount,user_id=0,group_id=0,\
                         default_permissions,allow_other";
        let o = MountOptions::parse(&[mountinfo]).unwrap();
        assert!(o.remount);
        assert_eq!(
            o.remount_flags(),
            vec![("ro", false), ("nosuid", true), ("nodev", true)]
        );
        let e = MountOptions::parse(&["rw,user_id=0"]).unwrap_err();
        assert!(e.contains("'user_id=0'"), "{e}");
    }

    #[test]
    fn transport_option() {
        assert_eq!(MountOptions::parse::<&str>(&[]).unwrap().transport, None);
        let o = MountOptions::parse(&["transport=dev,transport=io_uring"]).unwrap();
        assert_eq!(o.transport, Some(Transport::IoUring));
        assert_eq!(
            MountOptions::parse(&["transport=auto"]).unwrap().transport,
            Some(Transport::Auto)
        );
        // Not a kernel option: never passed to mount(2).
        assert_eq!(o.to_fuser("s").len(), 3);
        let e = MountOptions::parse(&["transport=uring"]).unwrap_err();
        assert!(
            e.contains("'transport=uring'") && e.contains("io_uring"),
            "{e}"
        );
    }

    #[test]
    fn unknown_option_is_named() {
        let e = MountOptions::parse(&["allow_other,bogus_opt"]).unwrap_err();
        assert!(e.contains("'bogus_opt'"), "{e}");
    }
}
