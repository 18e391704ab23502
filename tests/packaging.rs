//! Packaging checks: man pages, completions, systemd unit, logrotate and .deb assets agree with the code.
//!
//! Fast (a few seconds) and independent of the .deb: the man pages and completions come from
//! the built binary's hidden `relocfs generate`. Checks that need an external tool
//! (systemd-analyze, logrotate, groff) are skipped when it is missing, except with CI=true,
//! where a missing tool fails the test.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_relocfs");

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An external tool, by name. Missing: skip (None), or panic when CI=true.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&dirs)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is missing: CI must install it (apt-get install {package})");
        }
        eprintln!("skipped: {name} not found (apt-get install {package})");
    }
    found
}

/// Runs `relocfs generate WHAT DIR` and returns the paths it printed.
fn generate(what: &str, dir: &Path) -> Vec<PathBuf> {
    let out = run(Command::new(BIN).args(["generate", what]).arg(dir));
    assert!(
        out.status.success(),
        "`relocfs generate {what}` failed ({}): {}\n\
         (src/generate.rs must be wired as the hidden `generate` subcommand)",
        out.status,
        text(&out)
    );
    let printed: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    for p in &printed {
        assert!(
            p.is_file(),
            "generate {what} printed {p:?}, which is not a file"
        );
    }
    printed
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

/// The subcommands users see: not hidden (`generate`), not clap's `help`.
fn visible_subcommands() -> Vec<String> {
    let cmd = relocfs::cli::Cli::command();
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    for expected in ["check", "demo"] {
        assert!(
            subs.iter().any(|s| s == expected),
            "no `{expected}` subcommand in {subs:?}"
        );
    }
    subs
}

/// Roff source to plain text, enough to search: font changes and escapes removed.
fn plain(roff: &str) -> String {
    roff.replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\-", "-")
        .replace("\\&", "")
        .replace("\\*(Aq", "'")
}

// ---- (a) every config key documented ----------------------------------------------------

/// Config keys as config.rs's serde structs declare them: table name -> keys. The top-level
/// struct is `RawConfig`; a field whose type names another `Raw*` struct is a table, whose
/// keys are that struct's fields.
fn config_keys_from_source() -> BTreeMap<String, Vec<String>> {
    let source = read("src/config/mod.rs");
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut lines = source.lines().peekable();
    let mut attrs: Vec<String> = Vec::new();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("#[") {
            attrs.push(trimmed.to_string());
            continue;
        }
        let header = trimmed
            .strip_prefix("pub ")
            .unwrap_or(trimmed)
            .strip_prefix("struct ")
            .and_then(|rest| rest.strip_suffix('{'))
            .map(|name| name.trim().split('<').next().unwrap_or("").to_string());
        let Some(name) = header.filter(|n| n.starts_with("Raw")) else {
            if !trimmed.starts_with("//") {
                attrs.clear();
            }
            continue;
        };
        if name == "RawConfig" || attrs.iter().any(|a| a.contains("Deserialize")) {
            assert!(
                attrs.iter().any(|a| a.contains("deny_unknown_fields")),
                "config.rs: {name} lacks #[serde(deny_unknown_fields)]: this test (and the \
                 man page) assume unknown keys are refused"
            );
        }
        attrs.clear();
        let mut fields = Vec::new();
        for field in lines.by_ref() {
            let f = field.trim();
            if f == "}" {
                break;
            }
            if f.starts_with("//") {
                continue;
            }
            if f.starts_with("#[") {
                assert!(
                    !(f.contains("rename") || f.contains("flatten") || f.contains("alias")),
                    "config.rs {name}: `{f}` changes key names: teach tests/packaging.rs"
                );
                continue;
            }
            let f = f.strip_prefix("pub ").unwrap_or(f);
            if let Some((key, ty)) = f.split_once(':') {
                fields.push((key.trim().to_string(), ty.trim().to_string()));
            }
        }
        structs.insert(name, fields);
    }
    let top = structs
        .get("RawConfig")
        .unwrap_or_else(|| panic!("no `struct RawConfig` in src/config/mod.rs: update this test"));
    let mut tables = BTreeMap::new();
    for (table, ty) in top {
        let child = structs
            .keys()
            .filter(|name| ty.contains(name.as_str()))
            .max_by_key(|name| name.len())
            .unwrap_or_else(|| panic!("RawConfig.{table}: {ty} is not a Raw* table"));
        let keys: Vec<String> = structs[child].iter().map(|(k, _)| k.clone()).collect();
        tables.insert(table.clone(), keys);
    }
    assert!(
        tables
            .get("map")
            .is_some_and(|k| k.iter().any(|k| k == "from")),
        "extraction from config.rs found no map.from: {tables:?}"
    );
    tables
}

/// The source list is exactly what the parser accepts: an unknown key in any table is
/// refused, and the shipped example, which the parser accepts, uses every listed key.
#[test]
fn every_config_key_is_in_the_example_and_the_man_page() {
    let tables = config_keys_from_source();
    let map = "[[map]]\nfrom = \"/\"\nto = \"/opt/app\"\n";

    for table in tables.keys() {
        let header = if table == "map" {
            "[[map]]\nfrom = \"/x\"\nto = \"/opt/x\"\n".to_string()
        } else {
            format!("[{table}]\n")
        };
        let toml = format!("{map}{header}packaging_bogus_key = 1\n");
        match relocfs::config::parse(&toml, Path::new("t.toml")) {
            Ok(_) => panic!("[{table}] accepted an unknown key: {toml}"),
            Err(e) => assert!(
                e.to_string().contains("packaging_bogus_key"),
                "[{table}]: {e}"
            ),
        }
    }

    let example_text = read("config.example.toml");
    relocfs::config::parse(&example_text, Path::new("config.example.toml"))
        .unwrap_or_else(|e| panic!("config.example.toml is refused: {e}"));
    let example: toml::Table = example_text.parse().expect("config.example.toml is TOML");

    let man = read("packaging/man/relocfs.toml.5");
    let mut missing = Vec::new();
    for (table, keys) in &tables {
        let in_example: Vec<&toml::Table> = match example.get(table) {
            Some(toml::Value::Table(t)) => vec![t],
            Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_table()).collect(),
            _ => {
                missing.push(format!("config.example.toml: no [{table}]"));
                Vec::new()
            }
        };
        let section = man_subsection(&man, table);
        if section.is_none() {
            missing.push(format!(
                "relocfs.toml.5: no `.SS \"[{table}] keys\"` heading"
            ));
        }
        for key in keys {
            if !in_example.iter().any(|t| t.contains_key(key)) {
                missing.push(format!("config.example.toml: [{table}] {key}"));
            }
            if let Some(section) = section {
                let documented = section
                    .lines()
                    .any(|l| l == format!(".B {key}") || l.starts_with(&format!(".BR {key} ")));
                if !documented {
                    missing.push(format!(
                        "relocfs.toml.5: [{table}] {key} (a `.B {key}` item)"
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented config keys:\n{}",
        missing.join("\n")
    );
}

/// The text of relocfs.toml.5 from the `.SS` heading naming `[table]` or `[[table]]` to the
/// next heading.
fn man_subsection<'a>(man: &'a str, table: &str) -> Option<&'a str> {
    let names = [format!("[{table}]"), format!("[[{table}]]")];
    let start = man.match_indices(".SS ").map(|(i, _)| i).find(|&i| {
        let line = man[i..].lines().next().unwrap_or("");
        names.iter().any(|n| {
            line.contains(&format!("\"{n} keys\"")) || line.contains(&format!(" {n} keys"))
        })
    })?;
    let body = &man[start..];
    let heading_len = body.find('\n').map_or(body.len(), |n| n + 1);
    let end = body[heading_len..]
        .find("\n.SH")
        .into_iter()
        .chain(body[heading_len..].find("\n.SS"))
        .min()
        .map_or(body.len(), |e| e + heading_len);
    Some(&body[..end])
}

// ---- (b) generated man pages and completions ----------------------------------------------

#[test]
fn man_pages_cover_every_subcommand_and_option() {
    let dir = tempfile::tempdir().unwrap();
    let written = generate("man", dir.path());
    assert_eq!(names(&written), ["relocfs.8", "relocfs.toml.5"]);

    let config_page = fs::read_to_string(dir.path().join("relocfs.toml.5")).unwrap();
    assert_eq!(config_page, read("packaging/man/relocfs.toml.5"));

    let roff = fs::read_to_string(dir.path().join("relocfs.8")).unwrap();
    assert!(roff.contains(".TH RELOCFS 8 "), "not a section 8 page");
    let page = plain(&roff);
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "EXAMPLES",
        "SIGNALS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ] {
        let found = page
            .lines()
            .any(|l| l == format!(".SH {heading}") || l == format!(".SH \"{heading}\""));
        assert!(found, "relocfs.8 has no {heading} section");
    }
    for sub in visible_subcommands() {
        assert!(
            page.contains(&format!("relocfs {sub}")),
            "relocfs.8 does not mention `relocfs {sub}`"
        );
    }
    for option in ["-f, --foreground", "-o <OPTS>", "[-f]", "[-o OPTS]"] {
        assert!(
            page.contains(option),
            "relocfs.8 does not mention {option:?}"
        );
    }
    for needle in [
        "fuse.relocfs",
        "SIGHUP",
        "SIGTERM",
        "relocfs.toml(5)",
        "relocfs@",
    ] {
        assert!(
            page.contains(needle),
            "relocfs.8 does not mention {needle:?}"
        );
    }
    assert!(
        !page.contains("relocfs generate"),
        "the hidden `generate` subcommand is documented"
    );
}

/// Both pages format without a single groff warning (roff typos, bad macros).
#[test]
fn man_pages_format_cleanly() {
    let Some(groff) = tool("groff", "groff-base") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for page in generate("man", dir.path()) {
        let out = run(Command::new(&groff)
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {}: {}",
            page.display(),
            text(&out)
        );
    }
}

#[test]
fn completions_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let written = generate("completions", dir.path());
    assert_eq!(
        names(&written),
        ["relocfs.bash", "_relocfs", "relocfs.fish"]
    );
    let subs = visible_subcommands();
    for file in &written {
        let script = fs::read_to_string(file).unwrap();
        for sub in &subs {
            assert!(script.contains(sub.as_str()), "{file:?} lacks `{sub}`");
        }
        assert!(script.contains("foreground"), "{file:?} lacks --foreground");
        assert!(
            !script.contains("generate"),
            "{file:?} offers the hidden `generate`"
        );
    }
    let out = run(Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("relocfs.bash")));
    assert!(out.status.success(), "bash -n relocfs.bash: {}", text(&out));
}

// ---- (c) systemd unit ----------------------------------------------------------------------

#[test]
fn systemd_unit_verifies() {
    let unit = read("packaging/systemd/relocfs@.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/relocfs -f -o allow_other /etc/relocfs/%i.toml %f",
        "ExecReload=/usr/bin/relocfs reload %f",
        "Restart=on-failure",
        "RequiresMountsFor=%f /var/log/relocfs",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "relocfs@.service lacks `{line}`"
        );
    }
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("relocfs@.service");
    fs::write(&copy, unit.replace("/usr/bin/relocfs", BIN)).unwrap();
    let out = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy));
    // Unknown keys and bad values are only warnings to verify: any output is a finding.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify relocfs@.service ({}):\n{}",
        out.status,
        text(&out)
    );
}

/// The exposure `systemd-analyze security` gives the unit: it may only go down. 9.6 UNSAFE
/// before the unit was sandboxed; what is left is what a root FUSE daemon that mounts for the
/// host and acts as each caller needs (see the unit's comments). The figure the unit's comment
/// states must be the one measured. (4.3 when @resources was denied whole; 4.4 since
/// sched_setaffinity is allowed, for the io_uring transport's per-CPU queue threads.)
const UNIT_EXPOSURE_MAX: f64 = 4.4;

#[test]
fn systemd_unit_exposure_only_goes_down() {
    let unit = read("packaging/systemd/relocfs@.service");
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let out = run(Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(path("packaging/systemd/relocfs@.service")));
    let report = text(&out);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    let verdict = line.rsplit(": ").next().unwrap_or_default();
    let score: f64 = verdict
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= UNIT_EXPOSURE_MAX,
        "relocfs@.service exposure rose to {score} (pinned at {UNIT_EXPOSURE_MAX}): {line}\n{report}"
    );
    let words: Vec<&str> = verdict.split_whitespace().take(2).collect();
    let stated = format!("rates this unit {}", words.join(" "));
    assert!(
        unit.contains(&stated),
        "relocfs@.service's comment should say `{stated}` (measured: {line}); lower \
         UNIT_EXPOSURE_MAX to the new figure too"
    );
}

// ---- (d) logrotate -----------------------------------------------------------------------

#[test]
fn logrotate_config_parses_and_covers_the_example_log() {
    let config = read("packaging/logrotate/relocfs");
    assert!(config.contains("/var/log/relocfs/*.jsonl {"), "{config}");
    assert!(
        config.contains("\t\t/usr/bin/relocfs reopen --all\n") && !config.contains("pkill"),
        "postrotate must ask the daemons with `relocfs reopen --all`, never signal by name: {config}"
    );
    let example: toml::Table = read("config.example.toml").parse().unwrap();
    let log = example["audit"]["log"].as_str().unwrap();
    assert!(
        log.starts_with("/var/log/relocfs/") && log.ends_with(".jsonl"),
        "the example's audit log {log} is not rotated by packaging/logrotate/relocfs"
    );

    let Some(logrotate) = tool("logrotate", "logrotate") else {
        return;
    };
    // logrotate ignores config files that are group- or world-writable.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("relocfs");
    fs::write(&copy, &config).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
    // -d: parse and plan only; nothing is rotated and postrotate does not run.
    let out = run(Command::new(logrotate)
        .arg("-d")
        .arg("-s")
        .arg(dir.path().join("state"))
        .arg(&copy));
    let report = text(&out);
    // logrotate -d exits 0 even for unknown directives: its "error:" lines are the verdict.
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(
        out.status.success() && errors.is_empty(),
        "logrotate -d ({}):\n{report}",
        out.status
    );
    assert!(
        report.contains("rotating pattern: /var/log/relocfs/*.jsonl"),
        "{report}"
    );
}

// ---- the .deb's assets ---------------------------------------------------------------------

/// Every asset in [package.metadata.deb] exists in the tree, or is one the generator writes
/// (into target/packaging/), so `cargo deb --no-build` after build-deb.sh cannot miss one.
#[test]
fn deb_assets_exist_or_are_generated() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let deb = manifest["package"]["metadata"]["deb"].as_table().unwrap();
    let assets = deb["assets"].as_array().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut generated = names(&generate("man", &dir.path().join("man")))
        .into_iter()
        .map(|n| format!("target/packaging/man/{n}.gz"))
        .collect::<Vec<_>>();
    generated.extend(
        names(&generate("completions", &dir.path().join("completions")))
            .into_iter()
            .map(|n| format!("target/packaging/completions/{n}")),
    );

    let mut dests = Vec::new();
    for asset in assets {
        let asset = asset.as_array().expect("assets are [source, dest, mode]");
        let source = asset[0].as_str().unwrap();
        dests.push(asset[1].as_str().unwrap().to_string());
        if source == "target/release/relocfs" {
            continue;
        }
        if source.starts_with("target/packaging/") {
            assert!(
                generated.iter().any(|g| g == source),
                "asset {source} is not written by `relocfs generate` ({generated:?})"
            );
        } else {
            assert!(path(source).is_file(), "asset {source} does not exist");
        }
    }
    for generated in &generated {
        assert!(
            assets.iter().any(|a| a[0].as_str() == Some(generated)),
            "{generated} is generated but not packaged"
        );
    }
    for dest in [
        "usr/bin/",
        "usr/share/man/man8/",
        "usr/share/man/man5/",
        "lib/systemd/system/",
        "etc/logrotate.d/relocfs",
        "usr/share/bash-completion/completions/relocfs",
        "usr/share/zsh/vendor-completions/_relocfs",
        "usr/share/fish/vendor_completions.d/relocfs.fish",
        "usr/share/doc/relocfs/examples/",
    ] {
        assert!(
            dests.iter().any(|d| d == dest),
            "no asset installs to {dest}"
        );
    }
    let conf_files = deb["conf-files"].as_array().unwrap();
    assert!(conf_files
        .iter()
        .any(|c| c.as_str() == Some("/etc/logrotate.d/relocfs")));
    let depends = deb["depends"].as_str().unwrap();
    assert!(depends.split(',').any(|d| d.trim() == "fuse3"), "{depends}");
}

// ---- the fstab line: README, --help, relocfs(8) --------------------------------------------

/// The fstab entries of type fuse.relocfs in `text`: lines of six fields, split on whitespace.
fn fstab_entries(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.len() == 6 && f[2] == "fuse.relocfs")
        .collect()
}

/// The one fstab line in the code blocks of README's "Mount from /etc/fstab": the canonical one.
fn readme_fstab_entry() -> Vec<String> {
    let readme = read("README.md");
    let start = readme
        .find("\n### Mount from /etc/fstab\n")
        .expect("README has no `### Mount from /etc/fstab` section");
    let section = &readme[start + 1..];
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| section[4..].find(h))
        .min()
        .map_or(section.len(), |e| e + 4);
    let section = &section[..end];
    let mut in_code = false;
    let mut code = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            code.push_str(line);
            code.push('\n');
        }
    }
    let entries = fstab_entries(&code);
    assert_eq!(
        entries.len(),
        1,
        "README \"Mount from /etc/fstab\" should show one fstab line: {entries:?}"
    );
    let entry = entries.into_iter().next().unwrap();
    let options: Vec<&str> = entry[3].split(',').collect();
    for needed in ["allow_other", "nodev", "nosuid"] {
        assert!(
            options.contains(&needed),
            "README's fstab line lacks {needed}: {entry:?}"
        );
    }
    entry
}

/// `relocfs --help` shows the README's fstab line, field for field.
#[test]
fn help_fstab_line_is_the_readmes() {
    let readme = readme_fstab_entry();
    let out = run(Command::new(BIN).arg("--help"));
    assert!(out.status.success(), "relocfs --help: {}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    let entries = fstab_entries(&help);
    assert_eq!(
        entries,
        [readme],
        "the fstab line in `relocfs --help` (src/cli/args.rs after_help) is not README's:\n{help}"
    );
}

/// relocfs(8)'s fstab examples (other paths) have the README's type, options and fields 5-6;
/// only the x-systemd.* options differ (one example has them, for the other path).
#[test]
fn man_page_fstab_lines_agree_with_the_readme() {
    let readme = readme_fstab_entry();
    let without_x = |options: &str| -> Vec<String> {
        options
            .split(',')
            .filter(|o| !o.starts_with("x-"))
            .map(str::to_string)
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    generate("man", dir.path());
    let page = plain(&fs::read_to_string(dir.path().join("relocfs.8")).unwrap());
    let entries = fstab_entries(&page);
    assert!(!entries.is_empty(), "relocfs.8 shows no fstab line");
    for entry in &entries {
        assert_eq!(
            (without_x(&entry[3]), &entry[4..]),
            (without_x(&readme[3]), &readme[4..]),
            "relocfs.8's fstab line {entry:?} differs from README's {readme:?} (beyond x-*)"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e[3].contains("x-systemd.requires-mounts-for=")),
        "relocfs.8 no longer shows x-systemd.requires-mounts-for as README does: {entries:?}"
    );
}

// ---- the RPM spec --------------------------------------------------------------------------

/// A `%name` section of the spec: from its line to the next section line.
fn spec_section<'a>(spec: &'a str, name: &str) -> &'a str {
    let sections = [
        "%description",
        "%prep",
        "%build",
        "%check",
        "%install",
        "%post",
        "%postun",
        "%pre",
        "%preun",
        "%files",
        "%changelog",
    ];
    let start = spec
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| spec[i..].lines().next() == Some(name))
        .unwrap_or_else(|| panic!("relocfs.spec has no {name} section"));
    let body = &spec[start..];
    let end = body
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let line = body[i..].lines().next().unwrap_or("");
            sections.contains(&line.split_whitespace().next().unwrap_or(""))
        })
        .unwrap_or(body.len());
    &body[..end]
}

/// The spec ships every .deb asset (Cargo.toml's [package.metadata.deb]) by its tree path, is
/// the crate's version, and does for systemd what the .deb's maintainer scripts do. (CI builds
/// it and checks the package: packaging/ci-check-rpm.sh.)
#[test]
fn rpm_spec_ships_the_deb_assets() {
    let spec = read("packaging/rpm/relocfs.spec");
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let version = manifest["package"]["version"].as_str().unwrap();
    assert!(
        spec.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Version:", version]),
        "relocfs.spec's Version is not Cargo.toml's {version}"
    );
    assert!(
        spec.contains(&format!("relocfs-{version}.tar.gz")),
        "relocfs.spec's comments name another tarball than relocfs-{version}.tar.gz"
    );

    let install = spec_section(&spec, "%install");
    let installed: Vec<&str> = install
        .lines()
        .filter_map(|l| l.trim().strip_prefix("install -Dpm "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let deb = manifest["package"]["metadata"]["deb"].as_table().unwrap();
    for asset in deb["assets"].as_array().unwrap() {
        let source = asset[0].as_str().unwrap();
        let source = if source == "target/release/relocfs" {
            "%{relocfs_bin}"
        } else {
            source
        };
        assert!(
            installed.contains(&source),
            "relocfs.spec's %install does not install the .deb asset {source}: {installed:?}"
        );
    }
    for conf in deb["conf-files"].as_array().unwrap() {
        let conf = conf.as_str().unwrap().replace("/etc/", "%{_sysconfdir}/");
        assert!(
            spec_section(&spec, "%files")
                .lines()
                .any(|l| l == format!("%config(noreplace) {conf}")),
            "relocfs.spec's %files lacks `%config(noreplace) {conf}`"
        );
    }
    assert!(spec.lines().any(|l| l == "Requires:       fuse3"));

    for (deb_script, rpm_section) in [("postinst", "%post"), ("postrm", "%postun")] {
        let reloads = |s: &str| s.contains("systemctl daemon-reload");
        assert_eq!(
            reloads(&read(&format!("packaging/debian/{deb_script}"))),
            reloads(spec_section(&spec, rpm_section)),
            "packaging/debian/{deb_script} and relocfs.spec's {rpm_section} disagree on \
             systemctl daemon-reload"
        );
    }
}
