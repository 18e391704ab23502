//! Command-line interface: `relocfs [-f] [-o OPTS] CONFIG MOUNTPOINT`, `check`, `demo`.
//!
//! User messages are not logs: every failure is one `relocfs: ...` line on stderr and a
//! non-zero exit; `log` (RUST_LOG) carries the daemon's diagnostics.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;
use crate::control;
use crate::daemon;
use crate::demo;
use crate::generate;
use crate::options::MountOptions;
use crate::preflight;
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
    after_help = "Examples:\n  relocfs demo\n  relocfs check /etc/relocfs/app.toml /home/optdir/app\n  \
                  relocfs /etc/relocfs/app.toml /home/optdir/app -o allow_other\n  \
                  relocfs report /var/log/relocfs/app.jsonl*\n\n\
                  fstab:\n  /etc/relocfs/app.toml /home/optdir/app fuse.relocfs defaults,allow_other 0 0\n\n\
                  Unmount with `umount MOUNTPOINT` or SIGTERM. Diagnostics: RUST_LOG=debug with -f."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Stay in the foreground (for systemd and debugging); without it, relocfs returns once
    /// the mount is live and keeps serving in the background
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,

    /// Mount options, comma-separated: allow_other, allow_root, ro, fsname=NAME, nodev, nosuid,
    /// noexec, noatime, ...; fstab-only options (defaults, nofail, _netdev, x-*) are ignored.
    /// default_permissions is always on
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append)]
    options: Vec<String>,

    /// The configuration file (TOML): the prefix table and the audit log
    #[arg(value_name = "CONFIG", required = true)]
    config: Option<PathBuf>,

    /// The legacy path to mount on: an existing directory, not a symlink
    #[arg(value_name = "MOUNTPOINT", required = true)]
    mountpoint: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration (and a mountpoint) without mounting
    Check {
        /// The configuration file
        config: PathBuf,
        /// Also run every mountpoint check the mount would
        mountpoint: Option<PathBuf>,
    },
    /// Show relocfs at work on a built-in example: a temporary moved installation, mounted at
    /// a temporary legacy path, read through it, with the audit lines it writes
    Demo,
    /// Show the live state of a running mount: rules, uptime, nodes, audit counters and
    /// operations by result (root or the mounting user only)
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
    /// SIGHUP or `systemctl reload` do): validated first, an invalid file is refused and the
    /// old rules stay; the outcome goes to the daemon's log (journal or syslog). Run `relocfs
    /// check` on the file first
    #[command(arg_required_else_help = true)]
    Reload {
        /// Mountpoints of running relocfs daemons
        #[arg(value_name = "MOUNTPOINT", required = true)]
        mountpoints: Vec<PathBuf>,
    },
    /// Write the man pages or shell completions (for packagers)
    #[command(hide = true, subcommand)]
    Generate(generate::Generate),
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
    },
}

pub fn main() -> ExitCode {
    crate::logging::init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("relocfs: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Some(Command::Demo) => demo::run(),
        Some(Command::Check { config, mountpoint }) => check(&config, mountpoint.as_deref()),
        Some(Command::Generate(what)) => generate::run(what),
        Some(Command::Status { mountpoint, json }) => {
            print!("{}", control::query(&mountpoint, json)?);
            Ok(())
        }
        Some(Command::Reopen { all, mountpoints }) => control::reopen(&mountpoints, all),
        Some(Command::Reload { mountpoints }) => control::reload(&mountpoints),
        Some(Command::Report {
            logs,
            since,
            until,
            by,
            format,
            limit,
        }) => {
            let args = report::ReportArgs {
                logs,
                since,
                until,
                by,
                format,
                limit,
                now: None,
            };
            report::run(&args, &mut std::io::stdout().lock())
        }
        None => {
            let (Some(config), Some(mountpoint)) = (cli.config, cli.mountpoint) else {
                return Err("usage: relocfs [-f] [-o OPTS] CONFIG MOUNTPOINT".into());
            };
            let options = MountOptions::parse(&cli.options)?;
            // Absolute, so reloads, `mount` output and `relocfs status` name it wherever the
            // daemon's working directory is.
            let config = config::load(&absolute(&config)?).map_err(|e| e.to_string())?;
            let mountpoint = absolute(&mountpoint)?;
            daemon::run(config, &mountpoint, options, cli.foreground)
        }
    }
}

fn check(config_path: &Path, mountpoint: Option<&Path>) -> Result<(), String> {
    let config = config::load(config_path).map_err(|e| e.to_string())?;
    let mountpoint = mountpoint.map(absolute).transpose()?;
    preflight::preflight(&config, mountpoint.as_deref(), preflight::Stale::Report)?;
    println!(
        "{}: valid, {} rule{}",
        config_path.display(),
        config.rules.len(),
        if config.rules.len() == 1 { "" } else { "s" }
    );
    for rule in &config.rules {
        match &rule.action {
            config::Action::Map { to, mode } => {
                let mode = match mode {
                    config::Mode::ReadOnly => "ro",
                    config::Mode::ReadWrite => "rw",
                };
                println!("  {} -> {} ({mode})", rule.from, to.display());
            }
            config::Action::Deny => println!("  {} denied", rule.from),
        }
    }
    Ok(())
}

/// Makes a command-line path absolute against the working directory, without resolving
/// symlinks (the mountpoint itself must not be one, and preflight says so).
fn absolute(path: &Path) -> Result<PathBuf, String> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current directory: {e}"))?
            .join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}
