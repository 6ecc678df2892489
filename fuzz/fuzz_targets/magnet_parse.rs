//! Parsing arbitrary text as a magnet URI; accepted magnets must survive a format/parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::metainfo::Magnet;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let Ok(m) = Magnet::parse(&s) else {
        return;
    };
    let uri = m.to_uri();
    let again = Magnet::parse(&uri);
    assert_eq!(again.as_ref(), Ok(&m), "round trip through {uri:?} changed the magnet");
});
