//! Validation of path components that come from torrents.
//!
//! A torrent is a stranger's file: its names must never let the engine touch anything outside
//! the download directory. Each component is checked on its own, so a joined path is always a
//! plain relative path below the torrent's root.

use super::MetainfoError;

/// Longest component most Linux file systems accept (NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest directory nesting accepted for one file.
pub const MAX_COMPONENTS: usize = 64;

/// Most memory the parsed paths of one torrent may take: 32 MiB, counted as each component's
/// bytes plus [`COMPONENT_OVERHEAD`] ([`cost`]), for every file including pad files.
///
/// A v1 torrent spells out every path in full, so its paths already fit in its bytes (at most
/// [`super::MAX_TORRENT_BYTES`], the same 32 MiB) plus the torrent's name in front of each. A
/// BEP 52 file tree names each directory once for all the files below it, and every file gets
/// the whole path: without this bound, 64 directories of 255-byte names above 100 000 files
/// (7 MB of torrent) would parse into 1.7 GB of paths. Real torrents use a small fraction: 20 000
/// files with four 20-byte components each come to 4 MiB.
pub const MAX_PATH_BYTES: usize = 32 << 20;

/// What a component costs beyond its bytes: its `String` (24 bytes) and the allocator's
/// rounding of the bytes.
pub const COMPONENT_OVERHEAD: usize = 32;

/// What a component of `len` bytes costs against [`MAX_PATH_BYTES`].
pub fn cost(len: usize) -> usize {
    len.saturating_add(COMPONENT_OVERHEAD)
}

/// Checks one path component and returns it as a `String`.
///
/// Rejected: empty, `.` and `..`, anything containing `/`, `\`, NUL or another control byte,
/// invalid UTF-8, and names longer than 255 bytes.
///
/// ```
/// use ringseed::metainfo::path::component;
/// assert_eq!(component(b"movie.mkv").unwrap(), "movie.mkv");
/// assert!(component(b"..").is_err());
/// assert!(component(b"a/b").is_err());
/// ```
pub fn component(raw: &[u8]) -> Result<String, MetainfoError> {
    let bad = |reason: &'static str| MetainfoError::UnsafePath {
        path: String::from_utf8_lossy(raw).into_owned(),
        reason,
    };
    if raw.is_empty() {
        return Err(bad("empty path component"));
    }
    if raw == b"." || raw == b".." {
        return Err(bad("relative component '.' or '..'"));
    }
    if raw.len() > MAX_COMPONENT_BYTES {
        return Err(bad("component longer than 255 bytes"));
    }
    if raw.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(bad("component contains a path separator"));
    }
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(bad("component contains NUL or a control character"));
    }
    String::from_utf8(raw.to_vec()).map_err(|_| bad("component is not valid UTF-8"))
}

/// Checks a whole list of components (`path` of a v1 file entry).
pub fn components<'a>(
    raw: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<String>, MetainfoError> {
    let out = raw
        .into_iter()
        .map(component)
        .collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err(MetainfoError::UnsafePath {
            path: String::new(),
            reason: "file has an empty path",
        });
    }
    if out.len() > MAX_COMPONENTS {
        return Err(MetainfoError::UnsafePath {
            path: out.join("/"),
            reason: "path nests deeper than 64 directories",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_every_escape() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"/etc",
            b"a/../b",
            b"..\\x",
            b"nul\0byte",
            b"tab\there",
            b"\xff\xfe",
            &[b'a'; 256],
        ] {
            assert!(component(bad).is_err(), "{bad:?} accepted");
        }
        assert!(component(b"...").is_ok());
        assert!(component(b".hidden").is_ok());
        assert!(component("ünïcødé ✓".as_bytes()).is_ok());
        assert!(components(Vec::<&[u8]>::new()).is_err());
        assert!(components(vec![&b"a"[..]; 65]).is_err());
    }
}
