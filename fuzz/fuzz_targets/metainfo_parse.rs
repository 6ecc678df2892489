//! Parsing arbitrary bytes as a .torrent file; accepted torrents must satisfy the layout
//! invariants the rest of the engine relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::metainfo::{Info, Metainfo};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    check_info(&m.info);
});

fn check_info(info: &Info) {
    let l = &info.layout;
    if info.version.has_v1() {
        assert_eq!(
            u64::from(l.num_pieces),
            info.pieces.len() as u64,
            "num_pieces disagrees with the v1 piece hashes"
        );
    }
    assert_eq!(
        u64::from(l.num_pieces),
        l.total_length.div_ceil(l.piece_length),
        "num_pieces disagrees with total_length / piece_length"
    );
    let mut covered = 0u64;
    for s in l.linear_spans(0, l.total_length) {
        let f = &l.files[s.file];
        assert!(
            s.offset.checked_add(s.len).is_some_and(|e| e <= f.length),
            "span {s:?} leaves file {:?} of {} bytes",
            f.path,
            f.length
        );
        assert_eq!(s.pad, f.pad);
        covered += s.len;
    }
    assert_eq!(covered, l.total_length, "spans do not cover the torrent");
    for f in &l.files {
        assert!(!f.path.is_empty(), "file with an empty path");
        for c in &f.path {
            assert!(
                !c.is_empty() && c != ".." && !c.contains('/'),
                "unsafe path component {c:?} in {:?}",
                f.path
            );
        }
    }
}
