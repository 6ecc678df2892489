//! BEP 6 allowed-fast set: pieces a choked peer may still request.

use std::net::IpAddr;

/// The canonical allowed-fast set of `k` pieces for a peer at `ip` (BEP 6). IPv6 peers get none:
/// the BEP defines the set for IPv4 only.
///
/// ```
/// // The BEP's own example: 7 of 1313 pieces for 80.4.4.200 and info-hash 0xaa × 20.
/// use ringseed::wire::fast::allowed_fast_set;
/// let set = allowed_fast_set("80.4.4.200".parse().unwrap(), &[0xaa; 20], 1313, 7);
/// assert_eq!(set, [1059, 431, 808, 1217, 287, 376, 1188]);
/// ```
pub fn allowed_fast_set(ip: IpAddr, info_hash: &[u8; 20], num_pieces: u32, k: usize) -> Vec<u32> {
    let IpAddr::V4(v4) = ip else {
        return Vec::new();
    };
    let k = k.min(num_pieces as usize);
    let mut out = Vec::with_capacity(k);
    let mut x = Vec::with_capacity(24);
    x.extend_from_slice(&(u32::from(v4) & 0xffff_ff00).to_be_bytes());
    x.extend_from_slice(info_hash);
    while out.len() < k {
        let h = crate::hash::sha1(&x);
        for chunk in h.chunks_exact(4) {
            if out.len() >= k {
                break;
            }
            let y = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let index = y % num_pieces;
            if !out.contains(&index) {
                out.push(index);
            }
        }
        x = h.to_vec();
    }
    out
}
