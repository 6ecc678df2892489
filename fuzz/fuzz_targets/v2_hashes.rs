//! BEP 52 hash messages from a stranger (`wire::hashes`) and what the node does with them
//! (`merkle`): parsing never panics and never accepts a hash count the header does not imply;
//! whatever parses survives our encoding; a request is answered from a real tree or refused,
//! never with a panic, and every answer is exactly the implied hashes, parses back, and (when
//! its proof reaches the root) verifies; a `hashes` message is verified against the tree
//! without panicking, and a forged one is never taken by a layer fetch.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringseed::hash;
use ringseed::merkle::{self, LayerFetch, PieceTree, Trees};
use ringseed::wire::hashes::{self, HashMessage, MAX_HASHES_PAYLOAD};

/// A file of 1 100 pieces of 32 KiB (two blocks each): a tree of 12 layers whose piece layer
/// needs three requests of 512.
struct Fixture {
    tree: PieceTree,
    /// The same tree as the engine holds it: by root.
    trees: Trees,
    length: u64,
}

const PIECE: u64 = 32 * 1024;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pieces = 1100u32;
        let layer: Vec<[u8; 32]> = (0..pieces).map(|i| hash::sha256(&i.to_be_bytes())).collect();
        let tree = PieceTree::new(&layer, PIECE).expect("two pieces or more");
        let trees = Trees::new(&HashMap::from([(tree.root(), layer)]), PIECE);
        Fixture {
            tree,
            trees,
            length: u64::from(pieces) * PIECE - 5,
        }
    })
}

fn as_hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap_or([0; 32]))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let root = f.tree.root();
    let id = 21 + sel % 3;
    // Half the inputs name the fixture's root, so the tree is reached.
    let mut payload = rest.to_vec();
    if sel & 0x80 != 0 && payload.len() >= 32 {
        payload[..32].copy_from_slice(&root);
    }
    let Ok(msg) = hashes::parse(id, &payload) else {
        return;
    };
    assert!(payload.len() <= MAX_HASHES_PAYLOAD);
    let mut out = Vec::new();
    msg.encode(&mut out);
    assert_eq!(&out[5..], &payload[..]);
    assert_eq!(hashes::parse(out[4], &out[5..]).unwrap(), msg);

    match msg {
        HashMessage::Request(req) | HashMessage::Reject(req) => {
            if let Ok(answer) = f.trees.answer(&req) {
                assert_eq!(req.root, root);
                assert!(req.count <= merkle::MAX_SERVED);
                assert_eq!(answer.len(), (req.count + req.uncle_count()) as usize);
                let mut wire = Vec::new();
                hashes::encode_hashes(&req, &answer, &mut wire);
                let back = hashes::parse(wire[4], &wire[5..]).unwrap();
                assert!(matches!(back, HashMessage::Hashes { req: r, .. } if r == req));
                if req.proof_layers + 1 == f.tree.height() - req.base {
                    assert_eq!(merkle::verify(&req, &answer, &root, f.tree.height()), Ok(()));
                }
            }
        }
        HashMessage::Hashes { req, hashes: bytes } => {
            let got = as_hashes(bytes);
            let verified = merkle::verify(&req, &got, &root, f.tree.height());
            let mut fetch = LayerFetch::new(root, f.length, PIECE).unwrap();
            let accepted = fetch.accept(&req, &got);
            if accepted == Ok(true) {
                // Taken only when it is exactly the true answer.
                assert_eq!(verified, Ok(()));
                let truth: Option<Vec<[u8; 32]>> = f.trees.answer(&req).ok();
                assert_eq!(truth.as_deref(), Some(&got[..]));
            }
        }
    }
});
