//! BEP 52 merkle proofs, both ways: answering a peer's `hash request` from a file's piece layer
//! ([`PieceTree::answer`]), checking a peer's `hashes` against a file's `pieces root`
//! ([`verify`]), and the requests that fetch a whole piece layer ([`LayerFetch`]). Pure: no I/O,
//! no clock; the wire form is [`crate::wire::hashes`], the hashing [`crate::hash`].
//!
//! A file's tree has a 16 KiB block hash per leaf, padded with zero leaves to a power of two
//! (`height` layers up to the root). Its piece layer sits `log2(piece length / 16 KiB)` layers
//! up; a .torrent carries that layer (`piece layers`) for every file longer than a piece, and a
//! node serving the torrent builds the layers above it once ([`PieceTree::new`]). Layers below
//! the piece layer need the data itself: requests for them are refused (libtorrent asks for
//! them only to find the bad block of a piece that failed its check, and takes a reject).
//!
//! ```text
//!   height ─►            root                  proof: one uncle per layer from log2(count)
//!                  ┌──────┴──────┐             above the base up to proof_layers
//!   piece layer ─► p0    p1    p2    pad       (pads: the hash of an all-zero piece subtree)
//!                 /  \
//!   blocks (0) ─► b0  b1 …
//! ```

use std::collections::HashMap;

use crate::hash::{self, BLOCK_SIZE, sha256_pair};
use crate::metainfo::Info;
use crate::wire::hashes::{HashRequest, Invalid};

/// Most base hashes we serve in one answer: 512, what the spec says a request SHOULD NOT exceed
/// and what libtorrent asks of a piece layer. An answer is then at most 16.4 KiB, so the two
/// requests libtorrent keeps in flight fit the send backlog with room to spare.
pub const MAX_SERVED: u32 = 512;

/// Base hashes per request when fetching a layer (libtorrent's bucket of 512 pieces).
pub const FETCH_CHUNK: u32 = 512;

/// Why a request cannot be answered: each is told with a `hash reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no file of the torrent has this pieces root, or it has no piece layer")]
    UnknownRoot,
    #[error("the range or the proof does not fit the file's tree")]
    OutOfTree,
    #[error("layers below the piece layer need the data; not served")]
    BelowPieceLayer,
    #[error("more than {MAX_SERVED} hashes")]
    TooMany,
}

/// Why a `hashes` answer is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the range or the proof does not fit the file's tree")]
    OutOfTree,
    #[error("{got} hashes, expected {expected}")]
    Count { got: usize, expected: usize },
    #[error("the proof stops below the root")]
    Short,
    #[error("the hashes do not lead to the file's pieces root")]
    WrongRoot,
}

/// Layers from the 16 KiB block hashes up to the root of a file of `length` bytes: the block
/// count rounded up to a power of two, as a power (0 for a file of one block or none).
pub fn tree_height(length: u64) -> u32 {
    length
        .div_ceil(BLOCK_SIZE as u64)
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
}

/// Layers from the blocks up to the piece layer: `log2(piece_length / 16 KiB)`.
pub fn piece_layer(piece_length: u64) -> u32 {
    (piece_length / BLOCK_SIZE as u64).max(1).trailing_zeros()
}

/// The hash standing for a piece entirely past the end of a file: the root of an all-zero
/// subtree of a piece's blocks.
fn piece_pad(piece_layer: u32) -> [u8; 32] {
    hash::pad_hash_above([0; 32], piece_layer)
}

/// Checks `req` against a tree of `height` layers (what libtorrent's `validate_hash_request`
/// checks, plus the rules of [`HashRequest::check`]): the base inside the tree, the range inside
/// the base layer, the proof below the root.
fn fits(req: &HashRequest, height: u32) -> Result<(), Invalid> {
    req.check()?;
    if req.base >= height {
        return Err(Invalid::Layer(req.base));
    }
    let above = height - req.base;
    let layer_size = 1u64 << above;
    if u64::from(req.index) + u64::from(req.count) > layer_size {
        return Err(Invalid::Unaligned {
            index: req.index,
            count: req.count,
        });
    }
    if req.proof_layers >= above {
        return Err(Invalid::Layer(req.proof_layers));
    }
    Ok(())
}

/// One file's merkle tree from its piece layer up: built once from the layer a .torrent
/// carries, then every request is a copy of a range and a walk up to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceTree {
    piece_layer: u32,
    /// `layers[0]` is the piece layer padded to a power of two; each next one is half as long;
    /// the last is the root alone.
    layers: Vec<Vec<[u8; 32]>>,
}

impl PieceTree {
    /// The tree above `layer` (one hash per piece of a file longer than one piece), `None` for
    /// fewer than two hashes (such a file has no piece layer).
    pub fn new(layer: &[[u8; 32]], piece_length: u64) -> Option<PieceTree> {
        if layer.len() < 2 {
            return None;
        }
        let piece_layer = piece_layer(piece_length);
        let mut level = layer.to_vec();
        level.resize(layer.len().next_power_of_two(), piece_pad(piece_layer));
        let mut layers = vec![level];
        while let Some(below) = layers.last().filter(|l| l.len() > 1) {
            let up = below
                .chunks_exact(2)
                .map(|p| sha256_pair(&p[0], &p[1]))
                .collect();
            layers.push(up);
        }
        Some(PieceTree {
            piece_layer,
            layers,
        })
    }

    pub fn root(&self) -> [u8; 32] {
        self.layers
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 32])
    }

    /// Layers from the blocks up to the root.
    pub fn height(&self) -> u32 {
        self.piece_layer + (self.layers.len() as u32 - 1)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.capacity() * 32).sum()
    }

    /// The answer to `req` (its root already matched to this file): the base hashes, then the
    /// uncles of the proof, or why not.
    pub fn answer(&self, req: &HashRequest) -> Result<Vec<[u8; 32]>, Refusal> {
        fits(req, self.height())?;
        if req.base < self.piece_layer {
            return Err(Refusal::BelowPieceLayer);
        }
        if req.count > MAX_SERVED {
            return Err(Refusal::TooMany);
        }
        let k = (req.base - self.piece_layer) as usize;
        let (index, count) = (req.index as usize, req.count as usize);
        let base = self
            .layers
            .get(k)
            .and_then(|l| l.get(index..index + count))
            .ok_or(Refusal::OutOfTree)?;
        let mut out = Vec::with_capacity(count + req.uncle_count() as usize);
        out.extend_from_slice(base);
        let implied = req.count.trailing_zeros();
        for up in implied..=req.proof_layers {
            let pos = index >> up;
            let uncle = self
                .layers
                .get(k + up as usize)
                .and_then(|l| l.get(pos ^ 1))
                .ok_or(Refusal::OutOfTree)?;
            out.push(*uncle);
        }
        Ok(out)
    }
}

/// The trees of a torrent's files, by `pieces root`: what a node answers hash requests from.
/// Built from the piece layers when the torrent is opened (a few SHA-256 per piece), so a request
/// costs a copy, not a rebuild.
#[derive(Debug, Clone, Default)]
pub struct Trees {
    by_root: HashMap<[u8; 32], PieceTree>,
}

impl Trees {
    pub fn from_info(info: &Info) -> Trees {
        Trees::new(&info.piece_layers, info.layout.piece_length)
    }

    /// The trees of piece layers by root (a layer that does not hash to its root is left out).
    pub fn new(layers: &HashMap<[u8; 32], Vec<[u8; 32]>>, piece_length: u64) -> Trees {
        let by_root = layers
            .iter()
            .filter_map(|(root, layer)| {
                let tree = PieceTree::new(layer, piece_length)?;
                (tree.root() == *root).then_some((*root, tree))
            })
            .collect();
        Trees { by_root }
    }

    pub fn is_empty(&self) -> bool {
        self.by_root.is_empty()
    }

    /// The answer to a peer's request, or why it gets a reject.
    pub fn answer(&self, req: &HashRequest) -> Result<Vec<[u8; 32]>, Refusal> {
        self.by_root
            .get(&req.root)
            .ok_or(Refusal::UnknownRoot)?
            .answer(req)
    }
}

/// Checks a `hashes` answer to `req` for a file of tree `height` whose root is `root`: the base
/// hashes with the uncles must hash up to the root. Only proofs that reach the root are taken
/// (what we ask for: we keep no partial trees to anchor a shorter proof to).
pub fn verify(
    req: &HashRequest,
    hashes: &[[u8; 32]],
    root: &[u8; 32],
    height: u32,
) -> Result<(), ProofError> {
    fits(req, height).map_err(|_| ProofError::OutOfTree)?;
    let count = req.count as usize;
    let expected = count + req.uncle_count() as usize;
    if hashes.len() != expected {
        return Err(ProofError::Count {
            got: hashes.len(),
            expected,
        });
    }
    let (base, uncles) = hashes.split_at(count);
    let implied = req.count.trailing_zeros();
    let mut node = hash::merkle_root(base, count, [0; 32]);
    let mut pos = req.index >> implied;
    for uncle in uncles {
        node = if pos.is_multiple_of(2) {
            sha256_pair(&node, uncle)
        } else {
            sha256_pair(uncle, &node)
        };
        pos >>= 1;
    }
    let reached = implied + uncles.len() as u32;
    if reached != height - req.base {
        return Err(ProofError::Short);
    }
    if node != *root {
        return Err(ProofError::WrongRoot);
    }
    Ok(())
}

/// The fetch of one file's piece layer: the requests that cover it (runs of up to
/// [`FETCH_CHUNK`] hashes, each with the proof up to the root, as libtorrent answers them), and
/// the hashes as verified answers arrive.
#[derive(Debug, Clone)]
pub struct LayerFetch {
    root: [u8; 32],
    pieces: usize,
    piece_length: u64,
    height: u32,
    requests: Vec<HashRequest>,
    got: Vec<Option<Vec<[u8; 32]>>>,
}

impl LayerFetch {
    /// The fetch for a file of `length` bytes with root `root`; `None` when the file needs no
    /// layer (one piece or less: its root is its only piece hash).
    pub fn new(root: [u8; 32], length: u64, piece_length: u64) -> Option<LayerFetch> {
        let pieces = length.div_ceil(piece_length.max(1));
        if pieces < 2 || piece_length < BLOCK_SIZE as u64 {
            return None;
        }
        let pieces = usize::try_from(pieces).ok()?;
        let width = pieces.next_power_of_two();
        let base = piece_layer(piece_length);
        let height = base + width.trailing_zeros();
        let count = width.min(FETCH_CHUNK as usize);
        let requests: Vec<HashRequest> = (0..pieces)
            .step_by(count)
            .map(|index| HashRequest {
                root,
                base,
                index: index as u32,
                count: count as u32,
                proof_layers: height - base - 1,
            })
            .collect();
        Some(LayerFetch {
            root,
            pieces,
            piece_length,
            height,
            got: vec![None; requests.len()],
            requests,
        })
    }

    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// Every request that covers the layer.
    pub fn requests(&self) -> &[HashRequest] {
        &self.requests
    }

    /// Takes the answer to one of our requests: `Ok(true)` when it was new and verified,
    /// `Ok(false)` for an answer to nothing we asked (or already had), an error when its proof
    /// fails.
    pub fn accept(&mut self, req: &HashRequest, hashes: &[[u8; 32]]) -> Result<bool, ProofError> {
        let Some(i) = self.requests.iter().position(|r| r == req) else {
            return Ok(false);
        };
        if self.got[i].is_some() {
            return Ok(false);
        }
        verify(req, hashes, &self.root, self.height)?;
        self.got[i] = Some(hashes[..req.count as usize].to_vec());
        Ok(true)
    }

    pub fn is_complete(&self) -> bool {
        self.got.iter().all(Option::is_some)
    }

    /// The layer, one hash per piece, once complete and consistent with the root as a whole.
    pub fn into_layer(self) -> Option<Vec<[u8; 32]>> {
        let mut layer = Vec::with_capacity(self.pieces);
        for part in self.got {
            layer.extend(part?);
        }
        layer.truncate(self.pieces);
        (layer.len() == self.pieces
            && hash::root_from_piece_layer(&layer, self.piece_length) == self.root)
            .then_some(layer)
    }
}

#[cfg(test)]
mod tests;
