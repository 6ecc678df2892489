//! Reading torrent data from disk: a torrent's files opened once, read by linear range with pad
//! entries filled with zeros.
//!
//! Paths come from a validated [`FileLayout`], so they are always plain relative paths below the
//! download directory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

use crate::metainfo::FileLayout;

/// A torrent's data files, opened read-only. Files that do not exist stay unopened, and reads that
/// touch them report missing data rather than an error.
#[derive(Debug)]
pub struct DataFiles {
    files: Vec<Option<File>>,
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
    /// Opens every non-pad file of `layout` under `root`. Never creates anything.
    pub fn open(layout: &FileLayout, root: &Path) -> io::Result<Self> {
        let mut files = Vec::with_capacity(layout.files.len());
        for f in &layout.files {
            if f.pad || f.length == 0 {
                files.push(None);
                continue;
            }
            match File::open(root.join(f.rel_path())) {
                Ok(file) => {
                    // Sequential hint doubles the kernel's read-ahead window for this file; a
                    // failure only loses the hint.
                    let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
                    files.push(Some(file))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => files.push(None),
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => files.push(None),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", root.join(f.rel_path()).display()),
                    ));
                }
            }
        }
        Ok(DataFiles { files })
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
            let Some(file) = &self.files[span.file] else {
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
        self.files.get(index)?.as_ref().map(|f| f.as_raw_fd())
    }

    /// Asks the kernel to start reading a linear range into the page cache.
    pub fn prefetch(&self, layout: &FileLayout, start: u64, len: u64) {
        for span in layout.linear_spans(start, len) {
            if let Some(Some(file)) = self.files.get(span.file) {
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
