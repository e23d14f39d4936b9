//! Media datagrams as they arrive from the network: the header parser
//! never panics, and a header it accepts writes back byte for byte.
#![no_main]

use bytes::BytesMut;
use fjord_media_node::wire::{MediaHeader, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = MediaHeader::parse(data) {
        let mut out = BytesMut::new();
        h.write(&mut out);
        assert_eq!(&out[..], &data[..HEADER_LEN]);
        assert_eq!(MediaHeader::parse(&out), Ok(h));
    }
});
