//! `ringseed settle --submit`: claims every channel's latest voucher on chain, with the node's
//! wallet, and marks what the contract paid in the ledger only once a claim is mined with
//! status 1.
//!
//! Crash safety: a claim transaction is signed and **recorded (hash, nonce, raw bytes) in
//! `speed_claims` and committed before it is sent**. A run killed at any point leaves either no
//! row (nothing was sent) or a row whose transaction the next run re-sends byte for byte (the
//! same hash: a node that has it already says so, a mined one is found by its receipt). Every
//! run first reads `channels(id)` on chain, so what a lost run got mined is counted, and what is
//! still owed is claimed again. A claim can never pay twice: the contract pays
//! `min(amount, deposit) − claimed` and reverts `NothingToClaim` on a replay.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::chain::abi::{self, OnChainChannel};
use super::chain::rpc::{Rpc, RpcError};
use super::chain::tx::{LegacyTx, SignedTx};
use super::ledger::{self, FORMAT_V2, claim_calldata, unix_now};
use super::protocol::parse_amount;
use super::voucher::{Amount, ChannelId, Domain};
use super::wallet::{Address, Signature65, Wallet};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub rpc_url: String,
    /// How long to wait for each claim's receipt after the last one was sent.
    pub receipt_timeout: Duration,
    pub poll: Duration,
    /// Gas limit = estimate × (100 + margin) / 100: the estimate is for the current state, and a
    /// claim's cost moves by a few dozen gas with the calldata's zero bytes.
    pub gas_margin_percent: u64,
}

impl SubmitOptions {
    pub fn new(rpc_url: &str) -> SubmitOptions {
        SubmitOptions {
            rpc_url: rpc_url.to_string(),
            receipt_timeout: Duration::from_secs(120),
            poll: Duration::from_millis(100),
            gas_margin_percent: 20,
        }
    }
}

/// What happened to one channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelOutcome {
    pub channel: String,
    /// The latest voucher's cumulative amount.
    pub amount: String,
    /// `claimed` (mined, status 1), `nothing_to_claim` (the contract already paid all the
    /// voucher or deposit allows), `reverted` (mined with status 0), `refused` (the node or the
    /// gas estimate refused it: nothing was mined), `pending` (sent, not mined before the
    /// timeout: the next run checks it), `not_ours` (the channel on chain has another payer or
    /// payee), `no_channel` (no such channel on the contract).
    pub status: &'static str,
    /// What the contract paid for this channel in this run, base units.
    pub paid: String,
    /// The channel's total paid by the contract, as read on chain.
    pub claimed: String,
    pub tx: Option<String>,
    pub gas_used: Option<u64>,
    /// gasUsed × effectiveGasPrice, base units.
    pub fee: Option<String>,
    pub detail: Option<String>,
}

/// The JSON summary `settle --submit` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubmitReport {
    pub chain_id: u64,
    pub contract: String,
    pub payee: String,
    /// Paid to the payee by the claims of this run.
    pub paid: String,
    /// Gas fees of this run's mined claims.
    pub fees: String,
    pub claims_sent: u64,
    pub channels: Vec<ChannelOutcome>,
    /// Channels whose latest voucher is format v1: no contract pays them (docs/speed.md §3 v1).
    pub unclaimable_v1: u64,
    pub unclaimable_v1_amount: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("ledger: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("the node at the RPC endpoint is on chain {node}, the ledger's vouchers on {ours}")]
    WrongChain { node: u64, ours: u64 },
}

/// A channel with a voucher worth claiming, as the ledger has it.
struct Row {
    channel: ChannelId,
    payer: Address,
    amount: Amount,
    signature: Signature65,
    claimed: Amount,
}

/// A claim sent (now or by an earlier run) and awaited.
struct Sent {
    row: usize,
    hash: [u8; 32],
}

fn amount_col(s: &str) -> Result<Amount, rusqlite::Error> {
    parse_amount(s.as_bytes()).ok_or_else(|| {
        rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(format!(
            "corrupt ledger amount {s:?}"
        ))))
    })
}

fn blob<const N: usize>(b: Vec<u8>) -> Result<[u8; N], rusqlite::Error> {
    b.try_into().map_err(|_| {
        rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(
            "corrupt ledger blob",
        )))
    })
}

/// The v2 channels of `domain` whose latest voucher is above what the contract paid, and the
/// count and sum of v1 ones.
fn load(conn: &Connection, domain: &Domain) -> Result<(Vec<Row>, u64, Amount), rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT v.channel, c.payer, v.amount, v.signature, v.claimed, v.format, v.contract,
                v.chain_id
         FROM speed_vouchers v JOIN speed_channels c ON c.id = v.channel
         WHERE v.exported_at IS NULL ORDER BY v.channel",
    )?;
    let mut rows = stmt.query([])?;
    let (mut out, mut v1, mut v1_sum) = (Vec::new(), 0u64, 0 as Amount);
    while let Some(r) = rows.next()? {
        let amount = amount_col(&r.get::<_, String>(2)?)?;
        let format: i64 = r.get(5)?;
        if format != FORMAT_V2 {
            v1 += 1;
            v1_sum = v1_sum.saturating_add(amount);
            continue;
        }
        let contract: Option<Vec<u8>> = r.get(6)?;
        let chain: i64 = r.get(7)?;
        if contract.as_deref() != Some(&domain.contract.0[..]) || chain as u64 != domain.chain_id {
            continue;
        }
        let claimed = amount_col(&r.get::<_, String>(4)?)?;
        if amount <= claimed {
            continue;
        }
        out.push(Row {
            channel: ChannelId(blob(r.get(0)?)?),
            payer: Address(blob(r.get(1)?)?),
            amount,
            signature: blob(r.get(3)?)?,
            claimed,
        });
    }
    Ok((out, v1, v1_sum))
}

/// Records what the contract paid for `channel` (never lowers it).
fn mark_claimed(conn: &Connection, channel: &ChannelId, claimed: Amount) -> rusqlite::Result<()> {
    let now: Option<String> = conn
        .query_row(
            "SELECT claimed FROM speed_vouchers WHERE channel = ?1",
            [&channel.0[..]],
            |r| r.get(0),
        )
        .optional()?;
    let now = now.as_deref().map(amount_col).transpose()?.unwrap_or(0);
    if claimed > now {
        conn.execute(
            "UPDATE speed_vouchers SET claimed = ?2 WHERE channel = ?1",
            params![&channel.0[..], claimed.to_string()],
        )?;
    }
    Ok(())
}

fn forget_claim(conn: &Connection, channel: &ChannelId) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM speed_claims WHERE channel = ?1",
        [&channel.0[..]],
    )?;
    Ok(())
}

/// The claim an earlier run recorded for `channel`, if any: (hash, raw transaction).
fn recorded(
    conn: &Connection,
    channel: &ChannelId,
) -> rusqlite::Result<Option<([u8; 32], Vec<u8>)>> {
    conn.query_row(
        "SELECT tx_hash, raw_tx FROM speed_claims WHERE channel = ?1",
        [&channel.0[..]],
        |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)),
    )
    .optional()?
    .map(|(h, raw)| Ok((blob(h)?, raw)))
    .transpose()
}

/// Writes the claim about to be sent, durably (the connection is in WAL mode with
/// `synchronous = FULL`, so the commit is on disk when this returns).
fn record(
    conn: &Connection,
    channel: &ChannelId,
    amount: Amount,
    tx: &SignedTx,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO speed_claims (channel, amount, nonce, tx_hash, raw_tx, sent_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (channel) DO UPDATE SET amount = excluded.amount, nonce = excluded.nonce,
             tx_hash = excluded.tx_hash, raw_tx = excluded.raw_tx, sent_at = excluded.sent_at",
        params![
            &channel.0[..],
            amount.to_string(),
            tx.nonce as i64,
            &tx.hash[..],
            &tx.raw,
            unix_now()
        ],
    )?;
    Ok(())
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", crate::metainfo::hex(b))
}

fn read_channel(rpc: &Rpc, contract: &Address, id: &ChannelId) -> Result<OnChainChannel, RpcError> {
    let ret = rpc.eth_call(contract, &abi::channels_calldata(id))?;
    abi::decode_channel(&ret).ok_or(RpcError::BadReply {
        method: "eth_call",
        detail: "channels(id) did not return five words".into(),
    })
}

fn node_detail(e: &RpcError) -> String {
    match e {
        RpcError::Node { data: Some(d), .. } => match abi::error_name(d) {
            Some(name) => format!("{name} ({e})"),
            None => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// Claims every claimable channel of the ledger in `db_path` on `domain`'s contract, signing
/// with `wallet` (the payee). Returns the run's summary; a claim that fails stays claimable.
pub fn submit(
    db_path: &Path,
    wallet: &Wallet,
    domain: Domain,
    opts: &SubmitOptions,
) -> Result<SubmitReport, SubmitError> {
    let mut conn = crate::db::open(db_path)?;
    crate::db::migrate(&mut conn, ledger::COMPONENT, ledger::MIGRATIONS)?;
    let rpc = Rpc::new(&opts.rpc_url)?;
    let node = rpc.chain_id()?;
    if node != domain.chain_id {
        return Err(SubmitError::WrongChain {
            node,
            ours: domain.chain_id,
        });
    }
    let me = wallet.address();
    let (rows, v1, v1_sum) = load(&conn, &domain)?;
    let mut outcomes: Vec<Option<ChannelOutcome>> = vec![None; rows.len()];
    let mut before: Vec<Amount> = rows.iter().map(|r| r.claimed).collect();
    let outcome = |r: &Row, status: &'static str, claimed: Amount| ChannelOutcome {
        channel: r.channel.to_hex(),
        amount: r.amount.to_string(),
        status,
        paid: "0".into(),
        claimed: claimed.to_string(),
        tx: None,
        gas_used: None,
        fee: None,
        detail: None,
    };
    let mut sent: Vec<Sent> = Vec::new();
    let mut to_claim: Vec<usize> = Vec::new();
    // 1. What the chain says, and claims an earlier run left in flight.
    for (i, r) in rows.iter().enumerate() {
        let on = match read_channel(&rpc, &domain.contract, &r.channel) {
            Ok(c) => c,
            Err(e) => {
                let mut o = outcome(r, "refused", r.claimed);
                o.detail = Some(e.to_string());
                outcomes[i] = Some(o);
                continue;
            }
        };
        if !on.exists() {
            outcomes[i] = Some(outcome(r, "no_channel", r.claimed));
            continue;
        }
        if on.payer != r.payer || on.payee != me {
            let mut o = outcome(r, "not_ours", r.claimed);
            o.detail = Some(format!(
                "on chain: payer {}, payee {}",
                on.payer.to_evm(),
                on.payee.to_evm()
            ));
            outcomes[i] = Some(o);
            continue;
        }
        // Whatever an earlier run got mined is paid: count it from the chain's own state.
        mark_claimed(&conn, &r.channel, on.claimed)?;
        before[i] = before[i].min(on.claimed);
        let payable = r.amount.min(on.deposit);
        if payable <= on.claimed {
            forget_claim(&conn, &r.channel)?;
            let mut o = outcome(r, "nothing_to_claim", on.claimed);
            o.paid = on.claimed.saturating_sub(r.claimed).to_string();
            outcomes[i] = Some(o);
            continue;
        }
        match recorded(&conn, &r.channel)? {
            Some((hash, raw)) => {
                // Sent (or about to be) by a run that stopped: the same bytes again. A node that
                // has it already refuses the copy (in its own words), so what counts is whether
                // it knows the hash afterwards; one whose nonce went to another transaction
                // never will, and the claim is signed anew below.
                let resent = rpc.send_raw(&raw);
                if resent.is_ok() || rpc.transaction_known(&hash)? {
                    sent.push(Sent { row: i, hash });
                } else {
                    forget_claim(&conn, &r.channel)?;
                    to_claim.push(i);
                }
            }
            None => to_claim.push(i),
        }
    }
    // 2. New claims, on consecutive nonces from the pending count (which includes the re-sent).
    if !to_claim.is_empty() {
        let mut nonce = rpc.pending_nonce(&me)?;
        let gas_price = rpc.gas_price()?;
        for i in to_claim {
            let r = &rows[i];
            let data = claim_calldata(&r.channel, r.amount, &r.signature);
            let gas = match rpc.estimate_gas(&me, Some(&domain.contract), 0, &data) {
                Ok(g) => g.saturating_mul(100 + opts.gas_margin_percent) / 100,
                Err(e) => {
                    let mut o = outcome(r, "refused", r.claimed);
                    o.detail = Some(node_detail(&e));
                    outcomes[i] = Some(o);
                    continue;
                }
            };
            let tx = LegacyTx {
                nonce,
                gas_price,
                gas,
                to: Some(domain.contract),
                value: 0,
                data,
                chain_id: domain.chain_id,
            }
            .sign(wallet);
            record(&conn, &r.channel, r.amount, &tx)?;
            match rpc.send_raw(&tx.raw) {
                Ok(_) => {
                    nonce += 1;
                    sent.push(Sent {
                        row: i,
                        hash: tx.hash,
                    });
                }
                Err(e) => {
                    // Refused outright: the nonce is still free for the next claim.
                    forget_claim(&conn, &r.channel)?;
                    let mut o = outcome(r, "refused", r.claimed);
                    o.detail = Some(node_detail(&e));
                    outcomes[i] = Some(o);
                }
            }
        }
    }
    // 3. Receipts: only a claim mined with status 1 marks anything, and then what the chain says.
    let (mut paid_total, mut fees, claims_sent) = (0 as Amount, 0 as Amount, sent.len() as u64);
    for s in sent {
        let r = &rows[s.row];
        let mut o = outcome(r, "pending", r.claimed);
        o.tx = Some(hex0x(&s.hash));
        match rpc.wait_receipt(&s.hash, opts.receipt_timeout, opts.poll) {
            Ok(Some(rc)) => {
                o.gas_used = u64::try_from(rc.gas_used).ok();
                o.fee = Some(rc.fee().to_string());
                fees = fees.saturating_add(rc.fee());
                forget_claim(&conn, &r.channel)?;
                if rc.success {
                    let on = read_channel(&rpc, &domain.contract, &r.channel)?;
                    mark_claimed(&conn, &r.channel, on.claimed)?;
                    let paid = on.claimed.saturating_sub(before[s.row]);
                    paid_total = paid_total.saturating_add(paid);
                    o.status = "claimed";
                    o.paid = paid.to_string();
                    o.claimed = on.claimed.to_string();
                } else {
                    o.status = "reverted";
                }
            }
            Ok(None) => {
                o.detail = Some("not mined before the timeout; the next run checks it".into())
            }
            Err(e) => o.detail = Some(e.to_string()),
        }
        outcomes[s.row] = Some(o);
    }
    Ok(SubmitReport {
        chain_id: domain.chain_id,
        contract: domain.contract.to_evm(),
        payee: me.to_evm(),
        paid: paid_total.to_string(),
        fees: fees.to_string(),
        claims_sent,
        channels: outcomes.into_iter().flatten().collect(),
        unclaimable_v1: v1,
        unclaimable_v1_amount: v1_sum.to_string(),
    })
}
