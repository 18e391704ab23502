//! Command-line interface: runs the command `args` parsed, and turns its outcome into output
//! and an exit code (`exit`).
//!
//! User messages are not logs: every failure is one `relocfs: ...` line on stderr and a
//! non-zero exit; `log` (RUST_LOG) carries the daemon's diagnostics.

pub mod args;

mod output;

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::exit::{Exit, Failure};
pub use args::Cli;
use args::{Command, Generate};
pub(crate) use output::print_out;

use crate::config::{self, printable};
use crate::control;
use crate::daemon;
use crate::demo;
use crate::generate;
use crate::options::MountOptions;
use crate::preflight;
use crate::report;

pub fn main() -> ExitCode {
    crate::logging::init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => Exit::Success.into(),
        Err(failure) => {
            output::print_failure(&failure.message);
            failure.exit.into()
        }
    }
}

/// Runs the parsed command.
fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(Command::Demo { pause }) => Ok(demo::run(pause)?),
        Some(Command::Check { config, mountpoint }) => Ok(check(&config, mountpoint.as_deref())?),
        Some(Command::Generate(what)) => Ok(generate(what)?),
        Some(Command::Status { mountpoint, json }) => {
            print!("{}", control::query(&mountpoint, json)?);
            Ok(())
        }
        Some(Command::Reopen { all, mountpoints }) => Ok(control::reopen(&mountpoints, all)?),
        Some(Command::Reload { mountpoints }) => Ok(control::reload(&mountpoints)?),
        Some(Command::Report {
            logs,
            format,
            idle_for: Some(window),
            config,
            numeric,
            ..
        }) => {
            let args = report::idle::IdleArgs {
                logs,
                window,
                config,
                format,
                numeric,
                now: None,
            };
            match report::idle::run(&args, &mut std::io::stdout().lock())?.exit() {
                Exit::Success => Ok(()),
                // The verdict is printed; the code alone tells it to a script.
                exit => Err(Failure {
                    exit,
                    message: String::new(),
                }),
            }
        }
        Some(Command::Report {
            logs,
            since,
            until,
            by,
            format,
            limit,
            max_memory,
            numeric,
            ..
        }) => {
            let args = report::ReportArgs {
                logs,
                since,
                until,
                by,
                format,
                limit,
                max_memory,
                numeric,
                now: None,
            };
            Ok(report::run(&args, &mut std::io::stdout().lock())?)
        }
        None => {
            let (Some(config), Some(mountpoint)) = (cli.config, cli.mountpoint) else {
                // clap requires both; kept as a usage error should that ever change.
                return Err(Failure::usage(
                    "usage: relocfs [-f] [-o OPTS] CONFIG MOUNTPOINT",
                ));
            };
            let options = MountOptions::parse(&cli.options)?;
            if options.remount {
                // `mount -o remount` (systemctl reload of a mount unit): the running daemon
                // rereads its configuration; nothing is mounted, whatever the outcome.
                return Ok(control::remount(&control::Remount {
                    config: &absolute(&config)?,
                    mountpoint: &absolute(&mountpoint)?,
                    flags: options.remount_flags(),
                })?);
            }
            // Absolute, so reloads, `mount` output and `relocfs status` name it wherever the
            // daemon's working directory is.
            let config = config::load(&absolute(&config)?).map_err(|e| e.to_string())?;
            let mountpoint = absolute(&mountpoint)?;
            Ok(daemon::run(config, &mountpoint, options, cli.foreground)?)
        }
    }
}

/// `relocfs generate ...`: writes the files from the command as parsed here and prints each
/// path on its own line.
fn generate(what: Generate) -> Result<(), String> {
    let command = Cli::command();
    let written = match &what {
        Generate::Man { dir } => generate::man_pages(dir, &command),
        Generate::Completions { dir } => generate::completions(dir, &command),
    }
    .map_err(|e| format!("generate: {e}"))?;
    let mut list = String::new();
    for path in written {
        list.push_str(&printable(&path.to_string_lossy()));
        list.push('\n');
    }
    print_out(&list)
}

fn check(config_path: &Path, mountpoint: Option<&Path>) -> Result<(), String> {
    let config = config::load(config_path).map_err(|e| e.to_string())?;
    let mountpoint = mountpoint.map(absolute).transpose()?;
    preflight::preflight(&config, mountpoint.as_deref(), preflight::Stale::Report)?;
    if let Some(log) = &config.audit.log {
        preflight::probe_audit_log(log)?;
    }
    if let Some(textfile) = &config.metrics.textfile {
        crate::metrics::probe(textfile)?;
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
