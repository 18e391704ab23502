//! Real-FUSE integration tests for relocfs.
//!
//! They mount the real binary (`CARGO_BIN_EXE_relocfs`) and therefore need
//! root and /dev/fuse; without them each test prints a skip message and
//! returns -- except on CI (`CI=true`), where that is a failure.

mod common;

mod audit;
mod fdlimit;
mod fstab;
mod lifecycle;
mod prefix;
mod preflight;
mod readonly;
mod report;
mod reads;
mod readwrite;
mod security;
mod story;
mod syslog;
mod unprivileged;
