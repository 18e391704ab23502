//! Packaging files generated from the code: the relocfs(8) and relocfs.toml(5) man pages and shell completions.
//!
//! relocfs(8) is rendered from the clap command itself (clap_mangen), and the completions too
//! (clap_complete), so neither can drift from the options and subcommands the binary accepts.
//! relocfs.toml(5) is hand-written roff (`packaging/man/relocfs.toml.5`), embedded here so the
//! binary can write it with the rest; `tests/packaging.rs` checks it names every config key.
//! Reached through the hidden `relocfs generate man|completions DIR` subcommand, which
//! `packaging/build-deb.sh` runs before `cargo deb`; the CLI passes in its own clap command
//! (`cli::Cli::command()`), so this module does not depend on the CLI.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

/// The config-format page, hand-written: every key, its type, default and meaning.
const CONFIG_PAGE: &str = include_str!("../packaging/man/relocfs.toml.5");

/// The name the binary is installed under, and the completions complete.
const BIN: &str = "relocfs";

/// Writes `relocfs.8` (from the clap `command`) and `relocfs.toml.5` into `dir`, uncompressed.
pub fn man_pages(dir: &Path, command: &Command) -> io::Result<Vec<PathBuf>> {
    create_dir(dir)?;
    let main = write(&dir.join("relocfs.8"), &relocfs_8(command)?)?;
    let config = write(&dir.join("relocfs.toml.5"), CONFIG_PAGE.as_bytes())?;
    Ok(vec![main, config])
}

/// Writes bash, zsh and fish completions of the clap `command` into `dir`: `relocfs.bash`,
/// `_relocfs`, `relocfs.fish`.
pub fn completions(dir: &Path, command: &Command) -> io::Result<Vec<PathBuf>> {
    create_dir(dir)?;
    let mut cmd = visible(command);
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cmd, BIN, dir).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{} completion in {}: {e}", shell, dir.display()),
                )
            })
        })
        .collect()
}

fn create_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
}

fn write(path: &Path, contents: &[u8]) -> io::Result<PathBuf> {
    fs::write(path, contents)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))?;
    Ok(path.to_path_buf())
}

/// A copy of the top-level `cmd` without its hidden subcommands (`generate`), which
/// clap_complete would otherwise offer. Arguments and visible subcommands are copied whole.
fn visible(cmd: &Command) -> Command {
    let mut out = Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .args_conflicts_with_subcommands(cmd.is_args_conflicts_with_subcommands_set())
        .subcommand_negates_reqs(cmd.is_subcommand_negates_reqs_set())
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    out
}

/// relocfs(8): clap_mangen's NAME, DESCRIPTION and OPTIONS, a SYNOPSIS and COMMANDS built
/// from the same command (one line per form, no pages per subcommand), and hand-written
/// sections for what clap does not know.
fn relocfs_8(command: &Command) -> io::Result<Vec<u8>> {
    let mut cmd = command.clone().disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone())
        .title("RELOCFS")
        .section("8")
        .date(page_date())
        .manual("System Administration");

    let mut no_hyphenation = Roff::new();
    no_hyphenation.control("nh", []);
    let parts = [
        render(|w| man.render_title(w))?,
        to_bytes(&no_hyphenation)?,
        render(|w| man.render_name_section(w))?,
        to_bytes(&synopsis(&cmd))?,
        render(|w| man.render_description_section(w))?,
        render(|w| man.render_options_section(w))?,
        to_bytes(&commands(&cmd))?,
        to_bytes(&extra_sections())?,
        render(|w| man.render_version_section(w))?,
    ];

    // Each render writes roff's preamble (apostrophe handling); keep only the first.
    let preamble = Roff::new().render().into_bytes();
    let mut page = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        match part.strip_prefix(preamble.as_slice()) {
            Some(body) if i > 0 => page.extend_from_slice(body),
            _ => page.extend_from_slice(part),
        }
    }
    Ok(page)
}

fn render(section: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    section(&mut out)?;
    Ok(out)
}

fn to_bytes(roff: &Roff) -> io::Result<Vec<u8>> {
    render(|w| roff.to_writer(w))
}

/// The page date, YYYY-MM-DD: SOURCE_DATE_EPOCH when set (reproducible builds), else today.
fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    // Any u64 of seconds is well within i64 days.
    crate::time::format_date(i64::try_from(secs / 86_400).unwrap_or(i64::MAX))
}

/// The subcommands a reader should see, in declaration order.
fn visible_subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// Help and version flags are listed once, as their own synopsis form.
fn is_meta(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// One synopsis form: `relocfs [-f] [-o OPTS]... CONFIG MOUNTPOINT`.
fn usage(prefix: &str, cmd: &Command) -> Vec<Inline> {
    let mut line = vec![bold(prefix)];
    for arg in cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional() && !is_meta(a))
    {
        line.push(roman(" "));
        line.extend(arg_inlines(arg));
    }
    for arg in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        line.push(roman(" "));
        line.extend(arg_inlines(arg));
    }
    line
}

/// `[-o OPTS]...`, `-f`, `CONFIG`, `[MOUNTPOINT]`: how an argument is written in a usage line.
fn arg_inlines(arg: &Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.to_string())
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    let mut inner = Vec::new();
    if arg.is_positional() {
        inner.push(italic(value));
    } else {
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), _) => format!("-{short}"),
            (None, Some(long)) => format!("--{long}"),
            (None, None) => return Vec::new(),
        };
        inner.push(bold(flag));
        if arg.get_num_args().is_some_and(|n| n.takes_values()) {
            inner.push(roman(" "));
            inner.push(italic(value));
        }
    }
    let repeats = matches!(arg.get_action(), ArgAction::Append | ArgAction::Count);
    if arg.is_required_set() {
        if repeats {
            inner.push(roman("..."));
        }
        return inner;
    }
    let mut out = vec![roman("[")];
    out.extend(inner);
    out.push(roman(if repeats { "]..." } else { "]" }));
    out
}

/// An argument as the term of its `.TP` item: `-x, --long VALUE`, `--long VALUE`, `NAME...`.
fn arg_term(arg: &Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.to_string())
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    if arg.is_positional() {
        let mut term = vec![italic(value)];
        if many {
            term.push(roman("..."));
        }
        return term;
    }
    let mut term = Vec::new();
    if let Some(short) = arg.get_short() {
        term.push(bold(format!("-{short}")));
    }
    if let Some(long) = arg.get_long() {
        if !term.is_empty() {
            term.push(roman(", "));
        }
        term.push(bold(format!("--{long}")));
    }
    if arg.get_num_args().is_some_and(|n| n.takes_values()) {
        term.push(roman(" "));
        term.push(italic(value));
    }
    term
}

/// "One of: a, b" and "Default: a" for an argument that takes a value.
fn arg_values(arg: &Arg) -> Vec<String> {
    if !arg.get_num_args().is_some_and(|n| n.takes_values()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !possible.is_empty() {
        out.push(format!("One of: {}", possible.join(", ")));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() {
        out.push(format!("Default: {}", defaults.join(", ")));
    }
    out
}

fn synopsis(cmd: &Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(usage(BIN, cmd));
    for sub in visible_subcommands(cmd) {
        roff.control("br", []);
        roff.text(usage(&format!("{BIN} {}", sub.get_name()), sub));
    }
    roff.control("br", []);
    roff.text([
        bold(BIN),
        roman(" "),
        bold("--help"),
        roman(" | "),
        bold("--version"),
    ]);
    roff
}

/// COMMANDS: each visible subcommand's usage, its help and its arguments.
fn commands(cmd: &Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.text([
        roman("Without a command, "),
        bold(BIN),
        roman(" mounts "),
        italic("CONFIG"),
        roman(" on "),
        italic("MOUNTPOINT"),
        roman(" (the form mount.fuse3(8) uses; see OPTIONS). The commands are:"),
    ]);
    for sub in visible_subcommands(cmd) {
        roff.control("TP", []);
        roff.text(usage(&format!("{BIN} {}", sub.get_name()), sub));
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            paragraphs(&mut roff, &about.to_string());
        }
        let args: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !is_meta(a))
            .collect();
        if args.is_empty() {
            continue;
        }
        roff.control("RS", []);
        for arg in args {
            roff.control("TP", []);
            roff.text(arg_term(arg));
            let mut help = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            for extra in arg_values(arg) {
                if !help.is_empty() {
                    help.push_str(". ");
                }
                help.push_str(&extra);
            }
            paragraphs(&mut roff, &help);
        }
        roff.control("RE", []);
    }
    roff
}

/// Help text as roff: blank lines become paragraph breaks.
fn paragraphs(roff: &mut Roff, text: &str) {
    let mut first = true;
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if !first {
            roff.control("PP", []);
        }
        first = false;
        roff.text([roman(para.split_whitespace().collect::<Vec<_>>().join(" "))]);
    }
}

/// Literal lines (commands, fstab lines), indented and not filled.
fn literal(roff: &mut Roff, lines: &[&str]) {
    roff.control("PP", []);
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    for line in lines {
        roff.text([roman(*line)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
}

/// `.TP` item: a bold term and its text.
fn item(roff: &mut Roff, term: &str, text: &str) {
    roff.control("TP", []);
    roff.text([bold(term)]);
    roff.text([roman(text)]);
}

/// What clap cannot know: examples, files, signals, exit status, environment, see also.
fn extra_sections() -> Roff {
    let mut roff = Roff::new();

    roff.control("SH", ["EXAMPLES"]);
    roff.text([roman(
        "Validate a configuration and every check the mount would make, then mount by hand \
         (relocfs returns once the mount is live):",
    )]);
    literal(
        &mut roff,
        &[
            "relocfs check /etc/relocfs/app.toml /home/optdir/app",
            "relocfs /etc/relocfs/app.toml /home/optdir/app -o allow_other",
            "umount /home/optdir/app",
        ],
    );
    roff.control("PP", []);
    roff.text([roman(
        "Mount at boot from /etc/fstab: mount(8) runs mount.fuse3(8), which runs relocfs \
         found on PATH for the type fuse.relocfs. mount.fuse3 passes dev,suid unless the \
         line says nodev,nosuid, so say it:",
    )]);
    literal(
        &mut roff,
        &["/etc/relocfs/app.toml /home/optdir/app fuse.relocfs defaults,allow_other,nodev,nosuid 0 0"],
    );
    roff.control("PP", []);
    roff.text([roman(
        "When the real installation is on a filesystem of its own, order the mount after it \
         (relocfs ignores x-* options; systemd reads them):",
    )]);
    literal(
        &mut roff,
        &["/etc/relocfs/app.toml /home/optdir/app fuse.relocfs defaults,allow_other,nodev,nosuid,x-systemd.requires-mounts-for=/opt/app 0 0"],
    );
    roff.control("PP", []);
    roff.text([roman(
        "Reload an fstab mount's configuration (systemctl reload of its mount unit runs the \
         same): relocfs, started by mount.fuse3 with -o remount, mounts nothing, asks the \
         running daemon to reload, and exits with its verdict; an invalid file is refused \
         with the reason and the old rules stay:",
    )]);
    literal(&mut roff, &["mount -o remount /home/optdir/app"]);
    roff.control("PP", []);
    roff.text([roman(
        "Or as a systemd service instead of fstab, with the configuration named after the \
         escaped mountpoint (here /etc/relocfs/home-optdir-app.toml):",
    )]);
    literal(
        &mut roff,
        &[
            "systemctl enable --now relocfs@$(systemd-escape --path /home/optdir/app)",
            "systemctl reload relocfs@home-optdir-app",
        ],
    );
    roff.control("PP", []);
    roff.text([roman(
        "Debug in the foreground, with diagnostics on stderr:",
    )]);
    literal(
        &mut roff,
        &["RUST_LOG=debug relocfs -f /etc/relocfs/app.toml /home/optdir/app"],
    );

    roff.control("SH", ["SIGNALS"]);
    item(
        &mut roff,
        "SIGTERM, SIGINT",
        "Unmount and exit once the kernel lets go, after flushing the audit log. A busy \
         mountpoint is detached lazily: new paths through the mountpoint no longer reach \
         it, but open files, and processes whose working directory is inside, are served \
         (and audited) until they let go. umount(8) of the mountpoint has the same effect.",
    );
    item(
        &mut roff,
        "SIGUSR1",
        "Reopen the audit log (after logrotate(8) moved it away), nothing else. \
         /etc/logrotate.d/relocfs runs relocfs reopen --all instead, which asks each \
         daemon over its control socket and signals no process.",
    );
    item(
        &mut roff,
        "SIGHUP",
        "Reread the configuration file (and reopen the audit log): the rules apply to new lookups at once; changed [audit] and \
         [fuse] settings take effect at the next mount (the daemon logs one line naming \
         them); a file that fails \
         validation is refused (the error goes to standard error: the journal under \
         systemd, nowhere without -f) and the old rules stay. \
         systemctl reload sends it to a relocfs@.service instance.",
    );

    roff.control("SH", ["EXIT STATUS"]);
    item(
        &mut roff,
        "0",
        "Mounting: the mount is live and served in the background (or, with -f, was \
         unmounted cleanly). check: the configuration (and mountpoint) passed every check. \
         --help, --version.",
    );
    item(
        &mut roff,
        "1",
        "Any failure, reported as one line starting with \"relocfs: \" on standard error. \
         When mounting fails, nothing is left mounted. Under systemd (NOTIFY_SOCKET set), \
         also a mount unmounted from outside rather than by SIGTERM, so that \
         Restart=on-failure mounts it again.",
    );
    item(
        &mut roff,
        "2",
        "The command line could not be parsed (usage error).",
    );

    roff.control("SH", ["ENVIRONMENT"]);
    item(
        &mut roff,
        "RUST_LOG",
        "Diagnostics level: error, warn (the default), info or debug. Diagnostics go to \
         standard error, which only -f keeps (systemd sends it to the journal).",
    );

    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/relocfs/*.toml",
            "Configurations, one per mountpoint; see relocfs.toml(5). The relocfs@.service \
             template reads /etc/relocfs/INSTANCE.toml, INSTANCE being the escaped mountpoint.",
        ),
        (
            "/var/log/relocfs/*.jsonl",
            "Audit logs (one JSON object per line), where the configurations put them; \
             rotated by /etc/logrotate.d/relocfs.",
        ),
        (
            "/lib/systemd/system/relocfs@.service",
            "The service template, for a mount managed as a service instead of by fstab.",
        ),
        (
            "/usr/share/doc/relocfs/examples/config.example.toml",
            "A configuration with every key and its default.",
        ),
        ("/etc/fstab", "Mounts of type fuse.relocfs; see fstab(5)."),
        ("/dev/fuse", "The FUSE device (module fuse)."),
    ] {
        item(&mut roff, path, what);
    }

    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "relocfs.toml(5), fstab(5), mount(8), umount(8), mount.fuse3(8), fusermount3(1), \
         systemd.mount(5), systemd-escape(1), logrotate(8)",
    )]);
    roff
}
