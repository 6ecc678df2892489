//! Piece hashing: SHA-1 for v1 pieces and SHA-256 merkle trees for v2 (BEP 52). The parallel
//! verifier that streams a torrent's data through every core is [`crate::verify`].
//!
//! SHA-1 comes from the `sha1` crate 0.11, which detects SHA-NI at run time (2.33 GB/s per core
//! on the EPYC this was measured on, the same as OpenSSL). `sha1-asm` has no SHA-NI path and
//! reaches 1.27 GB/s, so it is not used. `sha2` likewise uses SHA-NI for SHA-256.

use sha1::{Digest, Sha1};
use sha2::Sha256;

/// BEP 52 merkle leaves are SHA-256 of 16 KiB blocks.
pub const BLOCK_SIZE: usize = 16 * 1024;

pub fn sha1(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of two hashes side by side: a merkle tree node from its children.
pub fn sha256_pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of a merkle tree over `leaves`, padded with `pad` up to `width` leaves (a power of two
/// at least `leaves.len()`). `pad` is the hash that stands for a missing subtree at leaf level.
pub fn merkle_root(leaves: &[[u8; 32]], width: usize, pad: [u8; 32]) -> [u8; 32] {
    debug_assert!(width.is_power_of_two() && width >= leaves.len());
    if leaves.is_empty() {
        return pad_hash_above(pad, width.trailing_zeros());
    }
    let mut level: Vec<[u8; 32]> = leaves.to_vec();
    let mut pad = pad;
    let mut width = width;
    while width > 1 {
        if level.len() % 2 == 1 {
            level.push(pad);
        }
        level = level
            .chunks_exact(2)
            .map(|p| sha256_pair(&p[0], &p[1]))
            .collect();
        pad = sha256_pair(&pad, &pad);
        width /= 2;
    }
    level[0]
}

/// Hash of an all-`pad` subtree `levels` levels above the leaves.
pub fn pad_hash_above(mut pad: [u8; 32], levels: u32) -> [u8; 32] {
    for _ in 0..levels {
        pad = sha256_pair(&pad, &pad);
    }
    pad
}

/// The BEP 52 hash of one v2 piece: the merkle root over its 16 KiB blocks (the last block
/// hashed at its real length), padded with zero leaves to `leaf_width` leaves.
///
/// `leaf_width` is `piece_length / 16 KiB` for files longer than one piece (the hash is an entry
/// of the piece layer) and the next power of two of the block count for files of at most one
/// piece (the hash is the file's `pieces root`); see [`v2_leaf_width`].
pub fn v2_piece_hash(data: &[u8], leaf_width: usize) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = data.chunks(BLOCK_SIZE).map(sha256).collect();
    merkle_root(
        &leaves,
        leaf_width.max(leaves.len().next_power_of_two()),
        [0; 32],
    )
}

/// Leaf count of the merkle subtree that a v2 piece of `file_length` bytes is hashed over.
pub fn v2_leaf_width(file_length: u64, piece_length: u64, bytes_in_piece: u64) -> usize {
    if file_length <= piece_length {
        (bytes_in_piece.div_ceil(BLOCK_SIZE as u64) as usize)
            .max(1)
            .next_power_of_two()
    } else {
        (piece_length / BLOCK_SIZE as u64) as usize
    }
}

/// The `pieces root` of a file from its piece layer: the layer padded with the hash of an
/// all-zero piece subtree up to a power of two.
pub fn root_from_piece_layer(layer: &[[u8; 32]], piece_length: u64) -> [u8; 32] {
    let blocks_per_piece = (piece_length / BLOCK_SIZE as u64).max(1) as u32;
    let pad = pad_hash_above([0; 32], blocks_per_piece.trailing_zeros());
    merkle_root(layer, layer.len().next_power_of_two(), pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_known_answers() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn merkle_layers_agree_with_a_full_tree() {
        // A file of 5 pieces of 4 blocks each (last piece partial): the root from the piece
        // layer must equal the root of the whole tree of zero-padded leaves.
        let piece_length = 4 * BLOCK_SIZE as u64;
        let data: Vec<u8> = (0..(4 * 4 * BLOCK_SIZE + 3 * BLOCK_SIZE + 100))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let layer: Vec<[u8; 32]> = data
            .chunks(piece_length as usize)
            .map(|p| v2_piece_hash(p, 4))
            .collect();
        assert_eq!(layer.len(), 5);
        let leaves: Vec<[u8; 32]> = data.chunks(BLOCK_SIZE).map(sha256).collect();
        let full = merkle_root(&leaves, 32, [0; 32]);
        assert_eq!(root_from_piece_layer(&layer, piece_length), full);
        // A small file's root uses only as many leaves as it needs.
        let small = &data[..3 * BLOCK_SIZE];
        let w = v2_leaf_width(small.len() as u64, piece_length, small.len() as u64);
        assert_eq!(w, 4);
        assert_eq!(
            v2_piece_hash(small, w),
            merkle_root(&leaves[..3], 4, [0; 32])
        );
        assert_eq!(v2_leaf_width(10, piece_length, 10), 1);
        assert_eq!(v2_piece_hash(b"x", 1), sha256(b"x"));
    }

    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
