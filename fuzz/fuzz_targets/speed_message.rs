//! `rs_speed` extension messages from a stranger: parsing never panics, never accepts more than
//! the bound, and whatever parses survives our own encoding unchanged. A parsed voucher's
//! signature recovery (the verifier's work) never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::speed::protocol::{MAX_MESSAGE_BYTES, SpeedMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SpeedMessage::parse(data) {
        assert!(data.len() <= MAX_MESSAGE_BYTES);
        let again = m.encode();
        assert_eq!(SpeedMessage::parse(&again).as_ref(), Ok(&m), "{m:?}");
        if let SpeedMessage::Voucher(v) = m {
            let _ = v.signer();
        }
    }
});
