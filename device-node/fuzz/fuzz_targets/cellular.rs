//! The cellular long poll's readers: a poll body (the bridge reads it from anyone) and a
//! response head (the device reads it from the network). Neither panics; a poll that
//! opens under a key was sealed under it.
#![no_main]
use device_node::cellular::{open_poll, parse_poll, parse_response_head};
use device_node::seal::DeviceKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_response_head(data);
    if let Ok((poll, mac)) = parse_poll(data) {
        assert_eq!(mac.len(), 4);
        assert!(poll.records.len() + 13 == data.len());
        // a random MAC almost never matches; when it opens, it parsed the same
        if let Ok(opened) = open_poll(&DeviceKey::new([0; 16]), b"1", data) {
            assert_eq!(opened, poll);
        }
    }
});
