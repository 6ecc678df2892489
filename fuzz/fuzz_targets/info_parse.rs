//! Parsing arbitrary bytes as a bare info dictionary (as received over BEP 9).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::metainfo::Info;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = Info::from_bytes(data) {
        assert_eq!(info.raw, data, "raw must be the exact input bytes");
    }
});
