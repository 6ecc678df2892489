//! One peer, start to end: connect, the MSE handshake when the policy dials encrypted, the
//! BitTorrent handshake, the extension handshakes, then
//! `ut_metadata` requests until the metadata is whole and hashes right, or the peer is given up.
//!
//! Every wait ends at the earlier of the per-peer deadline and the no-progress timeout; every
//! message is bounded before it is buffered; messages that bring no progress count against a
//! budget. Nothing a peer sends can panic this code or make it allocate on the peer's word.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::assembly::{self, MetadataAssembly};
use super::{FetchOptions, PeerFailure, PieceLayers};
use crate::engine::encryption::Dial;
use crate::merkle::LayerFetch;
use crate::metainfo::{Info, InfoHash};
use crate::mse::{Done, Initiator, KeyPair, Streams};
use crate::wire::extension::ExtHandshake;
use crate::wire::hashes::{self, HashMessage, HashRequest};
use crate::wire::metadata::{
    EXTENSION_NAME, LOCAL_ID, MetadataMessage, reject_message, request_message,
};
use crate::wire::{Handshake, Message, WireError, parse_message};

/// What a peer is asked for, shared by every peer's task.
#[derive(Debug)]
pub(super) struct Target {
    pub hash: InfoHash,
    pub opts: FetchOptions,
}

/// Stages named in failures: what we were waiting for.
pub(super) const HANDSHAKE: &str = "handshake";
pub(super) const MSE: &str = "MSE handshake";
const EXT_HANDSHAKE: &str = "extension handshake";
const PIECES: &str = "metadata pieces";
const LAYERS: &str = "piece layers";

/// Hash requests in flight at once with one peer: libtorrent keeps two; each answer is at most
/// 16.4 KiB, so a few more hide the round trip without piling up answers.
const HASH_WINDOW: usize = 4;

/// Longest message accepted: a bitfield of 8 M pieces. The messages we use are far shorter (an
/// extension handshake is at most 64 KiB, a `ut_metadata` data message 16 KiB and its
/// dictionary), but a peer may send a bitfield first and a torrent may have many pieces.
const MAX_FRAME: u32 = 1 << 20;

/// Requests in flight at once with one peer: enough to hide the round trip, few enough that the
/// memory a piece arriving out of order makes us reserve stays within a few pieces.
const REQUEST_WINDOW: u32 = 8;

/// Our extension handshake offers nothing but `ut_metadata`: this connection exists only to fetch
/// the metadata, the engine's connections do the rest.
fn our_ext_handshake(opts: &FetchOptions, peer_ip: IpAddr) -> Vec<u8> {
    ExtHandshake {
        m: vec![(EXTENSION_NAME.to_owned(), LOCAL_ID)],
        v: Some(format!("ringseed {}", env!("CARGO_PKG_VERSION"))),
        yourip: Some(peer_ip),
        p: (opts.listen_port != 0).then_some(opts.listen_port),
        ..Default::default()
    }
    .encode()
}

/// Connects to `addr` as the encryption policy says (MSE first, and with `enabled` once more
/// in plain if the peer drops or garbles the MSE handshake, as libtorrent and the engine do)
/// and exchanges handshakes (ours with the v2 bit when `v2`), then sends our extension
/// handshake.
async fn open<'a>(
    addr: SocketAddr,
    target: &'a Target,
    v2: bool,
) -> Result<Connection<'a>, PeerFailure> {
    let enc = &target.opts.encryption;
    match enc.dial() {
        Dial::Plain => open_as(addr, target, v2, false).await,
        Dial::Mse => match open_as(addr, target, v2, true).await {
            Err(e) if enc.retry_plain() && dropped_mse(&e) => {
                open_as(addr, target, v2, false).await
            }
            r => r,
        },
    }
}

/// Whether an MSE dial failed in a way a plain-only peer makes it fail: closed, reset or
/// answered with something that is no MSE handshake. A timeout is not retried: a peer that
/// says nothing to our key would say nothing to a plain handshake either.
fn dropped_mse(e: &PeerFailure) -> bool {
    matches!(
        e,
        PeerFailure::Closed(MSE) | PeerFailure::Io { stage: MSE, .. } | PeerFailure::Mse(_)
    )
}

/// One dial, with MSE (`mse`) or plain.
async fn open_as<'a>(
    addr: SocketAddr,
    target: &'a Target,
    v2: bool,
    mse: bool,
) -> Result<Connection<'a>, PeerFailure> {
    let opts = &target.opts;
    let stream = match timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(PeerFailure::ConnectTimeout(opts.connect_timeout)),
        Ok(Err(e)) => return Err(PeerFailure::Connect(e.to_string())),
        Ok(Ok(s)) => s,
    };
    // Requests are a few dozen bytes each and the peer waits for them.
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream, opts);

    // libtorrent takes the torrent an MSE connection is for, and its protocol version, from
    // the hash that names it: a hybrid torrent asked for by its v1 hash gives a v1 connection
    // that closes at the first hash request, even with the v2 bit set. An encrypted v2
    // connection therefore names the torrent by its truncated v2 hash.
    let wire_id = match target.hash.v2 {
        Some(long) if mse && v2 => {
            let mut id = [0u8; 20];
            id.copy_from_slice(&long[..20]);
            id
        }
        _ => target.hash.wire_id(),
    };
    let ours = Handshake::new(wire_id, opts.peer_id).with_v2(v2);
    if mse {
        // Our BitTorrent handshake goes as the MSE initial payload, saving a round trip.
        conn.mse_handshake(wire_id, &ours.encode()).await?;
    } else {
        conn.send(&ours.encode(), HANDSHAKE).await?;
    }
    let theirs = conn.read_handshake().await?;
    if !names_our_torrent(theirs.info_hash, &target.hash) {
        return Err(PeerFailure::WrongInfoHash(theirs.info_hash));
    }
    if !theirs.supports_extensions() {
        return Err(PeerFailure::NoExtensions);
    }
    conn.progress();

    let mut hello = Vec::new();
    // BEP 6: with the fast extension on both sides, the first message says which pieces we have
    // (none: we do not even know how many there are).
    if theirs.supports_fast() {
        Message::HaveNone.encode(&mut hello);
    }
    extended(0, &our_ext_handshake(opts, addr.ip()), &mut hello);
    conn.send(&hello, EXT_HANDSHAKE).await?;
    Ok(conn)
}

/// Fetches and verifies the metadata from the peer at `addr`, and for a v2 or hybrid torrent
/// the piece layers of its files longer than a piece (BEP 52 hash requests, each answer
/// checked against its file's `pieces root`): the info dictionary alone cannot verify a piece
/// of such a file.
///
/// The handshake announces v2 when the magnet names a v2 hash (libtorrent answers hash
/// requests only on connections marked v2, and closes one that sets the bit for a v1-only
/// torrent); a hybrid torrent found by its v1 hash alone gets a second connection with the bit
/// set for its layers.
pub(super) async fn fetch_from(
    addr: SocketAddr,
    target: Arc<Target>,
) -> Result<(Vec<u8>, PieceLayers), PeerFailure> {
    let opts = &target.opts;
    let v2 = target.hash.v2.is_some();
    let mut conn = open(addr, &target, v2).await?;

    let (their_id, mut assembly) = loop {
        let frame = conn.read_frame(EXT_HANDSHAKE).await?;
        if let Message::Extended { id: 0, payload } = parse(&frame)? {
            let ext = ExtHandshake::parse(payload).map_err(PeerFailure::BadExtHandshake)?;
            let id = ext.id_of(EXTENSION_NAME).ok_or(PeerFailure::NoUtMetadata)?;
            let size = ext.metadata_size.ok_or(PeerFailure::NoMetadataSize)?;
            let assembly =
                MetadataAssembly::new(size, opts.max_metadata_bytes, opts.data_messages_per_piece)?;
            break (id, assembly);
        }
        // A bitfield, have_all, unchoke...: of no use before we know the torrent.
        conn.no_progress(frame.len())?;
    };
    conn.progress();

    while !assembly.is_complete() {
        let mut requests = Vec::new();
        while assembly.in_flight() < REQUEST_WINDOW
            && let Some(piece) = assembly.next_request()
        {
            extended(their_id, &request_message(piece), &mut requests);
        }
        if !requests.is_empty() {
            conn.send(&requests, PIECES).await?;
        }
        let frame = conn.read_frame(PIECES).await?;
        let progress = match parse(&frame)? {
            Message::Extended {
                id: LOCAL_ID,
                payload,
            } => {
                let (message, piece_bytes) = MetadataMessage::parse_with_piece(payload)
                    .map_err(PeerFailure::BadMetadataMessage)?;
                match message {
                    MetadataMessage::Data { piece, total_size } => {
                        assembly.accept(piece, total_size, piece_bytes)?
                    }
                    MetadataMessage::Reject(piece) => return Err(PeerFailure::Rejected(piece)),
                    // BEP 9: a peer without the metadata rejects requests for it.
                    MetadataMessage::Request(piece) => {
                        let mut reject = Vec::new();
                        extended(their_id, &reject_message(piece), &mut reject);
                        conn.send(&reject, PIECES).await?;
                        false
                    }
                }
            }
            _ => false,
        };
        if progress {
            conn.progress();
        } else {
            conn.no_progress(frame.len())?;
        }
    }
    // Hashing and parsing up to 30 MiB take tens of milliseconds: off the control thread's
    // runtime.
    let hash = target.hash;
    let info = assembly.into_bytes();
    let (info, layers) = tokio::task::spawn_blocking(move || {
        assembly::check_hash(&info, &hash)?;
        Ok::<_, PeerFailure>((layer_fetches(&info), info))
    })
    .await
    .map_err(|e| PeerFailure::Internal(e.to_string()))?
    .map(|(layers, info)| (info, layers))?;
    if layers.is_empty() {
        return Ok((info, PieceLayers::new()));
    }
    if !v2 {
        // The magnet named only the v1 hash of a hybrid torrent: ask again as a v2 peer.
        drop(conn);
        conn = open(addr, &target, true).await?;
    }
    let layers = fetch_layers(&mut conn, layers).await?;
    Ok((info, layers))
}

/// The piece layers an info dictionary needs fetched: one [`LayerFetch`] per distinct `pieces
/// root` of a file longer than a piece, none for a v1 torrent or one the parser refuses (the
/// caller's parse then says why).
fn layer_fetches(info: &[u8]) -> Vec<LayerFetch> {
    let Ok(info) = Info::from_bytes(info) else {
        return Vec::new();
    };
    if !info.version.has_v2() {
        return Vec::new();
    }
    let piece_length = info.layout.piece_length;
    let mut fetches: Vec<LayerFetch> = Vec::new();
    for (_, f) in info.layout.data_files() {
        let Some(root) = f.pieces_root else {
            continue;
        };
        if fetches.iter().any(|l| l.root() == root) {
            continue;
        }
        fetches.extend(LayerFetch::new(root, f.length, piece_length));
    }
    fetches
}

/// Asks for every layer, [`HASH_WINDOW`] requests at a time, until each hash of each layer has
/// come with a proof that reaches its file's root. A reject of one of our requests, or an
/// answer whose proof fails, ends the attempt with this peer; other messages count against the
/// budget of messages without progress.
async fn fetch_layers(
    conn: &mut Connection<'_>,
    mut fetches: Vec<LayerFetch>,
) -> Result<PieceLayers, PeerFailure> {
    let mut waiting: std::collections::VecDeque<HashRequest> = fetches
        .iter()
        .flat_map(|f| f.requests().iter().copied())
        .collect();
    let mut in_flight: Vec<HashRequest> = Vec::new();
    conn.progress();
    while !fetches.iter().all(LayerFetch::is_complete) {
        let mut out = Vec::new();
        while in_flight.len() < HASH_WINDOW
            && let Some(req) = waiting.pop_front()
        {
            HashMessage::Request(req).encode(&mut out);
            in_flight.push(req);
        }
        if !out.is_empty() {
            conn.send(&out, LAYERS).await?;
        }
        let frame = conn.read_frame(LAYERS).await?;
        let progress = match parse(&frame)? {
            Message::Unknown { id, payload } if hashes::is_hash_message(id) => {
                match hashes::parse(id, payload)
                    .map_err(|e| PeerFailure::BadHashes(e.to_string()))?
                {
                    HashMessage::Hashes { req, hashes } if in_flight.contains(&req) => {
                        in_flight.retain(|r| *r != req);
                        let got: Vec<[u8; 32]> = hashes
                            .chunks_exact(32)
                            .map(|h| h.try_into().unwrap_or([0; 32]))
                            .collect();
                        let fetch = fetches
                            .iter_mut()
                            .find(|f| f.root() == req.root)
                            .ok_or_else(|| PeerFailure::Internal("a request of no fetch".into()))?;
                        fetch
                            .accept(&req, &got)
                            .map_err(|e| PeerFailure::BadHashes(e.to_string()))?
                    }
                    HashMessage::Reject(req) if in_flight.contains(&req) => {
                        return Err(PeerFailure::HashesRejected);
                    }
                    // Unasked answers, and requests of its own (we serve nothing here).
                    _ => false,
                }
            }
            _ => false,
        };
        if progress {
            conn.progress();
        } else {
            conn.no_progress(frame.len())?;
        }
    }
    let mut layers = PieceLayers::new();
    for f in fetches {
        let root = f.root();
        let layer = f
            .into_layer()
            .ok_or_else(|| PeerFailure::BadHashes("the layer does not hash to its root".into()))?;
        layers.insert(root, layer);
    }
    Ok(layers)
}

/// Whether a peer's handshake names the torrent we asked for: the hash we sent or the other one
/// we know. A hybrid torrent's peer may answer with its other hash: libtorrent 2.0.8 answers in
/// the protocol version it remembers for our IP, so after one connection with the truncated v2
/// hash it answers a v1 handshake with the v2 hash (seen in tests/magnet_fetch.rs).
fn names_our_torrent(theirs: [u8; 20], ours: &InfoHash) -> bool {
    theirs == ours.wire_id()
        || ours.v1 == Some(theirs)
        || ours.v2.is_some_and(|v2| v2[..20] == theirs)
}

fn extended(id: u8, payload: &[u8], out: &mut Vec<u8>) {
    Message::Extended { id, payload }.encode(out);
}

/// Parses a whole frame as read by [`Connection::read_frame`].
fn parse(frame: &[u8]) -> Result<Message<'_>, PeerFailure> {
    match parse_message(frame, MAX_FRAME) {
        Ok(Some((message, _))) => Ok(message),
        Ok(None) => Err(PeerFailure::Internal("incomplete frame".into())),
        Err(e) => Err(PeerFailure::BadMessage(e)),
    }
}

/// When the current wait ends, and why.
#[derive(Debug, Clone, Copy)]
struct WaitLimit {
    at: Instant,
    /// The per-peer deadline comes first (else the no-progress timeout does).
    deadline: bool,
}

/// A connection with its time limits and its budget of messages without progress, and after
/// an MSE handshake that chose RC4 its two cipher streams: what is read is decrypted, what is
/// written encrypted, each byte exactly once and in stream order.
struct Connection<'a> {
    stream: BufReader<TcpStream>,
    opts: &'a FetchOptions,
    /// RC4 both ways, once an MSE handshake chose it.
    crypt: Option<Box<Streams>>,
    /// Payload bytes that came with the MSE handshake, already decrypted: read before the
    /// stream.
    early: Vec<u8>,
    deadline: Instant,
    progress_until: Instant,
    messages: u32,
    bytes: usize,
}

impl<'a> Connection<'a> {
    fn new(stream: TcpStream, opts: &'a FetchOptions) -> Self {
        let now = Instant::now();
        Connection {
            stream: BufReader::new(stream),
            opts,
            crypt: None,
            early: Vec::new(),
            deadline: now + opts.peer_deadline,
            progress_until: now + opts.peer_timeout,
            messages: 0,
            bytes: 0,
        }
    }

    /// The peer moved the fetch forward: its timeout and budget start again.
    fn progress(&mut self) {
        self.progress_until = Instant::now() + self.opts.peer_timeout;
        self.messages = 0;
        self.bytes = 0;
    }

    /// A message of `len` bytes that did not move the fetch forward.
    fn no_progress(&mut self, len: usize) -> Result<(), PeerFailure> {
        self.messages = self.messages.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len);
        if self.messages > self.opts.max_messages_without_progress
            || self.bytes > self.opts.max_bytes_without_progress
        {
            return Err(PeerFailure::NoProgress {
                messages: self.messages,
                bytes: self.bytes,
            });
        }
        Ok(())
    }

    fn limit(&self) -> WaitLimit {
        WaitLimit {
            at: self.deadline.min(self.progress_until),
            deadline: self.deadline <= self.progress_until,
        }
    }

    /// Runs one I/O step within the current limit, naming `stage` in its failure.
    async fn timed<T>(
        limit: WaitLimit,
        opts: &FetchOptions,
        stage: &'static str,
        io: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, PeerFailure> {
        match timeout_at(limit.at, io).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(PeerFailure::Closed(stage))
            }
            Ok(Err(e)) => Err(PeerFailure::Io {
                stage,
                error: e.to_string(),
            }),
            Err(_) if limit.deadline => Err(PeerFailure::Deadline(opts.peer_deadline)),
            Err(_) => Err(PeerFailure::Timeout {
                stage,
                timeout: opts.peer_timeout,
            }),
        }
    }

    async fn send(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), PeerFailure> {
        let Some(crypt) = &mut self.crypt else {
            return self.send_raw(bytes, stage).await;
        };
        // The keystream moves on here: a send that then fails ends the connection anyway.
        let mut sealed = bytes.to_vec();
        crypt.out.apply(&mut sealed);
        self.send_raw(&sealed, stage).await
    }

    /// Sends `bytes` as they are (the MSE handshake's, or already encrypted).
    async fn send_raw(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), PeerFailure> {
        let limit = self.limit();
        Self::timed(limit, self.opts, stage, self.stream.write_all(bytes)).await
    }

    /// Runs the MSE initiator for torrent `skey` with `ia` (our BitTorrent handshake) as its
    /// initial payload, offering the methods the policy allows. The state machine bounds what
    /// it buffers and the padding it searches; the wait is bounded like any other.
    async fn mse_handshake(&mut self, skey: [u8; 20], ia: &[u8]) -> Result<(), PeerFailure> {
        let methods = self.opts.encryption.allowed();
        let mut out = Vec::new();
        let mut initiator = Initiator::new(KeyPair::generate(), skey, methods, ia, &mut out);
        self.send_raw(&out, MSE).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let limit = self.limit();
            let n = Self::timed(limit, self.opts, MSE, self.stream.read(&mut buf)).await?;
            if n == 0 {
                return Err(PeerFailure::Closed(MSE));
            }
            out.clear();
            let done = initiator
                .receive(&buf[..n], &mut out)
                .map_err(PeerFailure::Mse)?;
            if !out.is_empty() {
                self.send_raw(&out, MSE).await?;
            }
            if let Some(Done {
                streams, payload, ..
            }) = done
            {
                self.crypt = streams.map(Box::new);
                self.early = payload;
                return Ok(());
            }
        }
    }

    /// Fills `buf` from the bytes that came with the MSE handshake, then from the stream
    /// (decrypted when RC4 was chosen).
    async fn read_exact(&mut self, buf: &mut [u8], stage: &'static str) -> Result<(), PeerFailure> {
        let limit = self.limit();
        let early = self.early.len().min(buf.len());
        buf[..early].copy_from_slice(&self.early[..early]);
        self.early.drain(..early);
        let rest = &mut buf[early..];
        if rest.is_empty() {
            return Ok(());
        }
        Self::timed(limit, self.opts, stage, self.stream.read_exact(rest)).await?;
        if let Some(crypt) = &mut self.crypt {
            crypt.inc.apply(rest);
        }
        Ok(())
    }

    async fn read_handshake(&mut self) -> Result<Handshake, PeerFailure> {
        let mut buf = [0u8; Handshake::LEN];
        self.read_exact(&mut buf, HANDSHAKE).await?;
        match Handshake::parse(&buf) {
            Ok(Some(h)) => Ok(h),
            Ok(None) => Err(PeerFailure::Internal("short handshake".into())),
            Err(e) => Err(PeerFailure::BadHandshake(e)),
        }
    }

    /// Reads one message, its 4-byte length prefix included; the length is checked against
    /// [`MAX_FRAME`] before anything is allocated for it.
    async fn read_frame(&mut self, stage: &'static str) -> Result<Vec<u8>, PeerFailure> {
        let mut prefix = [0u8; 4];
        self.read_exact(&mut prefix, stage).await?;
        let len = u32::from_be_bytes(prefix);
        if len > MAX_FRAME {
            return Err(PeerFailure::BadMessage(WireError::TooLong {
                len,
                max: MAX_FRAME,
            }));
        }
        let mut frame = vec![0u8; 4 + len as usize];
        frame[..4].copy_from_slice(&prefix);
        self.read_exact(&mut frame[4..], stage).await?;
        Ok(frame)
    }
}
