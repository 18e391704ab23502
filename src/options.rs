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

impl MountOptions {
    /// Parses every `-o` argument (each comma-separated). Errors name the offending option.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, String> {
        let mut opts = MountOptions::default();
        for opt in args
            .iter()
            .flat_map(|a| a.as_ref().split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            if ignored(opt) {
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
