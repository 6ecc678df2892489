//! One transaction from the node's wallet, start to receipt: what `ringseed channel open` (the
//! paying side) and the tests' contract deployment need. Claims have their own path
//! ([`crate::speed::submit`]), which records each transaction before sending it.

use std::time::Duration;

use super::abi;
use super::rpc::{Receipt, Rpc, RpcError};
use super::tx::{LegacyTx, SignedTx};
use crate::speed::voucher::{Amount, ChannelId};
use crate::speed::wallet::{Address, Wallet};

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("transaction {0} was not mined within {1:?}")]
    NotMined(String, Duration),
    #[error("transaction {tx} reverted{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Reverted { tx: String, reason: Option<String> },
}

/// Estimates (plus `margin_percent`), signs with a nonce from the pending count, sends, and
/// waits for the receipt; a revert, at estimation or once mined, is an error.
pub fn send_and_wait(
    rpc: &Rpc,
    wallet: &Wallet,
    to: Option<&Address>,
    value: Amount,
    data: Vec<u8>,
    timeout: Duration,
) -> Result<(SignedTx, Receipt), SendError> {
    let me = wallet.address();
    let chain_id = rpc.chain_id()?;
    let gas = match rpc.estimate_gas(&me, to, value, &data) {
        Ok(g) => g.saturating_mul(120) / 100,
        Err(RpcError::Node {
            data: Some(d),
            message,
            ..
        }) => {
            return Err(SendError::Reverted {
                tx: "(estimate)".into(),
                reason: Some(abi::error_name(&d).map_or(message, str::to_string)),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let tx = LegacyTx {
        nonce: rpc.pending_nonce(&me)?,
        gas_price: rpc.gas_price()?,
        gas,
        to: to.copied(),
        value,
        data,
        chain_id,
    }
    .sign(wallet);
    rpc.send_raw(&tx.raw)?;
    let hash = format!("0x{}", crate::metainfo::hex(&tx.hash));
    let receipt = rpc
        .wait_receipt(&tx.hash, timeout, Duration::from_millis(50))?
        .ok_or_else(|| SendError::NotMined(hash.clone(), timeout))?;
    if !receipt.success {
        return Err(SendError::Reverted {
            tx: hash,
            reason: None,
        });
    }
    Ok((tx, receipt))
}

/// What `ringseed channel open` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Opened {
    pub channel: String,
    pub contract: String,
    pub payer: String,
    pub payee: String,
    pub deposit: String,
    pub expiry: u64,
    pub tx: String,
    pub gas_used: String,
    pub fee: String,
}

/// A channel to open: `id` on `contract` to `payee` with `deposit` (native coin) locked until
/// `expiry` (unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct OpenRequest {
    pub contract: Address,
    pub id: ChannelId,
    pub payee: Address,
    pub deposit: Amount,
    pub expiry: u64,
}

/// Opens the channel from `wallet` and waits until it is mined.
pub fn open_channel(
    rpc: &Rpc,
    wallet: &Wallet,
    req: &OpenRequest,
    timeout: Duration,
) -> Result<Opened, SendError> {
    let OpenRequest {
        contract,
        id,
        payee,
        deposit,
        expiry,
    } = *req;
    let data = abi::open_calldata(&id, &payee, expiry, deposit);
    let (tx, receipt) = send_and_wait(rpc, wallet, Some(&contract), deposit, data, timeout)?;
    Ok(Opened {
        channel: id.to_hex(),
        contract: contract.to_evm(),
        payer: wallet.address().to_evm(),
        payee: payee.to_evm(),
        deposit: deposit.to_string(),
        expiry,
        tx: format!("0x{}", crate::metainfo::hex(&tx.hash)),
        gas_used: receipt.gas_used.to_string(),
        fee: receipt.fee().to_string(),
    })
}
