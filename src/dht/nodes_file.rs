//! The routing table across restarts: the addresses of the nodes it held, one `IP:port` a line,
//! saved periodically and at shutdown and read at start as extra bootstrap nodes, so a restarted
//! node is back in the DHT after one round trip instead of a walk from the routers.
//!
//! The file is ours, but it sits in a directory an operator may edit: what is read is bounded
//! (size, line count) and every line is checked; a bad line is skipped, not an error.

use std::io::Read;
use std::net::SocketAddrV4;
use std::path::Path;

/// Most nodes kept in the file: a full routing table's useful part (libtorrent saves at most a
/// few hundred too).
pub const MAX_SAVED_NODES: usize = 256;

/// Most bytes read from the file: 256 lines of the longest `IP:port` (21 bytes) and a newline,
/// with room to spare.
const MAX_FILE_BYTES: u64 = 16 * 1024;

/// The node addresses in `path`, at most [`MAX_SAVED_NODES`]; none if it is missing or
/// unreadable.
pub fn load(path: &Path) -> Vec<SocketAddrV4> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut text = String::new();
    if f.take(MAX_FILE_BYTES).read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    parse(&text)
}

/// The valid, distinct `IP:port` lines of `text` (IPv4, port not 0), at most
/// [`MAX_SAVED_NODES`].
pub fn parse(text: &str) -> Vec<SocketAddrV4> {
    let mut out: Vec<SocketAddrV4> = Vec::new();
    for line in text.lines() {
        if out.len() >= MAX_SAVED_NODES {
            break;
        }
        if let Ok(a) = line.trim().parse::<SocketAddrV4>()
            && a.port() != 0
            && !a.ip().is_unspecified()
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// Writes `nodes` (the first [`MAX_SAVED_NODES`] that parse) to `path` through a temporary file
/// and a rename, so a crash leaves the old file or the new one, never half of one.
pub fn save(path: &Path, nodes: &[String]) -> std::io::Result<()> {
    let kept = parse(&nodes.join("\n"));
    let mut text = String::with_capacity(kept.len() * 22);
    for a in &kept {
        text.push_str(&a.to_string());
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_nodes_load_back_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dht-nodes");
        assert!(load(&path).is_empty());
        save(
            &path,
            &[
                "127.0.0.1:6881".into(),
                "not an address".into(),
                "[::1]:6881".into(),
                "127.0.0.2:0".into(),
                "127.0.0.1:6881".into(),
                "10.1.2.3:51413".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            load(&path),
            vec![
                "127.0.0.1:6881".parse::<SocketAddrV4>().unwrap(),
                "10.1.2.3:51413".parse().unwrap()
            ]
        );
    }

    #[test]
    fn what_is_read_is_bounded() {
        let many: Vec<String> = (0..10_000u32)
            .map(|i| SocketAddrV4::new((0x0a00_0000 + i).into(), 6881).to_string())
            .collect();
        assert_eq!(parse(&many.join("\n")).len(), MAX_SAVED_NODES);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dht-nodes");
        // A huge file is read only up to its bound.
        std::fs::write(&path, "x".repeat(10 << 20)).unwrap();
        assert!(load(&path).is_empty());
    }
}
