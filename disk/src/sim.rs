//! A file system in memory that forgets, at a power cut, what was never synced.
//!
//! The model (close to what ext4 and XFS promise, and no more):
//! - A file's data is durable up to its last `sync_data`/`sync_all`. Writes since then survive a
//!   cut in one of four seeded ways: all, none, a prefix of them with the last one torn at a
//!   512-byte sector, or any subset of the sectors they changed (each sector old or new whole,
//!   the size old or new), as a device that reorders its write-back would leave them.
//! - A name (creation, removal, rename) is durable once its directory is synced. Operations on a
//!   directory since its last sync survive as a seeded prefix, each whole (rename is atomic).
//! - A new file's durable content is empty; a file or directory whose name did not survive is
//!   gone with everything under it.

use crate::{Disk, DiskFile, OpenMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const SECTOR: usize = 512;
const ROOT: u64 = 0;

/// A simulated disk; clones share it.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

/// How the unsynced writes of one file fared in a power cut (for the tests' own records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Every write since the last sync reached the device.
    KeptAll,
    /// None did.
    LostAll,
    /// The first writes did; the next one was torn at a sector boundary.
    TornPrefix,
    /// Some of the sectors they changed did, in no order.
    SectorSubset,
}

#[derive(Debug)]
struct State {
    powered: bool,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    syncs: u64,
    /// Changes (writes, syncs, names) made so far.
    changes: u64,
    /// The power goes at this change, which then fails and does not happen.
    cut_at: Option<u64>,
}

#[derive(Debug, Clone)]
enum Inode {
    File(File),
    Dir(Dir),
}

#[derive(Debug, Clone, Default)]
struct File {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Writes and size changes since the last sync, in order.
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename { from: String, to: String, ino: u64 },
}

impl DirOp {
    fn apply(&self, map: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Link(name, ino) => {
                map.insert(name.clone(), *ino);
            }
            DirOp::Unlink(name) => {
                map.remove(name);
            }
            DirOp::Rename { from, to, ino } => {
                map.remove(from);
                map.insert(to.clone(), *ino);
            }
        }
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn names(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "simulated disk: '..' in a path",
                ));
            }
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
        }
    }
    Ok(out)
}

impl Default for SimDisk {
    fn default() -> SimDisk {
        SimDisk::new()
    }
}

impl SimDisk {
    /// An empty disk with a root directory.
    pub fn new() -> SimDisk {
        let mut inodes = HashMap::new();
        inodes.insert(ROOT, Inode::Dir(Dir::default()));
        SimDisk::from_inodes(inodes)
    }

    fn from_inodes(inodes: HashMap<u64, Inode>) -> SimDisk {
        let next_inode = inodes.keys().max().copied().unwrap_or(ROOT) + 1;
        SimDisk {
            state: Arc::new(Mutex::new(State {
                powered: true,
                inodes,
                next_inode,
                syncs: 0,
                changes: 0,
                cut_at: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn powered(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self.lock();
        if st.powered { Ok(st) } else { Err(eio()) }
    }

    /// The state, for a change: counts it, and cuts the power instead if it is the one set by
    /// [`SimDisk::cut_at_change`].
    fn change(&self) -> io::Result<MutexGuard<'_, State>> {
        let mut st = self.powered()?;
        st.changes += 1;
        if st.cut_at.is_some_and(|n| st.changes >= n) {
            st.powered = false;
            return Err(eio());
        }
        Ok(st)
    }

    /// How many changes (writes, size changes, syncs, creations, renames, removals) were made.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Cuts the power at the `n`th change counted from the disk's creation (that change fails
    /// with EIO and does not happen): a cut in the middle of whatever is running then.
    pub fn cut_at_change(&self, n: u64) {
        self.lock().cut_at = Some(n);
    }

    /// Stops the disk: every later call on it, or on a file opened from it, fails with EIO.
    pub fn cut_power(&self) {
        self.lock().powered = false;
    }

    /// How many file and directory syncs have run.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Cuts the power (if still on) and returns the disk a restart finds: durable state plus a
    /// choice, drawn from `seed`, of what was not yet synced.
    pub fn after_power_loss(&self, seed: u64) -> SimDisk {
        self.cut_power();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        self.survivor(
            &mut |_ino, file| {
                let how = match rng.random_range(0..4) {
                    0 => PowerLoss::KeptAll,
                    1 => PowerLoss::LostAll,
                    2 => PowerLoss::TornPrefix,
                    _ => PowerLoss::SectorSubset,
                };
                file.after(how, &mut rng)
            },
            Some(seed),
        )
    }

    /// Cuts the power and returns what a killed process leaves: every write and every name
    /// kept, synced or not (the page cache survives a process).
    pub fn after_process_crash(&self) -> SimDisk {
        self.cut_power();
        self.survivor(&mut |_ino, file| file.data.clone(), None)
    }

    fn survivor(
        &self,
        content: &mut dyn FnMut(u64, &File) -> Vec<u8>,
        seed: Option<u64>,
    ) -> SimDisk {
        let st = self.lock();
        let mut rng = ChaCha8Rng::seed_from_u64(seed.unwrap_or(0).wrapping_add(0x5eed));
        let mut out = HashMap::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            match st.inodes.get(&ino) {
                Some(Inode::Dir(dir)) => {
                    let entries = match seed {
                        None => dir.entries.clone(),
                        Some(_) => {
                            let mut map = dir.durable.clone();
                            let keep = rng.random_range(0..=dir.pending.len());
                            for op in &dir.pending[..keep] {
                                op.apply(&mut map);
                            }
                            map
                        }
                    };
                    todo.extend(entries.values().copied());
                    out.insert(
                        ino,
                        Inode::Dir(Dir {
                            durable: entries.clone(),
                            entries,
                            pending: Vec::new(),
                        }),
                    );
                }
                Some(Inode::File(file)) => {
                    let data = content(ino, file);
                    out.insert(
                        ino,
                        Inode::File(File {
                            synced: data.clone(),
                            data,
                            pending: Vec::new(),
                        }),
                    );
                }
                None => {}
            }
        }
        SimDisk::from_inodes(out)
    }
}

impl File {
    fn after(&self, how: PowerLoss, rng: &mut ChaCha8Rng) -> Vec<u8> {
        if self.pending.is_empty() {
            return self.synced.clone();
        }
        match how {
            PowerLoss::KeptAll => self.data.clone(),
            PowerLoss::LostAll => self.synced.clone(),
            PowerLoss::TornPrefix => {
                let keep = rng.random_range(0..self.pending.len());
                let mut data = self.synced.clone();
                for op in &self.pending[..keep] {
                    op.apply(&mut data);
                }
                if let FileOp::Write { offset, bytes } = &self.pending[keep] {
                    // The torn write reached the device up to a sector boundary.
                    let end = offset + bytes.len();
                    let boundaries: Vec<usize> = (offset.div_ceil(SECTOR)..=end / SECTOR)
                        .map(|s| s * SECTOR)
                        .filter(|b| b > offset && *b < end)
                        .collect();
                    if !boundaries.is_empty() {
                        let cut = boundaries[rng.random_range(0..boundaries.len())];
                        FileOp::Write {
                            offset: *offset,
                            bytes: bytes[..cut - offset].to_vec(),
                        }
                        .apply(&mut data);
                    }
                }
                data
            }
            PowerLoss::SectorSubset => {
                let len = if rng.random_bool(0.5) {
                    self.data.len()
                } else {
                    self.synced.len()
                };
                let span = self.data.len().max(self.synced.len());
                let mut old = self.synced.clone();
                old.resize(span, 0);
                let mut new = self.data.clone();
                new.resize(span, 0);
                let mut out = old.clone();
                for start in (0..span).step_by(SECTOR) {
                    let end = (start + SECTOR).min(span);
                    if old[start..end] != new[start..end] && rng.random_bool(0.5) {
                        out[start..end].copy_from_slice(&new[start..end]);
                    }
                }
                out.truncate(len);
                out
            }
        }
    }
}

impl FileOp {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            FileOp::Write { offset, bytes } => {
                let end = offset + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*offset..end].copy_from_slice(bytes);
            }
            FileOp::SetLen(len) => data.resize(*len, 0),
        }
    }
}

impl State {
    fn resolve(&self, path: &Path) -> io::Result<u64> {
        let mut ino = ROOT;
        for name in names(path)? {
            match self.inodes.get(&ino) {
                Some(Inode::Dir(d)) => {
                    ino = *d.entries.get(&name).ok_or_else(|| not_found(path))?;
                }
                _ => return Err(not_found(path)),
            }
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last name of `path`.
    fn parent(&self, path: &Path) -> io::Result<(u64, String)> {
        let mut all = names(path)?;
        let name = all.pop().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "simulated disk: no file name")
        })?;
        let parent: PathBuf = all.iter().collect();
        let dir = self.resolve(&Path::new("/").join(parent))?;
        match self.inodes.get(&dir) {
            Some(Inode::Dir(_)) => Ok((dir, name)),
            _ => Err(not_found(path)),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> &mut Dir {
        match self.inodes.get_mut(&ino) {
            Some(Inode::Dir(d)) => d,
            _ => unreachable!("callers resolve a directory first"),
        }
    }

    fn file_mut(&mut self, ino: u64) -> io::Result<&mut File> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::File(f)) => Ok(f),
            _ => Err(io::Error::other("simulated disk: not a file")),
        }
    }

    fn create(&mut self, path: &Path, inode: Inode) -> io::Result<u64> {
        let (dir, name) = self.parent(path)?;
        if self.dir_mut(dir).entries.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists", path.display()),
            ));
        }
        let ino = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(ino, inode);
        let d = self.dir_mut(dir);
        d.entries.insert(name.clone(), ino);
        d.pending.push(DirOp::Link(name, ino));
        Ok(ino)
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    ino: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut File) -> T) -> io::Result<T> {
        let mut st = self.disk.powered()?;
        Ok(f(st.file_mut(self.ino)?))
    }

    fn change<T>(&self, f: impl FnOnce(&mut File) -> T) -> io::Result<T> {
        let mut st = self.disk.change()?;
        Ok(f(st.file_mut(self.ino)?))
    }
}

impl Disk for SimDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let mut st = match mode {
            OpenMode::Read | OpenMode::ReadWrite => self.powered()?,
            OpenMode::CreateNew | OpenMode::CreateTruncate => self.change()?,
        };
        let found = st.resolve(path);
        let ino = match (mode, found) {
            (OpenMode::Read | OpenMode::ReadWrite, found) => found?,
            (OpenMode::CreateNew, Ok(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists", path.display()),
                ));
            }
            (OpenMode::CreateTruncate, Ok(ino)) => {
                let f = st.file_mut(ino)?;
                f.data.clear();
                f.pending.push(FileOp::SetLen(0));
                ino
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, Err(_)) => {
                st.create(path, Inode::File(File::default()))?
            }
        };
        st.file_mut(ino)?;
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            ino,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.change()?;
        let mut at = PathBuf::from("/");
        for name in names(path)? {
            at.push(name);
            match st.resolve(&at) {
                Ok(ino) => match st.inodes.get(&ino) {
                    Some(Inode::Dir(_)) => {}
                    _ => {
                        return Err(io::Error::other(format!(
                            "{}: not a directory",
                            at.display()
                        )));
                    }
                },
                Err(_) => {
                    st.create(&at, Inode::Dir(Dir::default()))?;
                }
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.change()?;
        let (dir, from_name) = st.parent(from)?;
        let (to_dir, to_name) = st.parent(to)?;
        if dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "simulated disk: rename across directories",
            ));
        }
        let d = st.dir_mut(dir);
        let ino = d
            .entries
            .remove(&from_name)
            .ok_or_else(|| not_found(from))?;
        d.entries.insert(to_name.clone(), ino);
        d.pending.push(DirOp::Rename {
            from: from_name,
            to: to_name,
            ino,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.change()?;
        let (dir, name) = st.parent(path)?;
        let ino = st.resolve(path)?;
        st.file_mut(ino)?;
        let d = st.dir_mut(dir);
        d.entries.remove(&name);
        d.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let st = self.powered()?;
        let ino = st.resolve(path)?;
        match st.inodes.get(&ino) {
            Some(Inode::Dir(d)) => Ok(d.entries.keys().map(|n| path.join(n)).collect()),
            _ => Err(io::Error::other(format!(
                "{}: not a directory",
                path.display()
            ))),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.change()?;
        let ino = st.resolve(path)?;
        match st.inodes.get_mut(&ino) {
            Some(Inode::Dir(d)) => {
                d.durable = d.entries.clone();
                d.pending.clear();
            }
            _ => {
                return Err(io::Error::other(format!(
                    "{}: not a directory",
                    path.display()
                )));
            }
        }
        st.syncs += 1;
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.powered()?.resolve(path).is_ok())
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        let st = self.powered()?;
        let ino = st.resolve(path)?;
        Ok(matches!(st.inodes.get(&ino), Some(Inode::Dir(_))))
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|f| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(f.data.len());
            let n = buf.len().min(f.data.len() - start);
            buf[..n].copy_from_slice(&f.data[start..start + n]);
            n
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        self.change(|f| {
            let op = FileOp::Write {
                offset,
                bytes: buf.to_vec(),
            };
            op.apply(&mut f.data);
            f.pending.push(op);
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.change(|f| {
            f.data.resize(len, 0);
            f.pending.push(FileOp::SetLen(len));
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|f| f.data.len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.disk.change()?;
        let f = st.file_mut(self.ino)?;
        if !f.pending.is_empty() {
            f.synced = f.data.clone();
            f.pending.clear();
        }
        st.syncs += 1;
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
