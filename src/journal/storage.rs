//! What the journal asks of a file system, as a trait so that tests can put a storage under it
//! that crashes at any operation and keeps only what a real disk would promise to keep.
//!
//! [`Disk`] is the real one: one directory, `fdatasync` for data, an `fsync` of the directory
//! for names (a new segment, a removed one, a renamed cursor file).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory of named files.
pub trait Storage: Send + Sync + 'static {
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates an empty file and makes its name durable (directory synced) before returning.
    fn create(&self, name: &str) -> io::Result<Box<dyn AppendFile>>;
    /// Opens an existing file to append to (the active segment after a restart).
    fn open_append(&self, name: &str) -> io::Result<Box<dyn AppendFile>>;
    /// Opens a file to read at positions.
    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>>;
    /// Removes a file and makes the removal durable.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Replaces a file's whole content atomically and durably: after a crash it holds either
    /// the old content or the new, never a mix.
    fn replace(&self, name: &str, content: &[u8]) -> io::Result<()>;
    /// Writes `bytes` over an existing file's content at `offset` and syncs it. Takes no new
    /// space, so it works on a full disk; a crash may tear it (the caller checks).
    fn overwrite(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Reads a whole (small) file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
}

pub trait AppendFile: Send {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: what was appended so far survives a crash once this returns Ok.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes and syncs the cut.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

pub trait ReadFile: Send {
    /// Reads at `offset` into `buf`; fewer bytes than asked only at the end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    fn size(&self) -> io::Result<u64>;
}

/// The journal's directory on a real file system.
pub struct Disk {
    dir: PathBuf,
    /// The `lock` file, locked exclusively while this process writes the journal.
    _lock: Option<File>,
}

/// The name of the lock file in a journal directory.
const LOCK: &str = "lock";

impl Disk {
    /// Opens (creating if needed) the directory for writing, locking it: two processes on one
    /// journal would each believe they own its records.
    pub fn open(dir: &Path) -> io::Result<Disk> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "{} is in use by another weir process; give each instance its own journal path",
                        dir.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(error),
        }
        let disk = Disk {
            dir: dir.to_owned(),
            _lock: Some(lock),
        };
        disk.sync_dir()?;
        Ok(disk)
    }

    /// Opens the directory to read it while another process may be writing it (status).
    pub fn inspect(dir: &Path) -> io::Result<Disk> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a journal directory", dir.display()),
            ));
        }
        Ok(Disk {
            dir: dir.to_owned(),
            _lock: None,
        })
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Storage for Disk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.dir.join(name))?;
        self.sync_dir()?;
        Ok(Box::new(DiskFile { file }))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().append(true).open(self.dir.join(name))?;
        Ok(Box::new(DiskFile { file }))
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(DiskFile {
            file: File::open(self.dir.join(name))?,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))?;
        self.sync_dir()
    }

    fn replace(&self, name: &str, content: &[u8]) -> io::Result<()> {
        let temporary = self.dir.join(format!("{name}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(content)?;
        file.sync_data()?;
        std::fs::rename(&temporary, self.dir.join(name))?;
        self.sync_dir()
    }

    fn overwrite(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.dir.join(name))?;
        file.write_all_at(bytes, offset)?;
        file.sync_data()
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(name))
    }
}

struct DiskFile {
    file: File,
}

impl AppendFile for DiskFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()
    }
}

impl ReadFile for DiskFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(filled)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// A storage in memory that crashes on demand, for tests: it tracks, per file, what was
/// synced, and a crash keeps exactly that plus a random garbled part of what was not.
#[cfg(test)]
pub mod faulty {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use rand::{Rng, SeedableRng};

    use super::*;

    #[derive(Default, Clone)]
    struct MemFile {
        /// What a reader sees now.
        content: Vec<u8>,
        /// What survives a crash (the content at the last sync).
        durable: Vec<u8>,
    }

    #[derive(Default)]
    struct State {
        files: BTreeMap<String, MemFile>,
        /// Operations left before the crash, if one is armed.
        crash_in: Option<u64>,
        crashed: bool,
        /// Fail `sync_data` with an I/O error (the disk went bad).
        fail_sync: bool,
        /// Bytes an append may still take before it fails with ENOSPC.
        space: Option<u64>,
        rng: Option<rand::rngs::StdRng>,
    }

    /// The in-memory storage; clones share the files.
    #[derive(Clone, Default)]
    pub struct Faulty {
        state: Arc<Mutex<State>>,
    }

    fn crashed() -> io::Error {
        io::Error::other("the storage crashed")
    }

    impl Faulty {
        pub fn new(seed: u64) -> Faulty {
            let faulty = Faulty::default();
            faulty.state.lock().unwrap().rng = Some(rand::rngs::StdRng::seed_from_u64(seed));
            faulty
        }

        /// Crash after `operations` more operations (every call counts one).
        pub fn crash_after(&self, operations: u64) {
            self.state.lock().unwrap().crash_in = Some(operations);
        }

        /// Crash now.
        pub fn crash(&self) {
            crash_now(&mut self.state.lock().unwrap());
        }

        /// After a crash: the disk as the next process finds it.
        pub fn restart(&self) {
            let mut state = self.state.lock().unwrap();
            state.crashed = false;
            state.crash_in = None;
        }

        pub fn fail_sync(&self, fail: bool) {
            self.state.lock().unwrap().fail_sync = fail;
        }

        /// Bytes appends may take in all before they fail with ENOSPC (`None`: unlimited).
        pub fn space(&self, bytes: Option<u64>) {
            self.state.lock().unwrap().space = bytes;
        }

        /// Flips one bit of a file, durably (damage at rest).
        pub fn flip_bit(&self, name: &str, byte: usize, bit: u8) {
            let mut state = self.state.lock().unwrap();
            let file = state.files.get_mut(name).expect("file exists");
            file.content[byte] ^= 1 << bit;
            file.durable = file.content.clone();
        }

        /// Writes a file's content as is, durably, with no atomicity (a torn file).
        pub fn put(&self, name: &str, content: &[u8]) {
            let mut state = self.state.lock().unwrap();
            let file = state.files.entry(name.to_owned()).or_default();
            file.content = content.to_vec();
            file.durable = content.to_vec();
        }

        pub fn content(&self, name: &str) -> Option<Vec<u8>> {
            self.state
                .lock()
                .unwrap()
                .files
                .get(name)
                .map(|file| file.content.clone())
        }

        fn op<R>(&self, f: impl FnOnce(&mut State) -> io::Result<R>) -> io::Result<R> {
            let mut state = self.state.lock().unwrap();
            if state.crashed {
                return Err(crashed());
            }
            if let Some(left) = state.crash_in {
                if left == 0 {
                    crash_now(&mut state);
                    return Err(crashed());
                }
                state.crash_in = Some(left - 1);
            }
            f(&mut state)
        }
    }

    /// Every file keeps what was synced plus a random prefix of the rest, with some of its
    /// bytes garbled: what a power cut leaves of unsynced page-cache writes.
    fn crash_now(state: &mut State) {
        state.crashed = true;
        let mut rng = state.rng.take().unwrap_or_else(|| rand::rngs::StdRng::seed_from_u64(0));
        for file in state.files.values_mut() {
            let mut kept = file.durable.clone();
            if file.content.starts_with(&file.durable) {
                let unsynced = &file.content[file.durable.len()..];
                let mut tail = unsynced[..rng.random_range(0..=unsynced.len())].to_vec();
                if !tail.is_empty() && rng.random_bool(0.5) {
                    for _ in 0..rng.random_range(1..=4) {
                        let at = rng.random_range(0..tail.len());
                        tail[at] = rng.random();
                    }
                }
                kept.extend_from_slice(&tail);
            }
            file.content = kept.clone();
            file.durable = kept;
        }
        state.rng = Some(rng);
    }

    impl Storage for Faulty {
        fn list(&self) -> io::Result<Vec<String>> {
            self.op(|state| Ok(state.files.keys().cloned().collect()))
        }

        fn create(&self, name: &str) -> io::Result<Box<dyn AppendFile>> {
            self.op(|state| {
                if state.files.contains_key(name) {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                state.files.insert(name.to_owned(), MemFile::default());
                Ok(())
            })?;
            Ok(Box::new(FaultyFile {
                storage: self.clone(),
                name: name.to_owned(),
            }))
        }

        fn open_append(&self, name: &str) -> io::Result<Box<dyn AppendFile>> {
            self.op(|state| match state.files.contains_key(name) {
                true => Ok(()),
                false => Err(io::Error::from(io::ErrorKind::NotFound)),
            })?;
            Ok(Box::new(FaultyFile {
                storage: self.clone(),
                name: name.to_owned(),
            }))
        }

        fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
            self.open_append(name)?;
            Ok(Box::new(FaultyFile {
                storage: self.clone(),
                name: name.to_owned(),
            }))
        }

        fn remove(&self, name: &str) -> io::Result<()> {
            self.op(|state| {
                state
                    .files
                    .remove(name)
                    .map(drop)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
            })
        }

        fn replace(&self, name: &str, content: &[u8]) -> io::Result<()> {
            self.op(|state| {
                state.files.insert(
                    name.to_owned(),
                    MemFile {
                        content: content.to_vec(),
                        durable: content.to_vec(),
                    },
                );
                Ok(())
            })
        }

        fn overwrite(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
            self.op(|state| {
                let file = state
                    .files
                    .get_mut(name)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                let (start, end) = (offset as usize, offset as usize + bytes.len());
                if end > file.content.len() {
                    return Err(io::Error::other("overwrite past the end of the file"));
                }
                file.content[start..end].copy_from_slice(bytes);
                file.durable = file.content.clone();
                Ok(())
            })
        }

        fn read(&self, name: &str) -> io::Result<Vec<u8>> {
            self.op(|state| {
                state
                    .files
                    .get(name)
                    .map(|file| file.content.clone())
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
            })
        }
    }

    struct FaultyFile {
        storage: Faulty,
        name: String,
    }

    impl FaultyFile {
        fn file<R>(&self, f: impl FnOnce(&mut MemFile, &mut Option<u64>, bool) -> io::Result<R>) -> io::Result<R> {
            self.storage.op(|state| {
                let fail_sync = state.fail_sync;
                let State { files, space, .. } = state;
                let file = files
                    .get_mut(&self.name)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                f(file, space, fail_sync)
            })
        }
    }

    impl AppendFile for FaultyFile {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.file(|file, space, _| {
                if let Some(left) = space {
                    if (bytes.len() as u64) > *left {
                        // Like write(2) on a full disk: part of it may land.
                        let part = *left as usize;
                        file.content.extend_from_slice(&bytes[..part]);
                        *left = 0;
                        return Err(io::Error::from_raw_os_error(28));
                    }
                    *left -= bytes.len() as u64;
                }
                file.content.extend_from_slice(bytes);
                Ok(())
            })
        }

        fn sync_data(&mut self) -> io::Result<()> {
            self.file(|file, _, fail_sync| {
                if fail_sync {
                    return Err(io::Error::other("injected fdatasync failure"));
                }
                file.durable = file.content.clone();
                Ok(())
            })
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.file(|file, space, _| {
                let len = len as usize;
                if let Some(left) = space {
                    *left += file.content.len().saturating_sub(len) as u64;
                }
                file.content.truncate(len);
                file.durable = file.content.clone();
                Ok(())
            })
        }
    }

    impl ReadFile for FaultyFile {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.file(|file, _, _| {
                let start = (offset as usize).min(file.content.len());
                let n = buf.len().min(file.content.len() - start);
                buf[..n].copy_from_slice(&file.content[start..start + n]);
                Ok(n)
            })
        }

        fn size(&self) -> io::Result<u64> {
            self.file(|file, _, _| Ok(file.content.len() as u64))
        }
    }
}
