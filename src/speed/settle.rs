//! The operator's side of the ledger: `ringseed earnings` (a read-only report) and `ringseed
//! settle` (claims exported once, to a file written durably before they are marked exported).

use std::path::{Path, PathBuf};

use super::ledger::{self, Claim, EarningsReport, ExportError};
use crate::db::DbError;

/// Why the earnings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EarningsError {
    #[error("no ledger at {}: nothing earned yet", .0.display())]
    NoLedger(PathBuf),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("reading the ledger in {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// The earnings report of the ledger in `db_path`, opened read-only so it works beside a
/// running node.
pub fn earnings(db_path: &Path) -> Result<EarningsReport, EarningsError> {
    if !db_path.exists() {
        return Err(EarningsError::NoLedger(db_path.to_path_buf()));
    }
    let conn = crate::db::open_read_only(db_path)?;
    ledger::report(&conn).map_err(|source| EarningsError::Read {
        path: db_path.to_path_buf(),
        source,
    })
}

/// A decimal amount of base units as BTT (18 decimals, 6 shown), for reading, not for sums.
///
/// ```
/// assert_eq!(ringseed::speed::settle::btt("1500000000000000000"), "1.500000");
/// ```
pub fn btt(base_units: &str) -> String {
    let padded = format!("{base_units:0>19}");
    // The ledger's amounts are ASCII digits; anything else is shown as it is, never split
    // inside a character.
    match (
        padded.get(..padded.len() - 18),
        padded.get(padded.len() - 18..padded.len() - 12),
    ) {
        (Some(int), Some(frac)) => format!("{int}.{frac}"),
        _ => base_units.to_string(),
    }
}

/// Why `settle` exported nothing.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "{} exists: claims are exported once, so settle never overwrites a file",
        .0.display()
    )]
    Exists(PathBuf),
    /// Shown as one line, without the causes under it (the message `settle` always printed).
    #[error("{0}")]
    Export(ExportError<WriteError>),
}

impl From<ExportError<WriteError>> for SettleError {
    fn from(e: ExportError<WriteError>) -> SettleError {
        SettleError::Export(e)
    }
}

/// Writing the claims file failed (nothing was marked exported).
#[derive(Debug, thiserror::Error)]
#[error("writing {}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The claims file: the contract function to call and one entry per channel. Fields are in
/// alphabetical order, the order the file has always had.
#[derive(Debug, serde::Serialize)]
pub struct ClaimsFile<'a> {
    pub claims: &'a [Claim],
    pub function: &'a str,
}

/// Exports the latest voucher of every unclaimed channel of the ledger in `db_path` to `out`
/// (never overwriting), and marks them exported only once the file is on disk.
pub fn settle(db_path: &Path, out: &Path) -> Result<Vec<Claim>, SettleError> {
    let mut conn = crate::db::open(db_path)?;
    crate::db::migrate(&mut conn, ledger::COMPONENT, ledger::MIGRATIONS)?;
    if out.exists() {
        return Err(SettleError::Exists(out.to_path_buf()));
    }
    let claims = ledger::export_claims(&mut conn, ledger::unix_now(), |claims| {
        let doc = ClaimsFile {
            claims,
            function: ledger::CLAIM_FUNCTION,
        };
        let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other);
        text.and_then(|t| write_durably(out, (t + "\n").as_bytes()))
            .map_err(|source| WriteError {
                path: out.to_path_buf(),
                source,
            })
    })?;
    Ok(claims)
}

/// Creates `path` (never overwriting) with `bytes`, durably: the bytes go to a temporary file
/// beside it, which is fsynced, then renamed to `path` without replacing anything
/// (`RENAME_NOREPLACE`), and the directory is fsynced so the new name survives a power loss too.
/// A failure leaves no file at `path` (and no temporary one).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    if path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", path.display()),
        ));
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &tmp,
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is a change of the directory: on the device only once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btt_shows_six_decimals() {
        assert_eq!(btt("0"), "0.000000");
        assert_eq!(btt("1"), "0.000000");
        assert_eq!(btt("1234567000000000000"), "1.234567");
        assert_eq!(btt("12000000000000000000"), "12.000000");
        // Not digits: shown somehow, never a panic.
        let _ = btt("ä");
        let _ = btt("1ä2ö3ü4ß5ñ6é7à8ç9ø0å1");
    }

    #[test]
    fn the_claims_file_keeps_its_key_order() {
        let doc = ClaimsFile {
            claims: &[],
            function: ledger::CLAIM_FUNCTION,
        };
        let v = serde_json::json!({ "function": ledger::CLAIM_FUNCTION, "claims": [] });
        assert_eq!(
            serde_json::to_string_pretty(&doc).unwrap(),
            serde_json::to_string_pretty(&v).unwrap()
        );
    }

    #[test]
    fn write_durably_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("ringseed-settle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("claims.json");
        let _ = std::fs::remove_file(&p);
        write_durably(&p, b"one").unwrap();
        assert!(write_durably(&p, b"two").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        // Nothing but the file is left in the directory (no temporary file).
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // A file that cannot be written leaves nothing behind.
        assert!(write_durably(&dir.join("no/such/dir/c.json"), b"x").is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
