//! Vouchers: a payer's signed promise that the seeder may claim `cumulative` BTT base units from
//! one payment channel. Each new voucher of a channel replaces the last (amounts are
//! cumulative), so the seeder only ever needs to keep and claim the latest.
//!
//! The signed digest is what a Solidity contract computes with
//! `keccak256(abi.encode(VOUCHER_TAG, block.chainid, channel, payee, amount))`, where
//! `VOUCHER_TAG = keccak256("ringseed-voucher-v1")`, and checks with
//! `ecrecover(digest, v, r, s) == channel.payer`. The tag keeps a voucher signature from being
//! valid as anything else; the chain id keeps it from being replayed on another chain; the
//! payee keeps one seeder from presenting another's voucher.
//!
//! ```
//! use ringseed::speed::voucher::{Channel, ChannelId, Voucher, check};
//! use ringseed::speed::wallet::Wallet;
//! let payer = Wallet::from_secret([1; 32]).unwrap();
//! let seeder = Wallet::from_secret([2; 32]).unwrap();
//! let channel = Channel::open(ChannelId([5; 32]), payer.address(), 1_000);
//! let v = Voucher::sign(&payer, 199, ChannelId([5; 32]), seeder.address(), 300);
//! assert_eq!(check(&v, seeder.address(), 199, Some(&channel)), Ok(300));
//! ```

use super::wallet::{Address, Signature65, Wallet, keccak256, recover_digest};

/// BTT base units (1 BTT = 10^18 on BTTC). Vouchers carry a `uint256` on chain; ringseed accepts
/// amounts up to 2^128 - 1, far beyond any supply.
pub type Amount = u128;

/// The domain tag hashed into every voucher digest.
pub const VOUCHER_TAG: &[u8] = b"ringseed-voucher-v1";
/// Domain tag of a bid's digest: a bid signature can never pass for a voucher or the reverse.
pub const BID_TAG: &[u8] = b"ringseed-bid-v1";

/// A payment channel's 32-byte id (as the channel contract assigns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    pub fn to_hex(&self) -> String {
        format!("0x{}", crate::metainfo::hex(&self.0))
    }

    pub fn from_hex(s: &str) -> Option<ChannelId> {
        let hex = s.strip_prefix("0x").unwrap_or(s);
        let bytes = super::parse_hex(hex)?;
        Some(ChannelId(bytes.try_into().ok()?))
    }
}

/// One signed voucher as it travels on the wire. The payer is not a field: it is whoever the
/// signature recovers to, which must be the channel's payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voucher {
    pub chain_id: u64,
    pub channel: ChannelId,
    pub payee: Address,
    pub cumulative: Amount,
    /// `r ‖ s ‖ v`, `v` = 27 or 28.
    pub signature: Signature65,
}

/// What the seeder knows of a channel: who pays from it, the most it may pay (the cap the payer
/// declared in its bid), the cumulative amount accepted so far, and whether it was closed
/// (claimed on chain, after which no voucher of it can be paid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub id: ChannelId,
    pub payer: Address,
    pub cap: Amount,
    pub accepted: Amount,
    pub closed: bool,
}

impl Channel {
    pub fn open(id: ChannelId, payer: Address, cap: Amount) -> Channel {
        Channel {
            id,
            payer,
            cap,
            accepted: 0,
            closed: false,
        }
    }
}

/// Why a voucher was refused; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(usize)]
pub enum Rejection {
    /// Not a well-formed voucher message (bad bencode, missing or oversized field).
    Malformed,
    /// No bid opened this channel.
    UnknownChannel,
    /// The channel was settled; its vouchers can no longer be claimed.
    ChannelClosed,
    /// Signed for another chain.
    WrongChain,
    /// Signed for another seeder.
    WrongPayee,
    /// The same cumulative amount as the last accepted voucher.
    Replayed,
    /// Less than the last accepted voucher.
    Decreasing,
    /// More than the channel's cap.
    OverCap,
    /// The signature does not recover to the channel's payer.
    Forged,
    /// The verifier's queue was full: dropped unchecked, the payer may resend.
    Overloaded,
    /// A bid over the connection's allowance (4 channels, 16 signed bids), or a connection's
    /// first bid (a fresh credit window) over its address's allowance
    /// (see [`crate::speed::admission`]).
    TooManyChannels,
}

impl Rejection {
    pub const ALL: [Rejection; 11] = [
        Rejection::Malformed,
        Rejection::UnknownChannel,
        Rejection::ChannelClosed,
        Rejection::WrongChain,
        Rejection::WrongPayee,
        Rejection::Replayed,
        Rejection::Decreasing,
        Rejection::OverCap,
        Rejection::Forged,
        Rejection::Overloaded,
        Rejection::TooManyChannels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::UnknownChannel => "unknown_channel",
            Rejection::ChannelClosed => "channel_closed",
            Rejection::WrongChain => "wrong_chain",
            Rejection::WrongPayee => "wrong_payee",
            Rejection::Replayed => "replayed",
            Rejection::Decreasing => "decreasing",
            Rejection::OverCap => "over_cap",
            Rejection::Forged => "forged",
            Rejection::Overloaded => "overloaded",
            Rejection::TooManyChannels => "too_many_channels",
        }
    }

    pub fn from_name(name: &str) -> Option<Rejection> {
        Rejection::ALL.iter().copied().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `amount` as an ABI `uint256` word.
pub fn abi_uint(amount: u128) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&amount.to_be_bytes());
    w
}

/// `a` as an ABI `address` word (left-padded with zeros).
pub fn abi_address(a: &Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(&a.0);
    w
}

/// The digest a voucher signs (see the module docs for the Solidity equivalent).
pub fn digest(chain_id: u64, channel: &ChannelId, payee: &Address, cumulative: Amount) -> [u8; 32] {
    let mut buf = [0u8; 160];
    buf[..32].copy_from_slice(&keccak256(VOUCHER_TAG));
    buf[32..64].copy_from_slice(&abi_uint(u128::from(chain_id)));
    buf[64..96].copy_from_slice(&channel.0);
    buf[96..128].copy_from_slice(&abi_address(payee));
    buf[128..].copy_from_slice(&abi_uint(cumulative));
    keccak256(&buf)
}

/// The digest a bid signs: `keccak256(abi.encode(keccak256("ringseed-bid-v1"), chain, channel,
/// payee, price, cap))`. Signed by the channel's payer, so only the key that will sign the
/// vouchers can open (or re-price, or re-cap) a channel with this seeder.
pub fn bid_digest(
    chain_id: u64,
    channel: &ChannelId,
    payee: &Address,
    price: Amount,
    cap: Amount,
) -> [u8; 32] {
    let mut buf = [0u8; 192];
    buf[..32].copy_from_slice(&keccak256(BID_TAG));
    buf[32..64].copy_from_slice(&abi_uint(u128::from(chain_id)));
    buf[64..96].copy_from_slice(&channel.0);
    buf[96..128].copy_from_slice(&abi_address(payee));
    buf[128..160].copy_from_slice(&abi_uint(price));
    buf[160..].copy_from_slice(&abi_uint(cap));
    keccak256(&buf)
}

impl Voucher {
    /// The payer's side: signs a voucher for `cumulative` on `channel` to `payee`.
    pub fn sign(
        payer: &Wallet,
        chain_id: u64,
        channel: ChannelId,
        payee: Address,
        cumulative: Amount,
    ) -> Voucher {
        let signature = payer.sign(digest(chain_id, &channel, &payee, cumulative));
        Voucher {
            chain_id,
            channel,
            payee,
            cumulative,
            signature,
        }
    }

    pub fn digest(&self) -> [u8; 32] {
        digest(self.chain_id, &self.channel, &self.payee, self.cumulative)
    }

    /// Who signed it (`None` when the signature is not valid at all). This is the costly part
    /// of a check (an elliptic-curve point recovery, tens of microseconds).
    pub fn signer(&self) -> Option<Address> {
        recover_digest(&self.signature, self.digest())
    }
}

/// The cheap checks, in the order a stranger's voucher is refused fastest: channel, chain,
/// payee, amount. `Ok` is the increment over the last accepted amount.
pub fn check_fields(
    v: &Voucher,
    me: Address,
    chain_id: u64,
    channel: Option<&Channel>,
) -> Result<Amount, Rejection> {
    let c = channel.ok_or(Rejection::UnknownChannel)?;
    if c.id != v.channel {
        return Err(Rejection::UnknownChannel);
    }
    if c.closed {
        return Err(Rejection::ChannelClosed);
    }
    if v.chain_id != chain_id {
        return Err(Rejection::WrongChain);
    }
    if v.payee != me {
        return Err(Rejection::WrongPayee);
    }
    if v.cumulative == c.accepted {
        return Err(Rejection::Replayed);
    }
    if v.cumulative < c.accepted {
        return Err(Rejection::Decreasing);
    }
    if v.cumulative > c.cap {
        return Err(Rejection::OverCap);
    }
    Ok(v.cumulative - c.accepted)
}

/// Only the signature: it must recover to the channel's payer.
pub fn check_signature(v: &Voucher, payer: &Address) -> Result<(), Rejection> {
    match v.signer() {
        Some(a) if a == *payer => Ok(()),
        _ => Err(Rejection::Forged),
    }
}

/// Every check. `Ok` is the increment over the last accepted amount.
pub fn check(
    v: &Voucher,
    me: Address,
    chain_id: u64,
    channel: Option<&Channel>,
) -> Result<Amount, Rejection> {
    let inc = check_fields(v, me, chain_id, channel)?;
    let payer = channel.map(|c| c.payer).ok_or(Rejection::UnknownChannel)?;
    check_signature(v, &payer)?;
    Ok(inc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: u64 = 199;

    fn setup() -> (Wallet, Wallet, Channel) {
        let payer = Wallet::from_secret([1; 32]).unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let ch = Channel::open(ChannelId([5; 32]), payer.address(), 1_000);
        (payer, seeder, ch)
    }

    #[test]
    fn every_rejection_has_its_reason() {
        let (payer, seeder, mut ch) = setup();
        let me = seeder.address();
        let v = |amount| Voucher::sign(&payer, CHAIN, ch.id, me, amount);
        assert_eq!(check(&v(100), me, CHAIN, Some(&ch)), Ok(100));
        ch.accepted = 100;
        assert_eq!(check(&v(150), me, CHAIN, Some(&ch)), Ok(50));
        assert_eq!(
            check(&v(100), me, CHAIN, Some(&ch)),
            Err(Rejection::Replayed)
        );
        assert_eq!(
            check(&v(99), me, CHAIN, Some(&ch)),
            Err(Rejection::Decreasing)
        );
        assert_eq!(
            check(&v(1_001), me, CHAIN, Some(&ch)),
            Err(Rejection::OverCap)
        );
        assert_eq!(check(&v(1_000), me, CHAIN, Some(&ch)), Ok(900));
        // Signed by someone else for this channel.
        let thief = Wallet::from_secret([3; 32]).unwrap();
        let forged = Voucher::sign(&thief, CHAIN, ch.id, me, 200);
        assert_eq!(check(&forged, me, CHAIN, Some(&ch)), Err(Rejection::Forged));
        // A real voucher whose amount was edited after signing.
        let mut edited = v(200);
        edited.cumulative = 900;
        assert_eq!(check(&edited, me, CHAIN, Some(&ch)), Err(Rejection::Forged));
        let other = Wallet::from_secret([4; 32]).unwrap().address();
        let wrong_payee = Voucher::sign(&payer, CHAIN, ch.id, other, 200);
        assert_eq!(
            check(&wrong_payee, me, CHAIN, Some(&ch)),
            Err(Rejection::WrongPayee)
        );
        let wrong_chain = Voucher::sign(&payer, 1, ch.id, me, 200);
        assert_eq!(
            check(&wrong_chain, me, CHAIN, Some(&ch)),
            Err(Rejection::WrongChain)
        );
        assert_eq!(
            check(&v(200), me, CHAIN, None),
            Err(Rejection::UnknownChannel)
        );
        ch.closed = true;
        assert_eq!(
            check(&v(200), me, CHAIN, Some(&ch)),
            Err(Rejection::ChannelClosed)
        );
        for r in Rejection::ALL {
            assert_eq!(Rejection::from_name(r.name()), Some(r));
        }
    }

    #[test]
    fn digest_matches_the_documented_abi_layout() {
        // The layout is abi.encode(bytes32 tag, uint256 chain, bytes32 channel, address payee,
        // uint256 amount): five 32-byte words.
        let payee = Address([0xab; 20]);
        let d = digest(199, &ChannelId([0x11; 32]), &payee, 1_000_000);
        let mut words = Vec::new();
        words.extend_from_slice(&keccak256(b"ringseed-voucher-v1"));
        let mut w = [0u8; 32];
        w[31] = 199;
        words.extend_from_slice(&w);
        words.extend_from_slice(&[0x11; 32]);
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(&[0xab; 20]);
        words.extend_from_slice(&w);
        let mut w = [0u8; 32];
        w[29..].copy_from_slice(&[0x0f, 0x42, 0x40]);
        words.extend_from_slice(&w);
        assert_eq!(d, keccak256(&words));
    }

    #[test]
    fn keccak_is_keccak_not_sha3() {
        // keccak256("") differs from SHA3-256(""); contracts use the former.
        assert_eq!(
            crate::metainfo::hex(&keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }
}

#[cfg(test)]
mod vector {
    use super::*;

    /// The example vector of docs/speed.md: regenerate the document's numbers from here.
    #[test]
    fn documented_example_vector() {
        let payer = Wallet::from_secret([1; 32]).unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let v = Voucher::sign(
            &payer,
            199,
            ChannelId([0x11; 32]),
            seeder.address(),
            1_000_000_000_000_000_000,
        );
        let msg = crate::speed::protocol::SpeedMessage::Voucher(v).encode();
        let hex = crate::metainfo::hex;
        let got = format!(
            "payer {}\npayee {}\ntag {}\ndigest {}\nsignature {}\nmessage {}\n",
            payer.address().to_evm(),
            seeder.address().to_evm(),
            hex(&crate::speed::wallet::keccak256(VOUCHER_TAG)),
            hex(&v.digest()),
            hex(&v.signature),
            hex(&msg)
        );
        println!("{got}");
        let doc = include_str!("../../docs/speed.md");
        for line in got.lines() {
            let value = line.split_once(' ').map_or("", |(_, v)| v);
            assert!(doc.contains(value), "docs/speed.md lacks {line}");
        }
    }
}
