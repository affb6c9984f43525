//! Command frame decoding: never panics; valid frames round-trip.
#![no_main]
use device_node::command::{self, CommandFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for frame in command::decode_downlink(data).flatten() {
        let bytes = frame.encode().expect("a decoded frame encodes");
        assert_eq!(CommandFrame::decode(&bytes, 0), Ok(frame));
    }
});
