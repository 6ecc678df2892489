//! Proofs checked against trees built by hand: every layer of a file's whole tree from its block
//! hashes, with zero leaves past the end, exactly as BEP 52 defines it.

use super::*;

/// A file of `blocks` 16 KiB blocks (block hashes made up, distinct), as a whole tree:
/// `layers[h]` is the layer `h` above the blocks, padded.
struct Reference {
    layers: Vec<Vec<[u8; 32]>>,
}

impl Reference {
    fn new(blocks: usize) -> Reference {
        let width = blocks.next_power_of_two();
        let mut leaves: Vec<[u8; 32]> = (0..blocks as u32)
            .map(|i| hash::sha256(&i.to_be_bytes()))
            .collect();
        leaves.resize(width, [0; 32]);
        let mut layers = vec![leaves];
        while let Some(below) = layers.last().filter(|l| l.len() > 1) {
            let up = below
                .chunks_exact(2)
                .map(|p| sha256_pair(&p[0], &p[1]))
                .collect();
            layers.push(up);
        }
        Reference { layers }
    }

    fn root(&self) -> [u8; 32] {
        self.layers.last().unwrap()[0]
    }

    fn height(&self) -> u32 {
        self.layers.len() as u32 - 1
    }

    /// The piece layer as a .torrent carries it: one hash per piece, no padding.
    fn piece_layer(&self, piece_length: u64, length: u64) -> Vec<[u8; 32]> {
        let pieces = length.div_ceil(piece_length) as usize;
        self.layers[piece_layer(piece_length) as usize][..pieces].to_vec()
    }

    /// What BEP 52 says an answer holds, read off the whole tree.
    fn answer(&self, req: &HashRequest) -> Vec<[u8; 32]> {
        let b = req.base as usize;
        let (i, n) = (req.index as usize, req.count as usize);
        let mut out = self.layers[b][i..i + n].to_vec();
        for up in req.count.trailing_zeros()..=req.proof_layers {
            let pos = i >> up;
            out.push(self.layers[b + up as usize][pos ^ 1]);
        }
        out
    }
}

fn req(root: [u8; 32], base: u32, index: u32, count: u32, proof_layers: u32) -> HashRequest {
    HashRequest {
        root,
        base,
        index,
        count,
        proof_layers,
    }
}

const KIB: u64 = 1024;

#[test]
fn the_tree_from_a_piece_layer_is_the_files_tree() {
    // 5 pieces of 64 KiB (4 blocks), the last one 1 block and a bit: 18 blocks, 32 leaves.
    let piece_length = 64 * KIB;
    let length = 4 * piece_length + 16 * KIB + 100;
    let blocks = length.div_ceil(16 * KIB) as usize;
    let r = Reference::new(blocks);
    let t = PieceTree::new(&r.piece_layer(piece_length, length), piece_length).unwrap();
    assert_eq!(t.root(), r.root());
    assert_eq!(t.height(), r.height());
    assert_eq!(t.height(), tree_height(length));
    // The padded piece entries are the roots of all-zero piece subtrees, not zero.
    assert_eq!(r.layers[2][7], piece_pad(2));
    assert_ne!(piece_pad(2), [0; 32]);
    // And the layer fits the metainfo parser's own check.
    assert_eq!(
        hash::root_from_piece_layer(&r.piece_layer(piece_length, length), piece_length),
        r.root()
    );
    assert!(PieceTree::new(&[[1; 32]], piece_length).is_none());
}

#[test]
fn answers_match_the_hand_built_tree_and_verify() {
    // 16 KiB pieces (the piece layer is the block layer) and 1 100 of them: more than one
    // request of 512, so proofs carry uncles.
    for (piece_length, length) in [
        (16 * KIB, 1100 * 16 * KIB - 5),
        (64 * KIB, 700 * 64 * KIB),
        (32 * KIB, 3 * 32 * KIB),
    ] {
        let blocks = length.div_ceil(16 * KIB) as usize;
        let r = Reference::new(blocks);
        let root = r.root();
        let t = PieceTree::new(&r.piece_layer(piece_length, length), piece_length).unwrap();
        let h = t.height();
        let pl = piece_layer(piece_length);
        let pieces_width = 1u32 << (h - pl);
        let mut cases = vec![];
        for count in [1u32, 2, 4, 512] {
            if count > pieces_width {
                continue;
            }
            for index in [0, count, pieces_width - count] {
                if index + count > pieces_width {
                    continue;
                }
                for proof in [0, h - pl - 1] {
                    cases.push(req(root, pl, index, count, proof));
                }
            }
        }
        // A layer above the piece layer too.
        cases.push(req(root, pl + 1, 0, 1, h - pl - 2));
        for q in cases {
            let got = t.answer(&q).unwrap();
            assert_eq!(got, r.answer(&q), "{q:?}");
            assert_eq!(got.len(), (q.count + q.uncle_count()) as usize);
            if q.proof_layers == h - q.base - 1 {
                assert_eq!(verify(&q, &got, &root, h), Ok(()), "{q:?}");
            } else if q.count < (1 << (h - q.base)) {
                assert_eq!(verify(&q, &got, &root, h), Err(ProofError::Short));
            }
        }
    }
}

#[test]
fn bad_proofs_are_refused() {
    let (piece_length, length) = (16 * KIB, 1030 * 16 * KIB);
    let r = Reference::new(1030);
    let root = r.root();
    let h = r.height();
    let q = req(root, 0, 512, 512, h - 1);
    let good = r.answer(&q);
    assert_eq!(good.len(), 512 + 2);
    assert_eq!(verify(&q, &good, &root, h), Ok(()));
    // A base hash changed, an uncle changed, uncles swapped, one missing, one extra.
    let mut bad = good.clone();
    bad[7][0] ^= 1;
    assert_eq!(verify(&q, &bad, &root, h), Err(ProofError::WrongRoot));
    let mut bad = good.clone();
    bad[513][31] ^= 1;
    assert_eq!(verify(&q, &bad, &root, h), Err(ProofError::WrongRoot));
    let mut bad = good.clone();
    bad.swap(512, 513);
    assert_eq!(verify(&q, &bad, &root, h), Err(ProofError::WrongRoot));
    assert!(matches!(
        verify(&q, &good[..513], &root, h),
        Err(ProofError::Count { .. })
    ));
    let mut bad = good.clone();
    bad.push([0; 32]);
    assert!(matches!(
        verify(&q, &bad, &root, h),
        Err(ProofError::Count { .. })
    ));
    // Right hashes, another file's root.
    assert_eq!(verify(&q, &good, &[9; 32], h), Err(ProofError::WrongRoot));
    // A proof past the root, a range past the layer, the wrong tree height.
    assert_eq!(
        verify(&req(root, 0, 512, 512, h), &good, &root, h),
        Err(ProofError::OutOfTree)
    );
    assert_eq!(
        verify(&req(root, 0, 2048, 512, h - 1), &good, &root, h),
        Err(ProofError::OutOfTree)
    );
    assert!(verify(&q, &good, &root, h + 1).is_err());
    let _ = (piece_length, length);
}

#[test]
fn requests_a_node_cannot_or_will_not_answer_are_refused() {
    let piece_length = 64 * KIB;
    let length = 20 * piece_length;
    let r = Reference::new(80);
    let root = r.root();
    let mut trees_info_layers = HashMap::new();
    trees_info_layers.insert(root, r.piece_layer(piece_length, length));
    let t = PieceTree::new(&r.piece_layer(piece_length, length), piece_length).unwrap();
    let h = t.height();
    assert_eq!(h, 7);
    // Block hashes need the data.
    assert_eq!(
        t.answer(&req(root, 0, 0, 4, 2)),
        Err(Refusal::BelowPieceLayer)
    );
    // Not a power of two, unaligned, past the layer, a proof up to or past the root, a base at
    // or over the root, absurd layers.
    for q in [
        req(root, 2, 0, 3, 0),
        req(root, 2, 2, 4, 0),
        req(root, 2, 32, 4, 0),
        req(root, 2, 28, 8, 0),
        req(root, 2, 0, 4, 5),
        req(root, 7, 0, 1, 0),
        req(root, 40, 0, 1, 0),
        req(root, 2, 0, 4, u32::MAX),
        req(root, u32::MAX, 0, 1, 0),
        req(root, 2, u32::MAX, 1, 0),
        req(root, 2, 0, 0, 0),
    ] {
        assert!(matches!(t.answer(&q), Err(Refusal::Invalid(_))), "{q:?}");
    }
    // More than we serve at once (from a tree wide enough to hold them).
    let wide = Reference::new(2048);
    let wt = PieceTree::new(&wide.piece_layer(16 * KIB, 2048 * 16 * KIB), 16 * KIB).unwrap();
    assert_eq!(
        wt.answer(&req(wide.root(), 0, 0, 1024, 10)),
        Err(Refusal::TooMany)
    );
    assert!(wt.answer(&req(wide.root(), 0, 0, 512, 10)).is_ok());
}

#[test]
fn a_layer_fetch_takes_only_verified_answers_to_its_own_requests() {
    for (piece_length, pieces) in [(16 * KIB, 1100u64), (64 * KIB, 5), (16 * KIB, 2)] {
        let length = pieces * piece_length - 7;
        let r = Reference::new(length.div_ceil(16 * KIB) as usize);
        let root = r.root();
        let layer = r.piece_layer(piece_length, length);
        let tree = PieceTree::new(&layer, piece_length).unwrap();
        let mut f = LayerFetch::new(root, length, piece_length).unwrap();
        let requests = f.requests().to_vec();
        assert_eq!(
            requests.len(),
            (pieces as usize).div_ceil(FETCH_CHUNK as usize)
        );
        // Our requests are what libtorrent's validation accepts and what we answer.
        for q in &requests {
            assert_eq!(q.proof_layers, tree.height() - q.base - 1);
            assert!(tree.answer(q).is_ok());
        }
        // A forged answer: refused, nothing kept.
        let mut forged = tree.answer(&requests[0]).unwrap();
        forged[0] = [0; 32];
        assert_eq!(f.accept(&requests[0], &forged), Err(ProofError::WrongRoot));
        // An answer to something never asked is ignored.
        let other = req(root, requests[0].base, 0, 1, 0);
        if !requests.contains(&other) {
            assert_eq!(f.accept(&other, &tree.answer(&other).unwrap()), Ok(false));
        }
        for q in &requests {
            assert!(!f.is_complete());
            assert_eq!(f.accept(q, &tree.answer(q).unwrap()), Ok(true));
            // The same answer twice changes nothing.
            assert_eq!(f.accept(q, &tree.answer(q).unwrap()), Ok(false));
        }
        assert!(f.is_complete());
        assert_eq!(f.into_layer().unwrap(), layer);
    }
    // Files of one piece need no layer.
    assert!(LayerFetch::new([1; 32], 64 * KIB, 64 * KIB).is_none());
    assert!(LayerFetch::new([1; 32], 10, 64 * KIB).is_none());
}

#[test]
fn trees_are_built_from_a_torrents_layers() {
    // A v2 .torrent of one file of 5 pieces and a bit, parsed, its layers served back.
    use crate::bencode::Bencode;
    let piece_length = 32 * KIB;
    let data: Vec<u8> = (0..(5 * 32 * 1024 + 3000))
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    let layer: Vec<[u8; 32]> = data
        .chunks(piece_length as usize)
        .map(|p| hash::v2_piece_hash(p, 2))
        .collect();
    let root = hash::root_from_piece_layer(&layer, piece_length);
    let mut attrs = Bencode::dict();
    attrs.insert("length", Bencode::Int(data.len() as i64));
    attrs.insert("pieces root", Bencode::bytes(root));
    let mut leaf = Bencode::dict();
    leaf.insert("", attrs);
    let mut tree = Bencode::dict();
    tree.insert("f", leaf);
    let mut info = Bencode::dict();
    info.insert("file tree", tree);
    info.insert("meta version", Bencode::Int(2));
    info.insert("name", Bencode::bytes("f"));
    info.insert("piece length", Bencode::Int(piece_length as i64));
    let mut torrent = Bencode::dict();
    torrent.insert("info", info);
    let mut layers = Bencode::dict();
    layers.insert(root, Bencode::Bytes(layer.concat()));
    torrent.insert("piece layers", layers);
    let m = crate::metainfo::Metainfo::from_bytes(&torrent.encode()).unwrap();

    let trees = Trees::from_info(&m.info);
    assert!(!trees.is_empty());
    let got = trees.answer(&req(root, 1, 0, 8, 2)).unwrap();
    assert_eq!(&got[..6], &layer[..]);
    assert_eq!(got[6], piece_pad(1));
    assert_eq!(
        trees.answer(&req([3; 32], 1, 0, 8, 2)),
        Err(Refusal::UnknownRoot)
    );
}
