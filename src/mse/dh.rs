//! The 768-bit Diffie-Hellman exchange of MSE: `Y = G^X mod P` with the spec's prime and
//! `G = 2`, private keys of 160 random bits (the spec's minimum, as libtorrent uses), keys on
//! the wire as 96 big-endian bytes.
//!
//! The arithmetic is RustCrypto's `crypto-bigint` (fixed-size `U768`, Montgomery form,
//! constant-time exponentiation): made for exactly this, maintained, no allocation.

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U768};

/// Bytes of a public key or shared secret on the wire.
pub const KEY_LEN: usize = 96;
/// Bits of a private key.
const PRIVATE_BITS: u32 = 160;

/// The MSE prime (768 bits; it begins like RFC 2409's Oakley group 1 but
/// is not that prime: libtorrent, Transmission, aria2 and Vuze all use this one).
const P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";

fn params() -> FixedMontyParams<{ U768::LIMBS }> {
    FixedMontyParams::new_vartime(Odd::<U768>::from_be_hex(P_HEX))
}

/// Why a peer's public key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// 0, 1, P-1 or anything not below P: the secret would be fixed or tiny.
    #[error("the peer's Diffie-Hellman key is degenerate (0, 1, P-1 or not below P)")]
    Degenerate,
}

/// One side's key pair for one connection.
pub struct KeyPair {
    private: U768,
    public: [u8; KEY_LEN],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A key pair from 20 random bytes (the private key).
    pub fn from_private(private: [u8; 20]) -> KeyPair {
        let mut wide = [0u8; KEY_LEN];
        wide[KEY_LEN - 20..].copy_from_slice(&private);
        let private = U768::from_be_slice(&wide);
        let p = params();
        let g = FixedMontyForm::new(&U768::from_u8(2), &p);
        let y = g.pow_bounded_exp(&private, PRIVATE_BITS).retrieve();
        KeyPair {
            private,
            public: to_bytes(&y),
        }
    }

    /// A fresh key pair from the system's random source.
    pub fn generate() -> KeyPair {
        let mut private = [0u8; 20];
        // getrandom fails only without any entropy source (a broken system); a key of zeros
        // would still work, only predictably, so the failure is not worth a panic path.
        let _ = getrandom::fill(&mut private);
        KeyPair::from_private(private)
    }

    /// Our public key, as sent.
    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// The shared secret `S` with the peer whose public key is `theirs`.
    pub fn shared(&self, theirs: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], KeyError> {
        let y = U768::from_be_slice(theirs);
        let p = params();
        let modulus = U768::from_be_hex(P_HEX);
        let p_minus_1 = modulus.wrapping_sub(&U768::ONE);
        if y <= U768::ONE || y >= p_minus_1 {
            return Err(KeyError::Degenerate);
        }
        let s = FixedMontyForm::new(&y, &p)
            .pow_bounded_exp(&self.private, PRIVATE_BITS)
            .retrieve();
        Ok(to_bytes(&s))
    }
}

fn to_bytes(x: &U768) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&x.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_reach_the_same_secret() {
        let a = KeyPair::from_private([7; 20]);
        let b = KeyPair::from_private([0x9c; 20]);
        let sa = a.shared(b.public()).unwrap();
        let sb = b.shared(a.public()).unwrap();
        assert_eq!(sa, sb);
        assert_ne!(sa, [0; KEY_LEN]);
        assert_ne!(a.public(), b.public());
    }

    /// 2^1 mod P is 2; 2^(2^8) = 2^256 is a 1 followed by 256 zero bits (below P): the
    /// exponentiation and the byte order are those of the spec.
    #[test]
    fn small_powers_of_two_are_exact() {
        let mut one = [0u8; 20];
        one[19] = 1;
        let k = KeyPair::from_private(one);
        let mut two = [0u8; KEY_LEN];
        two[KEY_LEN - 1] = 2;
        assert_eq!(k.public(), &two);
        let mut e = [0u8; 20];
        e[18] = 1; // 256
        let k = KeyPair::from_private(e);
        let mut want = [0u8; KEY_LEN];
        want[KEY_LEN - 33] = 1;
        assert_eq!(k.public(), &want);
    }

    #[test]
    fn degenerate_keys_are_refused() {
        let k = KeyPair::generate();
        let p = U768::from_be_hex(P_HEX);
        let mut one = [0u8; KEY_LEN];
        one[KEY_LEN - 1] = 1;
        for bad in [
            [0u8; KEY_LEN],
            one,
            to_bytes(&p.wrapping_sub(&U768::ONE)),
            to_bytes(&p),
            [0xff; KEY_LEN],
        ] {
            assert_eq!(k.shared(&bad), Err(KeyError::Degenerate));
        }
    }
}
