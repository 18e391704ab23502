//! The exit codes of `relocfs`, in one place. This module depends on nothing else in the crate,
//! so the daemon and the demo, which end their own processes, name their codes here too.

use std::process::ExitCode;

/// How a `relocfs` process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what it was asked.
    Success,
    /// A refusal or an error, told in one `relocfs: ...` line on stderr (or already told: a
    /// detached daemon's error goes to the waiting parent, which prints it). Also how a mount
    /// under systemd ends when unmounted from outside, so that `Restart=on-failure` applies.
    Failure,
    /// The command line itself is wrong: clap's own code for its usage errors.
    Usage,
    /// `relocfs report --idle-for`: a rule was used within the window.
    InUse,
    /// `relocfs report --idle-for`: no use seen, but the logs cannot prove there was none
    /// (they start after the window's start, or events were lost or unreadable).
    Unproven,
    /// Ended by this signal (the demo, after cleaning up): 128 + the signal, as shells report.
    Signal(i32),
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::InUse => 3,
            Exit::Unproven => 4,
            Exit::Signal(sig) => 128 + sig,
        }
    }

    /// Ends the process now with this code (the forked daemon, the interrupted demo).
    pub fn exit_process(self) -> ! {
        std::process::exit(self.code())
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        // Every code above fits in a byte for the signals a process can receive (1..=64).
        ExitCode::from(u8::try_from(exit.code()).unwrap_or(1))
    }
}

/// Why a command failed: the one line to print (empty when it was already told) and the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Usage,
            message: message.into(),
        }
    }
}

/// The modules' errors are one-line strings: each is a plain failure.
impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            exit: Exit::Failure,
            message,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Failure.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Signal(libc::SIGTERM).code(), 143);
        assert_eq!(Failure::from("x".to_string()).exit, Exit::Failure);
    }

    /// clap's usage errors and ours agree.
    #[test]
    fn usage_is_clap_code() {
        use clap::Parser;
        let err = crate::cli::Cli::try_parse_from(["relocfs", "--no-such-flag"]).unwrap_err();
        assert_eq!(err.exit_code(), Exit::Usage.code());
    }
}
