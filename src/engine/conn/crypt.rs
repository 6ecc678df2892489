//! MSE/PE on a connection: telling an incoming MSE handshake from a plain one by its first
//! bytes, running the handshake's state machine (`crate::mse`) on the bytes that arrive, and
//! then RC4 on every byte in both directions.
//!
//! The policy decisions are pure (`crate::engine::encryption`); this file only moves bytes.
//! Received bytes are decrypted in place right after each recv, before the peer core parses
//! them. Sent bytes are encrypted in place exactly once, in stream order, when their send is
//! first submitted: a batch of control messages when it moves to the in-flight buffer, an
//! upload job when its first send is posted. An RC4 connection therefore uploads on the copy
//! path (the bytes must pass through the cipher; splice and zero-copy would send them raw).

use super::Conn;
use crate::engine::Reason;
use crate::engine::core::Core;
use crate::engine::encryption::{Dial, Incoming};
use crate::mse::{Done, Initiator, KeyPair, Method, MseError, Responder, Streams};

/// Where a connection stands with MSE.
#[derive(Debug)]
pub(in crate::engine) enum Crypt {
    /// Plain BitTorrent, or MSE with the plaintext method after its handshake.
    Plain,
    /// Incoming, before its first bytes tell plain from MSE.
    Detect,
    /// Our MSE handshake as the side that accepted.
    Responder(Box<Responder>),
    /// Our MSE handshake as the side that dialled.
    Initiator(Box<Initiator>),
    /// RC4 both ways.
    Rc4(Box<Streams>),
}

impl Crypt {
    pub fn is_rc4(&self) -> bool {
        matches!(self, Crypt::Rc4(_))
    }
}

/// The disconnect reason of a failed MSE handshake.
fn reason(e: &MseError) -> Reason {
    match e {
        MseError::SyncNotFound | MseError::TooLong => Reason::MseNoSync,
        MseError::UnknownTorrent => Reason::UnknownTorrent,
        _ => Reason::BadMseHandshake,
    }
}

impl Conn {
    /// An outgoing connection just connected: a plain dial writes our BitTorrent handshake, an
    /// MSE dial writes Ya and PadA and carries the BitTorrent handshake as its initial payload.
    pub(super) fn start_dial(&mut self, info_hash: [u8; 20], v2: bool, core: &mut Core) {
        match self.dial {
            Dial::Plain => self
                .peer
                .connected(info_hash, v2, &core.rules, &mut self.ctrl),
            Dial::Mse => {
                let mut ia = Vec::with_capacity(68);
                self.peer.connected(info_hash, v2, &core.rules, &mut ia);
                let methods = core.settings.encryption.allowed();
                let a =
                    Initiator::new(KeyPair::generate(), info_hash, methods, &ia, &mut self.ctrl);
                self.ctrl_ready = self.ctrl.len();
                self.crypt = Crypt::Initiator(Box::new(a));
            }
        }
    }

    /// Bytes `from..recv_len` of the receive buffer just arrived. Decrypts them, or feeds them
    /// to the MSE handshake. `Ok(true)`: the buffer holds BitTorrent bytes for the peer core.
    pub(super) fn crypt_input(&mut self, from: usize, core: &mut Core) -> Result<bool, Reason> {
        match &mut self.crypt {
            Crypt::Plain => Ok(true),
            Crypt::Rc4(s) => {
                s.inc.apply(&mut self.recv[from..self.recv_len]);
                Ok(true)
            }
            Crypt::Detect => {
                let e = &core.settings.encryption;
                match e.incoming(&self.recv[..self.recv_len]) {
                    Incoming::NeedMore => Ok(false),
                    Incoming::Plain => {
                        self.crypt = Crypt::Plain;
                        Ok(true)
                    }
                    Incoming::RefusePlain => Err(Reason::PlaintextRefused),
                    Incoming::RefuseMse => Err(Reason::EncryptionRefused),
                    Incoming::Mse => {
                        let b = Responder::new(KeyPair::generate(), e.allowed(), e.prefer_rc4);
                        self.crypt = Crypt::Responder(Box::new(b));
                        self.mse_input(0, core)
                    }
                }
            }
            Crypt::Responder(_) | Crypt::Initiator(_) => self.mse_input(from, core),
        }
    }

    /// Feeds the handshake the bytes from `from` (it keeps what it needs: the receive buffer
    /// is emptied); once done, the payload that came with it is put back for the peer core.
    fn mse_input(&mut self, from: usize, core: &mut Core) -> Result<bool, Reason> {
        let input = &self.recv[from..self.recv_len];
        let step = match &mut self.crypt {
            Crypt::Responder(b) => {
                let names = &core.obfuscated;
                b.receive(input, &mut self.ctrl, |h| names.get(h).copied())
            }
            Crypt::Initiator(a) => a.receive(input, &mut self.ctrl),
            _ => return Ok(true),
        };
        self.recv_len = from;
        // What the handshake wrote is on the wire already (its own encryption included).
        self.ctrl_ready = self.ctrl.len();
        let done = step.map_err(|e| reason(&e))?;
        let Some(Done {
            method,
            streams,
            payload,
            ..
        }) = done
        else {
            return Ok(false);
        };
        let stats = &core.stats;
        match method {
            Method::Rc4 => stats.add(&stats.mse_rc4, 1),
            Method::Plaintext => stats.add(&stats.mse_plaintext, 1),
        }
        self.dial_mse_pending = false;
        self.crypt = match streams {
            Some(s) => Crypt::Rc4(Box::new(s)),
            None => Crypt::Plain,
        };
        // At most the 1 KiB initial payload and one read's worth (the handshake's bound).
        let n = payload.len();
        if self.recv.len() < n {
            self.recv.resize(n, 0);
        }
        self.recv[..n].copy_from_slice(&payload);
        self.recv_len = n;
        Ok(true)
    }

    /// Control bytes just moved to the in-flight buffer: encrypts those not yet on the wire.
    pub(super) fn crypt_ctrl(&mut self) {
        let ready = std::mem::take(&mut self.ctrl_ready).min(self.ctrl_inflight.len());
        if let Crypt::Rc4(s) = &mut self.crypt {
            s.out.apply(&mut self.ctrl_inflight[ready..]);
        }
    }

    /// The front upload job is about to be sent: encrypts it once.
    pub(super) fn crypt_front_job(&mut self) {
        let Crypt::Rc4(s) = &mut self.crypt else {
            return;
        };
        let Some(job) = self.jobs.front_mut() else {
            return;
        };
        if self.ciphered_job != Some(job.seq) {
            s.out.apply(&mut job.buf[..job.len]);
            self.ciphered_job = Some(job.seq);
        }
    }
}
