//! Torrent data on disk: a torrent's files opened once, read by linear range with pad entries
//! filled with zeros, and (for a download) created on first write inside the download directory
//! only.
//!
//! Paths come from a validated [`FileLayout`], so they are always plain relative paths below the
//! torrent's directory; but whoever can write in that directory can plant a symlink, a FIFO or a
//! device where a file belongs. So every file is opened from the directory's descriptor with
//! `openat2`:
//! - seeding and checks ([`DataFiles::open`]): `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`. A
//!   relative symlink that stays beneath the directory is followed (operators arrange their
//!   data with such links); an absolute symlink, or one leading out, is refused (`EXDEV`), as are
//!   `/proc` magic links.
//! - downloads ([`DataFiles::open_for_download`]): `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so
//!   nothing is ever written through a link.
//! - `ringseed create` ([`DataFiles::open_following_links`]) reads the operator's own files and
//!   follows links wherever they lead, as mktorrent does.
//!
//! Every open is `O_NONBLOCK` (a FIFO never blocks the opener), then `fstat`: anything but a
//! regular file (a FIFO, a device, a socket, a directory) is refused with an error naming the
//! file. `O_NONBLOCK` is cleared again once the file is known to be regular, so io_uring reads
//! of filesystems without non-blocking support are never answered `EAGAIN`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::fcntl::{OFlag, OpenHow, PosixFadviseAdvice, ResolveFlag, posix_fadvise};
use nix::sys::stat::Mode;

use crate::metainfo::FileLayout;

/// A torrent's data files. Files that do not exist stay unopened, and reads that touch them
/// report missing data rather than an error. Each file is opened at most once, so a descriptor
/// handed out stays valid as long as `self` lives.
#[derive(Debug)]
pub struct DataFiles {
    files: Box<[OnceLock<File>]>,
    /// Per file: a second descriptor opened with `O_DIRECT` ([`DataFiles::direct_fd`]), for
    /// the whole pages of downloaded pieces.
    direct: Box<[OnceLock<File>]>,
    /// The filesystem refused `O_DIRECT` (at open or at a write): writes go through the page
    /// cache from then on.
    direct_refused: AtomicBool,
    /// Per file: written since its last sync ([`DataFiles::mark_written`],
    /// [`DataFiles::sync_written`]).
    written: Box<[AtomicBool]>,
    /// Set when the torrent is downloaded: how missing files are created.
    create: Option<Creator>,
    /// Per file: its read-only shared mapping for the `mmap` upload path, made on first use
    /// (`None` inside: the mapping failed, and the file is read instead).
    maps: Box<[OnceLock<Option<Mapping>>]>,
}

/// Files smaller than this are not mapped (their jobs take the copy path): a mapping is a VMA,
/// the process has `vm.max_map_count` of them (65 530 by default) for everything, the allocator
/// included, and a small file saves little.
const MAP_MIN_LEN: usize = 1 << 20;
/// Mappings the whole process may hold; past it, files are read on the copy path.
const MAPS_MAX: usize = 16_384;
/// Mappings held now, over every torrent.
static MAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One file's mapping, counted in [`MAPS`] while it lives.
#[derive(Debug)]
struct Mapping(memmap2::Mmap);

impl Mapping {
    fn new(file: &File, len: usize) -> Option<Mapping> {
        if len < MAP_MIN_LEN {
            return None;
        }
        let counted = MAPS.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| (n < MAPS_MAX).then_some(n + 1),
        );
        counted.ok()?;
        // SAFETY: a read-only shared mapping of a file the torrent holds open, kept as long as
        // the descriptor. No Rust reference ever reads its bytes: only the kernel does, through
        // the addresses handed to `sendmsg`, where a page truncated away fails the send
        // (`EFAULT`) instead of faulting this process.
        match unsafe { memmap2::MmapOptions::new().len(len).map(file) } {
            Ok(m) => Some(Mapping(m)),
            Err(_) => {
                MAPS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        MAPS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a download creates its files.
#[derive(Debug)]
struct Creator {
    /// The download directory, opened once (`O_PATH`): every file is created beneath it.
    root: OwnedFd,
    root_path: PathBuf,
    /// Reserve each file's full size with `fallocate` when it is created (never zero-filled);
    /// otherwise files are sparse and grow as pieces are written.
    preallocate: bool,
    /// Per file: its relative path and length (pads and empty files included).
    entries: Vec<(PathBuf, u64, bool)>,
    /// Two workers writing the first pieces of one file create it once.
    lock: Mutex<()>,
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The buffer holds the range.
    Complete,
    /// Part of the range is in a file that is absent or too short.
    Missing,
}

impl DataFiles {
    /// Opens every non-pad file of `layout` beneath `root`, read-only, for seeding and checks:
    /// relative symlinks are followed only while they stay beneath `root`, and only regular
    /// files are taken. Never creates anything; a file that does not exist stays unopened (its
    /// pieces read as missing), while one that cannot be taken (a FIFO, a device, a socket, a
    /// directory, a link out of `root`) is an error naming it.
    pub fn open(layout: &FileLayout, root: &Path) -> io::Result<Self> {
        Self::open_read_only(layout, root, Resolve::Beneath)
    }

    /// As [`DataFiles::open`], but following symlinks wherever they lead: for `ringseed create`,
    /// which reads the operator's own files the way mktorrent does.
    pub fn open_following_links(layout: &FileLayout, root: &Path) -> io::Result<Self> {
        Self::open_read_only(layout, root, Resolve::Follow)
    }

    fn open_read_only(layout: &FileLayout, root: &Path, resolve: Resolve) -> io::Result<Self> {
        let root_fd = match open_root(root) {
            Ok(fd) => Some(fd),
            // No directory yet (a download to come): every file is missing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut files = Vec::with_capacity(layout.files.len());
        for f in &layout.files {
            let cell = OnceLock::new();
            let Some(root_fd) = root_fd.as_ref().filter(|_| !f.pad && f.length > 0) else {
                files.push(cell);
                continue;
            };
            match open_regular(root_fd, root, &f.rel_path(), OFlag::O_RDONLY, resolve) {
                Ok(file) => {
                    // Sequential hint doubles the kernel's read-ahead window for this file; a
                    // failure only loses the hint.
                    let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
                    let _ = cell.set(file);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            files.push(cell);
        }
        Ok(DataFiles {
            maps: files.iter().map(|_| OnceLock::new()).collect(),
            written: files.iter().map(|_| AtomicBool::new(false)).collect(),
            direct: files.iter().map(|_| OnceLock::new()).collect(),
            direct_refused: AtomicBool::new(false),
            files: files.into(),
            create: None,
        })
    }

    /// Opens `layout`'s files under `root` for a download: the ones present read-write, the
    /// others created on their first write ([`DataFiles::writable_fd`]). `root` is created if
    /// missing. Nothing is opened or created through a symlink or outside `root`.
    pub fn open_for_download(
        layout: &FileLayout,
        root: &Path,
        preallocate: bool,
    ) -> io::Result<Self> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", root.display()));
        std::fs::create_dir_all(root).map_err(with_path)?;
        let root_fd = open_root(root)?;
        let entries: Vec<(PathBuf, u64, bool)> = layout
            .files
            .iter()
            .map(|f| (f.rel_path(), f.length, f.pad))
            .collect();
        let files: Box<[OnceLock<File>]> = entries.iter().map(|_| OnceLock::new()).collect();
        let creator = Creator {
            root: root_fd,
            root_path: root.to_path_buf(),
            preallocate,
            entries,
            lock: Mutex::new(()),
        };
        for (i, (rel, len, pad)) in creator.entries.iter().enumerate() {
            if *pad || *len == 0 {
                continue;
            }
            match creator.open_file(rel, OFlag::O_RDWR) {
                Ok(file) => {
                    let _ = files[i].set(file);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(DataFiles {
            maps: files.iter().map(|_| OnceLock::new()).collect(),
            written: files.iter().map(|_| AtomicBool::new(false)).collect(),
            direct: files.iter().map(|_| OnceLock::new()).collect(),
            direct_refused: AtomicBool::new(false),
            files,
            create: Some(creator),
        })
    }

    /// Whether this torrent's files are created as it downloads.
    pub fn writable(&self) -> bool {
        self.create.is_some()
    }

    /// The descriptor of file `index` for writing, creating the file (and its directories)
    /// beneath the download directory on first use.
    pub fn writable_fd(&self, index: usize) -> io::Result<std::os::fd::RawFd> {
        let Some(c) = &self.create else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the torrent's files are open read-only",
            ));
        };
        let cell = self
            .files
            .get(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such file"))?;
        let (rel, len, _) = &c.entries[index];
        c.open_once(cell, || c.create(rel, *len))
    }

    /// A second descriptor of file `index` opened with `O_DIRECT` (created first, as by
    /// [`DataFiles::writable_fd`], and opened the same way: beneath the download directory,
    /// through no symlink, a regular file only). `Ok(None)` once the filesystem refused
    /// `O_DIRECT` (`EINVAL` at open, or [`DataFiles::refuse_direct`] after a write): the
    /// caller writes through the page cache instead. The first refusal is reported by
    /// [`DataFiles::refuse_direct`] returning true.
    pub fn direct_fd(&self, index: usize) -> io::Result<Option<std::os::fd::RawFd>> {
        if self.direct_refused.load(Ordering::Relaxed) {
            return Ok(None);
        }
        self.writable_fd(index)?;
        let (Some(c), Some(cell)) = (&self.create, self.direct.get(index)) else {
            return Ok(None);
        };
        let (rel, _, _) = &c.entries[index];
        match c.open_once(cell, || c.open_file(rel, OFlag::O_RDWR | OFlag::O_DIRECT)) {
            Ok(fd) => Ok(Some(fd)),
            // `EINVAL` (the error keeps its kind, not its number): the filesystem has no
            // `O_DIRECT` (the file itself was just opened as a regular one).
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Turns `O_DIRECT` writes off for this torrent (the filesystem refused them); true the
    /// first time, so the caller warns once.
    pub fn refuse_direct(&self) -> bool {
        !self.direct_refused.swap(true, Ordering::Relaxed)
    }

    /// Whether `O_DIRECT` writes were turned off ([`DataFiles::refuse_direct`]).
    pub fn direct_refused(&self) -> bool {
        self.direct_refused.load(Ordering::Relaxed)
    }

    /// Creates every file not created yet (the empty ones, typically), so a complete download
    /// has every file of the torrent on disk.
    pub fn create_missing(&self) -> io::Result<()> {
        self.create_missing_except(|_| false)
    }

    /// [`DataFiles::create_missing`] but for the files `skip` names (layout indices): files
    /// of priority 0 a finished download does not create.
    pub fn create_missing_except(&self, skip: impl Fn(usize) -> bool) -> io::Result<()> {
        let Some(c) = &self.create else {
            return Ok(());
        };
        for (i, (rel, len, pad)) in c.entries.iter().enumerate() {
            if *pad || skip(i) {
                continue;
            }
            if *len > 0 {
                self.writable_fd(i)?;
            } else {
                let _guard = c
                    .lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.create(rel, 0)?;
            }
        }
        Ok(())
    }

    /// Fills `buf` with the torrent's bytes at linear offset `start`.
    pub fn read(&self, layout: &FileLayout, start: u64, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        let mut at = 0usize;
        let mut outcome = ReadOutcome::Complete;
        for span in layout.linear_spans(start, buf.len() as u64) {
            let out = &mut buf[at..at + span.len as usize];
            at += span.len as usize;
            if span.pad {
                out.fill(0);
                continue;
            }
            let Some(file) = self.files.get(span.file).and_then(OnceLock::get) else {
                outcome = ReadOutcome::Missing;
                continue;
            };
            if read_full_at(file, out, span.offset)? < out.len() {
                outcome = ReadOutcome::Missing;
            }
        }
        if at < buf.len() {
            outcome = ReadOutcome::Missing;
        }
        Ok(outcome)
    }

    /// The raw descriptor of file `index` (for io_uring reads), if the file is open. The
    /// descriptor stays valid as long as `self` lives.
    pub fn raw_fd(&self, index: usize) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.files.get(index)?.get().map(|f| f.as_raw_fd())
    }

    /// The address of file `index` mapped read-only and shared (`len`: its length in the
    /// torrent, which the file on disk may not reach yet), for the `mmap` upload path: the
    /// kernel copies piece data from these pages straight into socket buffers. `None` when the
    /// file is not open, cannot be mapped, is under 1 MiB, or the process already holds 16 384
    /// mappings (each is a VMA, of which the process has 65 530 by default for everything). The
    /// mapping lives as long as `self`.
    ///
    /// Bytes past the file's end on disk are never read through it by ringseed itself: only
    /// the kernel reads them (a send), which fails with `EFAULT` there instead of a `SIGBUS`.
    pub fn mapped(&self, index: usize, len: u64) -> Option<*const u8> {
        let cell = self.maps.get(index)?;
        if let Some(map) = cell.get() {
            return map.as_ref().map(|m| m.0.as_ptr());
        }
        // Not opened yet (a download creates files on their first write): try again later.
        let file = self.files.get(index)?.get()?;
        let map = cell.get_or_init(|| Mapping::new(file, usize::try_from(len).ok()?));
        map.as_ref().map(|m| m.0.as_ptr())
    }

    /// The current length of file `index` on disk, if it is open and `fstat` answers.
    pub fn file_len(&self, index: usize) -> Option<u64> {
        let file = self.files.get(index)?.get()?;
        file.metadata().ok().map(|m| m.len())
    }

    /// Asks the kernel to start reading a linear range into the page cache.
    pub fn prefetch(&self, layout: &FileLayout, start: u64, len: u64) {
        for span in layout.linear_spans(start, len) {
            if let Some(file) = self.files.get(span.file).and_then(OnceLock::get) {
                // A failure only loses the hint.
                let _ = posix_fadvise(
                    file,
                    span.offset as i64,
                    span.len as i64,
                    PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    /// Flushes every open file's data to the device.
    pub fn sync(&self) -> io::Result<()> {
        for f in self.files.iter().filter_map(OnceLock::get) {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Notes that a write to file `index` completed. The writer calls it before it marks the
    /// piece verified (a Release store), so whoever reads that bit (Acquire) and then calls
    /// [`DataFiles::sync_written`] syncs this file, unless a sync after the write already did.
    pub fn mark_written(&self, index: usize) {
        if let Some(w) = self.written.get(index) {
            // Relaxed: the verified bit's Release publishes it.
            w.store(true, Ordering::Relaxed);
        }
    }

    /// `fdatasync`s the files written since their last sync, and only those: after it, every
    /// piece whose bit was read before the call is on the device (a resume bitfield saved
    /// afterwards survives a power loss). A file written during the call stays marked for the
    /// next one. Blocks (milliseconds to seconds): never call it on an io_uring worker.
    pub fn sync_written(&self) -> Result<SyncStats, SyncError> {
        let mut stats = SyncStats::default();
        for (i, w) in self.written.iter().enumerate() {
            // Cleared before the sync: a write completing during it marks the file again.
            if !w.swap(false, Ordering::AcqRel) {
                continue;
            }
            let Some(f) = self.files.get(i).and_then(OnceLock::get) else {
                continue;
            };
            if let Err(error) = f.sync_data() {
                // Still unsynced: no later sync may pretend otherwise.
                w.store(true, Ordering::Relaxed);
                return Err(SyncError { file: i, error });
            }
            stats.files += 1;
        }
        Ok(stats)
    }
}

/// What [`DataFiles::sync_written`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Files synced.
    pub files: usize,
}

/// A failed `fdatasync`: which file (its index in the layout), and why.
#[derive(Debug)]
pub struct SyncError {
    pub file: usize,
    pub error: io::Error,
}

impl Creator {
    /// Opens directory `rel` (`O_PATH`) beneath the root, through no symlink.
    fn open_dir(&self, rel: &Path) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(Resolve::NoSymlinks.flags());
        nix::fcntl::openat2(self.root.as_fd(), rel, how)
    }

    /// The descriptor in `cell`, opened by `open` the first time under the creation lock (so
    /// two workers never open, or create, the same file twice).
    fn open_once(
        &self,
        cell: &OnceLock<File>,
        open: impl FnOnce() -> io::Result<File>,
    ) -> io::Result<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        if let Some(f) = cell.get() {
            return Ok(f.as_raw_fd());
        }
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = cell.get() {
            return Ok(f.as_raw_fd());
        }
        let _ = cell.set(open()?);
        cell.get()
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| io::Error::other("file vanished"))
    }

    /// Opens (with `O_CREAT` in `flags`: creates) the regular file `rel` beneath the root,
    /// through no symlink.
    fn open_file(&self, rel: &Path, flags: OFlag) -> io::Result<File> {
        open_regular(&self.root, &self.root_path, rel, flags, Resolve::NoSymlinks)
    }

    fn error(&self, rel: &Path, e: nix::errno::Errno) -> io::Error {
        path_error(&self.root_path, rel, e, Resolve::NoSymlinks)
    }

    /// Creates `rel` (and its parent directories) beneath the root, reserving `len` bytes when
    /// preallocating.
    fn create(&self, rel: &Path, len: u64) -> io::Result<File> {
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut dir = PathBuf::new();
            for comp in parent.components() {
                dir.push(comp);
                match self.open_dir(&dir) {
                    Ok(_) => continue,
                    Err(nix::errno::Errno::ENOENT) => {}
                    Err(e) => return Err(self.error(&dir, e)),
                }
                // The parent exists and was checked just above (or is the root).
                match nix::sys::stat::mkdirat(
                    self.root.as_fd(),
                    &dir,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(self.error(&dir, e)),
                }
                // Re-check: what was created (or raced in) must be a real directory.
                self.open_dir(&dir).map_err(|e| self.error(&dir, e))?;
            }
        }
        let file = self.open_file(rel, OFlag::O_RDWR | OFlag::O_CREAT)?;
        if self.preallocate && len > 0 {
            let size = i64::try_from(len).unwrap_or(i64::MAX);
            nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, size)
                .map_err(|e| self.error(rel, e))?;
        }
        Ok(file)
    }
}

/// How the paths below a torrent's directory may resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolve {
    /// Beneath the directory; relative symlinks that stay beneath it are followed (seeding and
    /// checks).
    Beneath,
    /// Beneath the directory through no symlink at all (downloads).
    NoSymlinks,
    /// Wherever links lead (`create`, over the operator's own files).
    Follow,
}

impl Resolve {
    fn flags(self) -> ResolveFlag {
        match self {
            Resolve::Beneath => {
                ResolveFlag::RESOLVE_BENEATH.union(ResolveFlag::RESOLVE_NO_MAGICLINKS)
            }
            Resolve::NoSymlinks => {
                ResolveFlag::RESOLVE_BENEATH.union(ResolveFlag::RESOLVE_NO_SYMLINKS)
            }
            Resolve::Follow => ResolveFlag::empty(),
        }
    }
}

/// Opens a torrent's directory (`O_PATH`, following links in its own path: it is the
/// operator's or was confined when the torrent was added), to open its files beneath.
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {e}", root.display()),
        )
    })
}

/// An error of `rel` beneath `root`, naming the file and, for a refused link, why.
fn path_error(root: &Path, rel: &Path, e: nix::errno::Errno, resolve: Resolve) -> io::Error {
    use nix::errno::Errno;
    let why = match (resolve, e) {
        (Resolve::Beneath, Errno::EXDEV) => {
            " (a symlink that is absolute or leads outside the torrent's directory is not followed)"
        }
        (Resolve::Beneath, Errno::ELOOP) => " (a magic link or a symlink loop)",
        (Resolve::NoSymlinks, Errno::ELOOP | Errno::EXDEV) => {
            " (a symlink or a path leaving the download directory)"
        }
        // What opening a socket (or a device without a driver) says.
        (_, Errno::ENXIO) => " (a socket or a device, not a regular file: refused)",
        _ => "",
    };
    io::Error::new(
        io::Error::from(e).kind(),
        format!("{}: {e}{why}", root.join(rel).display()),
    )
}

/// Opens `rel` beneath `dir` (whose path is `root`, for errors) with `flags`, and returns it
/// only if it is a regular file. The open is non-blocking (a FIFO would otherwise wait for a
/// writer, forever); `O_NONBLOCK` is cleared once the file is known to be regular.
fn open_regular(
    dir: &OwnedFd,
    root: &Path,
    rel: &Path,
    flags: OFlag,
    resolve: Resolve,
) -> io::Result<File> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::sys::stat::SFlag;
    let mut how = OpenHow::new()
        .flags(flags | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(resolve.flags());
    if flags.contains(OFlag::O_CREAT) {
        // openat2 refuses a mode without O_CREAT.
        how = how.mode(Mode::from_bits_truncate(0o644));
    }
    let fd = nix::fcntl::openat2(dir.as_fd(), rel, how)
        .map_err(|e| path_error(root, rel, e, resolve))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| path_error(root, rel, e, resolve))?;
    let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => None,
        SFlag::S_IFIFO => Some("a FIFO"),
        SFlag::S_IFCHR => Some("a character device"),
        SFlag::S_IFBLK => Some("a block device"),
        SFlag::S_IFSOCK => Some("a socket"),
        SFlag::S_IFDIR => Some("a directory"),
        _ => Some("not a file"),
    };
    if let Some(kind) = kind {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: {kind}, not a regular file: refused",
                root.join(rel).display()
            ),
        ));
    }
    let now = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| path_error(root, rel, e, resolve))?;
    let without = OFlag::from_bits_truncate(now) & !OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(without)).map_err(|e| path_error(root, rel, e, resolve))?;
    Ok(File::from(fd))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn layout(files: &[(&[&str], u64)]) -> FileLayout {
        let entries = files
            .iter()
            .map(|(p, len)| FileEntry {
                path: p.iter().map(|s| s.to_string()).collect(),
                length: *len,
                offset: 0,
                pad: false,
                executable: false,
                pieces_root: None,
            })
            .collect();
        FileLayout::new(entries, 16384).unwrap()
    }

    #[test]
    fn files_are_created_on_first_write_with_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&[
            (&["t", "a"], 10),
            (&["t", "sub", "empty"], 0),
            (&["t", "b"], 5),
        ]);
        let d = DataFiles::open_for_download(&l, dir.path(), false).unwrap();
        assert!(
            !dir.path().join("t").exists(),
            "nothing is created before a write"
        );
        let fd = d.writable_fd(2).unwrap();
        // SAFETY: fd belongs to `d`, alive for this call.
        let f = unsafe {
            std::mem::ManuallyDrop::new(<File as std::os::fd::FromRawFd>::from_raw_fd(fd))
        };
        f.write_all_at(b"hello", 0).unwrap();
        assert_eq!(std::fs::read(dir.path().join("t/b")).unwrap(), b"hello");
        assert!(!dir.path().join("t/sub").exists());
        d.create_missing().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("t/sub/empty"))
                .unwrap()
                .len(),
            0
        );
        assert!(dir.path().join("t/a").exists());
        let mut buf = [0u8; 5];
        assert_eq!(d.read(&l, 10, &mut buf).unwrap(), ReadOutcome::Complete);
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn files_of_a_mib_or_more_are_mapped_and_small_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&[(&["t", "big"], 1 << 20), (&["t", "small"], (1 << 20) - 1)]);
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/big"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(dir.path().join("t/small"), vec![2u8; (1 << 20) - 1]).unwrap();
        let d = DataFiles::open(&l, dir.path()).unwrap();
        let big = d.mapped(0, 1 << 20).expect("a 1 MiB file is mapped");
        assert_eq!(d.mapped(0, 1 << 20), Some(big), "mapped once");
        assert_eq!(
            d.mapped(1, (1 << 20) - 1),
            None,
            "under 1 MiB: the copy path"
        );
        assert_eq!(d.file_len(0), Some(1 << 20));
    }

    #[test]
    fn preallocation_reserves_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&[(&["big"], 1 << 20)]);
        let d = DataFiles::open_for_download(&l, dir.path(), true).unwrap();
        d.writable_fd(0).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("big")).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn a_symlink_in_the_tree_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t")).unwrap();
        let l = layout(&[(&["t", "a"], 10)]);
        let e = DataFiles::open_for_download(&l, dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // A symlink planted after the open is refused at creation.
        std::fs::remove_file(dir.path().join("t")).unwrap();
        let d = DataFiles::open_for_download(&l, dir.path(), false).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t")).unwrap();
        let e = d.writable_fd(0).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        // A file that is itself a symlink is refused at open.
        std::os::unix::fs::symlink(outside.path().join("x"), dir.path().join("f")).unwrap();
        std::fs::write(outside.path().join("x"), b"abc").unwrap();
        let l = layout(&[(&["f"], 3)]);
        let e = DataFiles::open_for_download(&l, dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(std::fs::read(outside.path().join("x")).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    /// Seeding opens files beneath the torrent's directory only, never blocks on a FIFO, and
    /// takes regular files only: each refusal names the file and says why.
    #[test]
    fn seeding_takes_regular_files_beneath_the_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(outside.path().join("secret"), b"0123456789").unwrap();
        std::fs::create_dir_all(d.join("t/sub")).unwrap();
        std::fs::write(d.join("t/real"), b"abcdefghij").unwrap();
        let l = layout(&[(&["t", "f"], 10)]);
        let refused = |what: &str| {
            let e = DataFiles::open(&l, d).unwrap_err().to_string();
            assert!(e.contains(&d.join("t/f").display().to_string()), "{e}");
            assert!(e.contains(what), "{what}: {e}");
        };
        // A FIFO: refused at once (a blocking open would wait for a writer forever).
        nix::unistd::mkfifo(&d.join("t/f"), Mode::from_bits_truncate(0o644)).unwrap();
        refused("a FIFO, not a regular file");
        std::fs::remove_file(d.join("t/f")).unwrap();
        // A Unix socket, and a directory.
        let sock = std::os::unix::net::UnixListener::bind(d.join("t/f")).unwrap();
        refused("a socket or a device, not a regular file");
        drop(sock);
        std::fs::remove_file(d.join("t/f")).unwrap();
        std::fs::create_dir(d.join("t/f")).unwrap();
        refused("a directory");
        std::fs::remove_dir(d.join("t/f")).unwrap();
        // A character device (a link to /dev/null is refused as a link out first).
        std::os::unix::fs::symlink("/dev/null", d.join("t/f")).unwrap();
        refused("outside the torrent's directory");
        std::fs::remove_file(d.join("t/f")).unwrap();
        // Links out, relative or absolute, and a directory on the way that leads out.
        std::os::unix::fs::symlink(outside.path().join("secret"), d.join("t/f")).unwrap();
        refused("outside the torrent's directory");
        std::fs::remove_file(d.join("t/f")).unwrap();
        // From t/ up to / and down again.
        let depth = d.join("t").components().count() - 1;
        let up = PathBuf::from("../".repeat(depth)).join(outside.path().strip_prefix("/").unwrap());
        std::os::unix::fs::symlink(up.join("secret"), d.join("t/f")).unwrap();
        assert_eq!(std::fs::read(d.join("t/f")).unwrap(), b"0123456789");
        refused("outside the torrent's directory");
        std::fs::remove_file(d.join("t/f")).unwrap();
        std::fs::remove_dir_all(d.join("t")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("t")).unwrap();
        std::fs::write(outside.path().join("f"), b"0123456789").unwrap();
        refused("outside the torrent's directory");
        std::fs::remove_file(d.join("t")).unwrap();
        // A relative link that stays beneath the directory is followed, as is a real file.
        std::fs::create_dir_all(d.join("t")).unwrap();
        std::fs::write(d.join("t/real"), b"abcdefghij").unwrap();
        std::os::unix::fs::symlink("real", d.join("t/f")).unwrap();
        let files = DataFiles::open(&l, d).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(files.read(&l, 0, &mut buf).unwrap(), ReadOutcome::Complete);
        assert_eq!(&buf, b"abcdefghij");
        // ... and the descriptor handed to io_uring is blocking again.
        let fd = files.raw_fd(0).unwrap();
        // SAFETY: fd belongs to `files`, alive for this call.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        // An absolute link is refused even when it points beneath the directory.
        std::fs::remove_file(d.join("t/f")).unwrap();
        std::os::unix::fs::symlink(d.join("t/real"), d.join("t/f")).unwrap();
        refused("absolute");
        // `create` follows links wherever they lead, but takes regular files only too.
        assert!(DataFiles::open_following_links(&l, d).is_ok());
        std::fs::remove_file(d.join("t/f")).unwrap();
        nix::unistd::mkfifo(&d.join("t/f"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = DataFiles::open_following_links(&l, d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a FIFO"), "{e}");
        // A missing file is no error: its pieces are missing; nor is a missing directory.
        std::fs::remove_file(d.join("t/f")).unwrap();
        let files = DataFiles::open(&l, d).unwrap();
        assert_eq!(files.read(&l, 0, &mut buf).unwrap(), ReadOutcome::Missing);
        let files = DataFiles::open(&l, &d.join("nowhere")).unwrap();
        assert_eq!(files.read(&l, 0, &mut buf).unwrap(), ReadOutcome::Missing);
    }

    /// A download refuses a FIFO where its file belongs, at open and at creation.
    #[test]
    fn a_download_never_writes_into_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&[(&["f"], 10), (&["g"], 10)]);
        nix::unistd::mkfifo(&dir.path().join("f"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = DataFiles::open_for_download(&l, dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        std::fs::remove_file(dir.path().join("f")).unwrap();
        let d = DataFiles::open_for_download(&l, dir.path(), false).unwrap();
        nix::unistd::mkfifo(&dir.path().join("g"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = d.writable_fd(1).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(d.writable_fd(0).is_ok());
    }

    /// Only the files marked written are synced, each once until written again; a file whose
    /// sync fails stays marked.
    #[test]
    fn only_written_files_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&[(&["a"], 10), (&["b"], 10), (&["c"], 10)]);
        let d = DataFiles::open_for_download(&l, dir.path(), false).unwrap();
        assert_eq!(d.sync_written().unwrap().files, 0);
        d.writable_fd(0).unwrap();
        d.writable_fd(2).unwrap();
        d.mark_written(0);
        d.mark_written(2);
        d.mark_written(2);
        // Out of range: ignored.
        d.mark_written(9);
        assert_eq!(d.sync_written().unwrap().files, 2);
        assert_eq!(d.sync_written().unwrap().files, 0, "nothing written since");
        d.mark_written(2);
        assert_eq!(d.sync_written().unwrap().files, 1);
        // A file never opened has nothing to sync.
        d.mark_written(1);
        assert_eq!(d.sync_written().unwrap().files, 0);
    }

    /// fdatasync failing (here: on a file where the kernel refuses it, /proc) is reported with
    /// the file, and the file stays marked for the next sync.
    #[test]
    fn a_failed_sync_is_reported_and_kept() {
        let l = layout(&[(&["version"], 10)]);
        let d = DataFiles::open(&l, Path::new("/proc")).unwrap();
        d.mark_written(0);
        let e = d.sync_written().unwrap_err();
        assert_eq!(e.file, 0);
        assert!(d.written[0].load(Ordering::Relaxed));
    }

    #[test]
    fn read_only_files_refuse_writes() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&[(&["a"], 10)]);
        let d = DataFiles::open(&l, dir.path()).unwrap();
        assert!(!d.writable());
        assert!(d.writable_fd(0).is_err());
    }
}
