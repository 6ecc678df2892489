//! The node's key: one secp256k1 secret (the curve of TRON and BTTC, so an on-chain contract can
//! `ecrecover` what it signs), its EVM and TRON addresses, and the key file.
//!
//! The key file holds the 32-byte secret as 64 hex digits and a newline. It is created with mode
//! 0600 on first run; a key file that group or others may read is refused, never used: whoever
//! reads it can spend what the node earns.
//!
//! ```
//! use ringseed::speed::wallet::{Address, Wallet};
//! let w = Wallet::from_secret([7; 32]).unwrap();
//! let evm = w.address().to_evm();
//! assert_eq!(Address::parse(&evm).unwrap(), w.address());
//! assert_eq!(Address::parse(&w.address().to_tron()).unwrap(), w.address());
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, SecretKey};
use sha2::Digest as _;

/// Keccak-256, the hash of EVM addresses and of vouchers.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let mut h = sha3::Keccak256::new();
    h.update(data);
    h.finalize().into()
}

/// What went wrong with the key file or an address.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("wallet key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "wallet key {path} has mode {mode:04o}: group or others may read it; run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("wallet key {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("wallet key {path}: expected 64 hex digits (a secp256k1 secret key)")]
    BadKey { path: PathBuf },
    #[error("not a valid secp256k1 secret key")]
    InvalidSecret,
}

/// A 20-byte account address (the last 20 bytes of the Keccak-256 of the uncompressed public
/// key), the same account on BTTC (`0x…`) and TRON (`T…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address {0:?} is neither 0x + 40 hex digits nor a TRON base58 address")]
    Malformed(String),
    #[error("address {0:?} fails its EIP-55 checksum (mixed case that does not match)")]
    BadChecksum(String),
    #[error("TRON address {0:?} fails its base58check checksum or prefix")]
    BadTron(String),
}

/// TRON's address prefix byte (mainnet).
const TRON_PREFIX: u8 = 0x41;

impl Address {
    pub fn of(key: &PublicKey) -> Address {
        let uncompressed = key.serialize_uncompressed();
        let h = keccak256(&uncompressed[1..]);
        let mut a = [0u8; 20];
        a.copy_from_slice(&h[12..]);
        Address(a)
    }

    /// `0x` and 40 hex digits with the EIP-55 mixed-case checksum.
    pub fn to_evm(&self) -> String {
        let lower = crate::metainfo::hex(&self.0);
        let h = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, ch) in lower.chars().enumerate() {
            let nibble = (h[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0xf;
            out.push(if ch.is_ascii_alphabetic() && nibble >= 8 {
                ch.to_ascii_uppercase()
            } else {
                ch
            });
        }
        out
    }

    /// TRON form: base58check of `0x41 ‖ address`.
    pub fn to_tron(&self) -> String {
        let mut payload = Vec::with_capacity(25);
        payload.push(TRON_PREFIX);
        payload.extend_from_slice(&self.0);
        let check = sha2::Sha256::digest(sha2::Sha256::digest(&payload));
        payload.extend_from_slice(&check[..4]);
        base58_encode(&payload)
    }

    /// Parses either form. An all-lowercase or all-uppercase `0x` address is accepted as is; a
    /// mixed-case one must match its EIP-55 checksum.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let malformed = || AddressError::Malformed(s.chars().take(64).collect());
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            if hex.len() != 40 {
                return Err(malformed());
            }
            let bytes = super::parse_hex(hex).ok_or_else(malformed)?;
            let mut a = [0u8; 20];
            a.copy_from_slice(&bytes);
            let addr = Address(a);
            let mixed = hex.bytes().any(|b| b.is_ascii_lowercase())
                && hex.bytes().any(|b| b.is_ascii_uppercase());
            if mixed && addr.to_evm()[2..] != *hex {
                return Err(AddressError::BadChecksum(s.to_string()));
            }
            return Ok(addr);
        }
        if s.starts_with('T') && (30..=40).contains(&s.len()) {
            let bad = || AddressError::BadTron(s.to_string());
            let raw = base58_decode(s).ok_or_else(malformed)?;
            if raw.len() != 25 || raw[0] != TRON_PREFIX {
                return Err(bad());
            }
            let check = sha2::Sha256::digest(sha2::Sha256::digest(&raw[..21]));
            if check[..4] != raw[21..] {
                return Err(bad());
            }
            let mut a = [0u8; 20];
            a.copy_from_slice(&raw[1..21]);
            return Ok(Address(a));
        }
        Err(malformed())
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_evm())
    }
}

const B58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn base58_encode(data: &[u8]) -> String {
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    // Base-58 digits, least significant first.
    let mut digits: Vec<u8> = Vec::with_capacity(data.len() * 138 / 100 + 1);
    for &byte in &data[zeros..] {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut s = String::with_capacity(zeros + digits.len());
    s.extend(std::iter::repeat_n('1', zeros));
    s.extend(digits.iter().rev().map(|&d| B58[usize::from(d)] as char));
    s
}

/// Decodes base58; `None` on a character outside the alphabet. Callers bound the input length.
fn base58_decode(s: &str) -> Option<Vec<u8>> {
    let zeros = s.bytes().take_while(|&b| b == b'1').count();
    let mut bytes: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.bytes().skip(zeros) {
        let mut carry = B58.iter().position(|&a| a == c)? as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

/// A 65-byte recoverable signature in the Ethereum layout: `r ‖ s ‖ v`, `v` = 27 + recovery id,
/// what Solidity's `ecrecover(digest, v, r, s)` takes.
pub type Signature65 = [u8; 65];

/// Signs a 32-byte digest.
pub fn sign_digest(secret: &SecretKey, digest: [u8; 32]) -> Signature65 {
    let sig = RecoverableSignature::sign_ecdsa_recoverable(Message::from_digest(digest), secret);
    let (id, rs) = sig.serialize_compact();
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&rs);
    out[64] = 27 + u8::from(id);
    out
}

/// The address whose key made `sig` over `digest`, or `None` if the signature is not valid
/// (bad `v`, `r`/`s` out of range, or no key recovers).
pub fn recover_digest(sig: &Signature65, digest: [u8; 32]) -> Option<Address> {
    // Accept the raw recovery id too (0/1), as some signers emit it.
    let v = match sig[64] {
        27 | 28 => sig[64] - 27,
        0 | 1 => sig[64],
        _ => return None,
    };
    let id = RecoveryId::try_from(i32::from(v)).ok()?;
    let rs = RecoverableSignature::from_compact(&sig[..64], id).ok()?;
    let key = rs.recover_ecdsa(Message::from_digest(digest)).ok()?;
    Some(Address::of(&key))
}

/// secp256k1's group order `n`, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
/// `n / 2`: the largest `s` the contract (and EIP-2) accepts.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// Whether `sig` is in the one form the payment-channel contract pays: `v` = 27 or 28 and
/// `s` ≤ n/2 (EIP-2). Every valid signature has a malleable twin (`s → n − s`, `v` flipped)
/// that a bare `ecrecover` also accepts but the contract refuses; a seeder that took one would
/// hold a voucher it can never claim. ringseed's own signatures are always canonical
/// (libsecp256k1 normalises `s`); the wire's raw 0/1 `v` is turned into 27/28 on parsing.
pub fn is_canonical(sig: &Signature65) -> bool {
    matches!(sig[64], 27 | 28) && sig[32..64] <= HALF_ORDER[..]
}

/// The other signature of the same key over the same digest: `s → n − s`, `v` flipped. What a
/// malleability attack makes; here so that tests can show it refused.
pub fn malleable_twin(sig: &Signature65) -> Signature65 {
    let mut out = *sig;
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(ORDER[i]) - i16::from(sig[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        out[32 + i] = (d + 256 * borrow) as u8;
    }
    out[64] = match sig[64] {
        27 => 28,
        28 => 27,
        v => v ^ 1,
    };
    out
}

/// The node's signing key and its address.
pub struct Wallet {
    secret: SecretKey,
    address: Address,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even in a debug log.
        f.debug_struct("Wallet")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    pub fn from_secret(secret: [u8; 32]) -> Result<Wallet, WalletError> {
        let secret =
            SecretKey::from_secret_bytes(secret).map_err(|_| WalletError::InvalidSecret)?;
        let address = Address::of(&PublicKey::from_secret_key(&secret));
        Ok(Wallet { secret, address })
    }

    /// A fresh random key (not saved anywhere).
    pub fn generate() -> Result<Wallet, WalletError> {
        // A random 32-byte value is a valid key with probability 1 - 2^-128; retry the rest.
        for _ in 0..16 {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| WalletError::Io {
                path: PathBuf::from("<getrandom>"),
                source: std::io::Error::other(e.to_string()),
            })?;
            if let Ok(w) = Wallet::from_secret(bytes) {
                return Ok(w);
            }
        }
        Err(WalletError::InvalidSecret)
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn sign(&self, digest: [u8; 32]) -> Signature65 {
        sign_digest(&self.secret, digest)
    }

    /// Loads the key at `path`, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<Wallet, WalletError> {
        let io = |source| WalletError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::symlink_metadata(path).map_err(io)?;
        if !meta.file_type().is_file() {
            return Err(WalletError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(WalletError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bad = || WalletError::BadKey {
            path: path.to_path_buf(),
        };
        if meta.len() > 256 {
            return Err(bad());
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let hex = text.trim();
        if hex.len() != 64 {
            return Err(bad());
        }
        let bytes = super::parse_hex(hex).ok_or_else(bad)?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes);
        Wallet::from_secret(secret).map_err(|_| bad())
    }

    /// Loads the key at `path`, or creates it (mode 0600, parent directory 0700 if it has to be
    /// made) when there is none. The flag says whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Wallet, bool), WalletError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Wallet::load(path).map(|w| (w, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WalletError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| WalletError::Io { path: p, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        let wallet = Wallet::generate()?;
        // create_new: two nodes starting at once must not overwrite each other's key.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        let text = format!(
            "{}\n",
            crate::metainfo::hex(&wallet.secret.to_secret_bytes())
        );
        f.write_all(text.as_bytes()).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        Ok((wallet, true))
    }
}

use std::os::unix::fs::DirBuilderExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_key_has_known_addresses() {
        // Secret 1: its public key is the generator point G, whose address is widely published.
        let mut one = [0u8; 32];
        one[31] = 1;
        let w = Wallet::from_secret(one).unwrap();
        assert_eq!(
            w.address().to_evm(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        let tron = w.address().to_tron();
        assert!(tron.starts_with('T') && tron.len() == 34, "{tron}");
        assert_eq!(Address::parse(&tron).unwrap(), w.address());
        // EIP-55 example vector from the EIP.
        let a = Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap();
        assert_eq!(a.to_evm(), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(matches!(
            Address::parse("0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            Err(AddressError::BadChecksum(_))
        ));
        assert!(Address::parse("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_ok());
        assert!(Address::parse("0x12").is_err());
        assert!(Address::parse("").is_err());
        let tron = Wallet::from_secret([9; 32]).unwrap().address().to_tron();
        let mut broken = tron.clone().into_bytes();
        broken[10] = if broken[10] == b'a' { b'b' } else { b'a' };
        assert!(Address::parse(std::str::from_utf8(&broken).unwrap()).is_err());
        assert!(Address::parse("T0OIl").is_err());
    }

    #[test]
    fn signatures_recover_their_signer() {
        let w = Wallet::from_secret([3; 32]).unwrap();
        let d = keccak256(b"hello");
        let sig = w.sign(d);
        assert_eq!(recover_digest(&sig, d), Some(w.address()));
        assert_ne!(recover_digest(&sig, keccak256(b"other")), Some(w.address()));
        let mut bad_v = sig;
        bad_v[64] = 30;
        assert_eq!(recover_digest(&bad_v, d), None);
        assert_eq!(recover_digest(&[0xff; 65], d), None);
    }

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/wallet.key");
        let (w, created) = Wallet::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = Wallet::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.address(), w.address());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Wallet::load(&path).unwrap_err();
        assert!(matches!(e, WalletError::Exposed { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "zz\n").unwrap();
        assert!(matches!(
            Wallet::load(&path),
            Err(WalletError::BadKey { .. })
        ));
        // The debug form never shows the secret.
        assert!(!format!("{w:?}").contains(&crate::metainfo::hex(&[3; 4])));
    }
}
