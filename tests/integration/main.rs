//! Real-FUSE integration tests for relocfs.
//!
//! They mount the real binary (`CARGO_BIN_EXE_relocfs`) and therefore need
//! root and /dev/fuse; without them each test prints a skip message and
//! returns -- except on CI (`CI=true`), where that is a failure.

mod common;

mod attribution;
mod audit;
mod auditsafety;
mod clickhouse;
mod control;
mod demo;
mod fdlimit;
mod fleet;
mod fstab;
mod handles;
mod hardening;
mod idle;
mod ioctl;
mod lifecycle;
mod metrics;
mod output;
mod prefix;
mod preflight;
mod readonly;
mod reads;
mod readwrite;
mod reasons;
mod remount;
mod report;
mod reserved;
mod restart;
mod security;
mod stages;
mod story;
mod syslog;
mod transport;
mod unprivileged;

// Read-write rules: the proof (conformance, concurrency, races, differential).
mod coherence;
mod crossrule;
mod differential;
mod locks;
mod passthrough;
mod posix;
mod race;
mod rwaudit;
mod rwops;
mod setid;
mod sqlite;
