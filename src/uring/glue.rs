//! The ring's `Handler` is the wire codec (`crate::wire::Wire`) over the same core as the fuser
//! adapter: this file only turns an entry's byte areas into a `wire::Request`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::fs::Fs;
use crate::fuse::Tuning;
use crate::options::Access;
use crate::wire::{InHeader, Outcome, Request, Wire};

use super::Handler;

/// The handler the daemon's rings serve with. `dev` is a dup of the connection's `/dev/fuse`
/// fd (backing files for kernel passthrough are registered on it); `access` is the mount's
/// allow_root/allow_other choice, which the wire filters by as fuser's session does.
pub fn handler(fs: Arc<Fs>, tuning: Tuning, dev: Arc<OwnedFd>, access: Access) -> Arc<dyn Handler> {
    Arc::new(Wire::new(fs, tuning, dev).with_access(access))
}

impl Handler for Wire {
    fn serve(
        &self,
        in_header: &[u8],
        op: &[u8],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, i32> {
        let Some(header) = InHeader::parse(in_header) else {
            return Err(libc::EINVAL);
        };
        match Wire::serve(
            self,
            &Request {
                header,
                op,
                payload,
            },
            out,
        ) {
            Outcome::Reply(n) => Ok(n),
            Outcome::Error(errno) => Err(errno),
        }
    }

    fn may_block(&self, in_header: &[u8], op: &[u8]) -> bool {
        match InHeader::parse(in_header) {
            Some(header) => Wire::may_block_request(&Request {
                header,
                op,
                payload: &[],
            }),
            None => false,
        }
    }
}
