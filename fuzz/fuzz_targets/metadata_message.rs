//! BEP 9 `ut_metadata` messages from a stranger: parsing never panics and never accepts more
//! than the bound; a parsed request is answered (data or reject) without panicking, whatever
//! piece it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::wire::metadata::{
    MAX_MESSAGE_BYTES, MetadataMessage, data_message, piece_count, reject_message,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = MetadataMessage::parse(data) {
        assert!(data.len() <= MAX_MESSAGE_BYTES);
        if let MetadataMessage::Request(piece) = m {
            let metadata = &data[..data.len().min(40_000)];
            match data_message(metadata, piece) {
                Some(_) => assert!(piece < piece_count(metadata.len())),
                None => {
                    let r = reject_message(piece);
                    assert_eq!(MetadataMessage::parse(&r), Ok(MetadataMessage::Reject(piece)));
                }
            }
        }
    }
});
