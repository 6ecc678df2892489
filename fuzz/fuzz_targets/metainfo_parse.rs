//! Parsing arbitrary bytes as a .torrent file; accepted torrents must satisfy the layout
//! invariants the rest of the engine relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::metainfo::layout::{MAX_FILES, MAX_PIECES, MAX_TOTAL_LENGTH};
use ringseed::metainfo::{Info, MAX_URLS, Metainfo};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    check_info(&m.info);
    check_layers(&m.info);
    assert!(m.trackers.iter().flatten().count() <= MAX_URLS);
    assert!(m.url_list.len() <= MAX_URLS);
});

/// Every v2 file longer than a piece has a layer of exactly one hash per piece (files that
/// share a pieces root share it), so `v2_piece_hash` answers for every piece of the torrent.
fn check_layers(info: &Info) {
    if !info.version.has_v2() {
        return;
    }
    let l = &info.layout;
    for (_, f) in l.data_files() {
        let Some(root) = f.pieces_root else { continue };
        if f.length <= l.piece_length {
            continue;
        }
        let layer = info.piece_layers.get(&root);
        assert_eq!(
            layer.map(Vec::len),
            Some(f.length.div_ceil(l.piece_length) as usize),
            "file {:?} has no layer of its length",
            f.path
        );
    }
}

fn check_info(info: &Info) {
    let l = &info.layout;
    assert!(u64::from(l.num_pieces) <= MAX_PIECES, "more pieces than the bound");
    assert!(l.total_length <= MAX_TOTAL_LENGTH, "larger than the bound");
    assert!(l.data_files().count() <= MAX_FILES, "more files than the bound");
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
