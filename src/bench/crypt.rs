//! `bench --encrypt`: a synthetic leecher's MSE/PE, dialling with RC4 only. The handshake is
//! the engine's own state machine (`crate::mse`); after it every received byte is decrypted in
//! place before parsing and every sent byte encrypted once when its send is first posted, as
//! a real encrypted leecher would, so the seeder's cost per GiB under RC4 is what is measured.

use crate::mse::{Done, Initiator, KeyPair, Methods, MseError, Streams};

pub(crate) enum LeecherCrypt {
    Handshake(Box<Initiator>),
    Rc4(Box<Streams>),
}

impl LeecherCrypt {
    /// Starts the handshake for `info_hash` with our BitTorrent handshake `ia` as its initial
    /// payload; writes Ya and PadA to `out`.
    pub fn start(info_hash: [u8; 20], ia: &[u8], out: &mut Vec<u8>) -> LeecherCrypt {
        let a = Initiator::new(KeyPair::generate(), info_hash, Methods::RC4, ia, out);
        LeecherCrypt::Handshake(Box::new(a))
    }

    /// `recv[from..*end]` just arrived. Decrypts it in place, or feeds it to the handshake
    /// (writing its answer to `out`, on the wire as it is) and, once done, puts the decrypted
    /// payload that came with it at `from`. `*end` ends what the parser may read.
    pub fn input(
        &mut self,
        recv: &mut Vec<u8>,
        from: usize,
        end: &mut usize,
        out: &mut Vec<u8>,
    ) -> Result<(), MseError> {
        match self {
            LeecherCrypt::Rc4(s) => {
                s.inc.apply(&mut recv[from..*end]);
                Ok(())
            }
            LeecherCrypt::Handshake(a) => {
                let done = a.receive(&recv[from..*end], out)?;
                *end = from;
                let Some(Done {
                    streams, payload, ..
                }) = done
                else {
                    return Ok(());
                };
                // We offered RC4 only, so a finished handshake has its streams.
                let Some(streams) = streams else {
                    return Err(MseError::BadSelect(1));
                };
                *self = LeecherCrypt::Rc4(Box::new(streams));
                if recv.len() < from + payload.len() {
                    recv.resize(from + payload.len(), 0);
                }
                recv[from..from + payload.len()].copy_from_slice(&payload);
                *end = from + payload.len();
                Ok(())
            }
        }
    }

    /// Bytes about to be sent for the first time: encrypted once the handshake is done.
    pub fn output(&mut self, bytes: &mut [u8]) {
        if let LeecherCrypt::Rc4(s) = self {
            s.out.apply(bytes);
        }
    }
}
