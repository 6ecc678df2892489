//! SHA-1 of many messages at once: sixteen messages advance together, one per 32-bit lane of
//! the AVX-512 registers ("multi-buffer" hashing).
//!
//! One SHA-1 stream is a chain of dependent rounds: SHA-NI (the `sha1` crate, as fast as
//! OpenSSL) runs it at about 1.35 GiB/s per core on this machine, and a download spends half its
//! CPU there. Pieces are independent messages, so sixteen of them can run the same rounds side
//! by side in one register each; the round logic is one `vpternlogd` and the rotations one
//! `vprold`. No maintained crate does multi-buffer SHA-1 (the ones that exist do SHA-256 or
//! SHA-512), hence this file; its output is checked against the `sha1` crate in the tests below.
//!
//! [`sha1_many`] picks the path: sixteen lanes where the CPU has AVX-512 (F and BW) and a
//! batch fills enough of them to beat SHA-NI ([`MIN_LANES`], measured by
//! `benches/hashing.rs`), SHA-NI one message at a time otherwise.

use sha1::{Digest, Sha1};

/// Messages hashed side by side.
pub const LANES: usize = 16;

/// Below this many messages in a batch, SHA-NI one by one is faster than sixteen lanes of which
/// most idle (`cargo bench --bench hashing -- sha1_many`, 1 MiB pieces, GiB/s of lanes against
/// SHA-NI: 4 messages 1.26 / 1.46, 6: 2.0 / 1.45, 8: 2.64 / 1.43, 16: 4.26 / 1.29).
pub const MIN_LANES: usize = 6;

/// Whether this CPU runs the sixteen-lane path.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How many of `n` messages [`sha1_many`] hashes in lanes (the rest go to SHA-NI).
pub fn in_lanes(n: usize) -> usize {
    if !available() {
        return 0;
    }
    let full = n / LANES * LANES;
    let rest = n % LANES;
    full + if rest >= MIN_LANES { rest } else { 0 }
}

/// SHA-1 of each message, in order. Messages of equal length make the best use of the lanes
/// (a lane whose message ended idles until the longest of its batch of sixteen ends).
pub fn sha1_many(msgs: &[&[u8]]) -> Vec<[u8; 20]> {
    let mut out = vec![[0u8; 20]; msgs.len()];
    for (batch, digests) in msgs.chunks(LANES).zip(out.chunks_mut(LANES)) {
        if in_lanes(batch.len()) > 0 {
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: `available()` checked that the CPU has AVX-512 F and BW.
                unsafe { x86::sha1_x16(batch, digests) };
                continue;
            }
        }
        for (m, d) in batch.iter().zip(digests.iter_mut()) {
            *d = Sha1::digest(m).into();
        }
    }
    out
}

/// The message blocks of one lane: its whole 64-byte blocks straight from the message, then
/// one or two blocks of its tail with the padding and the bit length.
struct Lane<'a> {
    msg: &'a [u8],
    full: usize,
    blocks: usize,
    tail: [u8; 128],
}

impl<'a> Lane<'a> {
    fn new(msg: &'a [u8]) -> Lane<'a> {
        let full = msg.len() / 64;
        let rest = &msg[full * 64..];
        // The tail, the 0x80 byte, zeros, and 8 bytes of length: one block if they fit in 64.
        let tail_blocks = if rest.len() + 9 <= 64 { 1 } else { 2 };
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let bits = (msg.len() as u64).wrapping_mul(8);
        let end = tail_blocks * 64;
        tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        Lane {
            msg,
            full,
            blocks: full + tail_blocks,
            tail,
        }
    }

    /// Block `k` (`k < self.blocks`).
    fn block(&self, k: usize) -> &[u8; 64] {
        let b = if k < self.full {
            &self.msg[k * 64..k * 64 + 64]
        } else {
            let at = (k - self.full) * 64;
            &self.tail[at..at + 64]
        };
        // The slices above are 64 bytes long by construction.
        b.try_into().unwrap_or(&[0u8; 64])
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LANES, Lane};
    use std::arch::x86_64::*;

    const H: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    const K: [u32; 4] = [0x5A82_7999, 0x6ED9_EBA1, 0x8F1B_BCDC, 0xCA62_C1D6];
    /// `vpternlogd` truth tables: `b ? c : d`, `b ^ c ^ d`, majority.
    const CH: i32 = 0xCA;
    const PARITY: i32 = 0x96;
    const MAJ: i32 = 0xE8;

    /// Digests of `msgs` (at most [`LANES`]) into `out`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn sha1_x16(msgs: &[&[u8]], out: &mut [[u8; 20]]) {
        let lanes: Vec<Lane<'_>> = msgs.iter().take(LANES).map(|m| Lane::new(m)).collect();
        let most = lanes.iter().map(|l| l.blocks).max().unwrap_or(0);
        let zero = [0u8; 64];
        let mut state = H.map(|h| _mm512_set1_epi32(h as i32));
        for k in 0..most {
            let mut active: __mmask16 = 0;
            let rows: [&[u8; 64]; LANES] = std::array::from_fn(|i| match lanes.get(i) {
                Some(l) if k < l.blocks => {
                    active |= 1 << i;
                    l.block(k)
                }
                _ => &zero,
            });
            compress(&mut state, &rows, active);
        }
        let mut words = [[0u32; LANES]; 5];
        for (w, s) in words.iter_mut().zip(state) {
            // SAFETY: `w` is 16 u32s, the 64 bytes the store writes.
            unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), s) };
        }
        for (i, d) in out.iter_mut().enumerate().take(lanes.len()) {
            for (j, w) in words.iter().enumerate() {
                d[j * 4..j * 4 + 4].copy_from_slice(&w[i].to_be_bytes());
            }
        }
    }

    /// One round, with the roles of the five working variables passed in their order for this
    /// round: `e += rol5(a) + f(b, c, d) + k + w`, `b = rol30(b)`. Five calls with the roles
    /// rotated leave every variable in its place, so no moves are needed.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn round<const F: i32>(
        a: __m512i,
        b: &mut __m512i,
        c: __m512i,
        d: __m512i,
        e: &mut __m512i,
        kw: __m512i,
    ) {
        let f = _mm512_ternarylogic_epi32::<F>(*b, c, d);
        let t = _mm512_add_epi32(_mm512_rol_epi32::<5>(a), f);
        *e = _mm512_add_epi32(_mm512_add_epi32(*e, kw), t);
        *b = _mm512_rol_epi32::<30>(*b);
    }

    /// Word `t` of the message schedule, computed in place in the ring of sixteen.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn schedule(w: &mut [__m512i; 16], t: usize) -> __m512i {
        if t >= 16 {
            let x = _mm512_ternarylogic_epi32::<PARITY>(
                w[(t + 13) % 16],
                w[(t + 8) % 16],
                w[(t + 2) % 16],
            );
            w[t % 16] = _mm512_rol_epi32::<1>(_mm512_xor_si512(x, w[t % 16]));
        }
        w[t % 16]
    }

    /// Sixteen rows of sixteen words (one 64-byte block a lane) into sixteen words of sixteen
    /// lanes, each word read big-endian.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn load_transposed(rows: &[&[u8; 64]; LANES]) -> [__m512i; 16] {
        let swap = _mm512_set_epi8(
            60, 61, 62, 63, 56, 57, 58, 59, 52, 53, 54, 55, 48, 49, 50, 51, 44, 45, 46, 47, 40, 41,
            42, 43, 36, 37, 38, 39, 32, 33, 34, 35, 28, 29, 30, 31, 24, 25, 26, 27, 20, 21, 22, 23,
            16, 17, 18, 19, 12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3,
        );
        // SAFETY: each row is 64 readable bytes, what an unaligned 512-bit load reads.
        let r: [__m512i; 16] = std::array::from_fn(|i| unsafe {
            _mm512_shuffle_epi8(_mm512_loadu_si512(rows[i].as_ptr().cast()), swap)
        });
        // 32-bit interleave of row pairs, then 64-bit: b[4g + j] holds, in its 128-bit chunk c,
        // word 4c + j of rows 4g..4g + 4.
        let a: [__m512i; 16] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_epi32(x, y)
            } else {
                _mm512_unpackhi_epi32(x, y)
            }
        });
        let b: [__m512i; 16] = std::array::from_fn(|i| {
            let (g, j) = (i / 4 * 4, i % 4);
            let (x, y) = (a[g + (j >> 1)], a[g + 2 + (j >> 1)]);
            if j % 2 == 0 {
                _mm512_unpacklo_epi64(x, y)
            } else {
                _mm512_unpackhi_epi64(x, y)
            }
        });
        // A 4×4 transpose of 128-bit chunks among b[j], b[4 + j], b[8 + j], b[12 + j]: word
        // 4c + j of every lane is chunk c of each, in row-group order.
        let mut out = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            let (b0, b1, b2, b3) = (b[j], b[4 + j], b[8 + j], b[12 + j]);
            let u0 = _mm512_shuffle_i32x4::<0x44>(b0, b1);
            let u1 = _mm512_shuffle_i32x4::<0xEE>(b0, b1);
            let u2 = _mm512_shuffle_i32x4::<0x44>(b2, b3);
            let u3 = _mm512_shuffle_i32x4::<0xEE>(b2, b3);
            out[j] = _mm512_shuffle_i32x4::<0x88>(u0, u2);
            out[4 + j] = _mm512_shuffle_i32x4::<0xDD>(u0, u2);
            out[8 + j] = _mm512_shuffle_i32x4::<0x88>(u1, u3);
            out[12 + j] = _mm512_shuffle_i32x4::<0xDD>(u1, u3);
        }
        out
    }

    /// One block of each lane; lanes outside `active` keep their state.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn compress(state: &mut [__m512i; 5], rows: &[&[u8; 64]; LANES], active: __mmask16) {
        let mut w = load_transposed(rows);
        let [mut a, mut b, mut c, mut d, mut e] = *state;
        macro_rules! five {
            ($f:expr, $k:expr, $t:expr) => {{
                let k = _mm512_set1_epi32($k as i32);
                let kw = _mm512_add_epi32(k, schedule(&mut w, $t));
                round::<{ $f }>(a, &mut b, c, d, &mut e, kw);
                let kw = _mm512_add_epi32(k, schedule(&mut w, $t + 1));
                round::<{ $f }>(e, &mut a, b, c, &mut d, kw);
                let kw = _mm512_add_epi32(k, schedule(&mut w, $t + 2));
                round::<{ $f }>(d, &mut e, a, b, &mut c, kw);
                let kw = _mm512_add_epi32(k, schedule(&mut w, $t + 3));
                round::<{ $f }>(c, &mut d, e, a, &mut b, kw);
                let kw = _mm512_add_epi32(k, schedule(&mut w, $t + 4));
                round::<{ $f }>(b, &mut c, d, e, &mut a, kw);
            }};
        }
        five!(CH, K[0], 0);
        five!(CH, K[0], 5);
        five!(CH, K[0], 10);
        five!(CH, K[0], 15);
        five!(PARITY, K[1], 20);
        five!(PARITY, K[1], 25);
        five!(PARITY, K[1], 30);
        five!(PARITY, K[1], 35);
        five!(MAJ, K[2], 40);
        five!(MAJ, K[2], 45);
        five!(MAJ, K[2], 50);
        five!(MAJ, K[2], 55);
        five!(PARITY, K[3], 60);
        five!(PARITY, K[3], 65);
        five!(PARITY, K[3], 70);
        five!(PARITY, K[3], 75);
        for (s, v) in state.iter_mut().zip([a, b, c, d, e]) {
            *s = _mm512_mask_add_epi32(*s, active, *s, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: &[u8]) -> [u8; 20] {
        Sha1::digest(m).into()
    }

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    #[test]
    fn every_padding_case_and_lane_count() {
        // Lengths around the one/two tail block boundary (55, 56, 63, 64) and zero.
        let lens = [
            0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 16384,
        ];
        for n in 1..=20 {
            let msgs: Vec<Vec<u8>> = (0..n)
                .map(|i| data(lens[i % lens.len()], i as u32))
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let got = sha1_many(&refs);
            for (m, d) in refs.iter().zip(&got) {
                assert_eq!(*d, reference(m), "len {} in a batch of {n}", m.len());
            }
        }
    }

    #[test]
    fn equal_pieces_as_a_download_batches_them() {
        let msgs: Vec<Vec<u8>> = (0..LANES as u32).map(|i| data(256 << 10, i)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let got = sha1_many(&refs);
        for (m, d) in refs.iter().zip(&got) {
            assert_eq!(*d, reference(m));
        }
        // A known vector, so the reference itself is pinned.
        assert_eq!(
            sha1_many(&[&b"abc"[..]; 16])[15],
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
    }

    #[test]
    fn lane_counts_follow_the_threshold() {
        let on = usize::from(available());
        assert_eq!(in_lanes(MIN_LANES - 1), 0);
        assert_eq!(in_lanes(MIN_LANES), MIN_LANES * on);
        assert_eq!(in_lanes(LANES + MIN_LANES - 1), LANES * on);
        assert_eq!(in_lanes(2 * LANES), 2 * LANES * on);
    }

    #[test]
    fn lanes_differ_from_each_other() {
        // A lane's words must not leak into another's: one changed byte changes one digest.
        let base: Vec<Vec<u8>> = (0..LANES as u32).map(|_| data(4096, 7)).collect();
        let mut changed = base.clone();
        changed[9][4000] ^= 1;
        let a = sha1_many(&base.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let b = sha1_many(&changed.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for i in 0..LANES {
            assert_eq!(a[i] == b[i], i != 9, "lane {i}");
        }
    }
}
