use super::*;
use crate::bencode::Bencode;

fn file(len: i64, path: &[&str]) -> Bencode {
    let mut f = Bencode::dict();
    f.insert("length", Bencode::Int(len));
    f.insert(
        "path",
        Bencode::List(path.iter().map(Bencode::bytes).collect()),
    );
    f
}

fn v1_multi(files: Vec<Bencode>, piece_length: i64, pieces: usize) -> Bencode {
    let mut info = Bencode::dict();
    info.insert("files", Bencode::List(files));
    info.insert("name", Bencode::bytes("top"));
    info.insert("piece length", Bencode::Int(piece_length));
    info.insert("pieces", Bencode::Bytes(vec![1; 20 * pieces]));
    let mut root = Bencode::dict();
    root.insert("info", info);
    root
}

#[test]
fn v1_multi_file_fields_and_raw_info_hash() {
    let mut t = v1_multi(
        vec![
            file(10, &["a", "b.txt"]),
            file(0, &["empty"]),
            file(7, &["c"]),
        ],
        8,
        3,
    );
    t.insert("announce", Bencode::bytes("http://t1/announce"));
    t.insert(
        "announce-list",
        Bencode::List(vec![
            Bencode::List(vec![
                Bencode::bytes("http://t1/announce"),
                Bencode::bytes("udp://t2:1"),
            ]),
            Bencode::List(vec![]),
            Bencode::List(vec![Bencode::bytes("http://t3/")]),
        ]),
    );
    t.insert("url-list", Bencode::bytes("http://seed/"));
    t.insert("comment", Bencode::bytes("hi"));
    t.insert("creation date", Bencode::Int(1_700_000_000));
    let bytes = t.encode();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info.name, "top");
    assert_eq!(m.info.version, Version::V1);
    assert_eq!(
        m.trackers,
        vec![vec!["http://t1/announce", "udp://t2:1"], vec!["http://t3/"]]
    );
    assert_eq!(m.url_list, ["http://seed/"]);
    assert_eq!(m.comment.as_deref(), Some("hi"));
    assert_eq!(m.creation_date, Some(1_700_000_000));
    let paths: Vec<_> = m
        .info
        .layout
        .files
        .iter()
        .map(|f| f.path.join("/"))
        .collect();
    assert_eq!(paths, ["top/a/b.txt", "top/empty", "top/c"]);
    assert_eq!(m.info.layout.total_length, 17);
    // The info-hash is SHA-1 of the exact info bytes as they sit in the file.
    let Bencode::Dict(d) = &t else { unreachable!() };
    let raw = d[&b"info"[..]].encode();
    let start = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    assert_eq!(&bytes[start..start + raw.len()], raw);
    assert_eq!(m.info.raw, raw);
    assert_eq!(m.info.hash.v1, Some(crate::hash::sha1(&raw)));
    assert_eq!(m.info.hash.v2, None);
    assert!(!m.info.private);
}

#[test]
fn single_file_private_and_utf8_names() {
    let mut info = Bencode::dict();
    info.insert("length", Bencode::Int(20));
    info.insert("name", Bencode::bytes(b"\xffbad"));
    info.insert("name.utf-8", Bencode::bytes("good ✓"));
    info.insert("piece length", Bencode::Int(16));
    info.insert("pieces", Bencode::Bytes(vec![0; 40]));
    info.insert("private", Bencode::Int(1));
    let mut root = Bencode::dict();
    root.insert("info", info);
    let m = Metainfo::from_bytes(&root.encode()).unwrap();
    assert_eq!(m.info.name, "good ✓");
    assert_eq!(m.info.layout.files[0].path, ["good ✓"]);
    assert!(m.info.private);
    assert!(m.trackers.is_empty());
}

#[test]
fn pad_files_are_recognized() {
    let mut pad = file(6, &[".pad", "6"]);
    pad.insert("attr", Bencode::bytes("p"));
    let t = v1_multi(
        vec![
            file(10, &["a"]),
            pad,
            file(16, &["b"]),
            file(1, &["_____padding_file_0_"]),
        ],
        16,
        3,
    );
    let m = Metainfo::from_bytes(&t.encode()).unwrap();
    let pads: Vec<bool> = m.info.layout.files.iter().map(|f| f.pad).collect();
    assert_eq!(pads, [false, true, false, true]);
    assert_eq!(m.info.layout.data_length(), 26);
}

/// The value under `key` of a dictionary (test-built documents only).
fn entry<'a>(t: &'a mut Bencode, key: &str) -> &'a mut Bencode {
    let Bencode::Dict(d) = t else { unreachable!() };
    d.get_mut(key.as_bytes()).unwrap()
}

fn err_of(t: &Bencode) -> String {
    Metainfo::from_bytes(&t.encode()).unwrap_err().to_string()
}

#[test]
fn every_broken_field_names_itself() {
    let good = || v1_multi(vec![file(10, &["a"])], 16, 1);
    let mut t = good();
    t.insert("info", Bencode::Int(3));
    assert_eq!(
        err_of(&t),
        "field `info` should be a dictionary, found integer"
    );

    let mut t = good();
    entry(&mut t, "info").insert("piece length", Bencode::bytes("16"));
    assert_eq!(
        err_of(&t),
        "field `piece length` should be an integer, found string"
    );

    let t = v1_multi(vec![file(-1, &["a"])], 16, 1);
    assert_eq!(err_of(&t), "field `files[].length`: -1 is negative");
    let t = v1_multi(vec![file(10, &["a"])], 0, 1);
    assert!(err_of(&t).contains("piece length"));
    let t = v1_multi(vec![file(10, &["a"])], 16, 2);
    assert!(
        err_of(&t).contains("expected 20 × 1 pieces"),
        "{}",
        err_of(&t)
    );
    let t = v1_multi(vec![], 16, 0);
    assert!(err_of(&t).contains("empty list"));
    let t = v1_multi(vec![file(i64::MAX, &["a"]), file(i64::MAX, &["b"])], 16, 1);
    assert!(err_of(&t).contains("add up to more than"), "{}", err_of(&t));
    let t = v1_multi(vec![file(10, &["a"]), file(3, &["a"])], 16, 1);
    assert!(err_of(&t).contains("same path"));
    let t = v1_multi(vec![file(10, &["a"]), file(3, &["a", "b"])], 16, 1);
    assert!(err_of(&t).contains("same path as a directory"));
}

#[test]
fn hostile_paths_never_get_through() {
    for path in [
        &["..", "etc", "passwd"][..],
        &["a", "..", "..", "x"],
        &["/etc"],
        &["a/../../b"],
        &["nul\0"],
        &[""],
        &[],
    ] {
        let t = v1_multi(vec![file(10, path)], 16, 1);
        let e = err_of(&t);
        assert!(e.contains("unsafe path"), "{path:?}: {e}");
    }
    let mut info = Bencode::dict();
    info.insert("length", Bencode::Int(1));
    info.insert("name", Bencode::bytes(".."));
    info.insert("piece length", Bencode::Int(16));
    info.insert("pieces", Bencode::Bytes(vec![0; 20]));
    let mut root = Bencode::dict();
    root.insert("info", info);
    assert!(err_of(&root).contains("unsafe path"));
}

/// A minimal v2 torrent of one file (`len` bytes of 0xab) with correct piece layers.
fn v2_torrent(len: usize, piece_length: usize, name: &str) -> (Bencode, Vec<u8>) {
    let data = vec![0xabu8; len];
    let width = crate::hash::v2_leaf_width(
        len as u64,
        piece_length as u64,
        len.min(piece_length) as u64,
    );
    let layer: Vec<[u8; 32]> = data
        .chunks(piece_length)
        .map(|p| crate::hash::v2_piece_hash(p, width))
        .collect();
    let root_hash = if len <= piece_length {
        layer[0]
    } else {
        crate::hash::root_from_piece_layer(&layer, piece_length as u64)
    };
    let mut attrs = Bencode::dict();
    attrs.insert("length", Bencode::Int(len as i64));
    attrs.insert("pieces root", Bencode::bytes(root_hash));
    let mut leaf = Bencode::dict();
    leaf.insert("", attrs);
    let mut tree = Bencode::dict();
    tree.insert(name, leaf);
    let mut info = Bencode::dict();
    info.insert("file tree", tree);
    info.insert("meta version", Bencode::Int(2));
    info.insert("name", Bencode::bytes(name));
    info.insert("piece length", Bencode::Int(piece_length as i64));
    let mut root = Bencode::dict();
    root.insert("info", info);
    if len > piece_length {
        let mut layers = Bencode::dict();
        layers.insert(root_hash, Bencode::Bytes(layer.concat()));
        root.insert("piece layers", layers);
    }
    (root, data)
}

#[test]
fn v2_layers_are_checked_against_roots() {
    let (t, _) = v2_torrent(100_000, 16384, "f");
    let m = Metainfo::from_bytes(&t.encode()).unwrap();
    assert_eq!(m.info.version, Version::V2);
    assert_eq!(m.info.layout.num_pieces, 7);
    assert!(m.info.v2_piece_hash(6).is_some());
    assert_eq!(m.info.hash.wire_id(), m.info.hash.v2.unwrap()[..20]);

    let mut broken = t.clone();
    let Bencode::Dict(layers) = entry(&mut broken, "piece layers") else {
        unreachable!()
    };
    for v in layers.values_mut() {
        let Bencode::Bytes(b) = v else { unreachable!() };
        b[0] ^= 1;
    }
    assert!(err_of(&broken).contains("does not hash to its pieces root"));

    let mut missing = t.clone();
    if let Bencode::Dict(d) = &mut missing {
        d.remove(&b"piece layers"[..]);
    }
    assert!(err_of(&missing).contains("missing required field `piece layers"));

    let (small, _) = v2_torrent(5000, 16384, "s");
    let m = Metainfo::from_bytes(&small.encode()).unwrap();
    assert_eq!(m.info.layout.files[0].path, ["s"]);

    let (odd, _) = v2_torrent(5000, 3 * 16384, "o");
    assert!(err_of(&odd).contains("power of two"));
    let (traversal, _) = v2_torrent(5000, 16384, "..");
    assert!(err_of(&traversal).contains("unsafe path"));
}

#[test]
fn unknown_meta_version_is_refused() {
    let (mut t, _) = v2_torrent(10, 16384, "f");
    entry(&mut t, "info").insert("meta version", Bencode::Int(3));
    assert!(err_of(&t).contains("version 3 is not supported"));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let mut t = v1_multi(vec![file(10, &["a"]), file(20, &["b", "c"])], 16, 2);
    t.insert("announce", Bencode::bytes("http://x/"));
    let bytes = t.encode();
    for cut in 0..bytes.len() {
        assert!(
            Metainfo::from_bytes(&bytes[..cut]).is_err(),
            "prefix {cut} accepted"
        );
    }
    assert!(Metainfo::from_bytes(&bytes).is_ok());
}

/// A v2 torrent whose files (name, length) all share the pieces root of a two-piece file whose
/// layer is given; `files[0]` should be that file.
fn v2_sharing_one_root(files: &[(&str, i64)]) -> Bencode {
    let layer = [[1u8; 32], [2u8; 32]];
    let root_hash = crate::hash::root_from_piece_layer(&layer, 16384);
    let mut tree = Bencode::dict();
    for (name, len) in files {
        let mut attrs = Bencode::dict();
        attrs.insert("length", Bencode::Int(*len));
        attrs.insert("pieces root", Bencode::bytes(root_hash));
        let mut leaf = Bencode::dict();
        leaf.insert("", attrs);
        tree.insert(name, leaf);
    }
    let mut info = Bencode::dict();
    info.insert("file tree", tree);
    info.insert("meta version", Bencode::Int(2));
    info.insert("name", Bencode::bytes("shared"));
    info.insert("piece length", Bencode::Int(16384));
    let mut layers = Bencode::dict();
    layers.insert(root_hash, Bencode::Bytes(layer.concat()));
    let mut root = Bencode::dict();
    root.insert("info", info);
    root.insert("piece layers", layers);
    root
}

#[test]
fn every_file_sharing_a_pieces_root_is_checked_against_its_layer() {
    // Identical files share a root and a layer: accepted, both with the layer's hashes.
    let same = v2_sharing_one_root(&[("a", 32768), ("b", 32768)]);
    let m = Metainfo::from_bytes(&same.encode()).unwrap();
    assert_eq!(m.info.layout.num_pieces, 4);
    assert_eq!(m.info.v2_piece_hash(3), Some([2; 32]));
    // The torrent: a second file claims 16 TiB under the first file's root. It was
    // accepted with 2^30 pieces and no layer; the piece bound refuses it now.
    let bomb = v2_sharing_one_root(&[("a", 32768), ("b", (1 << 44) - 32768)]);
    assert!(bomb.encode().len() < 400);
    assert!(
        err_of(&bomb).contains("more than 2097152"),
        "{}",
        err_of(&bomb)
    );
    // Within the piece bound, the layer check refuses it: a layer of 2 hashes cannot describe
    // a file of 2^20 pieces.
    let within = v2_sharing_one_root(&[("a", 32768), ("b", 1 << 34)]);
    let e = err_of(&within);
    assert!(
        e.contains("\"shared/b\" needs 1048576 piece hashes but shares its pieces root with a file of 2 pieces"),
        "{e}"
    );
    // The same with the big file first: its own layer is the wrong length.
    let first = v2_sharing_one_root(&[("a", 1 << 34), ("b", 32768)]);
    assert!(
        err_of(&first).contains("expected 32 × 1048576"),
        "{}",
        err_of(&first)
    );
}

#[test]
fn claimed_sizes_are_bounded() {
    let v1 = |length: i64, piece_length: i64| {
        let mut info = Bencode::dict();
        info.insert("length", Bencode::Int(length));
        info.insert("name", Bencode::bytes("x"));
        info.insert("piece length", Bencode::Int(piece_length));
        info.insert("pieces", Bencode::Bytes(vec![0; 20]));
        let mut root = Bencode::dict();
        root.insert("info", info);
        root
    };
    let pieces = layout::MAX_PIECES as i64;
    assert!(err_of(&v1((pieces + 1) * 16384, 16384)).contains("make 2097153 pieces"));
    // At the bound the count is fine, and only the (short) hash list is wrong.
    assert!(err_of(&v1(pieces * 16384, 16384)).contains("expected 20 × 2097152 pieces"));
    let total = layout::MAX_TOTAL_LENGTH as i64;
    assert!(err_of(&v1(total + 1, 256 << 20)).contains("more than 281474976710656 bytes"));
    assert!(err_of(&v1(i64::MAX, 256 << 20)).contains("more than 281474976710656 bytes"));
    assert!(err_of(&v1(1 << 40, 1 << 40)).contains("outside 1..=268435456"));
    // Lengths that overflow when added up.
    let t = v1_multi(
        vec![file(i64::MAX, &["a"]), file(i64::MAX, &["b"])],
        16384,
        1,
    );
    assert!(err_of(&t).contains("more than 281474976710656 bytes"));
}

#[test]
fn file_floods_are_refused_before_entries_are_built() {
    let n = layout::MAX_FILES;
    let names: Vec<String> = (0..=n).map(|i| format!("f{i}")).collect();
    let files = |count: usize| -> Vec<Bencode> {
        names[..count]
            .iter()
            .map(|p| file(0, &[p.as_str()]))
            .collect()
    };
    assert!(Metainfo::from_bytes(&v1_multi(files(n), 16384, 0).encode()).is_ok());
    let e = err_of(&v1_multi(files(n + 1), 16384, 0));
    assert!(e.contains("more than 100000 files"), "{e}");
    // Pad files do not count.
    let mut padded = files(n);
    let mut pad = file(0, &[".pad", "0"]);
    pad.insert("attr", Bencode::bytes("p"));
    padded.push(pad);
    assert!(Metainfo::from_bytes(&v1_multi(padded, 16384, 0).encode()).is_ok());

    // The same in a v2 file tree.
    let tree_of = |count: usize| {
        let mut tree = Bencode::dict();
        for name in &names[..count] {
            let mut attrs = Bencode::dict();
            attrs.insert("length", Bencode::Int(0));
            let mut leaf = Bencode::dict();
            leaf.insert("", attrs);
            tree.insert(name, leaf);
        }
        let mut info = Bencode::dict();
        info.insert("file tree", tree);
        info.insert("meta version", Bencode::Int(2));
        info.insert("name", Bencode::bytes("t"));
        info.insert("piece length", Bencode::Int(16384));
        let mut root = Bencode::dict();
        root.insert("info", info);
        root
    };
    assert!(Metainfo::from_bytes(&tree_of(n).encode()).is_ok());
    assert!(err_of(&tree_of(n + 1)).contains("more than 100000 files"));
}

#[test]
fn a_file_tree_cannot_multiply_its_directory_names() {
    // 63 directories of 250-byte names above `files` files: each file's path repeats them all.
    let deep = |files: usize| {
        let mut node = Bencode::dict();
        for i in 0..files {
            let mut attrs = Bencode::dict();
            attrs.insert("length", Bencode::Int(0));
            let mut leaf = Bencode::dict();
            leaf.insert("", attrs);
            node.insert(format!("f{i}"), leaf);
        }
        for d in 0..63 {
            let mut up = Bencode::dict();
            up.insert(format!("{d:02}{}", "x".repeat(248)), node);
            node = up;
        }
        let mut info = Bencode::dict();
        info.insert("file tree", node);
        info.insert("meta version", Bencode::Int(2));
        info.insert("name", Bencode::bytes("t"));
        info.insert("piece length", Bencode::Int(16384));
        let mut root = Bencode::dict();
        root.insert("info", info);
        root
    };
    // 63 × (250 + 32) bytes of directories per file: 1 800 files fit in 32 MiB, 2 000 do not.
    assert!(Metainfo::from_bytes(&deep(1800).encode()).is_ok());
    let t = deep(2000);
    assert!(t.encode().len() < 100_000);
    assert!(err_of(&t).contains("file paths would take more than 33554432 bytes"));
}

#[test]
fn tracker_and_web_seed_lists_are_capped() {
    let mut t = v1_multi(vec![file(1, &["a"])], 16384, 1);
    let tiers: Vec<Bencode> = (0..3000)
        .map(|i| Bencode::List(vec![Bencode::bytes(format!("http://t{i}/"))]))
        .collect();
    t.insert("announce-list", Bencode::List(tiers));
    let seeds: Vec<Bencode> = (0..3000)
        .map(|i| Bencode::bytes(format!("http://s{i}/")))
        .collect();
    t.insert("url-list", Bencode::List(seeds));
    let m = Metainfo::from_bytes(&t.encode()).unwrap();
    assert_eq!(m.trackers.iter().flatten().count(), MAX_URLS);
    assert_eq!(m.trackers[0], ["http://t0/"]);
    assert_eq!(m.url_list.len(), MAX_URLS);
    // Entries past the cap are still type-checked.
    let mut bad = t.clone();
    let Bencode::Dict(d) = &mut bad else {
        unreachable!()
    };
    if let Some(Bencode::List(tiers)) = d.get_mut(&b"announce-list"[..]) {
        tiers.push(Bencode::Int(1));
    }
    assert!(err_of(&bad).contains("announce-list[]"));
}
