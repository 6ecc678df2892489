//! Vouchers: a payer's signed promise that the seeder may claim `cumulative` BTT base units from
//! one payment channel. Each new voucher of a channel replaces the last (amounts are
//! cumulative), so the seeder only ever needs to keep and claim the latest.
//!
//! The signed digest is EIP-712 typed data (docs/speed.md §3): `Voucher(bytes32 channel,address
//! payee,uint256 amount)` under the domain `{name "ringseed", version "1", chainId,
//! verifyingContract}`, exactly what `contracts/PaymentChannel.sol` checks in `claim` with
//! `ecrecover`. Wallets can sign and show it (`eth_signTypedData_v4`). The domain keeps a voucher
//! from being replayed on another chain or contract; the type hash keeps a voucher signature from
//! being valid as a bid or anything else; the payee keeps one seeder from presenting another's
//! voucher.
//!
//! ```
//! use ringseed::speed::voucher::{Channel, ChannelId, Domain, Voucher, check};
//! use ringseed::speed::wallet::{Address, Wallet};
//! let payer = Wallet::from_secret([1; 32]).unwrap();
//! let seeder = Wallet::from_secret([2; 32]).unwrap();
//! let channel = Channel::open(ChannelId([5; 32]), payer.address(), 1_000);
//! let domain = Domain { chain_id: 199, contract: Address([7; 20]) };
//! let v = Voucher::sign(&payer, domain, ChannelId([5; 32]), seeder.address(), 300);
//! assert_eq!(check(&v, seeder.address(), &domain, Some(&channel)), Ok(300));
//! ```

use super::wallet::{Address, Signature65, Wallet, is_canonical, keccak256, recover_digest};

/// BTT base units (1 BTT = 10^18 on BTTC). Vouchers carry a `uint256` on chain; ringseed accepts
/// amounts up to 2^128 - 1, far beyond any supply.
pub type Amount = u128;

/// The EIP-712 domain type every v2 digest is made under (docs/speed.md §3).
pub const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
/// The typed-data struct a voucher signs: `amount` is cumulative.
pub const VOUCHER_TYPE: &str = "Voucher(bytes32 channel,address payee,uint256 amount)";
/// The typed-data struct a bid signs: a bid signature can never pass for a voucher or the
/// reverse, because the type hashes differ.
pub const BID_TYPE: &str = "Bid(bytes32 channel,address payee,uint256 price,uint256 cap)";
/// The domain's `name` and `version`.
pub const DOMAIN_NAME: &str = "ringseed";
pub const DOMAIN_VERSION: &str = "1";

/// Where a voucher can be claimed: the chain and the payment-channel contract deployed on it.
/// Both are hashed into every digest (the EIP-712 domain), so a voucher for one deployment is
/// worthless on any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain {
    pub chain_id: u64,
    /// The contract's address (EIP-712 `verifyingContract`).
    pub contract: Address,
}

impl Domain {
    /// `keccak256(abi.encode(typehash, keccak256(name), keccak256(version), chainId,
    /// verifyingContract))`. One Keccak of 160 bytes: cheap beside the point recovery, so it is
    /// recomputed rather than cached.
    pub fn separator(&self) -> [u8; 32] {
        let mut buf = [0u8; 160];
        buf[..32].copy_from_slice(&keccak256(DOMAIN_TYPE.as_bytes()));
        buf[32..64].copy_from_slice(&keccak256(DOMAIN_NAME.as_bytes()));
        buf[64..96].copy_from_slice(&keccak256(DOMAIN_VERSION.as_bytes()));
        buf[96..128].copy_from_slice(&abi_uint(u128::from(self.chain_id)));
        buf[128..].copy_from_slice(&abi_address(&self.contract));
        keccak256(&buf)
    }
}

/// `keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash)`: what EIP-712 wallets sign.
pub fn typed_digest(domain: &Domain, struct_hash: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 66];
    buf[0] = 0x19;
    buf[1] = 0x01;
    buf[2..34].copy_from_slice(&domain.separator());
    buf[34..].copy_from_slice(struct_hash);
    keccak256(&buf)
}

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
    /// The chain and contract it was signed for.
    pub domain: Domain,
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
    /// Signed for another chain or another contract (the EIP-712 domain differs).
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
    /// (`[speed] rpc` set) No channel with this id on the contract.
    NotOnChain,
    /// (`[speed] rpc` set) The channel on chain pays another payee.
    NotOurChannel,
    /// (`[speed] rpc` set) The channel expires within `min_channel_life_s`.
    Expiring,
    /// (`[speed] rpc` set) What is left of the deposit does not cover one credit window at the
    /// bid's price, or the bid's cap is above the deposit.
    Underfunded,
    /// (`[speed] rpc` set) The node could not be asked (timeout, error, nonsense): the bid is
    /// refused rather than trusted; the payer may bid again.
    ChainUnavailable,
}

impl Rejection {
    pub const ALL: [Rejection; 16] = [
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
        Rejection::NotOnChain,
        Rejection::NotOurChannel,
        Rejection::Expiring,
        Rejection::Underfunded,
        Rejection::ChainUnavailable,
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
            Rejection::NotOnChain => "not_on_chain",
            Rejection::NotOurChannel => "not_our_channel",
            Rejection::Expiring => "expiring",
            Rejection::Underfunded => "underfunded",
            Rejection::ChainUnavailable => "chain_unavailable",
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

/// The `Voucher` struct hash: `keccak256(abi.encode(VOUCHER_TYPEHASH, channel, payee, amount))`.
pub fn voucher_struct_hash(channel: &ChannelId, payee: &Address, cumulative: Amount) -> [u8; 32] {
    let mut buf = [0u8; 128];
    buf[..32].copy_from_slice(&keccak256(VOUCHER_TYPE.as_bytes()));
    buf[32..64].copy_from_slice(&channel.0);
    buf[64..96].copy_from_slice(&abi_address(payee));
    buf[96..].copy_from_slice(&abi_uint(cumulative));
    keccak256(&buf)
}

/// The digest a voucher signs: the EIP-712 digest of `Voucher(channel, payee, amount)` under
/// `domain`, what the contract's `voucherDigest` returns and its `claim` checks.
pub fn digest(
    domain: &Domain,
    channel: &ChannelId,
    payee: &Address,
    cumulative: Amount,
) -> [u8; 32] {
    typed_digest(domain, &voucher_struct_hash(channel, payee, cumulative))
}

/// The `Bid` struct hash: `keccak256(abi.encode(BID_TYPEHASH, channel, payee, price, cap))`.
pub fn bid_struct_hash(
    channel: &ChannelId,
    payee: &Address,
    price: Amount,
    cap: Amount,
) -> [u8; 32] {
    let mut buf = [0u8; 160];
    buf[..32].copy_from_slice(&keccak256(BID_TYPE.as_bytes()));
    buf[32..64].copy_from_slice(&channel.0);
    buf[64..96].copy_from_slice(&abi_address(payee));
    buf[96..128].copy_from_slice(&abi_uint(price));
    buf[128..].copy_from_slice(&abi_uint(cap));
    keccak256(&buf)
}

/// The digest a bid signs: the EIP-712 digest of `Bid(channel, payee, price, cap)` under
/// `domain`. Signed by the channel's payer, so only the key that will sign the vouchers can open
/// (or re-price, or re-cap) a channel with this seeder, for this contract.
pub fn bid_digest(
    domain: &Domain,
    channel: &ChannelId,
    payee: &Address,
    price: Amount,
    cap: Amount,
) -> [u8; 32] {
    typed_digest(domain, &bid_struct_hash(channel, payee, price, cap))
}

impl Voucher {
    /// The payer's side: signs a voucher for `cumulative` on `channel` to `payee`.
    pub fn sign(
        payer: &Wallet,
        domain: Domain,
        channel: ChannelId,
        payee: Address,
        cumulative: Amount,
    ) -> Voucher {
        let signature = payer.sign(digest(&domain, &channel, &payee, cumulative));
        Voucher {
            domain,
            channel,
            payee,
            cumulative,
            signature,
        }
    }

    pub fn digest(&self) -> [u8; 32] {
        digest(&self.domain, &self.channel, &self.payee, self.cumulative)
    }

    /// Who signed it (`None` when the signature is not valid at all, or is not in the one form
    /// the contract pays: `v` 27/28 and low `s`). This is the costly part of a check (an
    /// elliptic-curve point recovery, tens of microseconds).
    pub fn signer(&self) -> Option<Address> {
        if !is_canonical(&self.signature) {
            return None;
        }
        recover_digest(&self.signature, self.digest())
    }
}

/// The cheap checks, in the order a stranger's voucher is refused fastest: channel, chain,
/// payee, amount. `Ok` is the increment over the last accepted amount.
pub fn check_fields(
    v: &Voucher,
    me: Address,
    domain: &Domain,
    channel: Option<&Channel>,
) -> Result<Amount, Rejection> {
    let c = channel.ok_or(Rejection::UnknownChannel)?;
    if c.id != v.channel {
        return Err(Rejection::UnknownChannel);
    }
    if c.closed {
        return Err(Rejection::ChannelClosed);
    }
    if v.domain != *domain {
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
    domain: &Domain,
    channel: Option<&Channel>,
) -> Result<Amount, Rejection> {
    let inc = check_fields(v, me, domain, channel)?;
    let payer = channel.map(|c| c.payer).ok_or(Rejection::UnknownChannel)?;
    check_signature(v, &payer)?;
    Ok(inc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: Domain = Domain {
        chain_id: 199,
        contract: Address([0x32; 20]),
    };

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
        assert_eq!(check(&v(100), me, &CHAIN, Some(&ch)), Ok(100));
        ch.accepted = 100;
        assert_eq!(check(&v(150), me, &CHAIN, Some(&ch)), Ok(50));
        assert_eq!(
            check(&v(100), me, &CHAIN, Some(&ch)),
            Err(Rejection::Replayed)
        );
        assert_eq!(
            check(&v(99), me, &CHAIN, Some(&ch)),
            Err(Rejection::Decreasing)
        );
        assert_eq!(
            check(&v(1_001), me, &CHAIN, Some(&ch)),
            Err(Rejection::OverCap)
        );
        assert_eq!(check(&v(1_000), me, &CHAIN, Some(&ch)), Ok(900));
        // Signed by someone else for this channel.
        let thief = Wallet::from_secret([3; 32]).unwrap();
        let forged = Voucher::sign(&thief, CHAIN, ch.id, me, 200);
        assert_eq!(
            check(&forged, me, &CHAIN, Some(&ch)),
            Err(Rejection::Forged)
        );
        // A real voucher whose amount was edited after signing.
        let mut edited = v(200);
        edited.cumulative = 900;
        assert_eq!(
            check(&edited, me, &CHAIN, Some(&ch)),
            Err(Rejection::Forged)
        );
        let other = Wallet::from_secret([4; 32]).unwrap().address();
        let wrong_payee = Voucher::sign(&payer, CHAIN, ch.id, other, 200);
        assert_eq!(
            check(&wrong_payee, me, &CHAIN, Some(&ch)),
            Err(Rejection::WrongPayee)
        );
        let other_chain = Domain {
            chain_id: 1,
            ..CHAIN
        };
        let wrong_chain = Voucher::sign(&payer, other_chain, ch.id, me, 200);
        assert_eq!(
            check(&wrong_chain, me, &CHAIN, Some(&ch)),
            Err(Rejection::WrongChain)
        );
        // Signed for another deployment on the same chain: no use to this one.
        let other_contract = Domain {
            contract: Address([0x33; 20]),
            ..CHAIN
        };
        let wrong_contract = Voucher::sign(&payer, other_contract, ch.id, me, 200);
        assert_eq!(
            check(&wrong_contract, me, &CHAIN, Some(&ch)),
            Err(Rejection::WrongChain)
        );
        // ... and relabelled with this deployment, it no longer recovers to the payer.
        let mut relabelled = wrong_contract;
        relabelled.domain = CHAIN;
        assert_eq!(
            check(&relabelled, me, &CHAIN, Some(&ch)),
            Err(Rejection::Forged)
        );
        // The malleable twin of a good signature (s -> n - s, v flipped) recovers to the payer
        // with a bare ecrecover, but the contract refuses it: so does the seeder.
        let good = v(300);
        let twin = crate::speed::wallet::malleable_twin(&good.signature);
        assert_eq!(
            crate::speed::wallet::recover_digest(&twin, good.digest()),
            Some(payer.address())
        );
        let mut high_s = good;
        high_s.signature = twin;
        assert_eq!(
            check(&high_s, me, &CHAIN, Some(&ch)),
            Err(Rejection::Forged)
        );
        let mut raw_v = good;
        raw_v.signature[64] -= 27;
        assert_eq!(check(&raw_v, me, &CHAIN, Some(&ch)), Err(Rejection::Forged));
        assert_eq!(
            check(&v(200), me, &CHAIN, None),
            Err(Rejection::UnknownChannel)
        );
        ch.closed = true;
        assert_eq!(
            check(&v(200), me, &CHAIN, Some(&ch)),
            Err(Rejection::ChannelClosed)
        );
        for r in Rejection::ALL {
            assert_eq!(Rejection::from_name(r.name()), Some(r));
        }
    }

    #[test]
    fn digest_matches_the_eip712_layout() {
        // 0x1901 ‖ domainSeparator ‖ keccak256(abi.encode(typehash, channel, payee, amount)).
        let payee = Address([0xab; 20]);
        let d = digest(&CHAIN, &ChannelId([0x11; 32]), &payee, 1_000_000);
        let mut words = Vec::new();
        words.extend_from_slice(&keccak256(
            b"Voucher(bytes32 channel,address payee,uint256 amount)",
        ));
        words.extend_from_slice(&[0x11; 32]);
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(&[0xab; 20]);
        words.extend_from_slice(&w);
        let mut w = [0u8; 32];
        w[29..].copy_from_slice(&[0x0f, 0x42, 0x40]);
        words.extend_from_slice(&w);
        let mut msg = vec![0x19, 0x01];
        msg.extend_from_slice(&CHAIN.separator());
        msg.extend_from_slice(&keccak256(&words));
        assert_eq!(d, keccak256(&msg));
        // A bid's digest over the same fields differs (another type hash).
        assert_ne!(
            bid_digest(&CHAIN, &ChannelId([0x11; 32]), &payee, 1_000_000, 0),
            d
        );
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

    /// The v2 example vectors of docs/speed.md §3 (the same bytes `contracts/test/vectors.test.mjs`
    /// checks against the contract): regenerate the document's numbers from here.
    #[test]
    fn documented_example_vector() {
        let payer = Wallet::from_secret([1; 32]).unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        // The payer's first CREATE address (nonce 0): where a fresh chain deploys the contract.
        let contract = Address::parse("0x32dCAB0EF3FB2De2fce1D2E0799D36239671F04A").unwrap();
        let domain = Domain {
            chain_id: 199,
            contract,
        };
        let channel = ChannelId([0x11; 32]);
        let v = Voucher::sign(
            &payer,
            domain,
            channel,
            seeder.address(),
            1_000_000_000_000_000_000,
        );
        let bid = crate::speed::protocol::Bid::sign(
            &payer,
            domain,
            seeder.address(),
            1_000_000_000_000_000,
            channel,
            10_000_000_000_000_000_000,
        );
        let hex = crate::metainfo::hex;
        let calldata = crate::speed::ledger::claim_calldata(&channel, v.cumulative, &v.signature);
        let got = [
            ("payer", payer.address().to_evm()),
            ("payee", seeder.address().to_evm()),
            ("contract", contract.to_evm()),
            ("domain typehash", hex(&keccak256(DOMAIN_TYPE.as_bytes()))),
            ("voucher typehash", hex(&keccak256(VOUCHER_TYPE.as_bytes()))),
            ("bid typehash", hex(&keccak256(BID_TYPE.as_bytes()))),
            ("domain separator", hex(&domain.separator())),
            (
                "voucher struct",
                hex(&voucher_struct_hash(
                    &channel,
                    &seeder.address(),
                    v.cumulative,
                )),
            ),
            ("voucher digest", hex(&v.digest())),
            ("voucher signature", hex(&v.signature)),
            (
                "bid struct",
                hex(&bid_struct_hash(
                    &channel,
                    &seeder.address(),
                    bid.price,
                    bid.cap,
                )),
            ),
            (
                "bid digest",
                hex(&bid_digest(
                    &domain,
                    &channel,
                    &seeder.address(),
                    bid.price,
                    bid.cap,
                )),
            ),
            ("bid signature", hex(&bid.signature)),
            ("claim calldata", hex(&calldata)),
        ];
        let doc = include_str!("../../docs/speed.md");
        for (name, value) in got {
            println!("{name:<18} {value}");
            let line = format!("{name:<18} {value}");
            assert!(doc.contains(&line), "docs/speed.md lacks {line}");
        }
        assert!(bid.signed_by_payer(&domain, seeder.address()));
        assert_eq!(v.signer(), Some(payer.address()));
    }
}
