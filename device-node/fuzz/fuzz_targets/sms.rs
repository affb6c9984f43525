//! Binary SMS user data, read by the bridge (a device's request, from any number) and by
//! the device (the bridge's messages, from the network): never a panic; the payload is
//! what follows the header; a request that opens under a key was sealed under it.
#![no_main]
use device_node::seal::DeviceKey;
use device_node::sms::{Mt, open_mo, parse_mt, split_user_data};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey::new([0; 16]);
    if let Ok((_, payload)) = split_user_data(data) {
        assert!(payload.len() < data.len());
        assert_eq!(&data[data.len() - payload.len()..], payload);
        if let Ok(Mt::Frames(f)) = parse_mt(&key, b"1", payload) {
            assert!(!f.is_empty() && f.len() % 12 == 0);
        }
        if let Ok(r) = open_mo(&key, b"1", payload) {
            assert_eq!(r.records.len() + 13, payload.len());
        }
    }
    let _ = parse_mt(&key, b"1", data);
});
