//! relocfs: an audited FUSE redirect from a legacy path to a relocated installation.
//!
//! Data flow: `config` (validated file) -> `plan` (what the mount is made of) -> `prefix`
//! (rules as a trie) -> `daemon` (preflight, fork, mount, signals; `control` socket) -> a
//! transport (`fuse`, fuser's /dev/fuse loop) -> `fs` (the core, transport-neutral, over the
//! `node` table and the `sys` wrappers) -> `audit` (bounded queue to a JSON-lines writer
//! thread) -> `report` (reads the logs).

// Every `unsafe` block is in `sys`, the one module allowed it.
#![deny(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod creds;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod fs;
pub mod fuse;
pub mod generate;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod options;
pub mod plan;
pub mod prefix;
pub mod preflight;
pub mod report;
pub mod rules;
pub mod stage;
#[allow(unsafe_code)]
pub mod sys;
pub mod time;
pub mod uring;
pub mod wire;
