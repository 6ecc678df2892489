//! Connections per IP address, counted over all workers: what `max_connections_per_ip` caps.
//!
//! Two counts use it: connections of one address still in their handshake (not yet tied to a
//! torrent: the engine's), and connections of one address to one torrent (the torrent's). Both
//! change once per connection (accept, handshake, dial, close), never per message, so a lock is
//! cheap here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Live connections per address. An address leaves the map when its last one closes, so the
/// map holds only addresses that are connected now.
#[derive(Debug, Default)]
pub struct IpCounts {
    map: Mutex<HashMap<IpAddr, u32>>,
}

impl IpCounts {
    /// Counts one more connection of `ip` unless it has `cap` already. An IPv4 peer on the
    /// dual-stack listener (`::ffff:a.b.c.d`) counts as its IPv4 address.
    pub fn try_add(&self, ip: IpAddr, cap: usize) -> bool {
        let mut map = super::lock(&self.map);
        let n = map.entry(ip.to_canonical()).or_insert(0);
        if *n as usize >= cap {
            if *n == 0 {
                map.remove(&ip.to_canonical());
            }
            return false;
        }
        *n += 1;
        true
    }

    /// One connection counted by [`IpCounts::try_add`] ended.
    pub fn remove(&self, ip: IpAddr) {
        let mut map = super::lock(&self.map);
        let key = ip.to_canonical();
        if let Some(n) = map.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&key);
            }
        }
    }

    /// Connections of `ip` counted now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        super::lock(&self.map)
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_and_forgets_it_when_gone() {
        let c = IpCounts::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(c.try_add(a, 2));
        assert!(c.try_add(mapped, 2));
        assert!(!c.try_add(a, 2), "the mapped form is the same address");
        assert!(c.try_add(b, 2));
        c.remove(a);
        assert!(c.try_add(mapped, 2));
        c.remove(a);
        c.remove(a);
        assert_eq!(c.count(a), 0);
        assert!(super::super::lock(&c.map).len() == 1, "only b is left");
        c.remove(a);
        assert_eq!(c.count(a), 0);
        assert!(!c.try_add(b, 0));
    }
}
