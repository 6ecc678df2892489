//! The `PaymentChannel` calls the node makes (docs/speed.md §6), ABI-encoded by hand: fixed
//! layouts of 32-byte words, no dynamic types but the claim's signature (in
//! [`crate::speed::ledger::claim_calldata`]).

use crate::speed::voucher::{Amount, ChannelId, abi_address, abi_uint};
use crate::speed::wallet::{Address, keccak256};

fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// `open(bytes32 id, address payee, uint64 expiry, uint256 amount)`; native coin: send
/// `amount` as the call's value.
pub fn open_calldata(id: &ChannelId, payee: &Address, expiry: u64, amount: Amount) -> Vec<u8> {
    let mut out = selector("open(bytes32,address,uint64,uint256)").to_vec();
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&abi_address(payee));
    out.extend_from_slice(&abi_uint(u128::from(expiry)));
    out.extend_from_slice(&abi_uint(amount));
    out
}

/// `channels(bytes32 id)`, the public mapping's getter.
pub fn channels_calldata(id: &ChannelId) -> Vec<u8> {
    let mut out = selector("channels(bytes32)").to_vec();
    out.extend_from_slice(&id.0);
    out
}

/// A channel as the contract holds it. `payer` is zero when no channel has that id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnChainChannel {
    pub payer: Address,
    pub expiry: u64,
    pub payee: Address,
    pub deposit: Amount,
    pub claimed: Amount,
}

impl OnChainChannel {
    pub fn exists(&self) -> bool {
        self.payer.0 != [0; 20]
    }
}

fn word_address(w: &[u8]) -> Option<Address> {
    if w[..12].iter().any(|b| *b != 0) {
        return None;
    }
    let mut a = [0u8; 20];
    a.copy_from_slice(&w[12..32]);
    Some(Address(a))
}

fn word_uint(w: &[u8], bytes: usize) -> Option<u128> {
    if w[..32 - bytes].iter().any(|b| *b != 0) {
        return None;
    }
    let mut b = [0u8; 16];
    b[16 - bytes..].copy_from_slice(&w[32 - bytes..32]);
    Some(u128::from_be_bytes(b))
}

/// Decodes `channels(id)`'s reply: five words (payer, expiry, payee, deposit, claimed). `None`
/// for anything else (a node or contract that answers something unexpected is not trusted).
pub fn decode_channel(ret: &[u8]) -> Option<OnChainChannel> {
    if ret.len() != 5 * 32 {
        return None;
    }
    let w = |i: usize| &ret[i * 32..(i + 1) * 32];
    Some(OnChainChannel {
        payer: word_address(w(0))?,
        expiry: u64::try_from(word_uint(w(1), 8)?).ok()?,
        payee: word_address(w(2))?,
        deposit: word_uint(w(3), 16)?,
        claimed: word_uint(w(4), 16)?,
    })
}

/// The init code deploying the contract: its bytecode then the constructor's `token` argument
/// (`address(0)` = the native coin).
pub fn deploy_data(bytecode: &[u8], token: &Address) -> Vec<u8> {
    let mut out = bytecode.to_vec();
    out.extend_from_slice(&abi_address(token));
    out
}

/// The custom error a reverted call names, from its 4-byte selector, for reports.
pub fn error_name(data: &[u8]) -> Option<&'static str> {
    const ERRORS: [&str; 15] = [
        "ChannelExists",
        "NoSuchChannel",
        "BadPayee",
        "BadExpiry",
        "BadValue",
        "DepositTooLarge",
        "NotPayee",
        "NotPayer",
        "BadSignature",
        "NothingToClaim",
        "NotExpired",
        "Expired",
        "NothingToReclaim",
        "TransferFailed",
        "NotAToken",
    ];
    let sel = data.get(..4)?;
    ERRORS
        .into_iter()
        .find(|e| selector(&format!("{e}()")) == sel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Selectors as the committed artifact's ABI names them (solc's method identifiers).
    #[test]
    fn selectors_match_the_contract() {
        assert_eq!(
            crate::metainfo::hex(&selector("claim(bytes32,uint256,bytes)")),
            "7964ea87"
        );
        let abi = include_str!("../../../contracts/build/PaymentChannel.json");
        for f in ["open", "channels", "claim"] {
            assert!(abi.contains(&format!("\"name\": \"{f}\"")), "{f}");
        }
        let r = channels_calldata(&ChannelId([1; 32]));
        assert_eq!(r.len(), 36);
        assert_eq!(
            open_calldata(&ChannelId([1; 32]), &Address([2; 20]), 3, 4).len(),
            4 + 128
        );
    }

    #[test]
    fn channel_replies_decode_strictly() {
        let mut ret = Vec::new();
        ret.extend_from_slice(&abi_address(&Address([1; 20])));
        ret.extend_from_slice(&abi_uint(1_700_000_000));
        ret.extend_from_slice(&abi_address(&Address([2; 20])));
        ret.extend_from_slice(&abi_uint(10u128.pow(19)));
        ret.extend_from_slice(&abi_uint(5));
        let c = decode_channel(&ret).unwrap();
        assert_eq!(
            (c.expiry, c.deposit, c.claimed),
            (1_700_000_000, 10u128.pow(19), 5)
        );
        assert!(c.exists());
        assert!(decode_channel(&ret[..159]).is_none());
        ret[0] = 1; // an address word with high bits set
        assert!(decode_channel(&ret).is_none());
        assert_eq!(
            error_name(&selector("NothingToClaim()")),
            Some("NothingToClaim")
        );
        assert_eq!(error_name(&[1, 2]), None);
    }
}
