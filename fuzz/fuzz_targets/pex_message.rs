//! BEP 11 `ut_pex` messages from a stranger: parsing never panics, never accepts more than the
//! bound, and what parses survives our own encoding (as a set: the wire groups by family).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::wire::pex::{MAX_MESSAGE_BYTES, PexMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PexMessage::parse(data) {
        assert!(data.len() <= MAX_MESSAGE_BYTES);
        let encoded = m.encode();
        if encoded.len() > MAX_MESSAGE_BYTES {
            // Our encoding names all six keys; a stranger's message near the bound may not.
            return;
        }
        let again = PexMessage::parse(&encoded).unwrap();
        assert_eq!(again.added.len(), m.added.len());
        assert_eq!(again.dropped.len(), m.dropped.len());
        for p in &m.added {
            assert!(again.added.contains(p));
        }
    }
});
