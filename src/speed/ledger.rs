//! The earnings ledger, in the node's SQLite database (component `"ledger"`): payment channels,
//! the latest accepted voucher of each, and earnings per day, torrent and payer.
//!
//! Writes run as [`crate::db::DbWriter`] jobs, so a voucher's acceptance is answered only once
//! its transaction is durable: the receipt a payer sees means the voucher survives a crash. The
//! job re-checks the voucher against the channel as stored (the worker's view may be stale), so
//! no voucher is counted twice, even when a payer resends one after a restart.
//!
//! Amounts are `u128` and stored as decimal text (SQLite integers stop at 2^63); the sums are
//! made in Rust. Invariant, tested: the sum of the earnings rows equals the sum of the latest
//! accepted vouchers.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::protocol::{Bid, parse_amount};
use super::voucher::{
    Amount, Channel, ChannelId, Domain, Rejection, Voucher, abi_uint, check_fields, check_signature,
};
use super::wallet::{Address, keccak256};
use crate::db::{DbError, DbHandle, Reply};

/// The ledger's component name in `schema_version`.
pub const COMPONENT: &str = "ledger";

/// Schema steps, applied in order once each (see [`crate::db::migrate`]).
pub const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE speed_channels (
    id BLOB PRIMARY KEY CHECK (length(id) = 32),
    payer BLOB NOT NULL CHECK (length(payer) = 20),
    cap TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    -- Set when a claim of the channel is exported: claiming closes a unidirectional channel.
    closed_at INTEGER
);
-- The latest accepted voucher of each channel: the only one worth claiming.
CREATE TABLE speed_vouchers (
    channel BLOB PRIMARY KEY REFERENCES speed_channels (id),
    chain_id INTEGER NOT NULL,
    payee BLOB NOT NULL CHECK (length(payee) = 20),
    amount TEXT NOT NULL,
    signature BLOB NOT NULL CHECK (length(signature) = 65),
    accepted_at INTEGER NOT NULL,
    vouchers INTEGER NOT NULL,
    exported_at INTEGER
);
-- What each accepted voucher added, summed per UTC day, torrent and payer.
CREATE TABLE speed_earnings (
    day TEXT NOT NULL,
    torrent BLOB NOT NULL,
    payer BLOB NOT NULL,
    amount TEXT NOT NULL,
    vouchers INTEGER NOT NULL,
    PRIMARY KEY (day, torrent, payer)
);
",
    "
-- A bid no longer writes its channel: the row comes with the channel's first accepted voucher,
-- so every row holds a claimable voucher. Rows from bids that never paid are dropped.
DELETE FROM speed_channels WHERE id NOT IN (SELECT channel FROM speed_vouchers);
",
    "
-- Vouchers v2 (EIP-712, docs/speed.md §3): each voucher row records its format and the contract
-- it was signed for. Rows from before are format 1: no contract checks their digest, so they
-- stay as history (exported by a plain `settle`, reported unclaimable by `settle --submit`),
-- and their channels are closed: a channel is never continued across formats.
ALTER TABLE speed_vouchers ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
ALTER TABLE speed_vouchers ADD COLUMN contract BLOB CHECK (contract IS NULL OR length(contract) = 20);
-- What the contract has paid for the channel, as read back after a claim mined with status 1.
ALTER TABLE speed_vouchers ADD COLUMN claimed TEXT NOT NULL DEFAULT '0';
UPDATE speed_channels SET closed_at = CAST(strftime('%s', 'now') AS INTEGER)
    WHERE closed_at IS NULL AND id IN (SELECT channel FROM speed_vouchers WHERE format = 1);
-- A claim transaction sent (or about to be) for a channel: written and committed before the
-- transaction leaves, so a crash never loses track of it (`settle --submit` re-sends or checks
-- it on the next run). Deleted once its outcome is known.
CREATE TABLE speed_claims (
    channel BLOB PRIMARY KEY REFERENCES speed_channels (id),
    amount TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    tx_hash BLOB NOT NULL CHECK (length(tx_hash) = 32),
    raw_tx BLOB NOT NULL,
    sent_at INTEGER NOT NULL
);
",
];

/// The voucher format new rows are written in: 2 = EIP-712 (docs/speed.md §3).
pub const FORMAT_V2: i64 = 2;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("ledger: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger row is corrupt: {0}")]
    Corrupt(String),
}

/// A voucher whose signature was checked against `payer`: the only kind the ledger takes, so
/// the costly check runs on the verifier threads and never on the database writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    voucher: Voucher,
    payer: Address,
}

impl Verified {
    /// Checks the signature (tens of microseconds): it must recover to `payer`.
    pub fn check(voucher: Voucher, payer: Address) -> Result<Verified, Rejection> {
        check_signature(&voucher, &payer)?;
        Ok(Verified { voucher, payer })
    }

    pub fn voucher(&self) -> &Voucher {
        &self.voucher
    }
}

/// A voucher the ledger took: durable once the reply arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub channel: ChannelId,
    /// What this voucher added.
    pub increment: Amount,
    /// The channel's new cumulative amount.
    pub cumulative: Amount,
}

fn corrupt(what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(format!(
        "corrupt ledger value: {what}"
    ))))
}

fn amount_col(s: &str) -> Result<Amount, rusqlite::Error> {
    parse_amount(s.as_bytes()).ok_or_else(|| corrupt(format!("amount {s:?}")))
}

fn fixed<const N: usize>(b: Vec<u8>) -> Result<[u8; N], rusqlite::Error> {
    let len = b.len();
    b.try_into()
        .map_err(|_| corrupt(format!("{len}-byte blob where {N} bytes belong")))
}

/// The UTC calendar day of a Unix time, `YYYY-MM-DD` (Howard Hinnant's civil-from-days).
pub fn utc_day(unix_secs: i64) -> String {
    let z = unix_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

const LOAD_CHANNEL_SQL: &str = "SELECT c.payer, c.cap, c.closed_at IS NOT NULL, v.amount
     FROM speed_channels c LEFT JOIN speed_vouchers v ON v.channel = c.id
     WHERE c.id = ?1";

/// The channel as stored, with its latest accepted amount.
pub fn load_channel(conn: &Connection, id: &ChannelId) -> Result<Option<Channel>, rusqlite::Error> {
    let row = conn
        .prepare_cached(LOAD_CHANNEL_SQL)?
        .query_row([&id.0[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?;
    let Some((payer, cap, closed, accepted)) = row else {
        return Ok(None);
    };
    Ok(Some(Channel {
        id: *id,
        payer: Address(fixed(payer)?),
        cap: amount_col(&cap)?,
        accepted: accepted
            .as_deref()
            .map(amount_col)
            .transpose()?
            .unwrap_or(0),
        closed,
    }))
}

/// What the chain says a channel holds, as a confirmed bid's check read it (`[speed] rpc`):
/// its deposit, what the payee has claimed from it, and the least the deposit must still hold
/// for the bid (one credit window at its price, [`crate::speed::chain::confirm::least_left`]).
/// `held` is what the credit windows of the channel's other live connections may still take
/// unpaid (the verifier's `Windows`): owed from the same deposit if they all stop paying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Funds {
    pub deposit: Amount,
    pub claimed: Amount,
    pub least_left: Amount,
    pub held: Amount,
}

impl Funds {
    /// Whether the deposit still holds `least_left` once what the ledger already accepted on
    /// the channel is counted: vouchers accepted but not claimed yet are owed to us as surely
    /// as claimed ones, and the chain knows nothing of them. `claimed` may be newer than the
    /// ledger's `accepted` (a claim by hand) or older (the check's cache, or claims not sent
    /// yet), so the larger of the two is what is spent. The other connections' windows are
    /// promised already: what is left must pay them and this bid's window.
    pub fn cover(&self, accepted: Amount) -> bool {
        let spent = accepted.max(self.claimed).saturating_add(self.held);
        self.deposit.saturating_sub(spent) >= self.least_left
    }
}

/// Looks up the channel a bid names. A channel already known with another payer is refused (a
/// bid cannot take over someone else's channel); the same payer may restate its cap. A channel
/// not known yet is answered as new and written nowhere: its row comes with its first accepted
/// voucher ([`accept`]), so a bid alone never grows the ledger. With the chain's `funds`, a
/// channel whose deposit, less what the ledger already accepted on it and the windows of its
/// other live connections, cannot pay one more credit window is refused `underfunded`.
pub fn open_channel(
    conn: &Connection,
    bid: &Bid,
    funds: Option<Funds>,
) -> Result<Result<Channel, Rejection>, rusqlite::Error> {
    if let Some(c) = load_channel(conn, &bid.channel)? {
        if c.payer != bid.payer {
            return Ok(Err(Rejection::Forged));
        }
        if c.closed {
            return Ok(Err(Rejection::ChannelClosed));
        }
        if funds.is_some_and(|f| !f.cover(c.accepted)) {
            return Ok(Err(Rejection::Underfunded));
        }
        if c.cap != bid.cap {
            conn.prepare_cached("UPDATE speed_channels SET cap = ?2 WHERE id = ?1")?
                .execute(params![&bid.channel.0[..], bid.cap.to_string()])?;
        }
        return Ok(Ok(Channel { cap: bid.cap, ..c }));
    }
    // Nothing accepted yet, but other connections may hold windows on it already.
    if funds.is_some_and(|f| !f.cover(0)) {
        return Ok(Err(Rejection::Underfunded));
    }
    Ok(Ok(Channel::open(bid.channel, bid.payer, bid.cap)))
}

/// Accepts a verified voucher into the ledger (inside the caller's transaction): re-checks it
/// against the stored channel, replaces the channel's latest voucher, adds the increment to the
/// earnings of `torrent` today. A channel's first voucher writes its row, with `cap` from the
/// peer's bid. `Ok(Err(_))` is a refusal that wrote nothing.
pub fn accept(
    conn: &Connection,
    v: &Verified,
    cap: Amount,
    me: Address,
    domain: &Domain,
    torrent: &[u8; 20],
    now: i64,
) -> Result<Result<Accepted, Rejection>, rusqlite::Error> {
    let stored = load_channel(conn, &v.voucher.channel)?;
    let channel = match stored {
        Some(c) if c.payer != v.payer => return Ok(Err(Rejection::Forged)),
        Some(c) => c,
        None => Channel::open(v.voucher.channel, v.payer, cap),
    };
    let increment = match check_fields(&v.voucher, me, domain, Some(&channel)) {
        Ok(i) => i,
        Err(r) => return Ok(Err(r)),
    };
    if stored.is_none() {
        conn.prepare_cached(
            "INSERT INTO speed_channels (id, payer, cap, opened_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            &channel.id.0[..],
            &channel.payer.0[..],
            channel.cap.to_string(),
            now
        ])?;
    }
    let vc = &v.voucher;
    conn.prepare_cached(
        "INSERT INTO speed_vouchers
             (channel, chain_id, payee, amount, signature, accepted_at, vouchers, format, contract)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8)
         ON CONFLICT (channel) DO UPDATE SET
             chain_id = excluded.chain_id, payee = excluded.payee, amount = excluded.amount,
             signature = excluded.signature, accepted_at = excluded.accepted_at,
             vouchers = vouchers + 1, format = excluded.format, contract = excluded.contract",
    )?
    .execute(params![
        &vc.channel.0[..],
        vc.domain.chain_id as i64,
        &vc.payee.0[..],
        vc.cumulative.to_string(),
        &vc.signature[..],
        now,
        FORMAT_V2,
        &vc.domain.contract.0[..]
    ])?;
    let day = utc_day(now);
    let before: Option<String> = conn
        .prepare_cached(
            "SELECT amount FROM speed_earnings WHERE day = ?1 AND torrent = ?2 AND payer = ?3",
        )?
        .query_row(params![day, &torrent[..], &v.payer.0[..]], |r| r.get(0))
        .optional()?;
    let before = before.as_deref().map(amount_col).transpose()?.unwrap_or(0);
    conn.prepare_cached(
        "INSERT INTO speed_earnings (day, torrent, payer, amount, vouchers) VALUES (?1, ?2, ?3, ?4, 1)
         ON CONFLICT (day, torrent, payer) DO UPDATE SET
             amount = excluded.amount, vouchers = vouchers + 1",
    )?
    .execute(
        params![
            day,
            &torrent[..],
            &v.payer.0[..],
            before.saturating_add(increment).to_string()
        ],
    )?;
    Ok(Ok(Accepted {
        channel: vc.channel,
        increment,
        cumulative: vc.cumulative,
    }))
}

/// The ledger as seen by the engine: submits jobs to the node's database writer.
#[derive(Clone)]
pub struct Ledger {
    db: DbHandle,
    me: Address,
    domain: Domain,
}

impl Ledger {
    pub fn new(db: DbHandle, me: Address, domain: Domain) -> Ledger {
        Ledger { db, me, domain }
    }

    /// Whether `bid` is signed by its payer for this node, chain and contract.
    pub fn bid_is_signed(&self, bid: &Bid) -> bool {
        bid.signed_by_payer(&self.domain, self.me)
    }

    pub fn domain(&self) -> Domain {
        self.domain
    }

    pub fn payee(&self) -> Address {
        self.me
    }

    pub fn chain_id(&self) -> u64 {
        self.domain.chain_id
    }

    /// Queues a bid's channel, with what the chain says it holds when bids are checked on
    /// chain; never blocks (a full queue is [`DbError::QueueFull`]).
    pub fn open_channel(
        &self,
        bid: Bid,
        funds: Option<Funds>,
    ) -> Result<Reply<Result<Channel, Rejection>>, DbError> {
        self.db.try_call(move |c| open_channel(c, &bid, funds))
    }

    /// Queues a verified voucher; the reply comes once it is durable (or refused). Never blocks.
    /// `cap` is the peer's bid's: the channel's row takes it if this voucher is its first.
    pub fn accept(
        &self,
        v: Verified,
        cap: Amount,
        torrent: [u8; 20],
    ) -> Result<Reply<Result<Accepted, Rejection>>, DbError> {
        let (me, domain) = (self.me, self.domain);
        let now = unix_now();
        self.db
            .try_call(move |c| accept(c, &v, cap, me, &domain, &torrent, now))
    }
}

/// Earnings summed by one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Earned {
    pub key: String,
    /// BTT base units, as a decimal string (it can exceed what JSON numbers hold exactly).
    pub amount: String,
    pub vouchers: u64,
}

/// What `ringseed earnings` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EarningsReport {
    pub total: String,
    /// Sum of the latest accepted voucher of every channel; equals `total` in a sound ledger.
    pub total_latest_vouchers: String,
    pub channels: u64,
    pub channels_open: u64,
    /// Claimable: what the latest v2 vouchers not exported yet are above what the contract
    /// already paid for them.
    pub unclaimed: String,
    /// What the contract paid (claims mined with status 1, `settle --submit`).
    pub claimed: String,
    /// Latest vouchers of format v1 not exported: no contract pays them.
    pub unclaimable_v1: String,
    pub by_day: Vec<Earned>,
    pub by_torrent: Vec<Earned>,
    pub by_payer: Vec<Earned>,
}

fn sum_into(map: &mut BTreeMap<String, (Amount, u64)>, key: String, a: Amount, n: u64) {
    let e = map.entry(key).or_insert((0, 0));
    e.0 = e.0.saturating_add(a);
    e.1 += n;
}

fn earned(map: BTreeMap<String, (Amount, u64)>) -> Vec<Earned> {
    let mut v: Vec<(String, Amount, u64)> = map.into_iter().map(|(k, (a, n))| (k, a, n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .map(|(key, a, vouchers)| Earned {
            key,
            amount: a.to_string(),
            vouchers,
        })
        .collect()
}

/// Reads the whole ledger (works on a read-only connection).
pub fn report(conn: &Connection) -> Result<EarningsReport, rusqlite::Error> {
    let (mut by_day, mut by_torrent, mut by_payer) = Default::default();
    let mut total: Amount = 0;
    let mut stmt =
        conn.prepare("SELECT day, torrent, payer, amount, vouchers FROM speed_earnings")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let day: String = r.get(0)?;
        let torrent: Vec<u8> = r.get(1)?;
        let payer: [u8; 20] = fixed(r.get(2)?)?;
        let a = amount_col(&r.get::<_, String>(3)?)?;
        let n = r.get::<_, i64>(4)?.max(0) as u64;
        total = total.saturating_add(a);
        sum_into(&mut by_day, day, a, n);
        sum_into(&mut by_torrent, crate::metainfo::hex(&torrent), a, n);
        sum_into(&mut by_payer, Address(payer).to_evm(), a, n);
    }
    let mut latest: Amount = 0;
    let (mut unclaimed, mut claimed, mut v1): (Amount, Amount, Amount) = (0, 0, 0);
    let mut stmt =
        conn.prepare("SELECT amount, exported_at IS NULL, claimed, format FROM speed_vouchers")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let a = amount_col(&r.get::<_, String>(0)?)?;
        let c = amount_col(&r.get::<_, String>(2)?)?;
        latest = latest.saturating_add(a);
        claimed = claimed.saturating_add(c);
        if r.get::<_, bool>(1)? {
            if r.get::<_, i64>(3)? == FORMAT_V2 {
                unclaimed = unclaimed.saturating_add(a.saturating_sub(c));
            } else {
                v1 = v1.saturating_add(a);
            }
        }
    }
    let (channels, open): (i64, i64) = conn.query_row(
        "SELECT count(*), count(*) - count(closed_at) FROM speed_channels",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(EarningsReport {
        total: total.to_string(),
        total_latest_vouchers: latest.to_string(),
        channels: channels as u64,
        channels_open: open as u64,
        unclaimed: unclaimed.to_string(),
        claimed: claimed.to_string(),
        unclaimable_v1: v1.to_string(),
        by_day: earned(by_day),
        by_torrent: earned(by_torrent),
        by_payer: earned(by_payer),
    })
}

/// The Solidity signature of the claim function the calldata calls.
pub const CLAIM_FUNCTION: &str = "claim(bytes32,uint256,bytes)";

/// One claim: what a unidirectional payment-channel contract needs to pay the seeder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claim {
    pub chain_id: u64,
    pub channel: String,
    pub payer: String,
    pub payee: String,
    /// Cumulative BTT base units, decimal.
    pub amount: String,
    /// `r ‖ s ‖ v`, hex with 0x.
    pub signature: String,
    /// ABI-encoded call of [`CLAIM_FUNCTION`], hex with 0x.
    pub calldata: String,
}

/// `claim(bytes32 channel, uint256 amount, bytes signature)` ABI-encoded: selector, the two
/// static words, the offset of the dynamic `bytes`, its length, and the 65 bytes padded to 96.
pub fn claim_calldata(channel: &ChannelId, amount: Amount, signature: &[u8; 65]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 32 * 4 + 96);
    out.extend_from_slice(&keccak256(CLAIM_FUNCTION.as_bytes())[..4]);
    out.extend_from_slice(&channel.0);
    out.extend_from_slice(&abi_uint(amount));
    out.extend_from_slice(&abi_uint(0x60));
    out.extend_from_slice(&abi_uint(65));
    out.extend_from_slice(signature);
    out.extend_from_slice(&[0u8; 31]);
    out
}

/// Exports the latest voucher of every channel not exported yet, and marks them exported and
/// their channels closed, in one transaction: a claim is handed out once, and a voucher that
/// arrives for a closed channel is refused (`channel_closed`), since the claim closes it on
/// chain. `deliver` (writing the claims file) runs before the commit; if it fails nothing is
/// marked, so a claim is never lost between the database and the file.
pub fn export_claims<E>(
    conn: &mut Connection,
    now: i64,
    deliver: impl FnOnce(&[Claim]) -> Result<(), E>,
) -> Result<Vec<Claim>, ExportError<E>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut claims = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT v.channel, v.chain_id, c.payer, v.payee, v.amount, v.signature
             FROM speed_vouchers v JOIN speed_channels c ON c.id = v.channel
             WHERE v.exported_at IS NULL ORDER BY v.channel",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let channel = ChannelId(fixed(r.get(0)?)?);
            let amount = amount_col(&r.get::<_, String>(4)?)?;
            let signature: [u8; 65] = fixed(r.get(5)?)?;
            claims.push(Claim {
                chain_id: r.get::<_, i64>(1)? as u64,
                channel: channel.to_hex(),
                payer: Address(fixed(r.get(2)?)?).to_evm(),
                payee: Address(fixed(r.get(3)?)?).to_evm(),
                amount: amount.to_string(),
                signature: format!("0x{}", crate::metainfo::hex(&signature)),
                calldata: format!(
                    "0x{}",
                    crate::metainfo::hex(&claim_calldata(&channel, amount, &signature))
                ),
            });
        }
    }
    tx.execute(
        "UPDATE speed_channels SET closed_at = ?1
         WHERE closed_at IS NULL AND id IN (SELECT channel FROM speed_vouchers WHERE exported_at IS NULL)",
        [now],
    )?;
    tx.execute(
        "UPDATE speed_vouchers SET exported_at = ?1 WHERE exported_at IS NULL",
        [now],
    )?;
    deliver(&claims).map_err(ExportError::Deliver)?;
    tx.commit()?;
    Ok(claims)
}

/// Why [`export_claims`] failed; in both cases nothing was marked exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError<E> {
    #[error("ledger: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("delivering the claims: {0}")]
    Deliver(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbWriter;
    use crate::speed::wallet::Wallet;

    const CHAIN: Domain = Domain {
        chain_id: 199,
        contract: Address([0x32; 20]),
    };
    const T1: [u8; 20] = [0xaa; 20];

    /// The ledger trusts the verifier to have checked a bid's signature; any payee will do.
    fn bid(payer: &Wallet, channel: u8, cap: Amount) -> Bid {
        Bid::sign(
            payer,
            CHAIN,
            Address([0; 20]),
            10,
            ChannelId([channel; 32]),
            cap,
        )
    }

    fn sum_latest(conn: &Connection) -> Amount {
        let r = report(conn).unwrap();
        let total: Amount = r.total.parse().unwrap();
        assert_eq!(r.total, r.total_latest_vouchers, "ledger invariant");
        total
    }

    #[test]
    fn funds_count_the_larger_of_what_was_accepted_and_what_was_claimed() {
        let f = Funds {
            deposit: 1_000,
            claimed: 100,
            least_left: 250,
            held: 0,
        };
        assert!(f.cover(0), "the chain's claim alone leaves 900");
        assert!(f.cover(750), "exactly one window left");
        assert!(!f.cover(751), "accepted but unclaimed is spent too");
        // A claim newer than the ledger (sent by hand) counts as well.
        let claimed_more = Funds { claimed: 800, ..f };
        assert!(!claimed_more.cover(100));
        // Nothing is ever negative.
        assert!(
            !Funds {
                claimed: 5_000,
                ..f
            }
            .cover(9_000)
        );
        // Other connections' windows are spent too.
        let shared = Funds { held: 500, ..f };
        assert!(shared.cover(250), "1000 - 250 - 500 leaves one window");
        assert!(!shared.cover(251));
        assert!(
            !Funds {
                held: Amount::MAX,
                ..f
            }
            .cover(0),
            "no overflow"
        );
    }

    #[test]
    fn ledger_total_is_the_sum_of_latest_vouchers_and_rejections_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringseed.db");
        let writer = DbWriter::start(&path, &[(COMPONENT, MIGRATIONS)]).unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let ledger = Ledger::new(writer.handle(), seeder.address(), CHAIN);
        let payers: Vec<Wallet> = (10..13)
            .map(|i| Wallet::from_secret([i; 32]).unwrap())
            .collect();
        for (i, p) in payers.iter().enumerate() {
            let ch = ledger
                .open_channel(bid(p, i as u8, 1_000), None)
                .unwrap()
                .recv_result()
                .unwrap();
            assert!(ch.is_ok());
        }
        let send = |p: &Wallet, ch: u8, amount: Amount| {
            let v = Voucher::sign(p, CHAIN, ChannelId([ch; 32]), seeder.address(), amount);
            let verified = Verified::check(v, p.address()).unwrap();
            ledger
                .accept(verified, 1_000, T1)
                .unwrap()
                .recv_result()
                .unwrap()
        };
        let mut expected: Amount = 0;
        for (i, p) in payers.iter().enumerate() {
            for step in 1..=5u128 {
                let a = send(p, i as u8, step * 100 + i as u128).unwrap();
                assert_eq!(a.cumulative, step * 100 + i as u128);
            }
            expected += 500 + i as u128;
        }
        let conn = crate::db::open_read_only(&path).unwrap();
        assert_eq!(sum_latest(&conn), expected);
        // Each refusal names its reason and changes nothing.
        let p = &payers[0];
        assert_eq!(send(p, 0, 500), Err(Rejection::Replayed));
        assert_eq!(send(p, 0, 499), Err(Rejection::Decreasing));
        assert_eq!(send(p, 0, 1_001), Err(Rejection::OverCap));
        let other = Wallet::from_secret([50; 32]).unwrap();
        let wrong_payee = Voucher::sign(p, CHAIN, ChannelId([0; 32]), other.address(), 700);
        let r = ledger
            .accept(
                Verified::check(wrong_payee, p.address()).unwrap(),
                1_000,
                T1,
            )
            .unwrap()
            .recv_result()
            .unwrap();
        assert_eq!(r, Err(Rejection::WrongPayee));
        // Someone else's valid signature, presented for payer 0's channel.
        let stolen = Voucher::sign(&payers[1], CHAIN, ChannelId([0; 32]), seeder.address(), 900);
        assert_eq!(
            Verified::check(stolen, p.address()).unwrap_err(),
            Rejection::Forged
        );
        let relabelled = Verified::check(stolen, payers[1].address()).unwrap();
        let r = ledger
            .accept(relabelled, 1_000, T1)
            .unwrap()
            .recv_result()
            .unwrap();
        assert_eq!(r, Err(Rejection::Forged));
        // A bid cannot take over another payer's channel.
        let hijack = ledger
            .open_channel(bid(&payers[1], 0, 5_000), None)
            .unwrap()
            .recv_result()
            .unwrap();
        assert_eq!(hijack, Err(Rejection::Forged));
        assert_eq!(sum_latest(&conn), expected);
        let r = report(&conn).unwrap();
        assert_eq!(r.by_payer.len(), 3);
        assert_eq!(r.by_torrent.len(), 1);
        assert_eq!(r.by_day.len(), 1);
        assert_eq!(r.by_payer.iter().map(|e| e.vouchers).sum::<u64>(), 15);
        writer.shutdown();
    }

    #[test]
    fn claims_are_exported_once_and_close_their_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringseed.db");
        let writer = DbWriter::start(&path, &[(COMPONENT, MIGRATIONS)]).unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let ledger = Ledger::new(writer.handle(), seeder.address(), CHAIN);
        ledger
            .open_channel(bid(&payer, 7, 10_000), None)
            .unwrap()
            .recv_result()
            .unwrap()
            .unwrap();
        let v = |a| {
            Verified::check(
                Voucher::sign(&payer, CHAIN, ChannelId([7; 32]), seeder.address(), a),
                payer.address(),
            )
            .unwrap()
        };
        ledger
            .accept(v(100), 10_000, T1)
            .unwrap()
            .recv_result()
            .unwrap()
            .unwrap();
        ledger
            .accept(v(250), 10_000, T1)
            .unwrap()
            .recv_result()
            .unwrap()
            .unwrap();
        let mut conn = crate::db::open(&path).unwrap();
        // A failed delivery marks nothing.
        let failed = export_claims(&mut conn, 1_699_999_999, |_| Err("disk full"));
        assert!(matches!(failed, Err(ExportError::Deliver("disk full"))));
        let ok = |_: &[Claim]| Ok::<(), ()>(());
        let claims = export_claims(&mut conn, 1_700_000_000, ok).unwrap();
        assert_eq!(claims.len(), 1);
        let c = &claims[0];
        assert_eq!(c.amount, "250");
        assert_eq!(c.payer, payer.address().to_evm());
        // selector + 4 words + 96 bytes of signature = 228 bytes = 456 hex digits.
        assert_eq!(c.calldata.len(), 2 + 456);
        assert!(
            c.calldata
                .ends_with(&format!("{}{}", &c.signature[2..], "00".repeat(31)))
        );
        assert!(
            export_claims(&mut conn, 1_700_000_001, ok)
                .unwrap()
                .is_empty()
        );
        // The claim closed the channel: later vouchers are refused, earnings stay.
        let r = ledger
            .accept(v(300), 10_000, T1)
            .unwrap()
            .recv_result()
            .unwrap();
        assert_eq!(r, Err(Rejection::ChannelClosed));
        let rep = report(&conn).unwrap();
        assert_eq!((rep.total.as_str(), rep.unclaimed.as_str()), ("250", "0"));
        assert_eq!(rep.channels_open, 0);
        writer.shutdown();
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_764_028_800), "2025-11-25");
        assert_eq!(utc_day(-1), "1969-12-31");
    }

    /// Each voucher runs the same cached statements; SQLite must not recompile them per run (the
    /// channel lookup was, for every voucher, until the writer's connection got query-planner
    /// stability).
    #[test]
    fn the_voucher_path_never_recompiles_its_statements() {
        let dir = tempfile::tempdir().unwrap();
        let writer =
            DbWriter::start(&dir.path().join("ringseed.db"), &[(COMPONENT, MIGRATIONS)]).unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let ledger = Ledger::new(writer.handle(), seeder.address(), CHAIN);
        let p = Wallet::from_secret([9; 32]).unwrap();
        let b = Bid::sign(
            &p,
            CHAIN,
            seeder.address(),
            10,
            ChannelId([1; 32]),
            1 << 100,
        );
        assert!(
            ledger
                .open_channel(b, None)
                .unwrap()
                .recv_result()
                .unwrap()
                .is_ok()
        );
        for a in 1..=20u128 {
            let v = Voucher::sign(&p, CHAIN, ChannelId([1; 32]), seeder.address(), a);
            let v = Verified::check(v, p.address()).unwrap();
            let r = ledger.accept(v, 1 << 100, T1).unwrap().recv_result();
            assert!(r.unwrap().is_ok());
        }
        let reprepared = writer
            .handle()
            .call(|c| {
                let mut n = 0;
                for sql in [LOAD_CHANNEL_SQL, "SAVEPOINT job", "RELEASE job"] {
                    n += c
                        .prepare_cached(sql)?
                        .get_status(rusqlite::StatementStatus::RePrepare);
                }
                Ok(n)
            })
            .unwrap()
            .recv_result()
            .unwrap();
        assert_eq!(reprepared, 0);
        writer.shutdown();
    }

    /// Keys and channel ids cost nothing: a bid writes no row; a channel's row comes with its
    /// first accepted voucher.
    #[test]
    fn a_channel_row_comes_with_its_first_voucher_not_with_its_bid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringseed.db");
        let writer = DbWriter::start(&path, &[(COMPONENT, MIGRATIONS)]).unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let ledger = Ledger::new(writer.handle(), seeder.address(), CHAIN);
        let payer = Wallet::from_secret([4; 32]).unwrap();
        let conn = crate::db::open_read_only(&path).unwrap();
        let rows = || report(&conn).unwrap().channels;
        for ch in 0..50u8 {
            let r = ledger.open_channel(bid(&payer, ch, 1_000), None).unwrap();
            assert!(r.recv_result().unwrap().is_ok());
        }
        assert_eq!(rows(), 0, "bids alone wrote rows");
        let pay = |ch: u8, amount| {
            let v = Voucher::sign(&payer, CHAIN, ChannelId([ch; 32]), seeder.address(), amount);
            let v = Verified::check(v, payer.address()).unwrap();
            ledger.accept(v, 1_000, T1).unwrap().recv_result().unwrap()
        };
        // A refused first voucher writes no row either.
        assert_eq!(pay(0, 1_001), Err(Rejection::OverCap));
        assert_eq!(rows(), 0);
        assert!(pay(0, 5).is_ok());
        assert!(pay(0, 9).is_ok());
        assert!(pay(1, 7).is_ok());
        assert_eq!(rows(), 2);
        let c = load_channel(&conn, &ChannelId([0; 32])).unwrap().unwrap();
        assert_eq!((c.payer, c.cap, c.accepted), (payer.address(), 1_000, 9));
        assert_eq!(sum_latest(&conn), 16);
        writer.shutdown();
    }

    #[test]
    fn the_migration_drops_channel_rows_that_never_got_a_voucher() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringseed.db");
        let first = DbWriter::start(&path, &[(COMPONENT, &MIGRATIONS[..1])]).unwrap();
        first.shutdown();
        let conn = crate::db::open(&path).unwrap();
        for (id, with_voucher) in [(1u8, true), (2, false)] {
            conn.execute(
                "INSERT INTO speed_channels (id, payer, cap, opened_at) VALUES (?1, ?2, '9', 0)",
                params![&[id; 32][..], &[7u8; 20][..]],
            )
            .unwrap();
            if with_voucher {
                conn.execute(
                    "INSERT INTO speed_vouchers
                     (channel, chain_id, payee, amount, signature, accepted_at, vouchers)
                     VALUES (?1, 199, ?2, '3', ?3, 0, 1)",
                    params![&[id; 32][..], &[8u8; 20][..], &[0u8; 65][..]],
                )
                .unwrap();
            }
        }
        drop(conn);
        let writer = DbWriter::start(&path, &[(COMPONENT, MIGRATIONS)]).unwrap();
        writer.shutdown();
        let conn = crate::db::open_read_only(&path).unwrap();
        let v1 = load_channel(&conn, &ChannelId([1; 32])).unwrap().unwrap();
        assert!(load_channel(&conn, &ChannelId([2; 32])).unwrap().is_none());
        assert_eq!(report(&conn).unwrap().total_latest_vouchers, "3");
        // The v1 row stays as history, marked format 1 without a contract, and its channel is
        // closed to v2 vouchers.
        assert!(v1.closed);
        let (format, contract): (i64, Option<Vec<u8>>) = conn
            .query_row(
                "SELECT format, contract FROM speed_vouchers WHERE channel = ?1",
                [&[1u8; 32][..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((format, contract), (1, None));
    }
}
