//! The peer machine driven message by message, with no socket.

use super::*;

#[test]
fn a_fresh_incoming_peer_waits_for_the_handshake() {
    let p = Peer::new(false, Instant::now());
    assert_eq!(p.phase(), Phase::Handshake);
    assert!(p.am_choking());
}
