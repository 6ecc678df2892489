//! `bench --pay --rpc`: the paying leechers pay from channels opened and funded on a real chain
//! first (one payer key, one channel per paying leecher), so the seeder's vouchers can be
//! claimed with `ringseed settle --submit`.

use std::path::PathBuf;
use std::time::Duration;

use crate::speed::chain::rpc::Rpc;
use crate::speed::chain::send::{OpenRequest, open_channel};
use crate::speed::payer::{Payer, WirePayer};
use crate::speed::voucher::{Amount, ChannelId};
use crate::speed::wallet::{Address, Wallet};

/// Where and how to open the channels.
#[derive(Debug, Clone)]
pub struct ChainPay {
    pub rpc: String,
    pub contract: Address,
    /// The payer's key file (as `ringseed wallet` makes it).
    pub payer_key: PathBuf,
    /// The seeder's address; with `--spawn-seeder`, the spawned seeder's own.
    pub payee: Option<Address>,
}

/// Channels opened for a run: leecher `i` pays from `ids[i]`.
#[derive(Debug, Clone)]
pub struct PaidChannels {
    pub key: PathBuf,
    pub contract: Address,
    pub ids: Vec<ChannelId>,
}

impl PaidChannels {
    /// Leecher `i`'s payer, bidding only to a seeder whose offer names the contract.
    pub fn wire_payer(&self, i: usize, price: Amount, budget: Amount) -> Option<WirePayer> {
        let id = *self.ids.get(i)?;
        let wallet = Wallet::load(&self.key).ok()?;
        Some(WirePayer::with(
            Payer::new(wallet, id, price, budget).on_contract(self.contract),
        ))
    }
}

/// Opens `n` channels of `budget` each to `payee`, expiring in a day, one after another.
pub fn open_channels(
    cp: &ChainPay,
    payee: Address,
    n: usize,
    budget: Amount,
) -> Result<PaidChannels, String> {
    let wallet = Wallet::load(&cp.payer_key).map_err(|e| e.to_string())?;
    let rpc = Rpc::new(&cp.rpc).map_err(|e| e.to_string())?;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        + 86_400;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| e.to_string())?;
        let req = OpenRequest {
            contract: cp.contract,
            id: ChannelId(b),
            payee,
            deposit: budget,
            expiry,
        };
        open_channel(&rpc, &wallet, &req, Duration::from_secs(60)).map_err(|e| e.to_string())?;
        ids.push(req.id);
    }
    Ok(PaidChannels {
        key: cp.payer_key.clone(),
        contract: cp.contract,
        ids,
    })
}
