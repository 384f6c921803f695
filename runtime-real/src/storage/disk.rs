//! The few file operations durable storage needs, behind a trait so the simulator can
//! plug in a disk that loses unsynced writes on a crash.
//!
//! A `Disk` is one flat directory of named files. Names are plain file names (no `/`).
//! All operations are synchronous. What is durable after a crash is exactly:
//! - a file's contents as of its last `sync_data`, and
//! - the directory's names as of its last `sync_dir` (a create, rename or remove is not
//!   durable until then).
//!
//! `FsDisk` is the real thing over `std::fs`; `MemDisk` (in `mem_disk.rs`, built for tests
//! and the simulator only) is an in-memory model of those rules.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// What `Disk::settle` returns: resolves when the disk's work so far has completed.
pub type Settle = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// File operations over one flat directory. See the module docs for what is durable.
pub trait Disk: Send + Sync + 'static {
    /// Creates `name` empty, or truncates it to empty if it exists.
    fn create(&self, name: &str) -> io::Result<()>;
    /// Writes all of `data` at `offset` of the existing file `name`, growing it if needed
    /// (a gap reads as zeros).
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// The whole contents of `name`.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// `len` bytes of `name` from `offset`; `UnexpectedEof` if the file is shorter.
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Length of `name` in bytes.
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Cuts or extends (with zeros) `name` to `len` bytes.
    fn set_len(&self, name: &str, len: u64) -> io::Result<()>;
    /// Makes the contents (and length) of `name` durable.
    fn sync_data(&self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// All file names, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Makes the directory's names (creates, renames, removes) durable.
    fn sync_dir(&self) -> io::Result<()>;

    /// Whether `name` exists.
    fn exists(&self, name: &str) -> io::Result<bool> {
        match self.len(name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when `sync_data` blocks the calling OS thread for real (an fsync), so an async
    /// caller should move it off the runtime's worker threads. False for in-memory disks,
    /// whose calls must stay on the (deterministic) calling task.
    fn sync_blocks_thread(&self) -> bool {
        false
    }

    /// For a disk whose operations take simulated time (`MemDisk` with a model): a future
    /// that resolves when everything issued so far has completed. An fsync is only durable
    /// once it has, so an async caller awaits this before it reports anything durable.
    /// `None`: nothing to wait for (a real disk's calls return when they are done).
    fn settle(&self) -> Option<Settle> {
        None
    }
}

pub(super) fn check_name(name: &str) -> io::Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0');
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid storage file name {name:?}: must be a plain file name"),
        ));
    }
    Ok(())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the data consistent before anything that can
    // panic, so a poisoned lock still holds usable data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// FsDisk
// ---------------------------------------------------------------------------------------

/// The lock file in every data directory: `flock`ed by the one `FsDisk` that uses the
/// directory, holding that process's pid. Not a `Disk` file: `list` leaves it out.
pub const LOCK_FILE: &str = "roster.lock";

/// A `Disk` over a real directory. Open file handles are cached (a WAL appends to the
/// same segment thousands of times a second; an `open` per write would dominate).
///
/// It holds an exclusive `flock` on the directory's `roster.lock` for as long as it lives:
/// two processes writing one Raft log would each trust what the other overwrites.
pub struct FsDisk {
    root: PathBuf,
    handles: Mutex<BTreeMap<String, Arc<File>>>,
    /// Held, never read: the lock lasts while this descriptor is open.
    _lock: File,
}

impl std::fmt::Debug for FsDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsDisk").field("root", &self.root).finish()
    }
}

impl FsDisk {
    /// Uses the directory `root`, creating it (and its parents) if missing, and locks it:
    /// while this `FsDisk` lives, opening the same directory again (from any process, this
    /// one included) fails with `WouldBlock`, naming the directory and the holder's pid.
    pub fn open(root: impl AsRef<Path>) -> io::Result<FsDisk> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create data directory {}: {e}", root.display())))?;
        let lock = lock_dir(&root)?;
        Ok(FsDisk { root, handles: Mutex::new(BTreeMap::new()), _lock: lock })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    fn handle(&self, name: &str) -> io::Result<Arc<File>> {
        let path = self.path(name)?;
        let mut handles = lock(&self.handles);
        if let Some(f) = handles.get(name) {
            return Ok(f.clone());
        }
        let f = Arc::new(OpenOptions::new().read(true).write(true).open(&path).map_err(|e| with_path(e, &path))?);
        handles.insert(name.to_string(), f.clone());
        Ok(f)
    }
}

/// Takes the exclusive lock on `root`'s lock file and writes this process's pid into it.
/// `flock` (not `fcntl`) because its lock belongs to the open file, so a second open in
/// the same process is refused too, and the kernel drops it when the process dies, even
/// by `kill -9`: a stale lock file never blocks a restart.
fn lock_dir(root: &Path) -> io::Result<File> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| with_path(e, &path))?;
    // SAFETY: `flock` on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io::Error::new(e.kind(), format!("cannot lock {}: {e}", path.display())));
        }
        let mut holder = String::new();
        // The pid is informative only: the lock itself is the proof the directory is in use.
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another process (it has not written its pid yet)".to_string(),
            pid => format!("process {pid}"),
        };
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "data directory {} is in use by {holder}, which holds {}: stop that process, or give this node \
                 another data directory",
                root.display(),
                path.display()
            ),
        ));
    }
    file.set_len(0).map_err(|e| with_path(e, &path))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(|e| with_path(e, &path))?;
    Ok(file)
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(unix)]
fn pwrite_all(f: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, data, offset)
}

#[cfg(unix)]
fn pread_exact(f: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

impl Disk for FsDisk {
    fn create(&self, name: &str) -> io::Result<()> {
        let path = self.path(name)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| with_path(e, &path))?;
        lock(&self.handles).insert(name.to_string(), Arc::new(f));
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        pwrite_all(&*self.handle(name)?, offset, data)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let f = self.handle(name)?;
        let len = f.metadata()?.len();
        let len = usize::try_from(len).map_err(|_| io::Error::other(format!("{name}: too large to read")))?;
        let mut buf = vec![0u8; len];
        pread_exact(&f, 0, &mut buf)?;
        Ok(buf)
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = self.handle(name)?;
        let mut buf = vec![0u8; len];
        pread_exact(&f, offset, &mut buf)?;
        Ok(buf)
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let path = self.path(name)?;
        if let Some(f) = lock(&self.handles).get(name) {
            return Ok(f.metadata()?.len());
        }
        Ok(std::fs::metadata(&path).map_err(|e| with_path(e, &path))?.len())
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        self.handle(name)?.set_len(len)
    }

    fn sync_data(&self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_path, to_path) = (self.path(from)?, self.path(to)?);
        let mut handles = lock(&self.handles);
        std::fs::rename(&from_path, &to_path).map_err(|e| with_path(e, &from_path))?;
        handles.remove(to);
        if let Some(f) = handles.remove(from) {
            handles.insert(to.to_string(), f);
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.path(name)?;
        let mut handles = lock(&self.handles);
        handles.remove(name);
        std::fs::remove_file(&path).map_err(|e| with_path(e, &path))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(|e| with_path(e, &self.root))? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string()
                && name != LOCK_FILE
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.root).and_then(|d| d.sync_all()).map_err(|e| with_path(e, &self.root))
    }

    fn sync_blocks_thread(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_disk_basic_operations() {
        let dir = crate::storage::test_dir("fs_disk_basic");
        let d = FsDisk::open(&dir).unwrap();
        d.create("a").unwrap();
        d.write_at("a", 0, b"hello").unwrap();
        d.sync_data("a").unwrap();
        assert_eq!(d.read("a").unwrap(), b"hello");
        assert_eq!(d.read_at("a", 1, 3).unwrap(), b"ell");
        d.rename("a", "b").unwrap();
        d.sync_dir().unwrap();
        assert_eq!(d.list().unwrap(), vec!["b".to_string()]);
        d.write_at("b", 5, b"!").unwrap();
        assert_eq!(d.read("b").unwrap(), b"hello!");
        d.set_len("b", 2).unwrap();
        assert_eq!(d.len("b").unwrap(), 2);
        d.remove("b").unwrap();
        assert!(!d.exists("b").unwrap());
        assert!(d.write_at("b", 0, b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_data_directory_in_use_is_refused_naming_it_and_the_holders_pid() {
        let dir = crate::storage::test_dir("fs_disk_lock");
        let first = FsDisk::open(&dir).unwrap();
        let err = FsDisk::open(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&dir.display().to_string()), "names the directory: {msg}");
        assert!(msg.contains(&format!("process {}", std::process::id())), "names the holder's pid: {msg}");
        // The lock file is the disk's own, not one of its files.
        assert!(first.list().unwrap().is_empty());
        // Released with the disk: the directory opens again.
        drop(first);
        let again = FsDisk::open(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
