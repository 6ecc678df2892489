//! Voucher checks on arbitrary fields and signatures against a known open channel: never a
//! panic, and nothing is accepted unless the real payer signed it (a fuzzer cannot forge a
//! secp256k1 signature, so every `Ok` must come from a seed input signed with the payer's key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::speed::voucher::{Channel, ChannelId, Domain, Voucher, check};
use ringseed::speed::wallet::{Address, Wallet};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 + 32 + 20 + 16 + 65 + 16 {
        return;
    }
    let (chain, rest) = data.split_at(8);
    let (channel, rest) = rest.split_at(32);
    let (payee, rest) = rest.split_at(20);
    let (amount, rest) = rest.split_at(16);
    let (sig, rest) = rest.split_at(65);
    let (accepted, _) = rest.split_at(16);
    let v = Voucher {
        domain: Domain {
            chain_id: u64::from_be_bytes(chain.try_into().unwrap()),
            contract: Address([0x32; 20]),
        },
        channel: ChannelId(channel.try_into().unwrap()),
        payee: Address(payee.try_into().unwrap()),
        cumulative: u128::from_be_bytes(amount.try_into().unwrap()),
        signature: sig.try_into().unwrap(),
    };
    let payer = Wallet::from_secret([1; 32]).unwrap().address();
    let mut ch = Channel::open(v.channel, payer, u128::MAX / 2);
    ch.accepted = u128::from_be_bytes(accepted.try_into().unwrap());
    if let Ok(inc) = check(&v, v.payee, &v.domain, Some(&ch)) {
        assert!(inc > 0 && v.cumulative <= ch.cap);
        assert_eq!(v.signer(), Some(payer));
    }
});
