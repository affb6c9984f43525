//! The JSON form: arbitrary text never panics; accepted commands encode or fail cleanly.
#![no_main]
use device_node::command::CommandFrame;
use device_node::telemetry::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = serde_json::from_slice::<CommandFrame>(data) {
        let _ = frame.encode();
    }
    if let Ok(records) = serde_json::from_slice::<Vec<Record>>(data) {
        let mut out = [0u8; 4096];
        let _ = device_node::telemetry::encode_uplink(&records, &mut out);
    }
});
