//! The daemon's diagnostics: `log` records filtered like env_logger (RUST_LOG), written to
//! stderr while there is a terminal or a journal reading it (`-f`, systemd), and to syslog once
//! a background daemon has let go of its terminal, so a refused reload still leaves a trace.

use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, Log, Metadata, Record};

static TO_SYSLOG: AtomicBool = AtomicBool::new(false);

struct Logger {
    stderr: env_logger::Logger,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.stderr.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.stderr.matches(record) {
            return;
        }
        if !TO_SYSLOG.load(Ordering::Relaxed) {
            return self.stderr.log(record);
        }
        let priority = match record.level() {
            Level::Error => libc::LOG_ERR,
            Level::Warn => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Debug | Level::Trace => libc::LOG_DEBUG,
        };
        crate::sys::syslog(priority, &record.args().to_string());
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Installs the logger (default level info; fuser's noise filtered out).
pub fn init() {
    let stderr = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        // fuser warns about a second unmount attempt after every clean `umount`: noise.
        "info,fuser=warn,fuser::session=error",
    ))
    .format_target(false)
    .build();
    let max = stderr.filter();
    if log::set_boxed_logger(Box::new(Logger { stderr })).is_ok() {
        log::set_max_level(max);
    }
}

/// From now on diagnostics go to syslog (facility daemon, tagged relocfs[PID]).
pub fn to_syslog() {
    crate::sys::openlog_daemon();
    TO_SYSLOG.store(true, Ordering::Relaxed);
}
