//! Fetching a whole torrent from one peer: the downloading half of the wire protocol in its
//! simplest form (one connection, blocking I/O, a deep request pipeline), with every piece
//! checked against the torrent's hashes.
//!
//! It backs `ringseed demo` (seed a payload, fetch it back byte-perfect, print the speed) and is
//! the seed of the load generator that `ringseed bench` grows into.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::metainfo::Info;
use crate::wire::{self, BlockRequest, Handshake, Message};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error("piece {0} failed its hash check")]
    BadPiece(u32),
    #[error("only v1 and hybrid torrents can be fetched (SHA-1 piece hashes)")]
    NotV1,
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub bytes: u64,
    pub elapsed: Duration,
    pub pieces: u32,
}

impl FetchReport {
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Downloads every piece of `info` from the peer at `addr` into one buffer of the torrent's
/// linear byte space (pads included), verifying each piece's SHA-1. `pipeline` is the number of
/// 16 KiB requests kept outstanding.
pub fn fetch(
    info: &Info,
    addr: SocketAddr,
    pipeline: usize,
) -> Result<(Vec<u8>, FetchReport), FetchError> {
    if info.pieces.is_empty() && info.layout.num_pieces > 0 {
        return Err(FetchError::NotV1);
    }
    let started = Instant::now();
    let layout = &info.layout;
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let peer_id = crate::engine::new_peer_id();
    s.write_all(&Handshake::new(info.hash.wire_id(), peer_id).encode())?;
    let mut hs = [0u8; Handshake::LEN];
    s.read_exact(&mut hs)?;
    let theirs = Handshake::parse(&hs)
        .map_err(|e| FetchError::Protocol(e.to_string()))?
        .ok_or_else(|| FetchError::Protocol("short handshake".into()))?;
    if theirs.info_hash != info.hash.wire_id() {
        return Err(FetchError::Protocol("wrong info-hash in handshake".into()));
    }
    let mut out = Vec::new();
    Message::Interested.encode(&mut out);
    s.write_all(&out)?;

    let total = layout.total_length;
    let mut data = vec![0u8; total as usize];
    // Every block of the torrent, in order.
    let blocks: Vec<BlockRequest> = (0..layout.num_pieces)
        .flat_map(|p| {
            let size = layout.piece_size(p);
            (0..size.div_ceil(u64::from(wire::BLOCK_SIZE))).map(move |b| {
                let begin = b * u64::from(wire::BLOCK_SIZE);
                BlockRequest {
                    index: p,
                    begin: begin as u32,
                    length: (size - begin).min(u64::from(wire::BLOCK_SIZE)) as u32,
                }
            })
        })
        .collect();
    let mut blocks_left_in_piece: Vec<u32> = (0..layout.num_pieces)
        .map(|p| layout.piece_size(p).div_ceil(u64::from(wire::BLOCK_SIZE)) as u32)
        .collect();
    // Index of each piece's first block in `blocks`, and which blocks have arrived.
    let mut block_index = Vec::with_capacity(layout.num_pieces as usize);
    let mut acc = 0usize;
    for p in 0..layout.num_pieces {
        block_index.push(acc);
        acc += layout.piece_size(p).div_ceil(u64::from(wire::BLOCK_SIZE)) as usize;
    }
    let mut got_block = vec![false; blocks.len()];
    let mut to_request: std::collections::VecDeque<BlockRequest> = blocks.iter().copied().collect();
    let (mut outstanding, mut received) = (0usize, 0usize);
    let mut unchoked = false;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 << 10];
    let max_msg = (layout.num_pieces.div_ceil(8) + 1)
        .max(wire::BLOCK_SIZE + 9)
        .max(1 << 20);
    while received < blocks.len() {
        if unchoked && outstanding < pipeline && !to_request.is_empty() {
            out.clear();
            while outstanding < pipeline {
                let Some(b) = to_request.pop_front() else {
                    break;
                };
                Message::Request(b).encode(&mut out);
                outstanding += 1;
            }
            s.write_all(&out)?;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(FetchError::Protocol("peer closed the connection".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Some((msg, used)) = wire::parse_message(&buf[pos..], max_msg)
            .map_err(|e| FetchError::Protocol(e.to_string()))?
        {
            match msg {
                Message::Unchoke => unchoked = true,
                // We speak the fast extension: a choke voids nothing by itself; the seeder
                // rejects what it will not serve, and those blocks are asked for again.
                Message::Choke => unchoked = false,
                Message::Piece {
                    index,
                    begin,
                    data: block,
                } => {
                    let at = u64::from(index) * layout.piece_length + u64::from(begin);
                    let end = at + block.len() as u64;
                    if index >= layout.num_pieces || end > total {
                        return Err(FetchError::Protocol(format!(
                            "block out of range: piece {index} at {begin}"
                        )));
                    }
                    let block_no = (u64::from(index) * layout.piece_length
                        / u64::from(wire::BLOCK_SIZE)) as usize
                        + (begin / wire::BLOCK_SIZE) as usize;
                    if std::mem::replace(
                        &mut got_block
                            [block_index[index as usize] + (begin / wire::BLOCK_SIZE) as usize],
                        true,
                    ) {
                        return Err(FetchError::Protocol(format!(
                            "block {block_no} (piece {index} at {begin}) sent twice"
                        )));
                    }
                    data[at as usize..end as usize].copy_from_slice(block);
                    outstanding = outstanding.saturating_sub(1);
                    received += 1;
                    let left = &mut blocks_left_in_piece[index as usize];
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        let start = u64::from(index) * layout.piece_length;
                        let piece =
                            &data[start as usize..(start + layout.piece_size(index)) as usize];
                        if Some(&crate::hash::sha1(piece)) != info.pieces.get(index as usize) {
                            return Err(FetchError::BadPiece(index));
                        }
                    }
                }
                Message::Reject(r) => {
                    outstanding = outstanding.saturating_sub(1);
                    to_request.push_front(r);
                }
                _ => {}
            }
            pos += used;
        }
        buf.drain(..pos);
    }
    Ok((
        data,
        FetchReport {
            bytes: total,
            elapsed: started.elapsed(),
            pieces: layout.num_pieces,
        },
    ))
}
