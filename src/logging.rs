//! The daemon's diagnostics: `log` records filtered like env_logger (RUST_LOG), written to
//! stderr while there is a terminal or a journal reading it (`-f`, systemd), and to syslog once
//! a background daemon has let go of its terminal, so a refused reload still leaves a trace.

use std::ffi::CString;
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
        // A message with a NUL byte cannot be passed to syslog whole; cut it there.
        let text = record.args().to_string();
        let text = text.split('\0').next().unwrap_or_default();
        if let Ok(message) = CString::new(text) {
            // SAFETY: both strings are NUL-terminated; "%s" takes exactly one string argument.
            unsafe { libc::syslog(priority, c"%s".as_ptr(), message.as_ptr()) };
        }
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
    // SAFETY: the identifier is a static NUL-terminated string, as openlog requires (it keeps
    // the pointer).
    unsafe { libc::openlog(c"relocfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    TO_SYSLOG.store(true, Ordering::Relaxed);
}
