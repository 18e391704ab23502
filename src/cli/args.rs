//! The command line as clap parses it: `relocfs [-f] [-o OPTS] CONFIG MOUNTPOINT` and the
//! subcommands. Definitions only (their doc comments are `relocfs --help`); `cli::run` dispatches,
//! and `generate` renders the man page and completions from `Cli::command()`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::report;

/// Serve a relocated installation at its legacy path, and log who still uses it.
///
/// relocfs is mounted at the old path of an application that moved. Through a prefix table
/// (see relocfs.toml(5) and config.example.toml) it redirects every access to the real
/// installation, read-only or read-write per rule, denies what the rules deny, and writes an
/// audit log of every open, miss, denial and change: which process, user and path still
/// depend on the old layout. `relocfs report` summarises that log.
#[derive(Debug, Parser)]
#[command(
    name = "relocfs",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  relocfs demo\n  \
                  relocfs check /etc/relocfs/jumpserver.toml /home/optdir/jumpserver\n  \
                  relocfs /etc/relocfs/jumpserver.toml /home/optdir/jumpserver -o allow_other\n  \
                  relocfs report /var/log/relocfs/jumpserver.jsonl*\n\n\
                  fstab (nodev,nosuid: mount.fuse3 passes dev,suid otherwise; x-systemd.requires-mounts-for:\n\
                  the real installation's filesystem is mounted first):\n  \
                  /etc/relocfs/jumpserver.toml /home/optdir/jumpserver fuse.relocfs \
                  defaults,allow_other,nodev,nosuid,x-systemd.requires-mounts-for=/opt/jumpserver 0 0\n\n\
                  Unmount with `umount MOUNTPOINT` or SIGTERM. Diagnostics: RUST_LOG=debug with -f."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Stay in the foreground (for systemd and debugging); without it, relocfs returns once
    /// the mount is live and keeps serving in the background
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,

    /// Mount options, comma-separated: allow_other, allow_root, ro, fsname=NAME, nodev, nosuid,
    /// noexec, noatime, ..., transport=auto|io_uring|dev (overrides `[fuse] transport`);
    /// fstab-only options (defaults, nofail, _netdev, x-*) are ignored. default_permissions is
    /// always on. remount (what `mount -o remount` passes): mount nothing, have the running
    /// daemon of MOUNTPOINT reload CONFIG (its own file) and exit with its verdict
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,

    /// The configuration file (TOML): the prefix table and the audit log
    #[arg(value_name = "CONFIG", required = true)]
    pub config: Option<PathBuf>,

    /// The legacy path to mount on: an existing directory, not a symlink
    #[arg(value_name = "MOUNTPOINT", required = true)]
    pub mountpoint: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration (and a mountpoint) without mounting
    Check {
        /// The configuration file
        config: PathBuf,
        /// Also run every mountpoint check the mount would
        mountpoint: Option<PathBuf>,
    },
    /// Show relocfs at work on a built-in example: a temporary moved installation, mounted at
    /// a temporary legacy path, read through it, with the audit lines it writes. It works in
    /// a new private directory with a random name and removes it (and unmounts) when done or
    /// interrupted (TERM, INT, HUP)
    Demo {
        /// Stay mounted until Enter is pressed, to look around the mount from another shell
        #[arg(long)]
        pause: bool,
    },
    /// Show the live state of a running mount: rules, uptime, nodes, audit counters,
    /// operations by result, and each rule's stage, next brownout window and last access
    /// (root or the mounting user only)
    Status {
        /// The mountpoint of a running relocfs
        mountpoint: PathBuf,
        /// Print the raw JSON answer
        #[arg(long)]
        json: bool,
    },
    /// Ask running relocfs daemons to reopen their audit logs (after logrotate moved them):
    /// over each daemon's control socket, root or the mounting user only; no signal is sent
    /// to any other process. Prints nothing when every daemon answered
    #[command(arg_required_else_help = true)]
    Reopen {
        /// Every daemon of this user (root: every mount made by root)
        #[arg(long, conflicts_with = "mountpoints")]
        all: bool,
        /// Mountpoints of running relocfs daemons
        #[arg(value_name = "MOUNTPOINT")]
        mountpoints: Vec<PathBuf>,
    },
    /// Ask the daemons serving these mountpoints to reread their configuration files (as
    /// SIGHUP, `systemctl reload` or `mount -o remount` do): validated first, an invalid file
    /// is refused and the old rules stay; each daemon's verdict is the exit status, a refusal's
    /// reason the message (and in the daemon's log). Run `relocfs check` on the file first
    #[command(arg_required_else_help = true)]
    Reload {
        /// Mountpoints of running relocfs daemons
        #[arg(value_name = "MOUNTPOINT", required = true)]
        mountpoints: Vec<PathBuf>,
    },
    /// Write the man pages or shell completions (for packagers)
    #[command(hide = true, subcommand)]
    Generate(Generate),
    /// Summarise audit logs: who still uses the legacy path, what the migration missed, what
    /// was refused, and when the legacy path was last used
    Report {
        /// Audit logs (JSON lines); rotated and gzip-compressed ones too, in any order
        #[arg(value_name = "AUDITLOG", required = true)]
        logs: Vec<PathBuf>,
        /// Only events at or after: RFC 3339 time, a date (2026-11-01, UTC) or an age (7d, 12h)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only events before: same forms as --since
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// How to group the main section
        #[arg(long, value_enum, default_value_t = report::GroupBy::Path)]
        by: report::GroupBy,
        /// Output format
        #[arg(long, value_enum, default_value_t = report::Format::Table)]
        format: report::Format,
        /// Rows per section (0: all)
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Memory for the aggregation (512M, 2G; 0: no cap). Past it, the rows of the users
        /// with the most distinct events are summarised (no path or process name); totals
        /// stay exact and the report says so
        #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = report::parse_size)]
        max_memory: u64,
        /// Idle check: per rule, the last use and by whom; exit 0 only if no rule was used
        /// within this window (90s, 15m, 12h, 30d, 2w) and the logs prove it (they reach back
        /// past its start, nothing lost or unreadable), 3 if a rule was used, 4 if unproven
        #[arg(long, value_name = "WINDOW", conflicts_with_all = ["since", "until", "by"])]
        idle_for: Option<String>,
        /// With --idle-for: also list this config's rules that the logs never name
        #[arg(long, value_name = "CONFIG", requires = "idle_for")]
        config: Option<PathBuf>,
        /// Uids only, no login names (by default each uid shown is also named from this
        /// machine's user database; logs of other hosts may number their users otherwise)
        #[arg(long)]
        numeric: bool,
    },
}

/// `relocfs generate ...`: hidden, for packagers (`packaging/build-deb.sh`).
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Write relocfs.8 and relocfs.toml.5 into DIR (created if missing)
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write bash (relocfs.bash), zsh (_relocfs) and fish (relocfs.fish) completions into DIR
    Completions {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}
