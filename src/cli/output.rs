//! What commands write to stdout and stderr: their output, and the one line of a failure.

use std::io::{self, ErrorKind, Write};

use crate::config::printable;

/// Writes a command's output to stdout. A reader that went away (`relocfs check ... | head -1`)
/// ends the output quietly and successfully, as for ripgrep; other write errors are reported.
pub fn print_out(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
}

/// Tells a failure: `relocfs: MESSAGE` on one line, whatever a path or a config value in it
/// holds; nothing for an empty message (already told). A closed stderr leaves only the exit
/// status to tell.
pub fn print_failure(message: &str) {
    if !message.is_empty() {
        let _ = writeln!(io::stderr(), "relocfs: {}", printable(message));
    }
}
