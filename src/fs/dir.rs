//! Directory handles: opendir, readdir, readdirplus and releasedir, and the listing state.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use super::{Attr, Caller, Error, Fs, Handle, ListEntry, Opened, OpenedFlags, Result};
use crate::node::{lock, virtual_id, Node, ROOT_ID};
use crate::sys;

/// A real directory's listing is read from its fd chunk by chunk as the kernel asks, so a
/// handle costs a chunk of memory, not a copy of the directory; the kernel's offsets are the
/// real filesystem's (`d_off`), so seekdir, rewinddir and changes during a listing behave as
/// on the real directory. Names the prefix table owns follow the real entries, at offsets
/// from `TAIL_OFFSET` on.
#[derive(Default)]
pub(super) struct DirState {
    /// The offset just after the last entry handed out (where the fd is, past `pending`).
    pub(super) pos: u64,
    /// Entries read from the fd but not yet handed out, each with its next offset.
    pub(super) pending: VecDeque<(sys::DirEntry, u64)>,
}

impl std::fmt::Debug for DirState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirState")
            .field("pos", &self.pos)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Offsets of the entries a pass-through directory gets from the prefix table: above every
/// real `d_off` (ext4's largest is 2^63 - 1).
pub(super) const TAIL_OFFSET: u64 = 1 << 63;

impl Fs {
    pub fn opendir(&self, caller: Caller, id: u64, flags: i32) -> Result<Opened> {
        let node = self.node(id)?;
        let result = self.opendir_inner(caller, &node, flags);
        self.record(
            caller,
            "opendir",
            &node,
            None,
            None,
            result.as_ref().map(|_| ()),
        );
        Ok(Opened {
            fh: result?,
            flags: OpenedFlags::DIR,
            passthrough: None,
        })
    }

    pub(super) fn opendir_inner(
        &self,
        caller: Caller,
        node: &Arc<Node>,
        flags: i32,
    ) -> Result<u64> {
        self.stage_gate(caller, node, None)?;
        if !node.is_dir() {
            return Err(Error::NotDir);
        }
        let fd = self.fd(node)?;
        let admitted = self.admit(caller.uid)?;
        let file = match fd {
            Some(fd) => Some(sys::reopen(
                fd.as_fd(),
                libc::O_RDONLY | libc::O_DIRECTORY | (flags & libc::O_NOATIME),
            )?),
            None => None,
        };
        let handle = Handle::Dir {
            node: Arc::clone(node),
            file,
            state: Mutex::new(DirState::default()),
        };
        Ok(self.add_handle(admitted, node, handle, self.opener(caller), flags))
    }

    /// Calls `add(entry, next_offset)` for the entries from `offset` on until it returns true
    /// (the kernel's buffer is full).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&ListEntry, u64) -> bool,
    ) -> Result<()> {
        self.each_entry(fh, offset, |_, entry, next| add(entry, next))
    }

    /// Like `readdir`, with each entry's attributes: every entry but `.` and `..` becomes a
    /// node with one kernel lookup, as the kernel counts it. An entry that does not fit the
    /// kernel's buffer is not sent, so its lookup is taken back. A denied entry is sent
    /// without attributes (id 0), so the name is listed but every access still comes here.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&ListEntry, u64, &Attr) -> bool,
    ) -> Result<()> {
        self.each_entry(fh, offset, |node, entry, next| {
            if entry.name == "." || entry.name == ".." {
                let mut stat = sys::zeroed_stat();
                stat.st_ino = entry.ino;
                stat.st_mode = libc::S_IFDIR;
                let attr = Attr {
                    id: entry.ino,
                    stat,
                };
                return add(entry, next, &attr);
            }
            match self.lookup_inner(node, &entry.name) {
                Ok(attr) => {
                    let full = add(entry, next, &attr);
                    if full {
                        self.nodes.forget(attr.id, 1);
                    }
                    full
                }
                Err(e) if e.errno() == libc::EACCES => {
                    let mut stat = sys::zeroed_stat();
                    stat.st_mode = entry.format;
                    add(entry, next, &Attr { id: 0, stat })
                }
                // Gone since it was read: leave it out.
                Err(_) => false,
            }
        })
    }

    /// Hands the entries of an open directory from `offset` on to `add(dir, entry, next)`
    /// until it returns true (full; that entry is handed out again next time).
    pub(super) fn each_entry(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&Arc<Node>, &ListEntry, u64) -> bool,
    ) -> Result<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { node, file, state } = &*handle else {
            return Err(Error::NotDir);
        };
        let parent_id = node.link().parent.map_or(ROOT_ID, |p| p.id);
        let Some(file) = file else {
            // A virtual directory: `.`, `..` and the prefix table's children, by index.
            let mut entries = vec![
                ListEntry {
                    ino: node.id,
                    format: libc::S_IFDIR,
                    name: ".".into(),
                },
                ListEntry {
                    ino: parent_id,
                    format: libc::S_IFDIR,
                    name: "..".into(),
                },
            ];
            entries.extend(self.table_entries(node));
            for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
                if add(node, entry, i as u64 + 1) {
                    break;
                }
            }
            return Ok(());
        };
        let tail = |from: u64, add: &mut dyn FnMut(&Arc<Node>, &ListEntry, u64) -> bool| {
            for (i, entry) in self
                .table_entries(node)
                .iter()
                .enumerate()
                .skip(from as usize)
            {
                if add(node, entry, TAIL_OFFSET + i as u64 + 1) {
                    break;
                }
            }
        };
        if offset >= TAIL_OFFSET {
            tail(offset - TAIL_OFFSET, &mut add);
            return Ok(());
        }
        let mut st = lock(state);
        if offset == 0 || offset != st.pos {
            st.pending.clear();
            sys::lseek(file, offset as i64, libc::SEEK_SET)?;
            st.pos = offset;
        }
        let trie = node.trie;
        let table = &node.rules.table;
        loop {
            let Some((raw, next)) = st.pending.front() else {
                let chunk = sys::read_dir_chunk(file)?;
                if chunk.is_empty() {
                    tail(0, &mut add);
                    return Ok(());
                }
                st.pending.extend(chunk);
                continue;
            };
            let next = *next;
            // Names the prefix table owns are its entries (listed in the tail), not these.
            let shadowed = trie.is_some_and(|t| table.child(t, &raw.name).is_some());
            if !shadowed {
                let entry = self.list_entry(node, parent_id, raw);
                if add(node, &entry, next) {
                    return Ok(());
                }
            }
            st.pos = next;
            st.pending.pop_front();
        }
    }

    /// A real directory entry as listed: `.` and `..` carry node ids, and a type the
    /// filesystem does not report is looked up.
    pub(super) fn list_entry(
        &self,
        node: &Arc<Node>,
        parent_id: u64,
        raw: &sys::DirEntry,
    ) -> ListEntry {
        let ino = match raw.name.as_encoded_bytes() {
            b"." => node.id,
            b".." => parent_id,
            _ => raw.ino,
        };
        let format = match dtype_to_format(raw.kind) {
            Some(f) => f,
            None => self
                .fd(node)
                .ok()
                .flatten()
                .and_then(|fd| sys::open_child(fd.as_fd(), &raw.name).ok())
                .and_then(|fd| sys::fstat(fd.as_fd()).ok())
                .map_or(libc::S_IFREG, |st| st.st_mode & libc::S_IFMT),
        };
        ListEntry {
            ino,
            format,
            name: raw.name.clone(),
        }
    }

    /// The prefix table's children of a directory, as entries.
    pub(super) fn table_entries(&self, node: &Arc<Node>) -> Vec<ListEntry> {
        let Some(t) = node.trie else {
            return Vec::new();
        };
        let table = &node.rules.table;
        table
            .children(t)
            .map(|(name, child)| {
                let ino = match table.rule_at(child).and_then(|r| node.rules.root_of(r)) {
                    Some(root) => root.stat.st_ino,
                    None => virtual_id(node.rules.generation, child),
                };
                ListEntry {
                    ino,
                    format: libc::S_IFDIR,
                    name: name.to_os_string(),
                }
            })
            .collect()
    }
    pub fn releasedir(&self, fh: u64) {
        self.close_handle(fh);
    }
}

pub(super) fn dtype_to_format(dtype: u8) -> Option<u32> {
    Some(match dtype {
        libc::DT_REG => libc::S_IFREG,
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        _ => return None,
    })
}
