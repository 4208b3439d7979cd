//! The peer record decoder on arbitrary bytes: it must never panic, and
//! whatever it decodes must encode back to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::peer_record::PeerRecord;
use macula::wire::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(record) = PeerRecord::decode(data, &limits) {
        let bytes = record
            .encode(&limits)
            .expect("a decoded peer record re-encodes");
        assert_eq!(&bytes[..], data);
        assert_eq!(PeerRecord::decode(&bytes, &limits), Ok(record));
    }
});
