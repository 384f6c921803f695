//! `MemDisk`: an in-memory model of the `Disk` rules, for tests and the simulator (it is
//! not in the shipped binary: the `sim-disk` feature or `cfg(test)` builds it). It keeps,
//! per file, the synced contents plus the list of writes since, and per directory the
//! synced names plus the changes since, so `crash` can drop (or tear) any suffix of what
//! was not synced, as a caller's seeded RNG decides. It has no randomness, clock or thread
//! of its own.

use super::disk::{Disk, check_name, lock};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

/// What `MemDisk::crash` asks the caller about: one thing with unsynced changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsynced<'a> {
    /// The directory has `ops` name changes (create, rename, remove) since its last sync.
    Dir { ops: usize },
    /// File `name` has `ops` writes or length changes since its last sync, `bytes` bytes
    /// written in all.
    File { name: &'a str, ops: usize, bytes: u64 },
}

/// How much of an unsynced change list survives a crash: the first `ops` changes whole,
/// then (for a file) the first `torn_bytes` bytes of the next write, if it is a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    pub ops: usize,
    pub torn_bytes: usize,
}

impl Keep {
    /// Everything unsynced is lost.
    pub const NONE: Keep = Keep { ops: 0, torn_bytes: 0 };
    /// Everything unsynced survives (the OS happened to write it all back).
    pub const ALL: Keep = Keep { ops: usize::MAX, torn_bytes: 0 };
}

#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl DataOp {
    fn apply(&self, buf: &mut Vec<u8>, torn_bytes: Option<usize>) {
        match self {
            DataOp::Write { offset, data } => {
                let data = match torn_bytes {
                    Some(n) => &data[..n.min(data.len())],
                    None => &data[..],
                };
                write_into(buf, *offset, data);
            }
            // A length change is one metadata update: it happens whole or not at all.
            DataOp::SetLen(len) if torn_bytes.is_none() => buf.resize(to_usize(*len), 0),
            DataOp::SetLen(_) => {}
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            DataOp::Write { data, .. } => data.len() as u64,
            DataOp::SetLen(_) => 0,
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("MemDisk file offsets fit in memory")
}

fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = to_usize(offset);
    let end = start + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

#[derive(Clone, Debug, Default)]
struct Inode {
    current: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<DataOp>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link { name: String, inode: u64 },
    Rename { from: String, to: String },
    Remove { name: String },
}

impl DirOp {
    fn apply(&self, names: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Link { name, inode } => {
                names.insert(name.clone(), *inode);
            }
            DirOp::Rename { from, to } => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
            DirOp::Remove { name } => {
                names.remove(name);
            }
        }
    }
}

#[derive(Debug, Default)]
struct MemState {
    names: BTreeMap<String, u64>,
    synced_names: BTreeMap<String, u64>,
    dir_pending: Vec<DirOp>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    syncs: u64,
    /// Every change fails with an I/O error while set (an injected EIO).
    failing: bool,
}

impl MemState {
    fn check_failing(&self) -> io::Result<()> {
        if self.failing {
            return Err(io::Error::other("injected I/O failure (MemDisk::set_failing)"));
        }
        Ok(())
    }

    fn inode(&self, name: &str) -> io::Result<&Inode> {
        check_name(name)?;
        self.names.get(name).and_then(|i| self.inodes.get(i)).ok_or_else(|| not_found(name))
    }

    fn inode_mut(&mut self, name: &str) -> io::Result<&mut Inode> {
        check_name(name)?;
        let id = *self.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(self.inodes.get_mut(&id).expect("every linked name has an inode"))
    }

    fn data_op(&mut self, name: &str, op: DataOp) -> io::Result<()> {
        self.check_failing()?;
        let inode = self.inode_mut(name)?;
        op.apply(&mut inode.current, None);
        inode.pending.push(op);
        Ok(())
    }

    /// Drops inodes no name (current or synced) refers to.
    fn collect_garbage(&mut self) {
        let names = &self.names;
        let synced = &self.synced_names;
        let pending = &self.dir_pending;
        self.inodes.retain(|id, _| {
            names.values().any(|i| i == id)
                || synced.values().any(|i| i == id)
                || pending.iter().any(|op| matches!(op, DirOp::Link { inode, .. } if inode == id))
        });
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

/// An in-memory `Disk` that models what a crash keeps. Cloning shares the same disk, so
/// a simulated node can be torn down and reopened on the same contents.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Arc<Mutex<MemState>>,
}

impl MemDisk {
    /// The name `crash_losing` passes for the directory itself.
    pub const DIR: &'static str = ".";

    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// Simulates a power loss: everything not synced is lost, except what `fate` keeps.
    /// `fate` is asked first about the directory, then about each surviving file in name
    /// order, so a seeded caller gets the same result every run.
    pub fn crash(&self, mut fate: impl FnMut(Unsynced<'_>) -> Keep) {
        let mut s = lock(&self.state);
        let st = &mut *s;
        if !st.dir_pending.is_empty() {
            let keep = fate(Unsynced::Dir { ops: st.dir_pending.len() });
            let mut names = st.synced_names.clone();
            for op in st.dir_pending.iter().take(keep.ops) {
                op.apply(&mut names);
            }
            st.names = names;
        }
        st.synced_names = st.names.clone();
        st.dir_pending.clear();
        for (name, id) in &st.names {
            let inode = st.inodes.get_mut(id).expect("every linked name has an inode");
            if inode.pending.is_empty() {
                continue;
            }
            let bytes = inode.pending.iter().map(DataOp::bytes).sum();
            let keep = fate(Unsynced::File { name, ops: inode.pending.len(), bytes });
            let mut contents = inode.synced.clone();
            for op in inode.pending.iter().take(keep.ops) {
                op.apply(&mut contents, None);
            }
            if keep.ops < inode.pending.len() && keep.torn_bytes > 0 {
                inode.pending[keep.ops].apply(&mut contents, Some(keep.torn_bytes));
            }
            inode.synced = contents.clone();
            inode.current = contents;
            inode.pending.clear();
        }
        // Files not linked by a durable name are gone, and their pending writes with them.
        st.collect_garbage();
    }

    /// `crash` with a yes/no per file: `lose(name)` true drops all of that file's unsynced
    /// writes, false keeps them all. The directory is asked as `MemDisk::DIR`.
    pub fn crash_losing(&self, mut lose: impl FnMut(&str) -> bool) {
        self.crash(|u| {
            let name = match u {
                Unsynced::Dir { .. } => MemDisk::DIR,
                Unsynced::File { name, .. } => name,
            };
            if lose(name) { Keep::NONE } else { Keep::ALL }
        })
    }

    /// Simulates media corruption: flips the bits of one byte, in both the current and
    /// the durable contents.
    pub fn corrupt_byte(&self, name: &str, offset: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        let inode = s.inode_mut(name)?;
        let at = to_usize(offset);
        if at >= inode.current.len() || at >= inode.synced.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: offset {offset} past the end")));
        }
        inode.current[at] ^= 0xff;
        inode.synced[at] ^= 0xff;
        Ok(())
    }

    /// While `on`, every change (write, sync, create, rename, remove) fails with an I/O
    /// error, as a dying disk would; reads still work.
    pub fn set_failing(&self, on: bool) {
        lock(&self.state).failing = on;
    }

    /// Number of `sync_data` and `sync_dir` calls so far (for tests of group commit).
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }
}

impl Disk for MemDisk {
    fn create(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let mut s = lock(&self.state);
        s.check_failing()?;
        if s.names.contains_key(name) {
            return s.data_op(name, DataOp::SetLen(0));
        }
        s.next_inode += 1;
        let inode = s.next_inode;
        s.inodes.insert(inode, Inode::default());
        let op = DirOp::Link { name: name.to_string(), inode };
        op.apply(&mut s.names);
        s.dir_pending.push(op);
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        lock(&self.state).data_op(name, DataOp::Write { offset, data: data.to_vec() })
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        Ok(lock(&self.state).inode(name)?.current.clone())
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        let current = &s.inode(name)?.current;
        let start = to_usize(offset);
        match start.checked_add(len) {
            Some(end) if end <= current.len() => Ok(current[start..end].to_vec()),
            _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name}: read past the end"))),
        }
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(lock(&self.state).inode(name)?.current.len() as u64)
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        lock(&self.state).data_op(name, DataOp::SetLen(len))
    }

    fn sync_data(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.check_failing()?;
        s.syncs += 1;
        let inode = s.inode_mut(name)?;
        // Replaying the (usually few, small) pending changes onto the durable copy gives
        // `current` without copying the whole file on every sync.
        for op in inode.pending.drain(..) {
            op.apply(&mut inode.synced, None);
        }
        debug_assert_eq!(inode.synced.len(), inode.current.len(), "synced copy diverged from the file");
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(to)?;
        let mut s = lock(&self.state);
        s.check_failing()?;
        s.inode(from)?;
        let op = DirOp::Rename { from: from.to_string(), to: to.to_string() };
        op.apply(&mut s.names);
        s.dir_pending.push(op);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.check_failing()?;
        s.inode(name)?;
        let op = DirOp::Remove { name: name.to_string() };
        op.apply(&mut s.names);
        s.dir_pending.push(op);
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.state).names.keys().cloned().collect())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.check_failing()?;
        s.syncs += 1;
        s.synced_names = s.names.clone();
        s.dir_pending.clear();
        s.collect_garbage();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(d: &dyn Disk, name: &str) -> Vec<u8> {
        d.read(name).expect("file exists")
    }

    #[test]
    fn unsynced_writes_and_names_are_lost_on_crash() {
        let d = MemDisk::new();
        d.create("a").unwrap();
        d.write_at("a", 0, b"hello").unwrap();
        d.sync_data("a").unwrap();
        d.sync_dir().unwrap();
        d.write_at("a", 5, b" world").unwrap();
        d.create("b").unwrap();
        d.write_at("b", 0, b"x").unwrap();
        d.sync_data("b").unwrap(); // data synced, name not
        d.crash(|_| Keep::NONE);
        assert_eq!(contents(&d, "a"), b"hello");
        assert_eq!(d.list().unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn crash_can_keep_a_prefix_and_tear_the_next_write() {
        let d = MemDisk::new();
        d.create("a").unwrap();
        d.sync_dir().unwrap();
        d.write_at("a", 0, b"abc").unwrap();
        d.write_at("a", 3, b"defg").unwrap();
        d.write_at("a", 7, b"hij").unwrap();
        let mut asked = Vec::new();
        d.crash(|u| {
            asked.push(format!("{u:?}"));
            Keep { ops: 1, torn_bytes: 2 }
        });
        assert_eq!(asked, vec!["File { name: \"a\", ops: 3, bytes: 10 }".to_string()]);
        assert_eq!(contents(&d, "a"), b"abcde");
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let d = MemDisk::new();
        d.create("meta").unwrap();
        d.write_at("meta", 0, b"old").unwrap();
        d.sync_data("meta").unwrap();
        d.sync_dir().unwrap();
        d.create("meta.tmp").unwrap();
        d.write_at("meta.tmp", 0, b"new").unwrap();
        d.sync_data("meta.tmp").unwrap();
        d.rename("meta.tmp", "meta").unwrap();
        assert_eq!(contents(&d, "meta"), b"new");
        let keep_dir = d.clone();
        d.crash_losing(|name| name == MemDisk::DIR);
        assert_eq!(contents(&keep_dir, "meta"), b"old");
        assert_eq!(d.list().unwrap(), vec!["meta".to_string()]);

        d.create("meta.tmp").unwrap();
        d.write_at("meta.tmp", 0, b"new").unwrap();
        d.sync_data("meta.tmp").unwrap();
        d.rename("meta.tmp", "meta").unwrap();
        d.sync_dir().unwrap();
        d.crash(|_| Keep::NONE);
        assert_eq!(contents(&d, "meta"), b"new");
    }

    #[test]
    fn set_len_and_reads() {
        let d = MemDisk::new();
        d.create("f").unwrap();
        d.write_at("f", 4, b"zz").unwrap();
        assert_eq!(contents(&d, "f"), b"\0\0\0\0zz");
        d.set_len("f", 2).unwrap();
        assert_eq!(d.len("f").unwrap(), 2);
        assert!(d.read_at("f", 1, 2).is_err());
        assert_eq!(d.read_at("f", 0, 2).unwrap(), b"\0\0");
        assert!(d.exists("f").unwrap());
        assert!(!d.exists("g").unwrap());
        assert!(d.create("a/b").is_err());
    }
}
