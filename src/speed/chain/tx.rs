//! Legacy (type 0) transactions signed with EIP-155 replay protection: the signature covers
//! the chain id, so a claim signed for BTTC cannot be replayed on another chain.

use super::rlp;
use crate::speed::wallet::{Address, Wallet, keccak256};

/// A transaction before signing. `to = None` creates a contract (`data` is its init code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTx {
    pub nonce: u64,
    pub gas_price: u128,
    pub gas: u64,
    pub to: Option<Address>,
    pub value: u128,
    pub data: Vec<u8>,
    pub chain_id: u64,
}

/// A signed transaction as `eth_sendRawTransaction` takes it, and its hash (the id the node
/// answers with and receipts are looked up by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    pub raw: Vec<u8>,
    pub hash: [u8; 32],
    pub nonce: u64,
}

impl LegacyTx {
    fn fields(&self) -> Vec<Vec<u8>> {
        vec![
            rlp::uint(u128::from(self.nonce)),
            rlp::uint(self.gas_price),
            rlp::uint(u128::from(self.gas)),
            rlp::bytes(self.to.as_ref().map_or(&[][..], |a| &a.0[..])),
            rlp::uint(self.value),
            rlp::bytes(&self.data),
        ]
    }

    /// What is hashed and signed (EIP-155): the six fields, then chain id, 0, 0.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut f = self.fields();
        f.push(rlp::uint(u128::from(self.chain_id)));
        f.push(rlp::uint(0));
        f.push(rlp::uint(0));
        rlp::list(&f)
    }

    pub fn signing_hash(&self) -> [u8; 32] {
        keccak256(&self.signing_payload())
    }

    /// Signs with `wallet`: `v = chain_id × 2 + 35 + recovery id`, then `r`, `s` as integers.
    pub fn sign(&self, wallet: &Wallet) -> SignedTx {
        let sig = wallet.sign(self.signing_hash());
        let recovery = u128::from(sig[64].saturating_sub(27) & 1);
        let v = u128::from(self.chain_id) * 2 + 35 + recovery;
        let mut f = self.fields();
        f.push(rlp::uint(v));
        f.push(rlp::uint_be(&sig[..32]));
        f.push(rlp::uint_be(&sig[32..64]));
        let raw = rlp::list(&f);
        SignedTx {
            hash: keccak256(&raw),
            raw,
            nonce: self.nonce,
        }
    }
}

/// The address a contract created by `sender` at `nonce` gets: the last 20 bytes of
/// `keccak256(rlp([sender, nonce]))`.
pub fn create_address(sender: &Address, nonce: u64) -> Address {
    let h = keccak256(&rlp::list(&[
        rlp::bytes(&sender.0),
        rlp::uint(u128::from(nonce)),
    ]));
    let mut a = [0u8; 20];
    a.copy_from_slice(&h[12..]);
    Address(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::hex;

    /// The example of EIP-155 itself.
    #[test]
    fn the_eip155_example() {
        let tx = LegacyTx {
            nonce: 9,
            gas_price: 20_000_000_000,
            gas: 21_000,
            to: Some(Address([0x35; 20])),
            value: 1_000_000_000_000_000_000,
            data: Vec::new(),
            chain_id: 1,
        };
        assert_eq!(
            hex(&tx.signing_payload()),
            "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080"
        );
        assert_eq!(
            hex(&tx.signing_hash()),
            "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
        );
        let wallet = Wallet::from_secret([0x46; 32]).unwrap();
        let signed = tx.sign(&wallet);
        assert_eq!(
            hex(&signed.raw),
            "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
        );
        assert_eq!(signed.hash, keccak256(&signed.raw));
    }

    /// The v2 vectors' contract: the payer's (secret 0x01…) first contract.
    #[test]
    fn create_address_of_the_vectors_contract() {
        let payer = Wallet::from_secret([1; 32]).unwrap();
        assert_eq!(
            create_address(&payer.address(), 0).to_evm(),
            "0x32dCAB0EF3FB2De2fce1D2E0799D36239671F04A"
        );
    }
}
