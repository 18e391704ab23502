//! Command-line interface: `relocfs [-f] [-o OPTS] CONFIG MOUNTPOINT`, `check`, `demo`.
//!
//! User messages are not logs: every failure is one `relocfs: ...` line on stderr and a
//! non-zero exit; `log` (RUST_LOG) carries the daemon's diagnostics.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, printable};
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
    /// a temporary legacy path, read through it, with the audit lines it writes. It works in
    /// a new private directory with a random name and removes it (and unmounts) when done or
    /// interrupted (TERM, INT, HUP)
    Demo {
        /// Stay mounted until Enter is pressed, to look around the mount from another shell
        #[arg(long)]
        pause: bool,
    },
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
        /// Memory for the aggregation (512M, 2G; 0: no cap). Past it, the rows of the users
        /// with the most distinct events are summarised (no path or process name); totals
        /// stay exact and the report says so
        #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = report::parse_size)]
        max_memory: u64,
    },
}

pub fn main() -> ExitCode {
    crate::logging::init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            if !message.is_empty() {
                // One line, whatever a path or a config value in it holds. A closed stderr
                // leaves only the exit status to tell.
                let _ = writeln!(io::stderr(), "relocfs: {}", printable(&message));
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Some(Command::Demo { pause }) => demo::run(pause),
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
            max_memory,
        }) => {
            let args = report::ReportArgs {
                logs,
                since,
                until,
                by,
                format,
                limit,
                max_memory,
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
    if let Some(log) = &config.audit.log {
        preflight::probe_audit_log(log)?;
    }
    print_out(&check_summary(config_path, &config))
}

/// What `relocfs check` prints for a valid config. Every path and `from` is escaped: a TOML
/// string can hold terminal escape sequences and newlines.
fn check_summary(config_path: &Path, config: &config::Config) -> String {
    let mut out = String::new();
    let n = config.rules.len();
    let _ = writeln!(
        out,
        "{}: valid, {n} rule{}",
        printable(&config_path.to_string_lossy()),
        if n == 1 { "" } else { "s" }
    );
    for rule in &config.rules {
        let from = printable(&rule.from);
        let _ = match &rule.action {
            config::Action::Map { to, mode } => {
                let mode = match mode {
                    config::Mode::ReadOnly => "ro",
                    config::Mode::ReadWrite => "rw",
                };
                writeln!(
                    out,
                    "  {from} -> {} ({mode})",
                    printable(&to.to_string_lossy())
                )
            }
            config::Action::Deny => writeln!(out, "  {from} denied"),
        };
    }
    out
}

/// Writes a command's output to stdout. A reader that went away (`relocfs check ... | head -1`)
/// ends the output quietly and successfully, as for ripgrep; other write errors are reported.
pub(crate) fn print_out(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
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
