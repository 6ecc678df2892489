//! MSE/PE handshakes (`ringseed::mse`) against libtorrent, the reference implementation, over
//! loopback: our initiator dials a libtorrent seeder that accepts encrypted connections only,
//! and reads real blocks through the RC4 stream (or through plaintext after an obfuscated
//! handshake); our responder takes a libtorrent downloader's forced-encryption connection and
//! finds the torrent and libtorrent's BitTorrent handshake inside it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{create_torrent, pattern, spawn_lt_seeder_env};
use ringseed::mse::{Done, Initiator, KeyPair, Method, Methods, Responder, obfuscated};
use ringseed::wire::{BlockRequest, Handshake, Message};

fn read_some(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).expect("read");
    assert!(n > 0, "the peer closed the connection");
    buf.truncate(n);
    buf
}

/// Our side of a connection after the handshake: decrypts what arrives (if RC4) into `inc`
/// and encrypts what we send.
struct Conn {
    s: TcpStream,
    done: Done,
    inc: Vec<u8>,
}

impl Conn {
    fn send(&mut self, mut bytes: Vec<u8>) {
        if let Some(st) = self.done.streams.as_mut() {
            st.out.apply(&mut bytes);
        }
        self.s.write_all(&bytes).expect("write");
    }

    fn fill(&mut self, n: usize) {
        while self.inc.len() < n {
            let mut more = read_some(&mut self.s);
            if let Some(st) = self.done.streams.as_mut() {
                st.inc.apply(&mut more);
            }
            self.inc.extend(more);
        }
    }

    /// The next message (after the handshake), skipping keep-alives.
    fn message(&mut self) -> Vec<u8> {
        loop {
            self.fill(4);
            let len = u32::from_be_bytes([self.inc[0], self.inc[1], self.inc[2], self.inc[3]]);
            assert!(len < 1 << 20, "message of {len} bytes");
            self.fill(4 + len as usize);
            let m: Vec<u8> = self.inc.drain(..4 + len as usize).collect();
            if len > 0 {
                return m;
            }
        }
    }
}

fn dial(addr: std::net::SocketAddr, ih: [u8; 20], provide: Methods) -> Conn {
    let mut s = TcpStream::connect(addr).expect("connect to libtorrent");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let hello = Handshake::new(ih, *b"-RS0000-mse-test-000").encode();
    let mut out = Vec::new();
    let mut a = Initiator::new(KeyPair::generate(), ih, provide, &hello, &mut out);
    s.write_all(&out).unwrap();
    let done = loop {
        let got = read_some(&mut s);
        out.clear();
        let r = a
            .receive(&got, &mut out)
            .expect("libtorrent's answer is a valid handshake");
        s.write_all(&out).unwrap();
        if let Some(d) = r {
            break d;
        }
    };
    let inc = done.payload.clone();
    Conn { s, done, inc }
}

/// Dials an encrypted-only libtorrent seeder, checks its BitTorrent handshake inside the
/// stream, asks for two blocks and compares them with the file.
fn fetch_through(mode: &str, provide: Methods, want: Method) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let payload = pattern(256 << 10, 91);
    std::fs::write(data.join("enc.bin"), &payload).unwrap();
    let torrent = dir.path().join("enc.torrent");
    let meta = create_torrent(&data.join("enc.bin"), &torrent, &["--piece-kib", "64"]);
    let ih = meta.info.hash.wire_id();
    let lt = spawn_lt_seeder_env(&torrent, &data, "127.0.0.1", 0, &[("LT_ENC", mode)]);

    // A plain handshake is refused by a forced seeder (it closes or says nothing).
    let mut plain = TcpStream::connect(lt.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(&Handshake::new(ih, *b"-RS0000-plain-000000").encode())
        .unwrap();
    let mut b = [0u8; 68];
    assert!(
        plain.read_exact(&mut b).is_err(),
        "a forced-encryption seeder answered a plain handshake"
    );

    let mut c = dial(lt.addr, ih, provide);
    assert_eq!(c.done.method, want);
    c.fill(Handshake::LEN);
    let theirs = Handshake::parse(&c.inc[..Handshake::LEN])
        .expect("libtorrent's handshake parses")
        .expect("complete");
    assert_eq!(theirs.info_hash, ih);
    c.inc.drain(..Handshake::LEN);
    let mut out = Vec::new();
    Message::Interested.encode(&mut out);
    c.send(std::mem::take(&mut out));
    // Wait for the unchoke (bitfield, extension handshake and have-all may come first).
    loop {
        let m = c.message();
        if m[4] == 1 {
            break;
        }
    }
    for (index, begin) in [(0u32, 0u32), (3, 48 << 10)] {
        Message::Request(BlockRequest {
            index,
            begin,
            length: 16 << 10,
        })
        .encode(&mut out);
        c.send(std::mem::take(&mut out));
        let m = loop {
            let m = c.message();
            if m[4] == 7 {
                break m;
            }
        };
        let at = (index as usize) * (64 << 10) + begin as usize;
        assert_eq!(
            &m[13..],
            &payload[at..at + (16 << 10)],
            "block {index}/{begin}"
        );
    }
}

#[test]
fn our_initiator_reads_blocks_from_a_libtorrent_seeder_that_forces_rc4() {
    fetch_through("forced-rc4", Methods::BOTH, Method::Rc4);
}

#[test]
fn our_initiator_reads_blocks_in_plaintext_after_an_obfuscated_handshake() {
    fetch_through("forced-plain", Methods::PLAINTEXT, Method::Plaintext);
}

/// libtorrent, forced to encrypt its outgoing connections, dials our listener: the responder
/// finds the torrent from `HASH('req2', SKEY)`, libtorrent's BitTorrent handshake is the
/// initial payload, and after our handshake (encrypted) libtorrent's next message decrypts
/// to a valid BitTorrent message.
#[test]
fn our_responder_accepts_libtorrents_forced_rc4_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.bin"), pattern(100_000, 17)).unwrap();
    let torrent = dir.path().join("in.torrent");
    let meta = create_torrent(&data.join("in.bin"), &torrent, &["--piece-kib", "16"]);
    let ih = meta.info.hash.wire_id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let out_dir = dir.path().join("out");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/lt_tool.py");
    let mut lt = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["download"])
        .arg(&torrent)
        .arg(&out_dir)
        .args([&addr.to_string(), "30"])
        .env("LT_ENC", "forced-rc4")
        .stdout(Stdio::null())
        .spawn()
        .expect("start lt_tool.py download");
    let (mut s, _) = listener.accept().expect("libtorrent dials");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = Responder::new(KeyPair::generate(), Methods::BOTH, false);
    let key = obfuscated(&ih);
    let mut out = Vec::new();
    let done = loop {
        let got = read_some(&mut s);
        out.clear();
        let r = b
            .receive(&got, &mut out, |h| (*h == key).then_some(ih))
            .expect("libtorrent's handshake is valid");
        s.write_all(&out).unwrap();
        if let Some(d) = r {
            break d;
        }
    };
    assert_eq!(done.skey, ih);
    assert_eq!(done.method, Method::Rc4, "libtorrent offered RC4 only");
    let mut c = Conn {
        s,
        inc: done.payload.clone(),
        done,
    };
    c.fill(Handshake::LEN);
    let theirs = Handshake::parse(&c.inc[..Handshake::LEN]).unwrap().unwrap();
    assert_eq!(theirs.info_hash, ih);
    c.inc.drain(..Handshake::LEN);
    c.send(
        Handshake::new(ih, *b"-RS0000-mse-test-001")
            .encode()
            .to_vec(),
    );
    let m = c.message();
    let len = u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize;
    assert_eq!(len + 4, m.len());
    assert!(
        matches!(m[4], 2 | 5 | 14 | 15 | 20),
        "libtorrent's first message decrypts to a BitTorrent message: id {}",
        m[4]
    );
    let _ = lt.kill();
    let _ = lt.wait();
}
