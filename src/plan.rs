//! What a mount is made of, derived once from the config file and the `-o` options: the rules,
//! which a reload may replace, and everything else, fixed until the next mount.
//!
//! A reload derives a whole new plan from the reread file and compares its fixed part with the
//! running one by type ([`Fixed::changed_keys`]), so a setting added to the plan cannot be
//! forgotten in that comparison: it does not compile until someone names its config key.

use std::path::PathBuf;

use crate::audit::{AuditOptions, RateLimit};
use crate::config::{Config, Rule, StagesConfig, Transport};
use crate::fs::FsOptions;
use crate::fuse::Tuning;
use crate::options::MountOptions;

/// Everything the mount needs.
#[derive(Debug, Clone)]
pub struct MountPlan {
    /// The prefix table's rules: a reload replaces them at once.
    pub rules: Vec<Rule>,
    /// The rest: a reload that changes any of it keeps the running value and says so.
    pub fixed: Fixed,
    /// `[stages]`: a reload applies it at once, as it does the rules' stages.
    pub stages: StagesConfig,
}

/// The part of a mount that only the next mount can change.
#[derive(Debug, Clone)]
pub struct Fixed {
    /// The config file (absolute): what a reload rereads, and the mount's default source name.
    pub source: PathBuf,
    /// `[audit] log`.
    pub audit_log: Option<PathBuf>,
    /// The rest of `[audit]`.
    pub audit: AuditOptions,
    /// `[fuse]` timeouts, passthrough and readdirplus.
    pub tuning: Tuning,
    /// `[fuse] threads`.
    pub threads: usize,
    /// `[metrics]`.
    pub metrics: crate::config::MetricsConfig,
    /// `[fuse] transport`, or `-o transport=`, which wins.
    pub transport: Transport,
    /// The `-o` options: given on the command line, never reread.
    pub mount: MountOptions,
}

impl MountPlan {
    pub fn new(config: &Config, mount: MountOptions) -> MountPlan {
        let audit = &config.audit;
        let fuse = &config.fuse;
        MountPlan {
            rules: config.rules.clone(),
            stages: config.stages.clone(),
            fixed: Fixed {
                source: config.source.clone(),
                audit_log: audit.log.clone(),
                audit: AuditOptions {
                    cmdline: audit.cmdline,
                    collapse: audit.collapse_window,
                    queue_bytes: audit.queue_bytes,
                    rate: audit.rate,
                    shutdown_timeout: audit.shutdown_timeout,
                },
                tuning: Tuning {
                    attr_timeout: fuse.attr_timeout,
                    entry_timeout: fuse.entry_timeout,
                    passthrough: fuse.passthrough,
                    readdirplus: fuse.readdirplus,
                },
                threads: fuse.threads,
                metrics: config.metrics.clone(),
                transport: mount.transport.unwrap_or(fuse.transport),
                mount,
            },
        }
    }
}

impl Fixed {
    /// fuser's session settings.
    pub fn fuser_config(&self) -> fuser::Config {
        let mut config = fuser::Config::default();
        config.mount_options = self.mount.to_fuser(&self.source.to_string_lossy());
        config.acl = self.mount.session_acl();
        config.n_threads = Some(self.threads);
        config.clone_fd = true;
        config
    }

    /// `transport_fds`: what the transport chosen at mount holds (see `FsOptions`).
    pub fn fs_options(&self, transport_fds: usize) -> FsOptions {
        FsOptions { transport_fds }
    }

    /// The config keys (`[section] key`) whose value differs in `new`. Every field is named
    /// here without `..`: a new setting does not compile until it is compared.
    pub fn changed_keys(&self, new: &Fixed) -> Vec<&'static str> {
        let Fixed {
            // A reload rereads the same file.
            source: _,
            audit_log,
            audit:
                AuditOptions {
                    cmdline,
                    collapse,
                    queue_bytes,
                    rate:
                        RateLimit {
                            bytes_per_sec,
                            burst,
                        },
                    shutdown_timeout,
                },
            tuning:
                Tuning {
                    attr_timeout,
                    entry_timeout,
                    passthrough,
                    readdirplus,
                },
            threads,
            metrics,
            transport,
            // Not from the file: the same on both sides of a reload.
            mount: _,
        } = self;
        let n = new;
        let mut changed = Vec::new();
        let mut differs = |key: &'static str, differ: bool| {
            if differ {
                changed.push(key);
            }
        };
        differs("[audit] log", *audit_log != n.audit_log);
        differs("[audit] cmdline", *cmdline != n.audit.cmdline);
        differs("[audit] collapse_window", *collapse != n.audit.collapse);
        differs("[audit] queue_bytes", *queue_bytes != n.audit.queue_bytes);
        differs(
            "[audit] rate_limit",
            *bytes_per_sec != n.audit.rate.bytes_per_sec,
        );
        differs("[audit] rate_burst", *burst != n.audit.rate.burst);
        differs(
            "[audit] shutdown_timeout",
            *shutdown_timeout != n.audit.shutdown_timeout,
        );
        differs("[fuse] threads", *threads != n.threads);
        differs("[fuse] transport", *transport != n.transport);
        differs("[fuse] passthrough", *passthrough != n.tuning.passthrough);
        differs("[fuse] readdirplus", *readdirplus != n.tuning.readdirplus);
        differs(
            "[fuse] attr_timeout",
            *attr_timeout != n.tuning.attr_timeout,
        );
        differs(
            "[fuse] entry_timeout",
            *entry_timeout != n.tuning.entry_timeout,
        );
        differs("[metrics] textfile", metrics.textfile != n.metrics.textfile);
        differs("[metrics] interval", metrics.interval != n.metrics.interval);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(text: &str) -> MountPlan {
        let config = crate::config::parse(text, Path::new("/etc/relocfs/x.toml")).unwrap();
        MountPlan::new(&config, MountOptions::default())
    }

    const BASE: &str = "[[map]]\nfrom = \"/\"\nto = \"/opt/app\"\n";

    #[test]
    fn rules_alone_change_nothing_fixed() {
        let old = plan(BASE);
        let new = plan(&format!("{BASE}[[map]]\nfrom = \"/keys\"\ndeny = true\n"));
        assert_eq!(new.rules.len(), 2);
        assert_eq!(old.fixed.changed_keys(&new.fixed), Vec::<&str>::new());
    }

    /// A rule's stage and `[stages]` apply at a reload: they are not fixed settings.
    #[test]
    fn stages_change_nothing_fixed() {
        let old = plan(BASE);
        let new = plan(&format!(
            "{BASE}stage = \"retired\"\n[stages]\njournal_socket = \"/run/j.sock\"\n"
        ));
        assert_eq!(old.fixed.changed_keys(&new.fixed), Vec::<&str>::new());
        assert_eq!(new.rules[0].stage.stage, crate::stage::Stage::Retired);
        assert_eq!(
            new.stages.journal_socket.as_deref(),
            Some(Path::new("/run/j.sock"))
        );
    }

    #[test]
    fn every_fixed_setting_is_named_when_it_changes() {
        let old = plan(BASE);
        let new = plan(&format!(
            "{BASE}[audit]\nlog = \"/var/log/x.jsonl\"\ncmdline = true\ncollapse_window = 2.5\n\
             queue_bytes = 2097152\nrate_limit = 0\nrate_burst = 131072\nshutdown_timeout = 9.0\n\
             [fuse]\nthreads = 3\npassthrough = \"off\"\nreaddirplus = false\n\
             attr_timeout = 5.0\nentry_timeout = 6.0\n"
        ));
        assert_eq!(
            old.fixed.changed_keys(&new.fixed),
            vec![
                "[audit] log",
                "[audit] cmdline",
                "[audit] collapse_window",
                "[audit] queue_bytes",
                "[audit] rate_limit",
                "[audit] rate_burst",
                "[audit] shutdown_timeout",
                "[fuse] threads",
                "[fuse] passthrough",
                "[fuse] readdirplus",
                "[fuse] attr_timeout",
                "[fuse] entry_timeout",
            ]
        );
        // And back: the comparison is symmetric.
        assert_eq!(new.fixed.changed_keys(&old.fixed).len(), 12);
    }

    #[test]
    fn the_fuser_config_follows_the_plan() {
        let p = plan(&format!("{BASE}[fuse]\nthreads = 5\n"));
        let c = p.fixed.fuser_config();
        assert_eq!(c.n_threads, Some(5));
        assert!(c.clone_fd);
        assert!(c
            .mount_options
            .contains(&fuser::MountOption::FSName("/etc/relocfs/x.toml".into())));
    }
}
