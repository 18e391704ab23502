//! The `relocfs` command: parses arguments, runs the chosen command, turns errors into one line.

use std::process::ExitCode;

fn main() -> ExitCode {
    relocfs::cli::main()
}
