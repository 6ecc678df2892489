//! The `mmap` upload path: a job is one `sendmsg` whose iovecs point at its piece headers (in
//! the job's buffer) and at its block data in the files' shared read-only mappings
//! ([`crate::storage::DataFiles::mapped`]). The kernel copies the data from the page cache
//! straight into socket buffers: one copy, where the copy path makes two (page cache → job
//! buffer → socket), and no helper threads, where splice hands every step to io_uring's workers.
//!
//! A send touching a page that is not in the page cache would stall the worker on the disk
//! inside the send, so a job goes this way only when [`resident`] finds every page of its data
//! cached; otherwise it takes the copy path, whose io_uring read waits for the disk instead
//! (and leaves the pages cached for the next job).

/// Most iovecs one `sendmsg` takes (`UIO_MAXIOV`); a longer job goes out in several sends.
use crate::storage::DataFiles;

const IOV_MAX: usize = 1024;
const PAGE: usize = 4096;

/// The send side of a job on the `mmap` path.
pub struct MappedJob {
    /// Headers and data in send order; the ones before `first` are sent, and `iovs[first]` is
    /// advanced past its sent bytes.
    iovs: Vec<libc::iovec>,
    first: usize,
    /// The message handed to the kernel: boxed, so its address holds while a send is in flight.
    msg: Box<libc::msghdr>,
    /// The file ranges (file index, offset, length), to check the files still hold them.
    ranges: Vec<(usize, u64, usize)>,
}

impl MappedJob {
    pub fn new(iovs: Vec<libc::iovec>, ranges: Vec<(usize, u64, usize)>) -> MappedJob {
        let msg = libc::msghdr {
            msg_name: std::ptr::null_mut(),
            msg_namelen: 0,
            msg_iov: std::ptr::null_mut(),
            msg_iovlen: 0,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        MappedJob {
            iovs,
            first: 0,
            msg: Box::new(msg),
            ranges,
        }
    }

    /// The message for the next send: the iovecs not yet sent (at most [`IOV_MAX`]).
    pub fn message(&mut self) -> &libc::msghdr {
        let rest = &mut self.iovs[self.first..];
        self.msg.msg_iov = rest.as_mut_ptr();
        self.msg.msg_iovlen = rest.len().min(IOV_MAX) as _;
        &self.msg
    }

    /// Whether every file range still lies inside its file on disk (`fstat`), checked before
    /// each send: a file cut short after the job was laid out must not send its truncated
    /// bytes (a page cut in its middle is zero-filled in place; one cut away fails the send).
    pub fn files_cover(&self, files: &DataFiles) -> bool {
        let mut sizes: Vec<(usize, u64)> = Vec::new();
        for &(file, offset, len) in &self.ranges {
            let size = match sizes.iter().find(|(f, _)| *f == file) {
                Some(&(_, size)) => size,
                None => {
                    let Some(size) = files.file_len(file) else {
                        return false;
                    };
                    sizes.push((file, size));
                    size
                }
            };
            if offset + len as u64 > size {
                return false;
            }
        }
        true
    }

    /// `n` more bytes went out.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(v) = self.iovs.get_mut(self.first) else {
                return;
            };
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
}

/// Whether every page of `len` bytes from `addr`, inside a file mapping, is in the page cache
/// (`mincore`). An error counts as not resident: the job then takes the copy path.
pub fn resident(addr: *const u8, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let start = addr as usize & !(PAGE - 1);
    let end = addr as usize + len;
    let mut at = start;
    let mut vec = [0u8; 64];
    while at < end {
        let pages = (end - at).div_ceil(PAGE).min(vec.len());
        // SAFETY: [at, at + pages pages) lies inside the caller's mapping (page-aligned down
        // from an address in it, up to the end of its range); `vec` has a byte per page.
        let rc = unsafe { libc::mincore(at as *mut libc::c_void, pages * PAGE, vec.as_mut_ptr()) };
        if rc != 0 || vec[..pages].iter().any(|b| b & 1 == 0) {
            return false;
        }
        at += pages * PAGE;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(buf: &mut [u8]) -> libc::iovec {
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }
    }

    #[test]
    fn advancing_skips_sent_iovecs_and_trims_the_next() {
        let mut a = [1u8; 13];
        let mut b = [2u8; 100];
        let mut j = MappedJob::new(vec![iov(&mut a), iov(&mut b)], Vec::new());
        assert_eq!(j.message().msg_iovlen, 2);
        j.advance(20);
        assert_eq!(j.message().msg_iovlen, 1);
        let first = j.iovs[j.first];
        assert_eq!(first.iov_len, 93);
        assert_eq!(first.iov_base as usize, b.as_ptr() as usize + 7);
        j.advance(93);
        assert_eq!(j.message().msg_iovlen, 0);
        j.advance(5); // past the end: nothing
    }

    #[test]
    fn a_job_of_many_iovecs_goes_in_sends_of_at_most_iov_max() {
        let mut bytes = vec![0u8; 2000];
        let iovs = bytes.chunks_mut(1).map(iov).collect();
        let mut j = MappedJob::new(iovs, Vec::new());
        assert_eq!(j.message().msg_iovlen as usize, IOV_MAX);
        j.advance(1500);
        assert_eq!(j.message().msg_iovlen, 500);
    }

    #[test]
    fn resident_sees_cached_pages_and_not_the_uncached_ones() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&vec![7u8; 64 << 10]).expect("write");
        // A sparse tail: a hole, which is not in the page cache until read.
        f.set_len(1 << 30).expect("extend");
        drop(f);
        let f = std::fs::File::open(&path).expect("open");
        // SAFETY: a private test file, read-only, never read through Rust references.
        let map = unsafe { memmap2::MmapOptions::new().len(1 << 30).map(&f) }.expect("map");
        assert!(resident(map.as_ptr(), 64 << 10), "just written: cached");
        assert!(
            resident(map.as_ptr().wrapping_add(100), 5000),
            "unaligned start"
        );
        assert!(
            !resident(map.as_ptr().wrapping_add(512 << 20), 4096),
            "a hole never read"
        );
        assert!(resident(map.as_ptr(), 0));
    }
}
